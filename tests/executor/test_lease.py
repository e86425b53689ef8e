"""Run ownership in the library, on SQLite and PostgreSQL: claims, fencing, heartbeats, takeover,
recovery, the runtime's fencing token and idempotency key, and the durability of each mode.
(The same through real processes, with signals: tests/cli/test_ownership.py.)"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from factories import count
from wfkit.errors import ConfigurationError, InvalidStatusError, LeaseLostError
from wfkit.executor import Executor, RunControl
from wfkit.executor.control import INTERRUPTED
from wfkit.registry import Registry
from wfkit.runtime import Runtime
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, StageStatus, utcnow
from wfkit.store.recorder import OpenStage, SqlRecorder
from wfkit.store.repository import Repository

LEASE = 1.0  # seconds: short, so that tests wait little for leases to expire


def chain(nodes=("a", "b", "c"), *, slow: str | None = None, seconds: float = 0.0, calls: list | None = None,
          gate: threading.Event | None = None, started: threading.Event | None = None, runtime_log: list | None = None,
          asynchronous: bool = False) -> Registry:
    """Workflow ``chain``: the nodes in a line, each appending its name to ``seen``; ``slow`` sleeps
    ``seconds`` (or waits for ``gate``) after setting ``started``."""
    reg = Registry()

    def factory(graph, runtime, params):
        def make(name):
            def node(state):
                if calls is not None:
                    calls.append(name)
                if runtime_log is not None:
                    runtime_log.append((name, runtime.idempotency_key, runtime.fencing_token))
                if name == slow:
                    if started is not None:
                        started.set()
                    if gate is not None:
                        gate.wait(30)
                    else:
                        time.sleep(seconds)
                return {"seen": [*state["seen"], name]}

            async def anode(state):
                if name == slow:
                    if started is not None:
                        started.set()
                    await asyncio.sleep(seconds)
                return {"seen": [*state["seen"], name]}

            return anode if asynchronous else node

        for name in nodes:
            graph.add_node(name, make(name))
        graph.set_entry_point(nodes[0])
        for a, b in zip(nodes, nodes[1:]):
            graph.add_edge(a, b)
        graph.set_finish_point(nodes[-1])
        return {"seen": []}

    reg.register("chain", factory)
    return reg


def expire(engine: sa.Engine, run_id: uuid.UUID) -> None:
    """Let a run's lease run out (a process that holds it stopped renewing): as if time passed."""
    past = utcnow().replace(year=2000)
    with engine.begin() as conn:
        conn.execute(sa.update(Run).where(Run.id == run_id).values(lease_expires_at=past))


def left_running(engine: sa.Engine, registry: Registry, name: str = "chain", *, steps: int = 1) -> uuid.UUID:
    """A run whose process died: created and started by an executor, ``steps`` steps committed, its
    next stage current, and nobody renewing its lease (expired)."""
    from wfkit.executor.run_loop import RunLoop

    executor = Executor(engine, registry=registry, lease_seconds=LEASE)
    with executor._recorder() as recorder:
        plan = executor._cold_start(name, {}, recorder, start=True)
        loop = RunLoop(recorder, plan, observers=executor.observers, checkpoint_every=1, cancel=threading.Event())
        assert loop.first_stage()
        for _ in range(steps):
            loop._enter_node()
            assert loop.stepped(loop.walker.step())
    expire(engine, plan.run_id)
    return plan.run_id


# --------------------------------------------------------------------------- claims


def test_a_new_run_is_held_by_its_executor_and_released_at_its_end(engine):
    executor = Executor(engine, registry=chain(), lease_seconds=LEASE)
    run = executor.execute("chain")
    assert run.status is RunStatus.COMPLETED and run.attempt == 1 and run.lease_epoch == 1
    assert run.owner == executor.owner and executor.owner.split()[1] == "pid"
    assert run.lease_expires_at is None and run.lease_expired is None and run.current_node is None
    assert run.to_dict() == executor.repository.find_run(run.id).to_dict()


