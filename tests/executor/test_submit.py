"""Runs submitted to the workers: the run and its job written together (PostgreSQL), or neither."""

from __future__ import annotations

import json
import uuid

import pytest

from factories import picky_registry
from wfkit.errors import ConfigurationError, WorkflowBuildError
from wfkit.executor import Executor
from wfkit.executor.executor import WORKERS_NEED_POSTGRESQL
from wfkit.registry import Registry
from wfkit.store import queue
from wfkit.store.repository import Repository


def _registry() -> Registry:
    return picky_registry("one")


def _runs(url: str) -> int:
    repo = Repository(url)
    try:
        return repo.list_runs().total
    finally:
        repo.close()


def _jobs(url: str) -> int:
    from wfkit.store.db import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT count(*) FROM procrastinate_jobs").scalar_one()
    finally:
        engine.dispose()


def test_a_submitted_run_is_pending_held_by_nobody_with_its_job(pg_url):
    with Executor(pg_url, registry=_registry()) as executor:
        run_id = executor.submit("one", {"x": 1})
        run = executor.repository.find_run(run_id)
    assert run.status.value == "pending" and run.params == {"x": 1}
    assert run.owner is None and run.lease_expires_at is None and run.attempt == 0
    assert queue.jobs_of(pg_url, run_id) == [(queue.EXECUTE_TASK, queue.DEFAULT_QUEUE, "todo")]
    # not a run whose process died: `wfkit runs recover` leaves it to the workers
    with Executor(pg_url, registry=_registry()) as executor:
        assert executor.recover() == []
    with Executor(pg_url, registry=_registry()) as executor:
        other = executor.submit("one", queue="reports")
    assert queue.jobs_of(pg_url, other) == [(queue.EXECUTE_TASK, "reports", "todo")]


def test_a_retried_submit_with_its_key_returns_the_same_run_and_one_job(pg_url):
    with Executor(pg_url, registry=_registry()) as executor:
        first = executor.submit("one", idempotency_key="order-1")
        assert executor.submit("one", idempotency_key="order-1") == first
    assert _runs(pg_url) == 1 and len(queue.jobs_of(pg_url, first)) == 1


def test_a_failed_enqueue_leaves_no_run_and_a_failed_build_writes_nothing(pg_url, monkeypatch):
    enqueuer = queue.enqueuer

    def failing(run_id, queue_name=None):
        enqueue = enqueuer(run_id, queue_name)

        def then_fail(connection):
            enqueue(connection)  # the job is written, in the run's transaction...
            raise RuntimeError("the connection broke")  # ... which then fails

        return then_fail

    monkeypatch.setattr(queue, "enqueuer", failing)
    with Executor(pg_url, registry=_registry()) as executor, pytest.raises(RuntimeError, match="broke"):
        executor.submit("one")
    assert _runs(pg_url) == 0 and _jobs(pg_url) == 0  # neither the run nor its job
    monkeypatch.setattr(queue, "enqueuer", enqueuer)
    with Executor(pg_url, registry=_registry()) as executor:
        with pytest.raises(WorkflowBuildError, match="bad must be false"):
            executor.submit("one", {"bad": True})
        with pytest.raises(ConfigurationError, match="a queue name must be text of 1 to 100 characters"):
            executor.submit("one", queue=" q")
        assert _runs(pg_url) == 0 and _jobs(pg_url) == 0
        executor.submit("one")  # and the connection is fine after all that
    assert _runs(pg_url) == 1 and _jobs(pg_url) == 1


def test_sqlite_refuses_to_submit(sqlite_url, wfkit_cli):
    with Executor(sqlite_url, registry=_registry()) as executor, pytest.raises(ConfigurationError) as err:
        executor.submit("one")
    assert str(err.value) == WORKERS_NEED_POSTGRESQL
    out = wfkit_cli.run("submit", "text-pipeline", url=sqlite_url)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"Error: {WORKERS_NEED_POSTGRESQL}"
    assert _runs(sqlite_url) == 0


def test_wfkit_submit_prints_the_run_id_or_the_run(pg_url, wfkit_cli):
    out = wfkit_cli.run("submit", "text-pipeline", "-p", "text=hello", url=pg_url)
    assert out.returncode == 0, out.stderr
    run_id = uuid.UUID(out.stdout.strip())
    assert queue.jobs_of(pg_url, run_id) == [(queue.EXECUTE_TASK, queue.DEFAULT_QUEUE, "todo")]
    out = wfkit_cli.run("submit", "text-pipeline", "--queue", "nightly", "--idempotency-key", "k", "--json",
                        url=pg_url)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    assert run["status"] == "pending" and run["params"]["text"] and run["idempotency_key"] == "k"
    again = wfkit_cli.run("submit", "text-pipeline", "--queue", "nightly", "--idempotency-key", "k", url=pg_url)
    assert again.stdout.strip() == run["id"]
    assert queue.jobs_of(pg_url, run["id"]) == [(queue.EXECUTE_TASK, "nightly", "todo")]
