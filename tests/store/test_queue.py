"""The workers' queue: Procrastinate's tables installed and migrated by ``wfkit db upgrade`` on
PostgreSQL, with a record of which of its migration files a database has had; nothing on SQLite."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from wfkit.errors import DatabaseError
from wfkit.store import migrations, queue
from wfkit.store.db import create_engine


def _rows(url: str, sql: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        engine.dispose()


def _execute(url: str, sql: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def test_upgrade_installs_the_queue_once_and_records_every_migration(databases, wfkit_cli):
    url = databases.new("postgresql")
    out = wfkit_cli.invoke("db", "upgrade", url=url)
    assert out.returncode == 0, out.stderr
    assert f"installed the workers' queue (Procrastinate {queue.version()})" in out.stdout
    tables = {name for (name,) in _rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"procrastinate_jobs", "procrastinate_workers", queue.TRACKING_TABLE} <= tables
    recorded = {name for (name,) in _rows(url, f"SELECT name FROM {queue.TRACKING_TABLE}")}
    assert recorded == {queue.WHOLE_SCHEMA, *queue.migration_files()}
    assert queue.state(url) == queue.QueueState(queue.version(), True, [])
    # again: nothing to do, nothing said of the queue
    again = wfkit_cli.invoke("db", "upgrade", url=url)
    assert again.returncode == 0 and "queue" not in again.stdout
    assert len(_rows(url, f"SELECT name FROM {queue.TRACKING_TABLE}")) == len(recorded)
    # the queue's tables are not differences from wfkit's models
    check = wfkit_cli.invoke("db", "check", url=url)
    assert check.returncode == 0, check.stderr
    assert f"matches wfkit's models and Procrastinate {queue.version()}'s queue" in check.stdout


def test_a_newer_procrastinate_gets_the_migrations_it_brings(pg_url, monkeypatch):
    """After an upgrade of Procrastinate, its new migration files are applied, in order, once."""
    files = queue.migration_files()
    new = ["99.00.00_01_pre_wfkit_test.sql", "99.00.00_50_post_wfkit_test.sql"]
    texts = {new[0]: "CREATE TABLE procrastinate_wfkit_test (x integer); -- 100% a test",
             new[1]: "INSERT INTO procrastinate_wfkit_test VALUES (1);"}
    read = queue._read
    monkeypatch.setattr(queue, "migration_files", lambda: [*files, *new])
    monkeypatch.setattr(queue, "_read", lambda name: texts.get(name) or read(name))
    assert queue.state(pg_url).pending == new
    assert migrations.upgrade(pg_url) == new
    assert _rows(pg_url, "SELECT x FROM procrastinate_wfkit_test") == [(1,)]
    assert queue.state(pg_url).up_to_date and migrations.upgrade(pg_url) == []
    assert migrations.check(pg_url) == []  # a queue table is not one of wfkit's differences


def test_the_wfkit_db_check_says_when_the_queue_is_missing(databases, wfkit_cli):
    url = databases.new("postgresql")
    migrations.upgrade(url)
    _execute(url, "DROP TABLE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, "
                  f"procrastinate_workers CASCADE; DROP TABLE {queue.TRACKING_TABLE}")
    out = wfkit_cli.invoke("db", "check", url=url)
    assert out.returncode == 1
    assert "the workers' queue is not installed: run `wfkit db upgrade`" in out.stderr
    assert "differs from wfkit's models" not in out.stderr


def test_tables_installed_by_something_else_are_not_migrated_blindly(pg_url):
    _execute(pg_url, f"DROP TABLE {queue.TRACKING_TABLE}")
    with pytest.raises(DatabaseError, match="has Procrastinate's tables but no record of the migrations they had"):
        migrations.upgrade(pg_url)


def test_two_upgrades_at_once_install_the_queue_once(databases):
    url = databases.new("postgresql")
    migrations.upgrade(url, "0004")  # wfkit's tables first: alembic itself is not made for two at once
    barrier, results = threading.Barrier(2), []

    def upgrade() -> None:
        barrier.wait()
        results.append(queue.upgrade(url))

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [[], [queue.WHOLE_SCHEMA, queue.RUN_JOBS_INDEX]]


def test_sqlite_has_no_queue(sqlite_url, wfkit_cli):
    assert queue.state(sqlite_url) is None and queue.upgrade(sqlite_url) == []
    engine = create_engine(sqlite_url)
    try:
        assert not any(queue.is_queue_table(t) for t in sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    out = wfkit_cli.invoke("db", "check", url=sqlite_url)
    assert out.returncode == 0 and out.stdout.strip().endswith("matches wfkit's models")