def test_while_a_run_executes_its_row_shows_its_holder_and_its_stage(engine):
    gate, started = threading.Event(), threading.Event()
    with Executor(engine, registry=chain(slow="b", gate=gate, started=started), lease_seconds=LEASE) as executor:
        run_id = executor.start("chain")
        assert started.wait(10)
        run = executor.repository.find_run(run_id)
        assert run.status is RunStatus.RUNNING and run.owner == executor.owner and run.lease_expired is False
        assert (run.current_node, run.current_iteration, run.attempt) == ("b", 1, 1)
        stages = executor.repository.get_stages(run_id)
        assert [(s.node_name, s.status) for s in stages] == [("a", StageStatus.COMPLETED), ("b", StageStatus.STARTED)]
        assert stages[-1].id == run.current_stage_id and stages[-1].created_at == run.current_stage_started_at
        doc = run.to_dict()
        assert doc["owner"] == executor.owner and doc["lease_expired"] is False and doc["attempt"] == 1
        gate.set()
        assert executor.wait(run_id, timeout=10).status is RunStatus.COMPLETED
    [ended] = [s for s in executor.repository.get_stages(run_id) if s.node_name == "b"]
    assert ended.id == stages[-1].id and ended.status is StageStatus.COMPLETED  # one row, written at its end


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.CANCELLED])
def test_two_claims_at_the_same_instant_one_wins(engine, status):
    """Claiming is one compare-and-set statement: of two at once, exactly one holds the run after,
    the other learns who does. Many times over, from two threads on their own connections."""
    executor = Executor(engine, registry=chain(), lease_seconds=LEASE)
    ids = []
    for _ in range(30):
        run = executor.execute("chain")
        ids.append(run.id)
    with engine.begin() as conn:
        conn.execute(sa.update(Run).where(Run.id.in_(ids)).values(status=status))
    barrier = threading.Barrier(2)
    won: dict[str, list] = {"one": [], "two": []}

    def claim(who: str) -> None:
        with SqlRecorder(engine, lease_seconds=LEASE) as recorder:
            for rid in ids:
                barrier.wait(10)
                got = recorder.claim(rid, who)
                if got is not None:
                    won[who].append((rid, got.epoch))

    threads = [threading.Thread(target=claim, args=(who,)) for who in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = sorted(won["one"] + won["two"])
    assert [rid for rid, _ in winners] == sorted(ids)  # every run claimed exactly once
    assert {epoch for _, epoch in winners} == {2}
    for run in Repository(engine).list_runs(page_size=100).data:
        assert run.status is RunStatus.RUNNING and run.attempt == 2
        assert run.owner in ("one", "two") and (run.id, 2) in won[run.owner]


def test_a_resume_of_a_run_held_by_a_live_process_is_refused_naming_it(engine):
    gate, started = threading.Event(), threading.Event()
    with Executor(engine, registry=chain(slow="b", gate=gate, started=started), lease_seconds=LEASE) as first:
        run_id = first.start("chain")
        assert started.wait(10)
        second = Executor(engine, registry=chain(), lease_seconds=LEASE)
        with pytest.raises(InvalidStatusError, match=f"run {run_id} is running, held by {re.escape(first.owner)} until "):
            second.resume(run_id)
        with pytest.raises(InvalidStatusError, match=rf"run {run_id} is running, held by {re.escape(first.owner)} \(attempt 1\) "
                                                     "until .*its lease is live, so it is not taken over"):
            second.resume(run_id, force=True)
        assert second.recover() == []  # nothing expired
        gate.set()
        run = first.wait(run_id, timeout=10)
    assert run.status is RunStatus.COMPLETED and run.attempt == 1 and run.lease_epoch == 1
    assert [s.node_name for s in Repository(engine).get_stages(run_id)] == ["a", "b", "c"]


# --------------------------------------------------------------------------- fencing


def test_a_process_that_lost_its_lease_writes_nothing(engine):
    """The stale holder's whole step (stage row, decision, checkpoint, next stage) is refused when
    another process took the run over: on PostgreSQL every part of the step's one statement reads
    FROM the fenced UPDATE of the run, on SQLite the fenced UPDATE comes first and a miss rolls back."""
    run_id = left_running(engine, chain())
    stale = Executor(engine, registry=chain(), lease_seconds=LEASE)
    with stale._recorder() as recorder:
        before = {model: count(engine, model) for model in (Stage, Decision, Checkpoint)}
        checkpoint_before = Repository(engine).find_checkpoint(run_id).state_data
        taker = SqlRecorder(engine, lease_seconds=LEASE)
        with taker:
            claim = taker.claim(run_id, "the taker", take_over=True)
        assert claim is not None and claim.epoch == 2
        stage = OpenStage(uuid.uuid4(), "b", 1, utcnow())
        recorder.step_done(run_id, (stage, ('{"seen": ["a"]}', None), '{"seen": ["a", "b"]}', 1.0, None),
                           ("b", "c", None, True, "unconditional edge"), ("b", '{"state": {}, "format": 3}'))
        with pytest.raises(LeaseLostError, match=f"run {run_id} was taken over by the taker at attempt 2; "
                                                 "this process stopped"):
            recorder.open_stage(run_id, 1, OpenStage(uuid.uuid4(), "c", 1, utcnow()))
        recorder.step_done(run_id, (stage, ("{}", None), "{}", 1.0, None), ("b", None, None, True, "end"), None)
        with pytest.raises(LeaseLostError):
            recorder.finish_run(run_id, 1, RunStatus.COMPLETED, result_json="{}")
        assert not recorder.renew(run_id, 1)
    assert {model: count(engine, model) for model in (Stage, Decision, Checkpoint)} == before
    assert Repository(engine).find_checkpoint(run_id).state_data == checkpoint_before
    run = Repository(engine).find_run(run_id)
    assert (run.status, run.owner, run.lease_epoch, run.current_node) == (RunStatus.RUNNING, "the taker", 2, "b")


def test_a_forced_cancel_stops_a_live_async_node_at_once(engine):
    """The heartbeat finds the lease gone: an async node is cancelled at once, nothing more is written."""
    started = threading.Event()
    executor = Executor(engine, registry=chain(slow="b", seconds=30, started=started, asynchronous=True),
                        lease_seconds=LEASE)

    async def go():
        rid = await executor.astart("chain")
        await asyncio.to_thread(started.wait, 10)
        await asyncio.to_thread(lambda: RunControl(engine).cancel(rid, force=True, reason="forced by the test"))
        t0 = time.monotonic()
        run = await executor.await_(rid, timeout=10)
        return run, time.monotonic() - t0

    run, waited = asyncio.run(go())
    assert waited < LEASE + 2  # the heartbeat noticed within a third of the lease, not after the node's 30 s
    assert run.status is RunStatus.CANCELLED and run.cancel_reason == "forced by the test" and run.lease_epoch == 2
    stages = executor.repository.get_stages(run.id)
    assert [(s.node_name, s.status, s.error_message) for s in stages] == [
        ("a", StageStatus.COMPLETED, None), ("b", StageStatus.FAILED, INTERRUPTED)]


def test_a_sync_node_that_outlived_its_lease_has_its_result_refused(engine):
    """A sync node cannot be interrupted: when it returns, its step's fenced write is refused, and
    execute() raises LeaseLostError naming the new holder; the history is the new holder's."""
    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=chain(slow="b", gate=gate, started=started), lease_seconds=LEASE)
    outcome: dict = {}

    def first():
        try:
            outcome["run"] = executor.execute("chain")
        except LeaseLostError as err:
            outcome["error"] = err

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(10)
    run_id = executor.repository.list_runs().data[0].id
    expire(engine, run_id)  # as if the process had stalled past its lease (its heartbeat too)
    taker = Executor(engine, registry=chain(), lease_seconds=LEASE)
    taken = taker.resume(run_id, force=True)
    assert taken.status is RunStatus.COMPLETED and taken.attempt == 2
    gate.set()
    thread.join(10)
    assert "run" not in outcome
    assert str(outcome["error"]) == (f"run {run_id} was taken over by {taker.owner} at attempt 2 (it is completed "
                                     "now); this process stopped")
    stages = Repository(engine).get_stages(run_id)
    assert [(s.node_name, s.status) for s in stages] == [
        ("a", StageStatus.COMPLETED), ("b", StageStatus.FAILED), ("b", StageStatus.COMPLETED),
        ("c", StageStatus.COMPLETED)]
    assert stages[1].error_message == INTERRUPTED
    assert len(Repository(engine).get_decisions(run_id)) == 3


