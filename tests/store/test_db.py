from __future__ import annotations

import os
import re
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

import wfkit.errors
import wfkit.store.db
from wfkit.errors import ConfigurationError, NotFoundError
from wfkit.store import migrations
from wfkit.store.db import create_engine, default_database_path, normalize_url, resolve_database_url
from wfkit.store.repository import Repository


def test_url_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("WFKIT_DATABASE_URL", raising=False)
    assert default_database_path() == tmp_path / "data" / "wfkit" / "wfkit.db"
    assert resolve_database_url() == f"sqlite:///{tmp_path}/data/wfkit/wfkit.db"
    monkeypatch.setenv("WFKIT_DATABASE_URL", "sqlite:///from-env.db")
    assert resolve_database_url() == "sqlite:///from-env.db"
    assert resolve_database_url("sqlite:///from-flag.db") == "sqlite:///from-flag.db"


def test_postgres_urls_get_psycopg():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL 'not a url'"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("postgresql://u@h:notaport/db", "invalid database URL 'postgresql://u@h:notaport/db'"),
        ("postgresql://u@[::1/db", "invalid database URL"),
        ("postgresql+asyncpg://u@h/db", "unsupported driver 'postgresql+asyncpg'"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        normalize_url(url)


def test_sqlite_connections_are_configured(tmp_path):
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    engine = create_engine(f"sqlite:///{tmp_path}/sub/dir/x.db")
    try:
        with engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("foreign_keys") == 1
            assert pragma("journal_mode") == "wal"
            assert pragma("busy_timeout") == 5000
            assert pragma("synchronous") == 1  # NORMAL
    finally:
        engine.dispose()
    assert (tmp_path / "sub" / "dir" / "x.db").exists()


def test_readers_do_not_create_sqlite_files(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/missing.db", create_missing=False)
    try:
        with pytest.raises(sa.exc.OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
    assert not (tmp_path / "missing.db").exists()


def test_connections_read_with_the_server_settings(engine):
    """Engines made by wfkit leave commits to the server's setting (the executor's recorder chooses
    its own durability, see tests/executor/test_lease.py): WAL on SQLite, synchronous_commit on."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        else:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


# --------------------------------------------------------------------------- PostgreSQL connections that died


def _backend_pid(engine):
    conn = engine.raw_connection()
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]
    finally:
        conn.close()


def _terminate_others(url):
    """Kill every other session on the database (as a server restart would), return how many."""
    import psycopg

    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()[0]
    time.sleep(0.05)  # let the server finish closing them
    return killed


def test_an_idle_pooled_connection_is_pinged_before_reuse(pg_url, monkeypatch):
    monkeypatch.setattr(wfkit.store.db, "PING_AFTER_IDLE_S", 0.0)
    engine = create_engine(pg_url)
    try:
        before = _backend_pid(engine)
        assert _terminate_others(pg_url) == 1
        with engine.connect() as conn:  # a plain connection: no retry, only the ping saves it
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        assert _backend_pid(engine) != before
    finally:
        engine.dispose()


@pytest.mark.parametrize(("idle_s", "pinged"), [(60.0, False), (0.0, True)])
def test_a_connection_is_pinged_only_after_sitting_idle(pg_url, monkeypatch, idle_s, pinged):
    monkeypatch.setattr(wfkit.store.db, "PING_AFTER_IDLE_S", idle_s)
    engine = create_engine(pg_url)
    pings = []
    original = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or original(conn))
    try:
        for _ in range(3):
            _backend_pid(engine)
    finally:
        engine.dispose()
    assert len(pings) == (2 if pinged else 0)  # the first check-out is a new connection: never pinged


def test_repository_reads_survive_a_server_side_disconnect(pg_url, monkeypatch):
    """Within the no-ping window a dropped connection fails its first use: the repository retries once."""
    monkeypatch.setattr(wfkit.store.db, "PING_AFTER_IDLE_S", 3600.0)  # however slow this machine: no ping
    engine = create_engine(pg_url)
    repo = Repository(engine)
    try:
        assert repo.list_runs().total == 0
        before = _backend_pid(engine)
        assert _terminate_others(pg_url) == 1
        with pytest.raises(NotFoundError):
            repo.find_run(uuid.uuid4())  # not a DatabaseError: read again on a fresh connection
        assert repo.list_runs().total == 0
        assert _backend_pid(engine) != before
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- SQLite connections kept per thread


def test_thread_connections_one_per_thread_reused_and_closed(tmp_path):
    import gc
    import threading

    from wfkit.store.connections import ThreadConnections

    engine = create_engine(f"sqlite:///{tmp_path}/t.db")
    kept = ThreadConnections(engine)
    try:
        mine = kept.get()
        assert kept.get() is mine
        assert mine.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # made by the engine: its settings
        seen = []
        worker = threading.Thread(target=lambda: seen.append(kept.get()))
        worker.start()
        worker.join()
        assert seen[0] is not mine
        del seen[:]
        worker = None
        gc.collect()
        assert len(kept._open) == 1  # the finished thread's connection is gone with it
        assert engine.pool.checkedout() == 0  # kept connections do not hold the pool's slots
        kept.close()
        with pytest.raises(Exception, match="closed"):
            mine.execute("SELECT 1")
        assert kept.get() is not mine and kept.get().execute("SELECT 1").fetchone() == (1,)
    finally:
        kept.close()
        engine.dispose()


def test_closing_a_repository_while_another_thread_reads_waits_for_that_read(sqlite_url):
    """A server closes its repository at shutdown while a stream may still be reading: the read in
    flight finishes on its connection, which closes after it (closing a SQLite connection that another
    thread is using could crash the process), and the next read opens a new one."""
    import threading

    migrations.upgrade(sqlite_url)
    repo = Repository(sqlite_url)
    slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
            "SELECT count(*) FROM c")
    got: list[object] = []
    reading = threading.Event()

    def read() -> None:
        def work(cursor):
            reading.set()
            return cursor.execute(slow).fetchone()[0]

        try:
            got.append(repo._read(work))
            got.append(repo.list_runs().total)  # and again, on a new connection
        except Exception as err:  # noqa: BLE001 (the test says what went wrong)
            got.append(err)

    try:
        reader = threading.Thread(target=read)
        reader.start()
        assert reading.wait(10)
        repo.close()
        reader.join(60)
        assert got == [2000000, 0]
        assert len(repo._kept._busy) == 0
    finally:
        repo.close()


def test_a_closed_repository_reads_again(db_url):
    repo = Repository(db_url)
    assert repo.list_runs().total == 0
    repo.close()
    assert repo.list_runs().total == 0
    with Repository(db_url) as again:
        assert again.list_runs().total == 0


def test_an_in_memory_sqlite_engine_keeps_its_database(tmp_path):
    """In-memory SQLite lives in the pool's one connection: the repository borrows it, never keeps it."""
    from factories import add_runs

    engine = create_engine("sqlite://")
    try:
        migrations.upgrade(engine)
        add_runs(engine, 2)
        repo = Repository(engine)
        assert repo.list_runs().total == 2
        add_runs(engine, 1)  # the engine still sees the same database
        assert repo.list_runs().total == 3
    finally:
        engine.dispose()


def test_reads_leave_pooled_connections_as_configured(migrated_url):
    """Reading in autocommit must not change a pooled connection's own isolation level."""
    for level in ("AUTOCOMMIT", None):
        engine = create_engine(migrated_url, **({"isolation_level": level} if level else {}))
        try:
            with engine.connect() as conn:
                before = conn.get_isolation_level()
            Repository(engine).list_runs()
            with pytest.raises(NotFoundError):
                Repository(engine).find_run(uuid.uuid4())
            with engine.connect() as conn:
                assert conn.get_isolation_level() == before
                if engine.dialect.name == "postgresql":
                    assert conn.connection.driver_connection.autocommit is (level == "AUTOCOMMIT")
        finally:
            engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() exists on POSIX only")
def test_a_forked_child_reads_on_its_own_connection(db_url):
    """A child process opens its own SQLite connection; the parent's keeps working, untouched."""
    import threading

    from factories import add_runs

    engine = create_engine(db_url)
    add_runs(engine, 3)
    repo = Repository(engine)
    try:
        assert repo.list_runs().total == 3
        if repo._kept is None:
            return  # PostgreSQL: pooled connections, nothing kept per thread
        mine = repo._kept.get()
        other = threading.Thread(target=repo.list_runs)  # a second kept connection, in another thread
        other.start()
        other.join()
        pid = os.fork()
        if pid == 0:  # the child: read, and say how it went in the exit code
            code = 1
            try:
                code = 0 if repo.list_runs().total == 3 and repo._kept.get() is not mine else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert repo._kept.get() is mine and repo.list_runs().total == 3
    finally:
        repo.close()
        engine.dispose()


def test_postgresql_without_psycopg_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'wfkit\[postgres\]'"):
        create_engine("postgresql://u@h/db")


def test_a_sqlite_path_in_a_missing_directory_is_an_error_not_new_directories(tmp_path):
    with pytest.raises(ConfigurationError, match="the directory .*nope/deeper does not exist"):
        create_engine(f"sqlite:///{tmp_path}/nope/deeper/x.db")
    assert not (tmp_path / "nope").exists()


def test_downgrading_a_missing_sqlite_file_does_not_create_it(tmp_path):
    from wfkit.errors import DatabaseNotMigratedError

    path = tmp_path / "missing.db"
    with pytest.raises(DatabaseNotMigratedError, match="there is no database at"):
        migrations.downgrade(f"sqlite:///{path}", "base")
    assert not path.exists()


def test_the_default_database_gets_its_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("WFKIT_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    engine = create_engine()
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()
    assert default_database_path() == tmp_path / "data" / "wfkit" / "wfkit.db" and default_database_path().exists()


def test_the_databases_wfkit_creates_are_private(tmp_path, monkeypatch):
    """Run history holds params and state: the data directory 0700, new database files 0600."""
    import stat

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("WFKIT_DATABASE_URL", raising=False)
    migrations.upgrade(None)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(default_database_path().parent) == 0o700 and mode(default_database_path()) == 0o600
    given = tmp_path / "given.db"
    migrations.upgrade(f"sqlite:///{given}")
    assert mode(given) == 0o600
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"")
    existing.chmod(0o644)
    migrations.upgrade(f"sqlite:///{existing}")
    assert mode(existing) == 0o644  # a file the user made keeps the mode they gave it


def test_passwords_never_show(tmp_path):
    from wfkit.formatting import mask_password
    from wfkit.store.db import display_url

    assert mask_password("postgresql://me:s3cret@db/x") == "postgresql://me:***@db/x"
    assert mask_password("postgresql://me:p@ss@db:5432/x") == "postgresql://me:***@db:5432/x"
    for password in ("s3/cret", "s3?cret", "s3#cret", "a:b/c?d#e@f"):
        assert mask_password(f"postgresql://me:{password}@db:5432/x") == "postgresql://me:***@db:5432/x"
        url = f"postgresql://me:{password}@127.0.0.1:1/x?connect_timeout=1"
        assert display_url(create_engine(url)) == "postgresql://me:***@127.0.0.1:1/x?connect_timeout=1"
        assert password not in repr(Repository(url))
    assert mask_password("postgresql://me@db/x?sslmode=require&password=s3cret") == \
        "postgresql://me@db/x?sslmode=require&password=***"
    assert mask_password("sqlite:///x.db") == "sqlite:///x.db"
    engine = create_engine("postgresql://me@127.0.0.1:1/x?password=s3cret&connect_timeout=1")
    assert display_url(engine) == "postgresql://me@127.0.0.1:1/x?password=***&connect_timeout=1"
    assert "s3cret" not in repr(Repository(engine))
    with pytest.raises(wfkit.errors.DatabaseError) as caught:
        Repository(engine).find_run("00000000-0000-4000-8000-000000000000")
    assert "s3cret" not in str(caught.value) and "postgresql://me@127.0.0.1:1/x?password=***" in str(caught.value)


def test_a_read_only_database_says_so(tmp_path):
    from factories import add, make_run
    from wfkit.errors import DatabaseError
    from wfkit.executor import RunControl

    path = tmp_path / "ro.db"
    migrations.upgrade(f"sqlite:///{path}")
    run = make_run()
    engine = create_engine(f"sqlite:///{path}")
    add(engine, run)
    engine.dispose()
    with pytest.raises(DatabaseError, match="is read-only here"):
        RunControl(f"sqlite:///file:{path}?mode=ro&uri=true").cancel(run.id)
