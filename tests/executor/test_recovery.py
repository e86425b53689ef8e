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


def _register(engine: sa.Engine, owner: str) -> None:
    workers.register(engine, owner, name=owner, host="h", pid=1, queues=[], concurrency=1, lease_seconds=30)


def _take(engine: sa.Engine, run_id: str, owner: str, *, worker: bool = True, claim: bool = True) -> int:
    """What a worker does as it takes the run's job: the job 'doing' (its Procrastinate worker
    unknown, as once that registration is pruned), then (``claim``) the run claimed by ``owner``,
    registered as a worker (``worker``), or else claimed as a process of its own resumes it. The
    claim's epoch."""
    if worker:
        _register(engine, owner)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE procrastinate_jobs SET status = 'doing' WHERE args->>'run_id' = :r "
                             "AND status = 'todo'"), {"r": run_id})
    if not claim:
        return 0
    with SqlRecorder(engine, lease_seconds=30) as recorder:
        found = recorder.claim(uuid.UUID(run_id), owner, submitted=worker, take_over=not worker)
    assert found is not None
    return found.epoch


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


def test_a_worker_pruned_while_it_held_nothing_comes_back_and_its_next_run_is_recovered(pg_url, engine):
    _register(engine, "w on h")
    with engine.begin() as conn:
        assert workers.prune(conn, 0) == 1
    workers.heartbeat(engine, "w on h", name="w on h", host="h", pid=1, queues=[], concurrency=1, lease_seconds=30)
    run_id = _submit(pg_url)
    _take(engine, run_id, "w on h")
    _die(engine, run_id)
    done = _recover(engine)
    assert done.redispatched == [run_id] and done.jobs_closed == 1
    assert _jobs(engine, run_id) == [("failed", 0), ("todo", 1)]
    assert _recover(engine) == queue.Recovery()  # its job waits: nothing more to do


def test_a_run_held_in_process_is_left_to_wfkit_runs_recover_even_if_it_had_a_job(pg_url, engine):
    run_id = _submit(pg_url)  # submitted once; now resumed by a process of its own (`wfkit runs resume`)
    _take(engine, run_id, "laptop pid 2 (y)", worker=False)
    _die(engine, run_id)  # which died
    assert _recover(engine, max_attempts=1) == queue.Recovery(jobs_closed=1)  # not the workers' to take, nor fail
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        (recovered,) = executor.recover()
    assert str(recovered.run_id) == run_id and recovered.run.status.value == "completed"


def test_a_run_a_live_worker_has_in_hand_is_left_alone(pg_url, engine):
    run_id = _submit(pg_url)
    _take(engine, run_id, "w1")
    _die(engine, run_id)
    with engine.begin() as conn:  # its job is being executed by a worker heard from just now
        live = conn.execute(sa.text("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")).scalar_one()
        conn.execute(sa.text("UPDATE procrastinate_jobs SET worker_id = :w WHERE args->>'run_id' = :r"),
                     {"w": live, "r": run_id})
    for _ in range(3):  # however often the recovery looks
        assert _recover(engine, max_attempts=2) == queue.Recovery()
    assert _jobs(engine, run_id) == [("doing", 0)]
    with engine.begin() as conn:  # the worker stops heartbeating: then the run is recovered
        conn.execute(sa.text("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"))
    assert _recover(engine, max_attempts=2).redispatched == [run_id]


def test_a_pending_run_whose_job_was_taken_but_never_started_is_dispatched_again(pg_url, engine):
    run_id = _submit(pg_url)
    _take(engine, run_id, "w1", claim=False)  # the worker died (or its task raised) before claiming
    done = _recover(engine, max_attempts=2)  # its job was closed (no live worker), then the run re-dispatched
    assert done.jobs_closed == 1 and done.redispatched == [run_id]
    assert _jobs(engine, run_id) == [("failed", 0), ("todo", 1)]
    _take(engine, run_id, "w2", claim=False)  # and again: now its attempts are used up
    done = _recover(engine, max_attempts=2)
    assert done.given_up == [run_id]
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        run = executor.repository.find_run(run_id)
        assert run.status.value == "failed" and run.error_message.startswith(
            "gave up after 2 attempts: each worker that took it stopped or failed before starting it")
        # resumed for the workers, it starts over with its attempts
        assert executor.submit_resume(run_id).status.value == "pending"
    assert _jobs(engine, run_id)[-1] == ("todo", 0)


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


def test_a_database_error_while_preparing_leaves_the_run_to_be_recovered_not_failed(pg_url, engine, monkeypatch):
    from wfkit.errors import DatabaseError
    from wfkit.executor import checkpoints

    run_id = _submit(pg_url)

    def away(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("the database at ... did not answer: server closed the connection unexpectedly")

    monkeypatch.setattr(checkpoints, "load", away)
    with Executor(pg_url, registry=picky_registry("one")) as executor:
        with pytest.raises(DatabaseError):
            executor.execute_submitted(run_id)
        run = executor.repository.find_run(run_id)
    assert run.status.value == "running" and run.error_message is None  # held until its lease expires


def test_a_taken_over_run_that_cannot_execute_here_keeps_the_stage_its_worker_left(pg_url, engine):
    from wfkit.ids import new_id
    from wfkit.store.models import utcnow
    from wfkit.store.recorder import OpenStage

    run_id = _submit(pg_url)
    epoch = _take(engine, run_id, "w1")
    with SqlRecorder(engine) as recorder:  # w1 was executing node a when it died
        recorder.open_stage(uuid.UUID(run_id), epoch, OpenStage(new_id(), "a", 1, utcnow(), 1))
    _die(engine, run_id)
    with Executor(pg_url, registry=Registry()) as executor:
        with pytest.raises(WorkflowNotFoundError):
            executor.execute_submitted(run_id)
        (stage,) = executor.repository.get_stages(run_id)
        run = executor.repository.find_run(run_id)
    assert (stage.node_name, stage.status.value, stage.attempt) == ("a", "failed", 1)
    assert "interrupted" in stage.error_message and run.status.value == "failed" and run.attempt == 2