# --------------------------------------------------------------------------- heartbeats


def test_a_heartbeat_keeps_a_long_node_owned(engine):
    """One node three leases long: the heartbeat renews the lease meanwhile, so that nobody can take
    the run over, and the run completes on its first attempt."""
    started = threading.Event()
    with Executor(engine, registry=chain(slow="b", seconds=3 * LEASE, started=started), lease_seconds=LEASE) as first:
        run_id = first.start("chain")
        assert started.wait(10)
        other = Executor(engine, registry=chain(), lease_seconds=LEASE)
        deadline = time.monotonic() + 2.5 * LEASE
        while time.monotonic() < deadline:
            assert other.recover() == []
            with pytest.raises(InvalidStatusError, match="its lease is live"):
                other.resume(run_id, force=True)
            time.sleep(LEASE / 4)
        run = first.wait(run_id, timeout=10)
    assert run.status is RunStatus.COMPLETED and run.attempt == 1 and run.lease_epoch == 1


# --------------------------------------------------------------------------- recovery


def test_recover_finishes_every_run_whose_lease_expired(engine):
    calls: list[str] = []
    registry = chain(calls=calls)
    dead = [left_running(engine, registry, steps=steps) for steps in (0, 1, 2)]
    calls.clear()
    live = Executor(engine, registry=registry, lease_seconds=30)
    with live._recorder() as recorder:  # a pending run a live process holds: not recovered
        held = live._cold_start("chain", {}, recorder, start=False).run_id
    recovered = Executor(engine, registry=registry, lease_seconds=LEASE).recover(concurrency=2)
    assert [r.run_id for r in recovered] == dead and all(r.error is None for r in recovered)
    for r in recovered:
        assert r.run.status is RunStatus.COMPLETED and r.run.result == {"seen": ["a", "b", "c"]}
        assert r.run.attempt == 2 and r.run.lease_epoch == 2
        stages = Repository(engine).get_stages(r.run_id)
        completed = [s.node_name for s in stages if s.status is StageStatus.COMPLETED]
        assert completed == ["a", "b", "c"]  # no completed node twice
        assert [s.error_message for s in stages if s.status is StageStatus.FAILED] == [INTERRUPTED]
    assert sorted(calls) == sorted(["a", "b", "c", "b", "c", "c"])  # each ran again from its checkpoint
    assert Repository(engine).find_run(held).status is RunStatus.PENDING
    assert Executor(engine, registry=registry).recover() == []
    assert Executor(engine, registry=registry).recover("other-workflow") == []


