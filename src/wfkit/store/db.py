"""Database URLs, engines, connection settings and the translation of driver errors.

The URL comes from (first that is set): an explicit argument (the CLI's
``--database-url``), the ``WFKIT_DATABASE_URL`` environment variable, else a
SQLite file in the per-user data directory (:func:`default_database_path`).

SQLite connections get foreign keys on, WAL journaling, ``synchronous=NORMAL``
(committed data survives a killed process; the executor's writes ask for more,
see :mod:`wfkit.store.recorder`), a busy timeout, so several processes can
share one file, and a 64 MiB page cache. ``postgresql://`` URLs use psycopg 3.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.parse
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url

from wfkit.errors import ConfigurationError, DatabaseError, DatabaseNotMigratedError, WfkitError
from wfkit.formatting import mask_password

DATABASE_URL_ENV = "WFKIT_DATABASE_URL"
#: Milliseconds a SQLite connection waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Upper bound of each SQLite connection's page cache, in KiB (filled only as pages are read).
SQLITE_CACHE_KIB = 65536
#: A pooled PostgreSQL connection idle for longer than this many seconds is pinged before reuse.
PING_AFTER_IDLE_S = 1.0


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
        parsed.port  # noqa: B018 - a port that is not a number fails here (or in make_url), not at connect time
    except (exc.ArgumentError, ValueError):
        raise ConfigurationError(
            f"invalid database URL {mask_password(url)!r}: expected e.g. sqlite:///path/to/wfkit.db "
            "or postgresql://user@host/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"unsupported database {parsed.get_backend_name()!r} in URL: wfkit supports sqlite and postgresql"
        )
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ConfigurationError(
            f"unsupported driver {parsed.drivername!r} in URL: wfkit talks to SQLite through sqlite3 "
            "(sqlite:///...) and to PostgreSQL through psycopg 3 (postgresql://...)"
        )
    if parsed.get_backend_name() == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise ConfigurationError(
                "PostgreSQL needs the psycopg driver, which is not installed: pip install 'wfkit[postgres]'"
            )
    return parsed


#: The URL each engine made by :func:`create_engine` was given, as written (messages echo it so).
_WRITTEN_URLS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()
def display_url(url: str | sa.URL | Engine) -> str:
    """A database URL fit for messages: as the user wrote it (for an engine, the URL it was made
    from), the password masked."""
    if isinstance(url, Engine):
        url = _WRITTEN_URLS.get(url) or url.url
    if not isinstance(url, str):
        url = url.render_as_string(hide_password=False)
    return mask_password(url)


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
    """The file a SQLite URL names (None for memory or URI databases)."""
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _make_data_directory(directory: Path) -> None:
    """The per-user data directory, made private (0700) if wfkit creates it; a one-line error naming
    it and the settings that move it if it cannot be made."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not directory.is_dir():
            raise NotADirectoryError(f"{directory} is not a directory")
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigurationError(
            f"cannot use the data directory {directory} for the default database ({reason}): set "
            f"XDG_DATA_HOME to a directory wfkit may write, or give the database with {DATABASE_URL_ENV} "
            "or --database-url"
        ) from None


def _create_private(path: Path) -> Any:
    """A ``do_connect`` hook: create the SQLite file, readable by its owner only, before SQLite opens
    it (SQLite would create it with the umask's mode: world-readable, usually)."""
    def do_connect(_dialect: Any, _record: Any, _cargs: list[Any], _cparams: dict[str, Any]) -> None:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as err:
            raise ConfigurationError(
                f"cannot create the SQLite database {path}: {err.strerror or err}"
                + (" (the directory is not writable)" if isinstance(err, PermissionError) else "")
            ) from None

    return do_connect


