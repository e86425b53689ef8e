"""Throwaway databases for tests: migrated, one per test, a SQLite file or a PostgreSQL database.

:class:`ThrowawayDatabases` makes them. The first one it makes is migrated with
:func:`wfkit.store.migrations.upgrade` and kept as a template; every later one is a copy of it
(``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, SQLite's backup API for a file), because copying
takes a tenth of the time migrating does, and a plugin's test suite makes one per test.

PostgreSQL is used when ``WFKIT_TEST_POSTGRES_URL`` names a server where the tests may create
databases (an admin URL such as ``postgresql://postgres@127.0.0.1:5432/postgres``); each database
gets a random name and is dropped when its test ends. A server that is named but cannot be reached
is an error, not a reason to fall back to SQLite: the tests would pass on the wrong engine.

This module is imported when pytest starts (through the plugin), wherever wfkit is installed, so
SQLAlchemy and the store are imported inside the functions that need them, not here.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wfkit.errors import ConfigurationError, DatabaseError, error_text
from wfkit.formatting import mask_password

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from wfkit.store.repository import Repository

#: The environment variable naming a PostgreSQL server for throwaway databases (an admin URL).
POSTGRES_URL_ENV = "WFKIT_TEST_POSTGRES_URL"

#: The databases in use, innermost last: the helpers of :mod:`wfkit.testing.asserts` read runs
#: from the last one when they are not told where to read.
_active: list[ThrowawayDatabase] = []


def current_database() -> ThrowawayDatabase | None:
    """The throwaway database the running test uses (the ``wfkit_database`` fixture's), if any."""
    return _active[-1] if _active else None


class ThrowawayDatabase:
    """One migrated database, for one test.

    ``url``: its URL (pass it to ``Executor``, ``Repository``, the ``wfkit`` command line as
    ``--database-url``); ``backend``: ``"sqlite"`` or ``"postgresql"``; ``name``: the SQLite file's
    path or the PostgreSQL database's name; ``engine`` and ``repository``: made on first use and
    closed with the database. As a context manager it is the current database (the one
    ``assert_path`` and ``assert_decisions`` read by default) and is closed (dropped, on
    PostgreSQL) at the end.
    """

    def __init__(self, url: str, backend: str, name: str, owner: ThrowawayDatabases | None = None):
        self.url = url
        self.backend = backend
        self.name = name
        self._owner = owner
        self._engine: Engine | None = None
        self._repository: Repository | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"ThrowawayDatabase({mask_password(self.url)!r})"

    @property
    def engine(self) -> Engine:
        """A SQLAlchemy engine on this database (wfkit's ``create_engine``: its pragmas and settings)."""
        if self._engine is None:
            from wfkit.store.db import create_engine

            self._engine = create_engine(self.url, create_missing=False)
        return self._engine

    @property
    def repository(self) -> Repository:
        """A read-only :class:`~wfkit.Repository` on this database."""
        if self._repository is None:
            from wfkit.store.repository import Repository

            self._repository = Repository(self.engine)
        return self._repository

    def close(self) -> None:
        """Close its connections; a PostgreSQL database is dropped (with any connection still open
        to it, such as an executor's that a test left running)."""
        if self.closed:
            return
        self.closed = True
        if self._repository is not None:
            self._repository.close()
        if self._engine is not None:
            self._engine.dispose()
        if self._owner is not None:
            self._owner.dropped(self)

    def __enter__(self) -> ThrowawayDatabase:
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _active:
            _active.remove(self)
        self.close()


class ThrowawayDatabases:
    """Makes throwaway databases: SQLite files, or PostgreSQL databases on the server that
    ``postgres_url`` names (default: ``$WFKIT_TEST_POSTGRES_URL``; empty or unset: SQLite).

    ``directory`` holds the SQLite template (and the files of :meth:`new` when it is given none).
    :meth:`close` drops every PostgreSQL database still there, the template included.
    """

    def __init__(self, directory: Path, postgres_url: str | None = None):
        self.directory = Path(directory)
        url = os.environ.get(POSTGRES_URL_ENV, "") if postgres_url is None else postgres_url
        self.postgres_url = url.strip() or None
        self.backend = "postgresql" if self.postgres_url else "sqlite"
        #: what every database is copied from (a SQLite file's path, a PostgreSQL database's name),
        #: migrated when the first one is made; None until then
        self.template: str | None = None
        self._admin: Any = None  # the SQLAlchemy engine on the server's admin database
        self._created: list[str] = []  # PostgreSQL databases made and not dropped yet
        self._failure: str | None = None

    # -- making them

    def new(self, directory: Path | None = None) -> ThrowawayDatabase:
        """A new migrated, empty database: a SQLite file in ``directory`` (default: this factory's),
        or a PostgreSQL database with a random name. Raises :class:`DatabaseError` when the
        PostgreSQL server cannot be reached (every later call says so again at once)."""
        if self._failure is not None:
            raise DatabaseError(self._failure)
        name = f"wfkit_test_{uuid.uuid4().hex[:12]}"
        try:
            if self.backend == "sqlite":
                return self._new_sqlite(name, Path(directory) if directory is not None else self.directory)
            return self._new_postgres(name)
        except DatabaseError as err:
            self._failure = str(err)
            raise

    def _new_sqlite(self, name: str, directory: Path) -> ThrowawayDatabase:
        if self.template is None:
            from wfkit.store import migrations

            template = self.directory / "wfkit_template.db"
            migrations.upgrade(f"sqlite:///{template}")
            self.template = str(template)
        path = directory / f"{name}.db"
        # Private, as wfkit makes its own database files; then the template's pages, through
        # SQLite's backup API, which reads a consistent copy whatever journal mode the file is in.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        source, target = sqlite3.connect(self.template), sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        return ThrowawayDatabase(f"sqlite:///{path}", "sqlite", str(path))

    def _new_postgres(self, name: str) -> ThrowawayDatabase:
        import sqlalchemy as sa

        assert self.postgres_url is not None
        try:
            admin_url = sa.make_url(self.postgres_url)
        except Exception:
            raise ConfigurationError(f"{POSTGRES_URL_ENV} is not a database URL: {mask_password(self.postgres_url)!r} "
                                     "(expected e.g. postgresql://postgres@127.0.0.1:5432/postgres)") from None
        if admin_url.get_backend_name() != "postgresql":
            raise ConfigurationError(f"{POSTGRES_URL_ENV} must name a PostgreSQL server (postgresql://...), "
                                     f"got {mask_password(self.postgres_url)!r}")
        if self.template is None:
            from wfkit.store import migrations

            template = f"wfkit_test_template_{uuid.uuid4().hex[:12]}"
            self._on_server(f'CREATE DATABASE "{template}"')
            self._created.append(template)
            migrations.upgrade(self._url_of(template))  # its engine is disposed after: the template is idle
            self.template = template
        self._on_server(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self._created.append(name)
        return ThrowawayDatabase(self._url_of(name), "postgresql", name, owner=self)

    def _url_of(self, database: str) -> str:
        """The admin URL with another database, as written (its driver and password kept)."""
        import sqlalchemy as sa

        assert self.postgres_url is not None
        return sa.make_url(self.postgres_url).set(database=database).render_as_string(hide_password=False)

    def _on_server(self, statement: str) -> None:
        """One statement outside a transaction (CREATE and DROP DATABASE cannot run inside one)."""
        import sqlalchemy as sa

        from wfkit.store.db import create_engine

        if self._admin is None:
            self._admin = create_engine(self.postgres_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with self._admin.connect() as conn:
                conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as err:  # unreachable, refused, or not allowed to create databases
            cause = error_text(err.orig if err.orig is not None else err).splitlines()[0]
            raise DatabaseError(f"{POSTGRES_URL_ENV} is set, but the PostgreSQL server at "
                                f"{mask_password(self.postgres_url or '')} cannot be used: {cause} "
                                f"(unset {POSTGRES_URL_ENV} to test on SQLite)") from err

    # -- dropping them

    def dropped(self, database: ThrowawayDatabase) -> None:
        """Drop a PostgreSQL database this factory made (its test ended)."""
        if database.name in self._created:
            self._created.remove(database.name)
            self._on_server(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')

    def close(self) -> None:
        """Drop every PostgreSQL database still there (the template last) and close the admin engine."""
        try:
            for name in reversed(self._created):
                self._on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._created.clear()
        finally:
            if self._admin is not None:
                self._admin.dispose()
                self._admin = None
