from __future__ import annotations

import sqlalchemy as sa
import pytest

from wfkit.db import create_engine, default_database_path, normalize_url, resolve_database_url
from wfkit.errors import ConfigurationError


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
    [("not a url", "invalid database URL 'not a url'"), ("mysql://u@h/db", "unsupported database 'mysql'")],
)
def test_bad_urls(url, message):
    with pytest.raises(ConfigurationError, match=message):
        normalize_url(url)


def test_sqlite_connections_are_configured(tmp_path):
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


def test_durability_settings(engine):
    """What the README promises: WAL + synchronous=NORMAL on SQLite, asynchronous commit on PostgreSQL."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        else:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
