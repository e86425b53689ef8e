"""Alembic environment for wfkit's migrations.

Used both by ``wfkit db ...`` (wfkit.store.migrations, which hands over a
connection) and by ``alembic upgrade head`` from the repository root (which
reads the URL from ``-x url=...``, else ``WFKIT_DATABASE_URL``, else the
per-user SQLite default).
"""

from alembic import context

from wfkit.store import models
from wfkit.store.db import create_engine, migration_connection

config = context.config
target_metadata = models.metadata


def _url() -> str | None:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url") or None


def run_migrations_offline() -> None:
    from wfkit.store.db import normalize_url, resolve_database_url

    context.configure(
        url=normalize_url(resolve_database_url(_url())),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations use batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as conn, migration_connection(conn):
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
