"""Database URLs, engines and sessions.

The URL comes from (first that is set): an explicit argument (the CLI's
``--database-url``), the ``WFKIT_DATABASE_URL`` environment variable, else a
SQLite file in the per-user data directory (:func:`default_database_path`).

SQLite connections get foreign keys on, WAL journaling, ``synchronous=NORMAL``
(committed data survives a killed process), a busy timeout, so several
processes can share one file, and a 64 MiB page cache. ``postgresql://`` URLs use psycopg 3.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from wfkit.errors import ConfigurationError, DatabaseError, DatabaseNotMigratedError

DATABASE_URL_ENV = "WFKIT_DATABASE_URL"
#: Milliseconds a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Upper bound of each SQLite connection's page cache, in KiB (filled only as pages are read).
SQLITE_CACHE_KIB = 65536


def default_database_path() -> Path:
    """Where the default SQLite database lives: ``<user data dir>/wfkit.db``.

    On Linux that is ``~/.local/share/wfkit/wfkit.db`` (or under
    ``$XDG_DATA_HOME``); on macOS ``~/Library/Application Support/wfkit``;
    on Windows ``%LOCALAPPDATA%\\wfkit``.
    """
    from platformdirs import user_data_path

    return user_data_path("wfkit", appauthor=False) / "wfkit.db"


def resolve_database_url(url: str | None = None) -> str:
    """The URL to use: ``url`` if given, else ``$WFKIT_DATABASE_URL``, else the SQLite default."""
    if url:
        return url
    env = os.environ.get(DATABASE_URL_ENV, "").strip()
    if env:
        return env
    return f"sqlite:///{default_database_path()}"


def normalize_url(url: str) -> sa.URL:
    """Parse ``url``; a bare ``postgresql://`` (or ``postgres://``) gets the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise ConfigurationError(
            f"invalid database URL {url!r}: expected e.g. sqlite:///path/to/wfkit.db "
            "or postgresql://user@host/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"unsupported database {parsed.get_backend_name()!r} in URL: wfkit supports sqlite and postgresql"
        )
    return parsed


def display_url(url: str | sa.URL) -> str:
    """The URL with any password hidden, fit for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return str(url)


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is left as SQLAlchemy configures it.
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # A 64 MiB page cache (the default is 2 MiB): counting a million runs re-reads an index
        # of tens of MiB; with it cached, the count takes a millisecond instead of fifteen.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def _sqlite_file(parsed: sa.URL) -> Path | None:
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def create_engine(url: str | None = None, *, create_missing: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url`` (resolved as :func:`resolve_database_url` says).

    For a SQLite file, ``create_missing`` (the default) creates the parent
    directory and lets SQLite create the file; with ``create_missing=False``
    a missing file is an error at first use instead (readers never leave
    empty database files behind).
    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(resolve_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None and create_missing:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif path is not None:
            # mode=rw: open an existing file read-write, never create one.
            parsed = parsed.set(database=f"file:{path}?mode=rw", query={**parsed.query, "uri": "true"})
        engine = sa.create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def as_engine(engine_or_url: Engine | str | None, *, create_missing: bool = True) -> Engine:
    """``engine_or_url`` if it is an engine, else a new engine for that URL (or the default)."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url
    return create_engine(engine_or_url, create_missing=create_missing)


@contextlib.contextmanager
def engine_for(engine_or_url: Engine | str | None) -> Iterator[Engine]:
    """An engine for one piece of work: a given engine is used as is; one made from a URL is disposed after."""
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = create_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def sqlite_foreign_keys_off(conn: sa.Connection) -> Iterator[None]:
    """Foreign keys off on a SQLite connection for the block (a no-op on other databases).

    Migrations need this: SQLite alters a table by copying it and dropping the
    original, and dropping a table with foreign keys on would cascade-delete
    the rows that refer to it. The pragma only takes effect outside a
    transaction, so the connection must not have written anything yet.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after the session is closed."""
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


_MISSING_TABLE_MARKERS = ("no such table", "undefinedtable", "does not exist")


@contextlib.contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors into wfkit errors that say what to do.

    A missing table becomes :class:`DatabaseNotMigratedError`; a database that
    cannot be reached becomes :class:`DatabaseError` naming the URL.
    """
    try:
        yield
    except exc.DBAPIError as err:
        text = f"{type(err.orig).__name__} {err.orig}".lower()
        where = display_url(engine.url)
        if any(marker in text for marker in _MISSING_TABLE_MARKERS) and (
            "table" in text or "relation" in text
        ):
            raise DatabaseNotMigratedError(
                f"the database at {where} has no wfkit tables: run `wfkit db upgrade` first"
            ) from err
        if "unable to open database file" in text and engine.url.get_backend_name() == "sqlite":
            path = str(engine.url.database or "").removeprefix("file:").split("?")[0]
            if not Path(path).exists():
                raise DatabaseNotMigratedError(
                    f"there is no database at {path}: run `wfkit db upgrade` to create it"
                ) from err
        if isinstance(err, (exc.OperationalError, exc.InterfaceError)):
            first_line = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else type(err.orig).__name__
            raise DatabaseError(f"cannot use the database at {where}: {first_line}") from err
        raise