def test_a_pending_run_whose_creator_died_is_recovered(engine):
    registry = chain()
    creator = Executor(engine, registry=registry, lease_seconds=LEASE)
    with creator._recorder() as recorder:
        rid = creator._cold_start("chain", {}, recorder, start=False).run_id
    expire(engine, rid)
    [recovered] = Executor(engine, registry=registry).recover("chain")
    assert recovered.run_id == rid and recovered.run.status is RunStatus.COMPLETED and recovered.run.attempt == 1


# --------------------------------------------------------------------------- what nodes see


def test_nodes_see_a_stable_idempotency_key_and_a_growing_fencing_token(engine):
    seen: list[tuple] = []
    registry = chain(runtime_log=seen)
    run_id = left_running(engine, registry, steps=1)  # a ran, then b was interrupted
    Executor(engine, registry=registry).resume(run_id, force=True)
    assert [(node, key, token) for node, key, token in seen] == [
        ("a", f"{run_id}:a:1", 1), ("b", f"{run_id}:b:1", 2), ("c", f"{run_id}:c:1", 2)]
    runtime = Runtime()
    assert runtime.fencing_token is None and runtime.idempotency_key is None  # outside a node


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_each_durability_mode_applies_its_settings(engine, mode):
    expected = {
        ("sqlite", "sync"): {"journal_mode": "wal", "synchronous": "full"},
        ("sqlite", "async"): {"journal_mode": "wal", "synchronous": "normal"},
        ("postgresql", "sync"): {"synchronous_commit": "on", "fsync": "on"},
        ("postgresql", "async"): {"synchronous_commit": "off", "fsync": "on"},
    }
    other = "async" if mode == "sync" else "sync"
    executor = Executor(engine, registry=chain(), durability=mode)
    for _ in range(2):  # a pooled connection the other mode used last is set back
        with SqlRecorder(engine, durability=other) as recorder:
            assert recorder.durability_settings() == expected[(engine.dialect.name, other)]
        with executor._recorder() as recorder:
            assert recorder.durability_settings() == expected[(engine.dialect.name, mode)]
    assert executor.execute("chain").status is RunStatus.COMPLETED


