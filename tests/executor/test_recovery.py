"""The workers' recovery, hand-backs and cancels where they cross, on a real PostgreSQL database
with the queue, in this process: what a worker that died or stopped leaves behind is written as the
worker writes it (its claim, its job taken), then the recovery and the controls act on it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from factories import picky_registry
from wfkit.errors import InvalidStatusError, WorkflowBuildError, WorkflowNotFoundError
from wfkit.executor import Executor, RunControl
from wfkit.registry import Registry
from wfkit.store import queue, workers
from wfkit.store.db import create_engine
from wfkit.store.recorder import SqlRecorder


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(pg_url)
    yield engine
    engine.dispose()


def _submit(url: str, **params: Any) -> str:
    with Executor(url, registry=picky_registry("one")) as executor:
        return str(executor.submit("one", params))


def _take(engine: sa.Engine, run_id: str, owner: str) -> int:
    """What a worker does as it takes the run's job: the job 'doing' (the worker's id left NULL, as
    once its registration is pruned), the run claimed. The claim's epoch."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'run_id' = :r "
                             "AND status = 'todo'"), {"r": run_id})
    with SqlRecorder(engine, lease_seconds=30) as recorder:
        claim = recorder.claim(uuid.UUID(run_id), owner, submitted=True)
    assert claim is not None
    return claim.epoch


def _die(engine: sa.Engine, run_id: str) -> None:
    """The holder stops without a word: its lease runs out."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = :r"),
                     {"r": uuid.UUID(run_id)})


def _jobs(engine: sa.Engine, run_id: str) -> list[tuple[str, int]]:
    """The run's jobs, oldest first: (status, recoveries) each."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status::text, args FROM procrastinate_jobs WHERE args->>'run_id' = :r "
                                    "ORDER BY id"), {"r": run_id}).all()
    return [(status, (args if isinstance(args, dict) else json.loads(args)).get("recoveries", 0))
            for status, args in rows]


def _recover(engine: sa.Engine, max_attempts: int = 5) -> queue.Recovery:
    done = queue.recover(engine, max_attempts=max_attempts, dead_seconds=300)
    assert done is not None
    return done


def test_a_worker_pruned_while_stopped_registers_again_at_its_next_heartbeat(engine):
    registration = dict(name="w", host="h", pid=7, queues=["q"], concurrency=2, lease_seconds=30.0)
    workers.register(engine, "w on h", **registration)
    with engine.begin() as conn:
        assert workers.prune(conn, 0) == 1  # silent (for 0 s) and holding nothing
    assert workers.list_workers(engine, silent_seconds=60) == []
    workers.heartbeat(engine, "w on h", **registration)
    (back,) = workers.list_workers(engine, silent_seconds=60)
    assert (back.name, back.host, back.pid, back.queues, back.concurrency, back.alive) == ("w", "h", 7, ["q"], 2, True)


def test_a_run_held_by_a_worker_without_a_row_is_still_recovered(pg_url, engine):
    run_id = _submit(pg_url)
    _take(engine, run_id, "gone on h pid 1 (x)")  # no row in workers: pruned, or never written
    _die(engine, run_id)
    done = _recover(engine)
    assert done.redispatched == [run_id] and done.jobs_closed == 1
    assert _jobs(engine, run_id) == [("failed", 0), ("todo", 1)]
    assert _recover(engine) == queue.Recovery()  # its job waits: nothing more to do


def test_a_run_held_in_process_is_left_to_wfkit_runs_recover(pg_url, engine):
    run_id = _submit(pg_url)
    with engine.begin() as conn:  # no job: resumed by a process of its own (`wfkit runs resume`), which died
        conn.execute(sa.text("DELETE FROM procrastinate_jobs WHERE args->>'run_id' = :r"), {"r": run_id})
    _take(engine, run_id, "someone on h pid 2 (y)")
    _die(engine, run_id)
    assert _recover(engine) == queue.Recovery()
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        (recovered,) = executor.recover()
    assert str(recovered.run_id) == run_id and recovered.run.status.value == "completed"


def test_a_hand_back_with_a_job_waiting_already_keeps_that_job_and_fences_the_old_lease(pg_url, engine):
    run_id = _submit(pg_url)
    with SqlRecorder(engine, lease_seconds=30) as recorder:
        claim = recorder.claim(uuid.UUID(run_id), "w1", submitted=True)
        # its job still waits (a recovery and a hand-back crossed): the hand-back goes through all the same
        assert recorder.hand_back(uuid.UUID(run_id), claim.epoch, queue.enqueuer(run_id))
        assert not recorder.renew(uuid.UUID(run_id), claim.epoch)  # a late heartbeat of the old holder
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        run = executor.repository.find_run(run_id)
        assert (run.status.value, run.owner, run.lease_expires_at) == ("pending", None, None)
        assert _jobs(engine, run_id) == [("todo", 0)]
        assert executor.execute_submitted(run_id).status.value == "completed"


