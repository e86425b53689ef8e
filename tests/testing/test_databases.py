"""ThrowawayDatabases' bad settings: one clear error, said again at once rather than retried."""

from __future__ import annotations

import time

import pytest

from wfkit.errors import ConfigurationError, DatabaseError
from wfkit.testing import ThrowawayDatabases


def test_a_url_that_is_not_postgresql_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match=r"^WFKIT_TEST_POSTGRES_URL must name a PostgreSQL server "
                                                 r"\(postgresql://\.\.\.\), got 'sqlite:///x.db'$"):
        ThrowawayDatabases(tmp_path, postgres_url="sqlite:///x.db").new()


def test_an_unreachable_server_fails_once_then_at_once(tmp_path):
    factory = ThrowawayDatabases(tmp_path, postgres_url="postgresql://postgres:secret@127.0.0.1:1/postgres")
    assert factory.backend == "postgresql"
    with pytest.raises(DatabaseError) as first:
        factory.new()
    assert "secret" not in str(first.value) and "postgresql://postgres:***@127.0.0.1:1/postgres" in str(first.value)
    started = time.monotonic()
    with pytest.raises(DatabaseError) as again:
        factory.new()
    assert str(again.value) == str(first.value) and time.monotonic() - started < 0.5
    factory.close()


def test_empty_means_sqlite(tmp_path):
    factory = ThrowawayDatabases(tmp_path, postgres_url="  ")
    with factory.new() as database:
        assert database.backend == "sqlite" and database.repository.list_runs().total == 0
    assert database.closed
    factory.close()