def test_settings_come_from_arguments_then_the_environment(engine, monkeypatch):
    assert (Executor(engine).lease_seconds, Executor(engine).durability) == (30.0, "sync")
    monkeypatch.setenv("WFKIT_LEASE_SECONDS", "2.5")
    monkeypatch.setenv("WFKIT_DURABILITY", "ASYNC")
    assert (Executor(engine).lease_seconds, Executor(engine).durability) == (2.5, "async")
    assert Executor(engine, lease_seconds=4, durability="sync").lease_seconds == 4.0
    for bad, problem in [("soon", "WFKIT_LEASE_SECONDS='soon' is not a number of seconds"),
                         ("0.1", "WFKIT_LEASE_SECONDS must be a number of seconds from 0.5")]:
        monkeypatch.setenv("WFKIT_LEASE_SECONDS", bad)
        with pytest.raises(ConfigurationError, match=problem):
            Executor(engine)
    monkeypatch.delenv("WFKIT_LEASE_SECONDS")
    monkeypatch.setenv("WFKIT_DURABILITY", "fast")
    with pytest.raises(ConfigurationError, match="WFKIT_DURABILITY='fast': expected sync"):
        Executor(engine)
    with pytest.raises(ConfigurationError, match="unknown durability 'fast': expected one of sync, async"):
        Executor(engine, durability="fast")
    with pytest.raises(ConfigurationError, match="lease_seconds must be a number of seconds"):
        Executor(engine, lease_seconds=float("nan"))


def test_an_executor_that_force_cancels_its_own_run_returns_it_cancelled(engine, caplog):
    """Not a lost lease: the run this executor executes ends cancelled, as forced, and execute()
    returns it; nothing is logged as lost."""
    import logging

    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=chain(slow="b", gate=gate, started=started), lease_seconds=LEASE)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(run=executor.execute("chain")))
    with caplog.at_level(logging.WARNING, logger="wfkit.executor"):
        thread.start()
        assert started.wait(10)
        run_id = executor.repository.list_runs().data[0].id
        assert executor.cancel(run_id, force=True, reason="forced here").status is RunStatus.CANCELLED
        gate.set()
        thread.join(10)
    assert outcome["run"].status is RunStatus.CANCELLED and outcome["run"].cancel_reason == "forced here"
    assert "lost" not in caplog.text and "taken over" not in caplog.text and "ended cancelled" not in caplog.text


def test_the_heartbeat_needs_no_connection_of_a_full_pool(db_url):
    """Every connection of the engine's pool is held by the runs being executed: the heartbeat renews
    through a pool of its own, and a node three leases long keeps its run."""
    from wfkit.store.db import create_engine

    engine = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    try:
        with Executor(engine, registry=chain(slow="b", seconds=3 * LEASE), lease_seconds=LEASE) as executor:
            run_id = executor.start("chain")
            run = executor.wait(run_id, timeout=30)
        assert run.status is RunStatus.COMPLETED and run.attempt == 1, run.error_message
    finally:
        engine.dispose()


def test_the_heartbeat_thread_ends_when_no_run_is_held(engine):
    executor = Executor(engine, registry=chain(slow="b", seconds=0.6 * LEASE), lease_seconds=LEASE)
    executor.execute("chain")  # never closed, as a careless service might: its thread must not stay
    thread = executor.heartbeat._thread
    assert thread is not None  # the long node had it started
    thread.join(3 * LEASE)
    assert not thread.is_alive() and executor.heartbeat._thread is None
    assert executor.execute("chain").status is RunStatus.COMPLETED  # and one starts again when needed


def test_lease_expiry_by_the_database_clock(engine):
    repo = Repository(engine)
    gate, started = threading.Event(), threading.Event()
    with Executor(engine, registry=chain(slow="b", gate=gate, started=started), lease_seconds=LEASE) as executor:
        run_id = executor.start("chain")
        assert started.wait(10)
        assert repo.lease_expired(run_id) is False
        expire(engine, run_id)
        assert repo.lease_expired(run_id) is True
        gate.set()
    assert repo.lease_expired(run_id) is None  # ended (the expired run was not fenced off: nobody took it)