def _open_existing_only(path: Path) -> Any:
    """A ``do_connect`` hook: open the SQLite file read-write through a URI with mode=rw, so a
    missing file is an error instead of a new empty database (the engine's URL stays as given)."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=rw"

    def do_connect(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        if cargs:
            cargs[0] = uri
        else:
            cparams["database"] = uri
        cparams["uri"] = True

    return do_connect


def create_engine(url: str | None = None, *, create_missing: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url`` (resolved as :func:`resolve_database_url` says).

    For a SQLite file, ``create_missing`` (the default) creates the file on first use if it does
    not exist (and, for the per-user default, its directory; a directory given by hand must exist);
    with ``create_missing=False`` a missing file is an error at first use instead (readers never
    leave empty database files behind). Run history holds params and state, so what wfkit creates
    is private: the per-user data directory 0700, a new database file 0600 (SQLite gives its
    journal files the same mode).
    Extra keyword arguments go to :func:`sqlalchemy.create_engine`.
    """
    written = resolve_database_url(url)
    parsed = normalize_url(written)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        engine = sa.create_engine(parsed, **kwargs)
        _WRITTEN_URLS[engine] = written
        if path is not None and path.is_dir():
            raise ConfigurationError(f"the SQLite database {path} is a directory: name a file in it, "
                                     f"such as {path / 'wfkit.db'}")
        if path is not None and create_missing:
            if path.expanduser().absolute() == default_database_path():  # the per-user data directory
                _make_data_directory(path.parent)
            elif not path.parent.is_dir():  # a typo in a path given by hand must not make directories
                raise ConfigurationError(f"cannot create the SQLite database {path}: "
                                         f"the directory {path.parent} does not exist")
            event.listen(engine, "do_connect", _create_private(path))
        elif path is not None:
            event.listen(engine, "do_connect", _open_existing_only(path))
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    ping_idle = "pool_pre_ping" not in kwargs
    # Commits wait for the server's synchronous_commit setting (on, by default): how durable the
    # executor's commits are is its recorder's business (its ``durability``), per connection.
    engine = sa.create_engine(parsed, **kwargs)
    _WRITTEN_URLS[engine] = written
    if ping_idle:
        _ping_when_idle(engine, PING_AFTER_IDLE_S)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection before reuse only if it sat idle for more than ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` costs a round trip on every check-out, which doubles the
    time of a short read. Connections die of idleness (server or firewall timeouts) and of
    server restarts: the first is caught here, the second costs one failed call (after which
    the pool replaces all its connections; the repository retries a read once). A failed ping
    raises ``DisconnectionError``, on which the pool discards the connection and connects anew.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:  # ``info`` belongs to this DBAPI connection: a new one starts empty
            record.info["wfkit_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("wfkit_idle_since")
        if since is None or time.monotonic() - since <= idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except dialect.loaded_dbapi.Error as err:
            if dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.DisconnectionError(f"stale connection: {_first_line(err)}") from err
            raise


def as_engine(engine_or_url: Engine | str | None, *, create_missing: bool = True) -> Engine:
    """``engine_or_url`` if it is an engine, else a new engine for that URL (or the default)."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url
    return create_engine(engine_or_url, create_missing=create_missing)


@contextlib.contextmanager
def engine_for(engine_or_url: Engine | str | None, *, create_missing: bool = True) -> Iterator[Engine]:
    """An engine for one piece of work: a given engine is used as is; one made from a URL is disposed after."""
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = create_engine(engine_or_url, create_missing=create_missing)
    try:
        yield engine
    finally:
        engine.dispose()


@contextlib.contextmanager
def migration_connection(conn: sa.Connection) -> Iterator[None]:
    """Prepare a connection for running migrations (a no-op on PostgreSQL, whose DDL is transactional).

    On SQLite: foreign keys off (SQLite alters a table by copying it and dropping the original,
    and dropping a table with foreign keys on would cascade-delete the rows that refer to it), and
    one explicit transaction around everything (the sqlite3 module would otherwise commit each DDL
    statement on its own, so a failure halfway would leave a half-built schema). The caller
    commits; an exception rolls everything back.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = conn.connection.driver_connection
    if conn.in_transaction():
        conn.rollback()
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()
    previous = driver.isolation_level
    driver.isolation_level = None  # the driver issues no BEGIN/COMMIT of its own: ours hold
    try:
        conn.exec_driver_sql("BEGIN")
        yield
    except BaseException:
        conn.rollback()
        raise
    finally:
        if conn.in_transaction():
            conn.rollback()
        driver.isolation_level = previous
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()


def _pool_limit(engine: Engine) -> str:
    """What limit a pool timeout hit, and how to raise it."""
    pool = engine.pool
    size, overflow = getattr(pool, "size", lambda: None)(), getattr(pool, "_max_overflow", None)
    if size is None or overflow is None:
        return "the engine's pool has no connection free"
    return (f"all {size + max(overflow, 0)} connections of the engine's pool are in use (pool_size={size}, "
            f"max_overflow={overflow}; each run being executed holds one): pass wfkit.create_engine(url, "
            "pool_size=..., max_overflow=...) to the Executor, or run fewer runs at once")


def is_in_memory(url: str | sa.URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (it lives as long as its engine)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in database:
        return True
    # A URI filename (uri=true): "file::memory:", or any name with mode=memory among the parameters.
    uri = str(parsed.query.get("uri", "")).lower() in ("true", "1")
    return uri and (database.startswith("file::memory:") or parsed.query.get("mode") == "memory")


def _directory_problem(directory: Path) -> str | None:
    """Why ``directory`` cannot be the data directory (an ancestor is a file, or not writable), or None."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    # Trying is the only sure test: os.access says yes to root, and to file systems such as /proc
    # that refuse every new entry. This runs only once a database was found missing.
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".wfkit-probe-", dir=probe))
    except OSError as err:
        return f"nothing can be created in {probe}: {err.strerror or err}"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_driver_error(err: BaseException) -> bool:
    """Whether ``err`` comes from a database driver wfkit uses (sqlite3 or psycopg), raw or wrapped."""
    return isinstance(err, exc.DBAPIError) or type(err).__module__.startswith(("sqlite3", "psycopg"))


@contextlib.contextmanager
def translate_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors (SQLAlchemy's, or the driver's own) into wfkit errors that say what to do.

    A missing table or column becomes :class:`DatabaseNotMigratedError` (run
    ``wfkit db upgrade``); anything else the database says, including that it
    cannot be reached, becomes :class:`DatabaseError` naming the URL.
    """
    try:
        yield
    except exc.TimeoutError as err:
        raise DatabaseError(f"no free connection to the database at {display_url(engine)}: {_pool_limit(engine)}"
                            ) from err
    except RecursionError:
        # Python's JSON parser (SQLite's rows, psycopg's jsonb loader) recurses once per level: a value
        # stored before wfkit limited nesting, or written by hand, may be deeper than it can go.
        from wfkit.jsontext import MAX_DEPTH

        raise DatabaseError(
            f"a value stored in the database at {display_url(engine)} nests too deeply to be read (wfkit stores at "
            f"most {MAX_DEPTH} levels; this one was written otherwise): read runs without their params and result "
            "(list_runs(fields='summary'), or `wfkit runs list` without --full)") from None
    except Exception as err:
        if not is_driver_error(err):
            raise
        orig = err.orig if isinstance(err, exc.DBAPIError) else err
        raise _translated(engine, orig) from err


def _revision(engine: Engine) -> str | None:
    """The database's migration (Alembic's record), read on a connection of its own; None if it has
    none or cannot say (this is an error's message: it must not raise)."""
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except Exception:
        return None


def _newest_revision() -> str:
    """This wfkit's newest migration, from the names of its files (``NNNN_what.py``: see
    :mod:`wfkit.store.migrations`), without loading Alembic (this is an error's message)."""
    from importlib import resources

    folder = resources.files("wfkit.store") / "alembic" / "versions"
    return max(entry.name[:4] for entry in folder.iterdir() if entry.name[:4].isdigit())


def _missing_table(message: str) -> str:
    """The table a driver's error says is missing (PostgreSQL: relation "x" does not exist; SQLite:
    no such table: x)."""
    import re

    found = re.search(r'relation "([^"]+)" does not exist|no such table: (\S+)', message)
    return (found.group(1) or found.group(2)) if found else "that it needs"


def _translated(engine: Engine, orig: BaseException) -> WfkitError:
    text = f"{type(orig).__name__} {orig}".lower()
    where = display_url(engine)
    sqlite = engine.url.get_backend_name() == "sqlite"
    if "no such column" in text or "undefinedcolumn" in text or "has no column named" in text:
        return DatabaseNotMigratedError(
            f"the database at {where} is older than this wfkit (a column is missing): run `wfkit db upgrade`"
        )
    if "no such table" in text or "undefinedtable" in text:
        if sqlite and is_in_memory(engine.url):
            return DatabaseNotMigratedError(
                f"the database at {where} has no wfkit tables: an in-memory SQLite database lives only as long as "
                "its engine (one command of the command line), so migrate and use it through one engine, or use a file")
        revision = _revision(engine)
        if revision is not None:
            head = _newest_revision()
            table = _missing_table(str(orig))
            if revision != head:  # migrated by an older wfkit: the table comes with a later migration
                return DatabaseNotMigratedError(
                    f"the database at {where} is at migration {revision}, older than this wfkit's {head} (it has "
                    f"no table {table}): run `wfkit db upgrade`")
            return DatabaseNotMigratedError(
                f"the database at {where} has no table {table}, though it is at this wfkit's newest migration "
                f"({revision}): it was changed by hand; `wfkit db check` says what differs")
        return DatabaseNotMigratedError(f"the database at {where} has no wfkit tables: run `wfkit db upgrade` first")
    path = _sqlite_file(engine.url) if sqlite else None
    if "unable to open database file" in text and path is not None and not path.exists():
        if path.expanduser().absolute() == default_database_path():
            problem = _directory_problem(path.parent)
            if problem:
                return ConfigurationError(
                    f"cannot use the data directory {path.parent} for the default database ({problem}): set "
                    f"XDG_DATA_HOME to a directory wfkit may write, or give the database with {DATABASE_URL_ENV} "
                    "or --database-url")
        problem = _directory_problem(path.parent)
        if problem:  # an upgrade could not create it there either: say why, not to run it
            return ConfigurationError(f"there is no database at {path}, and none can be created there ({problem}): "
                                      "give a database in a directory you may write")
        return DatabaseNotMigratedError(f"there is no database at {path}: run `wfkit db upgrade` to create it")
    if sqlite and ("readonly database" in text or "disk i/o error" in text and path is not None and path.exists()
                   and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))):
        return DatabaseError(
            f"the SQLite database at {where} is read-only here (opened read-only, or the file or its directory, "
            "where SQLite keeps its -wal and -shm files, is not writable by this user): wfkit needs to write")
    if any(cls.__name__ in ("OperationalError", "InterfaceError") for cls in type(orig).__mro__):
        return DatabaseError(f"cannot use the database at {where}: {_first_line(orig)}")
    return DatabaseError(f"the database at {where} answered: {_first_line(orig)}")