def test_hand_backs_do_not_use_up_attempts(pg_url, engine):
    run_id = _submit(pg_url)
    for turn in range(3):  # three workers stop in turn, each handing the run back
        epoch = _take(engine, run_id, f"w{turn}")
        with SqlRecorder(engine) as recorder:
            assert recorder.hand_back(uuid.UUID(run_id), epoch, queue.enqueuer(run_id))
        with engine.begin() as conn:  # the stopped worker's job returned: it succeeded, and is deleted
            conn.execute(sa.text("DELETE FROM procrastinate_jobs WHERE args->>'run_id' = :r AND status = 'doing'"),
                         {"r": run_id})
    _take(engine, run_id, "w3")
    _die(engine, run_id)
    assert _recover(engine, max_attempts=2).redispatched == [run_id]  # its first attempt ended
    _take(engine, run_id, "w4")
    _die(engine, run_id)
    done = _recover(engine, max_attempts=2)
    assert done.given_up == [run_id] and done.redispatched == []
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        run = executor.repository.find_run(run_id)
    assert run.status.value == "failed" and run.attempt == 5
    assert run.error_message.startswith("gave up after 2 attempts: the worker executing it stopped each time "
                                        "(WFKIT_MAX_ATTEMPTS=2)")


def test_a_run_this_worker_cannot_execute_fails_saying_why_instead_of_waiting_forever(pg_url, engine):
    unknown, unbuildable, unfitting = _submit(pg_url), _submit(pg_url), _submit(pg_url)
    with Executor(pg_url, registry=Registry()) as executor:  # a worker without the plugin
        with pytest.raises(WorkflowNotFoundError, match="install its plugin on every worker"):
            executor.execute_submitted(unknown)
        assert executor.execute_submitted(str(uuid.uuid4())) is None  # deleted before a worker took it

    def refuses(g: Any, rt: Any, p: Any) -> Any:
        raise ValueError("this version needs a 'region' param")

    changed = Registry()
    changed.register("one", refuses)
    with Executor(pg_url, registry=changed) as executor:
        with pytest.raises(WorkflowBuildError, match="region"):
            executor.execute_submitted(unbuildable)
    with engine.begin() as conn:  # its checkpoint names a node the workflow no longer has
        conn.execute(sa.text("UPDATE checkpoints SET state_data = (state_data - 'start') || "
                             "'{\"next_node\": \"gone\", \"counters\": {\"a\": 1}}' WHERE run_id = :r"),
                     {"r": uuid.UUID(unfitting)})
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        with pytest.raises(Exception, match="does not fit"):
            executor.execute_submitted(unfitting)
        for run_id, says in ((unknown, "no workflow"), (unbuildable, "region"), (unfitting, "does not fit")):
            run = executor.repository.find_run(run_id)
            assert run.status.value == "failed" and says in run.error_message.lower() and run.attempt == 1, run
        assert executor.execute_submitted(unknown) is None  # failed: a job delivered again does nothing


def test_resume_submit_gives_a_pending_run_without_a_job_its_job_again(pg_url, engine):
    run_id = _submit(pg_url)
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        with pytest.raises(InvalidStatusError, match="pending with a job in queue 'wfkit' already"):
            executor.submit_resume(run_id)
        with engine.begin() as conn:  # its job is gone (deleted by hand, say)
            conn.execute(sa.text("DELETE FROM procrastinate_jobs WHERE args->>'run_id' = :r"), {"r": run_id})
        assert executor.submit_resume(run_id, queue="again").status.value == "pending"
        assert queue.jobs_of(pg_url, run_id) == [(queue.EXECUTE_TASK, "again", "todo")]
        assert executor.execute_submitted(run_id).status.value == "completed"


def test_a_cancel_that_crosses_a_hand_back_follows_the_run(pg_url, engine, monkeypatch):
    run_id = _submit(pg_url)
    epoch = _take(engine, run_id, "w1")
    with RunControl(pg_url) as control:
        read = control.repository.find_run

        def read_then_hand_back(rid: Any) -> Any:
            run = read(rid)  # read running; the worker hands it back before the cancel's write
            monkeypatch.setattr(control.repository, "find_run", read)
            with SqlRecorder(engine) as recorder:
                assert recorder.hand_back(uuid.UUID(run_id), epoch, queue.enqueuer(run_id))
            return run

        monkeypatch.setattr(control.repository, "find_run", read_then_hand_back)
        run = control.cancel(run_id)
    assert run.status.value == "cancelled"
    assert [status for status, _ in _jobs(engine, run_id)] == ["doing", "cancelled"]


def test_a_worker_is_alive_while_heard_from_within_its_own_lease(engine):
    workers.register(engine, "short", name="short", host="h", pid=1, queues=[], concurrency=1, lease_seconds=0.05)
    workers.register(engine, "long", name="long", host="h", pid=2, queues=[], concurrency=1, lease_seconds=60)
    with engine.begin() as conn:  # one written before workers said their lease: judged by the lister's
        conn.execute(sa.text("INSERT INTO workers (id, name, host, pid, queues, concurrency, started_at, "
                             "last_heartbeat) VALUES ('old', 'old', 'h', 3, '[]', 1, now(), now())"))
    time.sleep(0.2)
    listed = {w.name: w.alive for w in workers.list_workers(engine, silent_seconds=0.1)}
    assert listed == {"short": False, "long": True, "old": False}
    assert workers.list_workers(engine, silent_seconds=60)[2].alive
