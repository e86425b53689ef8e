"""The executor, in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from factories import count, saved_checkpoint
from wfkit.errors import (
    CheckpointError,
    InvalidParamsError,
    InvalidStatusError,
    NotFoundError,
    StateNotSerializableError,
    WorkflowNotFoundError,
)
from wfkit.events import CallbackObserver, Event, LoggingObserver, MultiObserver
from wfkit.executor import Executor, checkpoints
from wfkit.graph import END, Snapshot
from wfkit.registry import Registry
from wfkit.runtime import Runtime
from wfkit.executor.control import INTERRUPTED
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, StageStatus, utcnow
from wfkit.store.recorder import SqlRecorder
from wfkit.store.repository import Repository


class Recorder:
    """Collects events."""

    def __init__(self):
        self.events: list[Event] = []

    def on_event(self, event):
        self.events.append(event)

    def kinds(self):
        return [e.kind for e in self.events]


# --------------------------------------------------------------------------- the samples, end to end


@pytest.mark.parametrize(
    "name, params",
    [
        ("text-pipeline", {}),
        ("review-loop", {"threshold": 0.75}),
        ("review-loop", {"threshold": 1.0, "max_rounds": 2}),
        ("branching", {"priority": "express"}),
        ("branching", {}),
    ],
)
def test_samples_execute_and_record_what_the_graph_does(engine, samples, name, params):
    expected = samples.get(name)
    graph, state = expected.build(params)
    walk = graph.run(state)  # the same graph, in memory: what the records must say

    run = Executor(engine, registry=samples).execute(name, params)
    assert run.to_dict() == Repository(engine).find_run(run.id).to_dict()  # what it returns is what it stored
    assert run.status is RunStatus.COMPLETED and run.error_message is None
    assert run.result == graph.result_of(walk.state)
    assert run.started_at <= run.completed_at and run.completed_at.tzinfo is not None
    repo = Repository(engine)
    stages = repo.get_stages(run.id)
    assert [(s.node_name, s.iteration) for s in stages] == [tuple(v) for v in walk.visits]
    assert all(s.status is StageStatus.COMPLETED and s.duration_ms >= 0 for s in stages)
    decisions = repo.get_decisions(run.id)
    assert [(d.from_node, d.to_node, d.predicate_name, d.predicate_result, d.reason) for d in decisions] == [
        (d.from_node, d.to_node, d.predicate_name, d.predicate_result, d.reason) for d in walk.decisions
    ]
    # each stage's input is the state before it; its output the node's updates
    assert stages[0].input_snapshot == state
    assert stages[-1].input_snapshot | stages[-1].output_snapshot == walk.state
    node, snapshot = saved_checkpoint(engine, run.id)
    assert snapshot.state == walk.state and node == walk.visits[-1].node
    assert snapshot.next_node is None


def test_events_arrive_in_order(engine, samples):
    rec = Recorder()
    run = Executor(engine, registry=samples, observers=[rec]).execute("branching", {"priority": "express"})
    assert rec.kinds() == ["run_started"] + ["stage_started", "stage_completed", "decision"] * 3 + ["run_completed"]
    assert all(e.run_id == run.id for e in rec.events)
    assert rec.events[-1].result == run.result


def test_events_carry_what_happened(engine, samples):
    """Each event's fields against the same graph walked in memory; every event is JSON-ready."""
    import json

    from wfkit.events import DecisionMade, RunCompleted, RunStarted, StageCompleted, StageStarted

    graph, state = samples.get("branching").build({"priority": "express"})
    walk = graph.run(state)
    rec = Recorder()
    run = Executor(engine, registry=samples, observers=[rec]).execute("branching", {"priority": "express"})

    started = rec.events[0]
    assert isinstance(started, RunStarted)
    assert (started.workflow_name, started.params, started.resumed) == ("branching", run.params, False)
    steps = [rec.events[i:i + 3] for i in range(1, len(rec.events) - 1, 3)]
    current = state
    for (begun, done, decision), visit, expected in zip(steps, walk.visits, walk.decisions, strict=True):
        assert isinstance(begun, StageStarted) and isinstance(done, StageCompleted)
        assert (begun.node, begun.iteration) == (done.node, done.iteration) == tuple(visit)
        assert dict(begun.input_snapshot) == current
        current = {**current, **done.output_snapshot}
        assert done.duration_ms >= 0
        assert isinstance(decision, DecisionMade)
        assert (decision.from_node, decision.to_node, decision.predicate_name, decision.predicate_result,
                decision.reason) == (expected.from_node, expected.to_node, expected.predicate_name,
                                     expected.predicate_result, expected.reason)
    assert steps[0][2].predicate_name == "is_express" and steps[0][2].reason == "is_express held"
    assert current == walk.state
    assert isinstance(rec.events[-1], RunCompleted) and rec.events[-1].result == run.result
    for event in rec.events:
        data = event.to_dict()
        assert list(data)[:2] == ["kind", "run_id"] and data["run_id"] == str(run.id)
        json.dumps(data)  # snapshots (read-only views of the state) included
    assert rec.events[1].to_dict()["input_snapshot"] == state


def test_failure_cancel_and_resume_events(engine):
    from wfkit.events import RunCancelled, RunFailed, RunStarted, StageFailed

    calls: list[str] = []
    fixed = {"value": False}
    rec = Recorder()
    executor = Executor(engine, registry=chain_registry("flaky", "ab", calls, "b", lambda: fixed["value"]),
                        observers=[rec])
    run = executor.execute("flaky")
    failed_stage, failed_run = rec.events[-2:]
    assert isinstance(failed_stage, StageFailed) and isinstance(failed_run, RunFailed)
    assert (failed_stage.node, failed_stage.iteration) == ("b", 1) and failed_stage.duration_ms >= 0
    assert failed_stage.error == failed_run.error == run.error_message
    assert failed_stage.to_dict()["error"] == run.error_message
    # the node's own exception travels with the events, and its traceback is stored on the stage
    assert isinstance(failed_stage.exception.__cause__, ValueError) and failed_run.exception is failed_stage.exception
    traceback_text = failed_stage.to_dict()["traceback"]
    assert traceback_text.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"{n} is broken")' in traceback_text and traceback_text.endswith("ValueError: b is broken")
    assert failed_run.to_dict()["traceback"] == traceback_text
    [stage] = [s for s in executor.repository.get_stages(run.id) if s.status is StageStatus.FAILED]
    assert stage.error_traceback == traceback_text and "\n" not in stage.error_message

    rec.events.clear()
    fixed["value"] = True
    executor.resume(run.id)
    assert isinstance(rec.events[0], RunStarted) and rec.events[0].resumed is True
    assert rec.kinds() == ["run_started", "stage_started", "stage_completed", "decision", "run_completed"]
    done = rec.events[-1]
    done.to_dict()["result"]["seen"].append("added by an observer")  # a copy, all the way down
    rec.events[1].to_dict()["input_snapshot"]["seen"].append("added by an observer")
    assert done.result == {"seen": ["a", "b"]} and rec.events[1].input_snapshot["seen"] == ["a"]

    gate, started = threading.Event(), threading.Event()
    rec.events.clear()
    gated = Executor(engine, registry=gate_registry(gate, started), observers=[rec])
    run_id = gated.start("gated")
    assert started.wait(10)
    gated.cancel(run_id)
    gate.set()
    gated.wait(run_id, timeout=10)
    assert isinstance(rec.events[-1], RunCancelled) and rec.events[-1].reason.startswith("cancel requested by ")
    assert rec.events[-1].to_dict() == {"kind": "run_cancelled", "run_id": str(run_id), "reason": rec.events[-1].reason}
    stored = gated.repository.find_run(run_id)
    assert stored.cancel_reason == rec.events[-1].reason and f"(pid {os.getpid()})" in stored.cancel_reason


def test_an_observer_that_raises_does_not_break_the_run(engine, samples, caplog):
    def explode(event):
        raise RuntimeError("observer bug")

    rec = Recorder()
    with caplog.at_level(logging.ERROR, logger="wfkit.events"):
        run = Executor(engine, registry=samples, observers=[CallbackObserver(explode), rec]).execute("text-pipeline")
    assert run.status is RunStatus.COMPLETED
    assert len(rec.events) == 14  # the observer after the broken one saw everything
    assert "observer" in caplog.text and "observer bug" in caplog.text and "the run goes on" in caplog.text


def test_plugin_observers_that_fail_are_logged_and_left_out(caplog):
    """``wfkit_observers()`` that raises, returns junk, or lists a non-observer: logged, the rest kept."""
    import wfkit
    from wfkit.plugins import plugin_manager, plugin_observers

    good = Recorder()

    class Raises:
        @wfkit.hookimpl
        def wfkit_observers(self):
            raise RuntimeError("observer hook bug")

    class ReturnsJunk:
        @wfkit.hookimpl
        def wfkit_observers(self):
            return 5

    class ListsOneBadOne:
        @wfkit.hookimpl
        def wfkit_observers(self):
            return [good, "not an observer"]

    pm = plugin_manager()
    before = plugin_observers()
    added = [Raises(), ReturnsJunk(), ListsOneBadOne()]
    for i, plugin in enumerate(added):
        pm.register(plugin, name=f"test-observers-{i}")
    try:
        with caplog.at_level(logging.ERROR, logger="wfkit.plugins"):
            found = plugin_observers()
    finally:
        for plugin in added:
            pm.unregister(plugin)
    assert found[len(before):] == [good]
    assert "'test-observers-0': its observers are skipped: wfkit_observers() raised" in caplog.text and "observer hook bug" in caplog.text
    assert "'test-observers-1': its observers are skipped: wfkit_observers() raised, or returned neither" in caplog.text
    assert "'test-observers-2': wfkit_observers() returned 'not an observer', which has no on_event" in caplog.text


def test_the_logging_observer_logs_failures_at_error_with_the_traceback(engine, caplog):
    calls: list[str] = []
    executor = Executor(engine, registry=chain_registry("flaky", "ab", calls, "b", lambda: False),
                        observers=[LoggingObserver()])
    with caplog.at_level(logging.INFO, logger="wfkit.run"):
        executor.execute("flaky")
    stage_line, run_line = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "b (iteration 1) failed" in stage_line.getMessage() and stage_line.exc_info[0] is ValueError
    assert "failed: node 'b'" in run_line.getMessage() and run_line.exc_info is None
    assert 'raise ValueError(f"{n} is broken")' in caplog.text


def test_logging_observer(engine, samples, caplog):
    with caplog.at_level(logging.INFO, logger="wfkit.run"):
        Executor(engine, registry=samples, observers=[LoggingObserver()]).execute("branching")
    assert "receive -> batch [unconditional]" in caplog.text and "completed" in caplog.text
    assert not MultiObserver()


# --------------------------------------------------------------------------- failures, resume, cancel


def chain_registry(name: str, nodes: str, calls: list[str], broken: str, is_fixed) -> Registry:
    """``name``: the nodes in a line; node ``broken`` raises until ``is_fixed()`` says otherwise."""
    reg = Registry()

    def factory(graph, runtime, params):
        def node(n):
            def fn(state):
                calls.append(n)
                if n == broken and not is_fixed():
                    raise ValueError(f"{n} is broken")
                return {"seen": [*state["seen"], n]}
            return fn

        for n in nodes:
            graph.add_node(n, node(n))
        graph.set_entry_point(nodes[0])
        for a, b in zip(nodes, nodes[1:]):
            graph.add_edge(a, b)
        graph.add_edge(nodes[-1], END)
        return {"seen": []}

    reg.register(name, factory)
    return reg


def test_node_failure_then_resume_does_not_rerun_completed_nodes(engine):
    calls: list[str] = []
    fixed = {"value": False}
    executor = Executor(engine, registry=chain_registry("flaky", "abc", calls, "b", lambda: fixed["value"]),
                        runtime=Runtime({"unused": object()}))
    run = executor.execute("flaky")
    assert run.status is RunStatus.FAILED
    assert run.error_message == "node 'b' (iteration 1) failed: ValueError: b is broken"
    assert run.completed_at is not None and run.result is None
    stages = executor.repository.get_stages(run.id)
    assert [(s.node_name, s.status) for s in stages] == [("a", StageStatus.COMPLETED), ("b", StageStatus.FAILED)]
    assert stages[1].error_message == run.error_message
    assert saved_checkpoint(engine, run.id)[0] == "a"

    assert run.to_dict() == executor.repository.find_run(run.id).to_dict()
    fixed["value"] = True  # the author fixed the cause
    resumed = executor.resume(run.id)
    assert resumed.to_dict() == executor.repository.find_run(run.id).to_dict()
    assert resumed.started_at == run.started_at and resumed.created_at == run.created_at
    assert resumed.status is RunStatus.COMPLETED and resumed.error_message is None
    assert resumed.result == {"seen": ["a", "b", "c"]}
    assert calls == ["a", "b", "b", "c"]  # a did not run again
    stages = executor.repository.get_stages(run.id)
    assert [(s.node_name, s.iteration, s.status.value, s.attempt) for s in stages] == [
        ("a", 1, "completed", 1), ("b", 1, "failed", 1), ("b", 1, "completed", 2), ("c", 1, "completed", 2)
    ]


def test_transition_errors(engine, samples):
    executor = Executor(engine, registry=samples)
    run = executor.execute("text-pipeline")
    with pytest.raises(InvalidStatusError, match="cannot go from completed to running"):
        executor.resume(run.id)
    with pytest.raises(InvalidStatusError, match="cannot go from completed to cancelled"):
        executor.cancel(run.id)
    with engine.begin() as conn:  # as if its process had been killed
        conn.execute(sa.update(Run).where(Run.id == run.id).values(status=RunStatus.RUNNING))
    with pytest.raises(InvalidStatusError, match="--force"):
        executor.resume(run.id)
    with pytest.raises(InvalidStatusError, match="is running, but no process holds it"):
        executor.delete(run.id)
    with pytest.raises(NotFoundError):
        executor.resume(uuid.uuid4())


def test_cold_start_errors_create_no_run(engine, samples):
    executor = Executor(engine, registry=samples)
    with pytest.raises(WorkflowNotFoundError, match="did you mean 'branching'"):
        executor.execute("branchin")
    with pytest.raises(InvalidParamsError, match="threshold"):
        executor.execute("review-loop", {"threshold": "high"})
    assert count(engine, Run) == 0
    with pytest.raises(InvalidParamsError, match="checkpoint_every"):
        Executor(engine, registry=samples, checkpoint_every=0)


def test_a_workflow_that_does_not_build_creates_no_run(engine):
    """The graph is built and validated before the run is recorded: a factory that raises, or a
    graph that does not validate, is an error to the caller, and no run (with a resume that could
    never succeed) is left behind."""
    from wfkit.errors import GraphValidationError, WorkflowBuildError

    reg = Registry()

    def broken(graph, runtime, params):
        raise KeyError("config")

    def invalid(graph, runtime, params):
        graph.add_node("a", lambda s: None)  # no entry point, no way out
        return {}

    def unstorable(graph, runtime, params):
        graph.add_node("a", lambda s: None).set_entry_point("a").set_finish_point("a")
        return {"when": datetime.now()}

    reg.register("broken", broken)
    reg.register("invalid", invalid)
    reg.register("unstorable", unstorable)
    executor = Executor(engine, registry=reg)
    with pytest.raises(WorkflowBuildError, match="the factory of workflow 'broken' raised KeyError"):
        executor.execute("broken")
    with pytest.raises(GraphValidationError, match="graph 'invalid' is invalid"):
        executor.start("invalid")
    with pytest.raises(StateNotSerializableError, match="initial state of workflow 'unstorable'.*key 'when'"):
        asyncio.run(executor.aexecute("unstorable"))
    assert executor.repository.list_runs().total == 0


def test_a_resume_whose_workflow_no_longer_builds_leaves_the_run_as_it_was(engine):
    from wfkit.errors import WorkflowBuildError

    calls: list[str] = []
    reg = chain_registry("two", "ab", calls, "b", lambda: False)
    executor = Executor(engine, registry=reg)
    run = executor.execute("two")
    assert run.status is RunStatus.FAILED

    def now_broken(graph, runtime, params):
        raise RuntimeError("the new version cannot build")

    reg.register("two", now_broken, replace=True)
    with pytest.raises(WorkflowBuildError, match="the new version cannot build"):
        executor.resume(run.id)
    after = executor.repository.find_run(run.id)
    assert after.to_dict() == run.to_dict()  # untouched: still failed, same error, same times


def pending_run(executor: Executor, name: str, params: dict | None = None):
    """The plan of a run created pending, as start() creates it, without starting it."""
    with SqlRecorder(executor.engine) as recorder:
        return executor._cold_start(name, params, recorder, start=False)


def gate_registry(gate: threading.Event, started: threading.Event, asynchronous: bool = False) -> Registry:
    """``gated``: first -> slow -> last; ``slow`` waits for ``gate`` (or sleeps, if async)."""
    reg = Registry()

    def gated(graph, runtime, params):
        def slow(state):
            started.set()
            gate.wait(10)
            return {"slow": True}

        async def aslow(state):
            started.set()
            await asyncio.sleep(10)
            return {"slow": True}

        graph.add_node("first", lambda s: {"first": True})
        graph.add_node("slow", aslow if asynchronous else slow)
        graph.add_node("last", lambda s: {"last": True})
        graph.set_entry_point("first")
        graph.add_edge("first", "slow").add_edge("slow", "last").add_edge("last", END)
        return {}

    reg.register("gated", gated)
    return reg


def test_cancel_between_nodes_then_resume(engine):
    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=gate_registry(gate, started))
    run_id = executor.start("gated")
    assert started.wait(10)
    running = executor.cancel(run_id)
    assert running.status is RunStatus.RUNNING and running.cancel_requested_at is not None
    gate.set()  # the node finishes; the executor stops before the next one
    run = executor.wait(run_id, timeout=10)
    assert run.status is RunStatus.CANCELLED
    stages = executor.repository.get_stages(run_id)
    assert [(s.node_name, s.status.value) for s in stages] == [("first", "completed"), ("slow", "completed")]
    assert saved_checkpoint(engine, run_id)[0] == "slow"
    resumed = executor.resume(run_id)
    assert resumed.status is RunStatus.COMPLETED and resumed.cancel_requested_at is None
    assert resumed.result == {"first": True, "slow": True, "last": True}
    assert [s.node_name for s in executor.repository.get_stages(run_id)] == ["first", "slow", "last"]


@pytest.mark.parametrize("slow_last", [False, True])
def test_what_execute_returns_after_a_cancel_from_elsewhere_is_what_it_stored(engine, slow_last):
    """Another executor (as another process would) requests the cancel while ``execute()`` waits in
    a node. Before the last node: the run ends cancelled. During it: there is no next node to stop
    before, so the run completes, its cancel request kept. Either way it returns what it stored."""
    gate, started = threading.Event(), threading.Event()
    reg = Registry()

    def slow(state):
        started.set()
        gate.wait(10)
        return {"slow": True}

    def factory(graph, runtime, params):
        graph.add_node("slow", slow)
        graph.add_node("other", lambda s: {"other": True})
        first, last = ("other", "slow") if slow_last else ("slow", "other")
        graph.set_entry_point(first)
        graph.add_edge(first, last).add_edge(last, END)
        return {}

    reg.register("slow", factory)
    returned: list[Run] = []
    thread = threading.Thread(target=lambda: returned.append(Executor(engine, registry=reg).execute("slow")))
    thread.start()
    assert started.wait(10)
    run_id = Repository(engine).list_runs().data[0].id
    assert Executor(engine, registry=Registry()).cancel(run_id).cancel_requested_at is not None
    gate.set()
    thread.join(10)
    (run,) = returned
    assert run.status is (RunStatus.COMPLETED if slow_last else RunStatus.CANCELLED)
    assert run.cancel_requested_at is not None
    assert run.to_dict() == Repository(engine).find_run(run_id).to_dict()


def test_a_cancel_while_a_pending_run_starts_is_not_lost(engine, samples):
    """cancel() reads the run pending; it starts before the cancel's write: the request is recorded."""
    from wfkit.store.recorder import SqlRecorder

    executor = Executor(engine, registry=samples)
    plan = pending_run(executor, "branching")
    find_run = executor.repository.find_run

    def find_then_start(run_id):
        run = find_run(run_id)
        if run.status is RunStatus.PENDING:  # its creator starts it right after this read
            with SqlRecorder(engine) as rec:
                assert rec.start_pending(plan.run_id, plan.epoch) is not None
        return run

    executor.repository.find_run = find_then_start
    try:
        run = executor.cancel(plan.run_id)
    finally:
        del executor.repository.find_run
    assert run.status is RunStatus.RUNNING and run.cancel_requested_at is not None


def test_a_run_cancelled_before_its_thread_starts_it_just_ends(engine, samples, caplog):
    """cancel() wins against the background start: the run stays cancelled, nothing is logged as failed."""
    executor = Executor(engine, registry=samples)
    plan = pending_run(executor, "branching")
    assert executor.cancel(plan.run_id).status is RunStatus.CANCELLED
    with caplog.at_level(logging.ERROR):
        executor._hot_in_background(plan, executor._open_recorder())  # what start()'s thread does, late
        assert asyncio.run(executor._ahot(plan)).status is RunStatus.CANCELLED  # and astart()'s task
    assert not caplog.records
    run = executor.repository.find_run(plan.run_id)
    assert run.status is RunStatus.CANCELLED and executor.repository.get_stages(run.id) == []


def test_cancel_a_pending_run_at_once(engine, samples):
    executor = Executor(engine, registry=samples)
    run_id = pending_run(executor, "branching").run_id
    run = executor.cancel(run_id)
    assert run.status is RunStatus.CANCELLED and run.completed_at is not None
    assert executor.resume(run_id).status is RunStatus.COMPLETED


def test_async_cancel_cancels_the_running_node_task(engine):
    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=gate_registry(gate, started, asynchronous=True))

    async def scenario():
        task = asyncio.create_task(executor.aexecute("gated"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        run_id = executor.repository.list_runs().data[0].id
        executor.cancel(run_id)
        return await asyncio.wait_for(task, 5)

    run = asyncio.run(scenario())
    assert run.status is RunStatus.CANCELLED
    stages = executor.repository.get_stages(run.id)
    assert [(s.node_name, s.status.value) for s in stages] == [("first", "completed"), ("slow", "failed")]
    assert stages[1].error_message == "cancelled: cancel requested while the node ran"

    async def fast_slow(state):
        return {"slow": "fast now"}

    graph_reg = gate_registry(gate, started)  # a sync 'slow' that passes at once
    gate.set()
    again = asyncio.run(Executor(engine, registry=graph_reg).aresume(run.id))
    assert again.status is RunStatus.COMPLETED
    assert [s.node_name for s in Repository(engine).get_stages(run.id)] == ["first", "slow", "slow", "last"]


def test_astart_await_run_and_acancel(engine, samples):
    """The async twins of start/wait/cancel/delete: a run as a task on the loop, cancelled in its async node."""
    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=gate_registry(gate, started, asynchronous=True))

    async def until_started():
        while not started.is_set():
            await asyncio.sleep(0.01)  # the loop is free while the run's task runs on it

    async def scenario():
        run_id = await executor.astart("gated")
        await asyncio.wait_for(until_started(), 10)
        with pytest.raises(TimeoutError, match=f"run {run_id} has not ended after 0.05 s; it goes on"):
            await executor.await_(run_id, timeout=0.05)
        assert executor.repository.find_run(run_id).status is RunStatus.RUNNING
        with pytest.raises(InvalidStatusError, match="await executor.await_"):
            executor.wait(run_id)  # it would block the loop that runs it
        requested = await executor.acancel(run_id)
        assert requested.cancel_requested_at is not None
        return await executor.await_(run_id, timeout=5)

    run = asyncio.run(scenario())
    assert run.status is RunStatus.CANCELLED  # in 'slow', which sleeps 10 s: its task was cancelled
    stages = executor.repository.get_stages(run.id)
    assert [(s.node_name, s.status.value) for s in stages] == [("first", "completed"), ("slow", "failed")]

    other = Executor(engine, registry=samples)

    async def more():
        done = await other.await_run(await other.astart("branching"))
        threaded = await other.await_run(other.start("text-pipeline"), timeout=10)  # a thread's run too
        await other.adelete(done.id)
        return done, threaded

    done, threaded = asyncio.run(more())
    assert done.status is RunStatus.COMPLETED and threaded.status is RunStatus.COMPLETED
    with pytest.raises(NotFoundError):
        other.repository.find_run(done.id)
    assert other._background == {}  # a finished run's task is not kept


def test_a_loop_that_ends_first_cancels_its_runs_and_await_run_still_answers(engine):
    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=gate_registry(gate, started, asynchronous=True))

    async def fire_and_forget():
        run_id = await executor.astart("gated")
        while not started.is_set():
            await asyncio.sleep(0.01)
        return run_id

    run_id = asyncio.run(asyncio.wait_for(fire_and_forget(), 10))  # the loop ends with the run in 'slow'
    run = asyncio.run(executor.await_run(run_id, timeout=5))  # another loop
    assert run.status is RunStatus.CANCELLED
    assert [s.status.value for s in executor.repository.get_stages(run_id)] == ["completed", "failed"]
    assert executor._background == {}


def test_cancelling_the_awaiting_task_cancels_the_run(engine):
    gate, started = threading.Event(), threading.Event()
    executor = Executor(engine, registry=gate_registry(gate, started, asynchronous=True))

    async def scenario():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(executor.aexecute("gated"), 0.5)

    asyncio.run(scenario())
    run = executor.repository.list_runs().data[0]
    assert run.status is RunStatus.CANCELLED


def test_delete_removes_the_run_and_its_history(engine, samples):
    executor = Executor(engine, registry=samples)
    keep = executor.execute("branching")
    gone = executor.execute("review-loop")
    executor.delete(str(gone.id))
    assert [r.id for r in executor.repository.list_runs().data] == [keep.id]
    assert count(engine, Checkpoint) == 1
    with engine.connect() as conn:
        for model in (Stage, Decision):
            assert conn.execute(sa.select(sa.func.count()).select_from(model).where(model.run_id == gone.id)).scalar() == 0
    with pytest.raises(NotFoundError):
        executor.delete(gone.id)


def test_checkpoint_interval(engine):
    """With checkpoint_every=2, a failure at the 4th node resumes from the 2nd: the 3rd runs again."""
    calls: list[str] = []
    fixed = {"value": False}
    reg = chain_registry("four", "abcd", calls, "d", lambda: fixed["value"])
    executor = Executor(engine, registry=reg, checkpoint_every=2)
    run = executor.execute("four")
    assert run.status is RunStatus.FAILED
    node, snapshot = saved_checkpoint(engine, run.id)
    assert node == "b" and snapshot.next_node == "c"  # none after c: the interval skipped it
    fixed["value"] = True
    assert executor.resume(run.id).result == {"seen": ["a", "b", "c", "d"]}
    assert calls == ["a", "b", "c", "d", "c", "d"]


def test_the_checkpoint_format_round_trips_and_refuses_what_it_cannot_store():
    snapshot = Snapshot({"a": 1, "nested": {"k": [1, 2]}}, "n2", {"n1": 3})
    text = checkpoints.encode(snapshot)
    assert json.loads(text) == {**snapshot.to_dict(), "format": checkpoints.FORMAT}
    assert checkpoints.decode(json.loads(text)) == snapshot
    # the run loop hands in the state it encoded already: the same text
    assert checkpoints.encode(snapshot, '{"a":1,"nested":{"k":[1,2]}}') == text
    assert checkpoints.decode(json.loads(checkpoints.encode(Snapshot({}, None)))) == Snapshot({}, None, {})
    with pytest.raises(StateNotSerializableError, match=r"checkpoint's state is not JSON-serializable: key 'when' holds datetime"):
        checkpoints.encode(Snapshot({"a": 1, "when": datetime.now()}, "n"))


@pytest.mark.parametrize("state_data, problem", [
    ({"state": {}, "next_node": None, "counters": {}}, "was not written by wfkit's executor .* cannot be resumed"),
    ({"state": {}, "next_node": None, "counters": {}, "format": 4}, "is in format 4; this wfkit reads formats 1, 2, 3"),
    ({"stage": "0193", "next_node": None, "counters": {}, "format": 3}, "names stage '0193', whose state was not given"),
    ({"state": {}, "next_node": None, "counters": {}, "format": True}, "is in format True"),
    ({"state": {}, "next_node": "b", "counters": {}, "route_from": "a", "format": 2}, "is damaged: 'route_from' must be a node name"),
    ({"next_node": "x", "format": 1}, "is damaged: it lacks 'state', 'counters'"),
    ({"state": {"a": 1}, "counters": {}, "format": 1}, "is damaged: it lacks 'next_node'"),
    ({"state": 5, "next_node": None, "counters": {}, "format": 1}, "is damaged: 'state' must be a JSON object, not int"),
    ({"state": {}, "next_node": [], "counters": {}, "format": 1}, r"is damaged: 'next_node' must be a node name or null, not \[\]"),
    ({"state": {}, "next_node": "b", "counters": {"a": -1}, "format": 1}, "is damaged: 'counters' must map node names"),
    ({"state": {}, "next_node": "b", "counters": [["a", 1]], "format": 1}, "is damaged: 'counters' must map node names"),
    ([1, 2, 3], "is damaged: a JSON object was expected, not list"),
    (None, "is damaged: a JSON object was expected, not NoneType"),
])
def test_a_checkpoint_in_another_format_is_a_clear_error(state_data, problem):
    with pytest.raises(CheckpointError, match=f"the checkpoint of run r1 {problem}"):
        checkpoints.decode(state_data, "r1")


def test_a_resume_from_a_checkpoint_it_cannot_read_changes_nothing(engine, samples):
    executor = Executor(engine, registry=samples)
    run = executor.execute("branching")
    with engine.begin() as conn:  # a run written by some other version of wfkit, failed since
        conn.execute(sa.update(Checkpoint).values(state_data={"state": {}, "format": 99}))
        conn.execute(sa.update(Run).values(status=RunStatus.FAILED))
    with pytest.raises(CheckpointError, match="in format 99"):
        executor.resume(run.id)
    assert executor.repository.find_run(run.id).status is RunStatus.FAILED


def test_find_checkpoint(engine, samples):
    repo = Repository(engine)
    run = Executor(engine, registry=samples).execute("branching")
    saved = repo.find_checkpoint(str(run.id))
    assert (saved.run_id, saved.checkpoint_node) == (run.id, "ship")
    assert checkpoints.load(repo, run.id).snapshot.state == run.result
    # the checkpoint names the last stage: its input (itself a reference to the stage before) and its output
    # hold the state
    stage = repo.find_stage(saved.state_data["stage"])
    assert stage.node_name == "ship" and stage.input_snapshot is None and stage.input_from is not None
    assert repo.state_after(run.id, stage.id) == run.result
    assert saved.updated_at.tzinfo is not None
    Executor(engine, registry=samples).delete(run.id)
    with pytest.raises(NotFoundError, match=f"run {run.id} has no checkpoint"):
        repo.find_checkpoint(run.id)


def test_history_that_cannot_be_written_fails_the_run_cleanly(engine, samples):
    """The SQL recorder is not isolated like other observers: no history, no run."""
    from wfkit.errors import DatabaseError
    from wfkit.events import DecisionMade

    def break_history(event):
        if isinstance(event, DecisionMade) and event.from_node == "receive":
            with engine.begin() as conn:  # another connection takes the decisions table away
                conn.exec_driver_sql("ALTER TABLE decisions RENAME TO decisions_gone")

    try:
        with pytest.raises(DatabaseError, match="has no table decisions, though it is at this wfkit's newest "
                           "migration") as info:
            Executor(engine, registry=samples, observers=[CallbackObserver(break_history)]).execute("branching")
        run = Repository(engine).list_runs().data[0]
        assert run.status is RunStatus.FAILED
        assert run.error_message == f"the run stopped: DatabaseNotMigratedError: {info.value}"
        # the step whose history failed was not half-written: no decision, no next stage; its stage failed
        stages = Repository(engine).get_stages(run.id)
        assert [(s.node_name, s.status.value) for s in stages] == [("receive", "completed"), ("batch", "failed")]
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE decisions_gone RENAME TO decisions")
    assert [d.from_node for d in Repository(engine).get_decisions(run.id)] == ["receive"]


@pytest.mark.parametrize(
    "value, holds",
    [({"a", "b"}, "set"), (float("nan"), "float"), ("nul \x00 char", "str"), ("lone \ud800 surrogate", "str")],
)
def test_state_values_no_backend_can_store_fail_the_run(engine, value, holds):
    reg = Registry()

    def bad(graph, runtime, params):
        graph.add_node("ok", lambda s: {"n": 1})
        graph.add_node("oops", lambda s: {"bad": value})
        graph.set_entry_point("ok")
        graph.add_edge("ok", "oops").add_edge("oops", END)
        return {}

    reg.register("bad", bad)
    run = Executor(engine, registry=reg).execute("bad")
    assert run.status is RunStatus.FAILED
    assert run.error_message.startswith(f"the output of node 'oops' is not JSON-serializable: key 'bad' holds {holds}")
    assert [s.status.value for s in Repository(engine).get_stages(run.id)] == ["completed", "failed"]


def test_text_that_only_looks_like_a_nul_escape_is_stored(engine):
    """A backslash followed by "u0000" is text like any other (JSON writes it as \\\\u0000)."""
    reg = Registry()
    tricky = {"path": "C:\\u0000dir", "both": "\\\\u0000 and \\u0000x"}

    def factory(graph, runtime, params):
        graph.add_node("only", lambda s: tricky)
        graph.set_entry_point("only")
        graph.add_edge("only", END)
        return {}

    reg.register("tricky", factory)
    run = Executor(engine, registry=reg).execute("tricky")
    assert run.status is RunStatus.COMPLETED, run.error_message
    assert Repository(engine).find_run(run.id).result == tricky


def test_ctrl_c_while_the_graph_is_built_leaves_no_run(engine):
    reg = Registry()

    def interrupted(graph, runtime, params):
        raise KeyboardInterrupt

    reg.register("interrupted", interrupted)
    executor = Executor(engine, registry=reg)
    with pytest.raises(KeyboardInterrupt):
        executor.execute("interrupted")
    assert executor.repository.list_runs().total == 0  # the graph is built before the run is recorded


def test_a_cancel_request_stops_the_next_stage_from_starting(engine, samples):
    from wfkit.store.recorder import OpenStage, SqlRecorder

    executor = Executor(engine, registry=samples)
    plan = pending_run(executor, "branching")
    receive = OpenStage(uuid.uuid4(), "receive", 1, utcnow())
    with SqlRecorder(engine) as rec:
        rec.start_pending(plan.run_id, plan.epoch)
        assert rec.open_stage(plan.run_id, plan.epoch, receive) == (None, None)
        assert executor.repository.find_run(plan.run_id).current_node == "receive"
        assert rec.request_cancel(plan.run_id, "asked by the test")
        rec.step_done(plan.run_id, (receive, ("{}", None), "{}", 1.0, None), ("receive", "batch", None, True, "edge"), None)
        requested, reason = rec.open_stage(plan.run_id, plan.epoch, OpenStage(uuid.uuid4(), "batch", 1, utcnow()))
        assert requested is not None and reason == "asked by the test"
    run = executor.repository.find_run(plan.run_id)
    assert run.current_node is None and run.current_stage_id is None  # no next stage was made current
    assert [(s.node_name, s.status) for s in executor.repository.get_stages(plan.run_id)] == [
        ("receive", StageStatus.COMPLETED)]


def test_force_cancel_ends_a_run_whose_process_is_gone_and_it_resumes(engine, samples):
    """A process died inside a node: the run says running until its lease expires. cancel(force=True)
    ends it cancelled at once, the stage it was executing is recorded failed, and resume finishes
    the run."""
    from wfkit.store.recorder import OpenStage, SqlRecorder

    executor = Executor(engine, registry=samples)
    expected = Executor(engine, registry=samples).execute("branching").result
    plan = pending_run(executor, "branching")
    with SqlRecorder(engine) as rec:  # what the dead process had written
        rec.start_pending(plan.run_id, plan.epoch)
        rec.open_stage(plan.run_id, plan.epoch, OpenStage(uuid.uuid4(), "receive", 1, utcnow()))
    [stage] = executor.repository.get_stages(plan.run_id)  # shown from the run's row while it runs
    assert (stage.node_name, stage.status, stage.input_snapshot) == ("receive", StageStatus.STARTED, None)
    requested = executor.cancel(plan.run_id)  # without force: only a request, the run stays running
    assert requested.status is RunStatus.RUNNING and requested.cancel_requested_at is not None
    run = executor.cancel(plan.run_id, force=True)
    assert run.status is RunStatus.CANCELLED and run.completed_at is not None
    assert run.lease_epoch == plan.epoch + 1 and run.lease_expires_at is None and run.current_node is None
    [failed] = executor.repository.get_stages(plan.run_id)
    assert failed.id == stage.id and failed.status is StageStatus.FAILED and failed.error_message == INTERRUPTED
    assert stage.attempt == failed.attempt == 1  # the attempt that ran it, on the run's row and on its own
    with pytest.raises(InvalidStatusError, match="cannot go from cancelled to cancelled"):
        executor.cancel(plan.run_id, force=True)
    resumed = executor.resume(plan.run_id)
    assert resumed.status is RunStatus.COMPLETED and resumed.result == expected
    assert [s.attempt for s in executor.repository.get_stages(plan.run_id)] == [1, 2, 2, 2]


@pytest.mark.parametrize("where", ["slow", "last"])
def test_a_forced_cancel_fences_off_a_process_that_was_alive(engine, where, caplog):
    """cancel(force=True) while the process is in fact still in a node: the forced cancel raises the
    run's lease epoch, so that the live process's next write (its step, or its completion if that
    was the last node) is fenced off: it writes nothing more and stops. The run stays cancelled, as
    forced, with the stage it was executing failed, and resumes from its last checkpoint."""
    from wfkit.executor import RunControl

    gate, started = threading.Event(), threading.Event()
    reg = Registry()
    calls = []

    def factory(graph, runtime, params):
        def node(name):
            def run(state):
                calls.append(name)
                if name == where and len(calls) <= 2:
                    started.set()
                    gate.wait(10)
                return {name: True}
            return run

        for name in ("slow", "last"):
            graph.add_node(name, node(name))
        return graph.set_entry_point("slow").add_edge("slow", "last").set_finish_point("last") and {}

    reg.register("two", factory)
    with Executor(engine, registry=reg) as executor:
        run_id = executor.start("two")
        assert started.wait(10)
        with RunControl(engine) as control:
            assert control.cancel(run_id, force=True, reason="forced by the test").status is RunStatus.CANCELLED
        with caplog.at_level(logging.WARNING, logger="wfkit.executor"):
            gate.set()
            run = executor.wait(run_id, timeout=10)
        assert f"run {run_id} was ended cancelled by another process (forced by the test); this process " \
               "stopped" in caplog.text
        assert run.status is RunStatus.CANCELLED and run.result is None and run.cancel_reason == "forced by the test"
        stages = executor.repository.get_stages(run_id)
        assert [(s.node_name, s.status) for s in stages] == (
            [("slow", StageStatus.FAILED)] if where == "slow"
            else [("slow", StageStatus.COMPLETED), ("last", StageStatus.FAILED)])
        assert stages[-1].error_message == INTERRUPTED
        # the stage it was executing keeps its input: the state the checkpoint names (none before the first node)
        assert stages[-1].input_snapshot == ({"slow": True} if where == "last" else None)
        resumed = executor.resume(run_id)
    assert resumed.status is RunStatus.COMPLETED and resumed.result == {"slow": True, "last": True}
    assert resumed.attempt == 2


def test_an_autocommit_engine_still_writes_each_step_atomically_and_keeps_its_setting(db_url, samples):
    """An engine made with AUTOCOMMIT: the recorder still groups a step's writes in one transaction
    (SQLite opens none by itself then), and hands connections back with the engine's setting."""
    from wfkit.store.db import create_engine

    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    sent: list[str] = []
    if engine.dialect.name == "sqlite":  # what sqlite3 sends, BEGIN and COMMIT included
        sa.event.listen(engine, "connect", lambda dbapi_conn, _rec: dbapi_conn.set_trace_callback(sent.append))
    try:
        run = Executor(engine, registry=samples).execute("text-pipeline", {"text": "a b a"})
        assert run.status is RunStatus.COMPLETED
        stages = Repository(engine).get_stages(run.id)
        assert stages and all(s.status is StageStatus.COMPLETED for s in stages)
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            if engine.dialect.name == "sqlite":
                assert driver.isolation_level is None
                steps = [i for i, text in enumerate(sent) if text.startswith("INSERT INTO decisions")]
                assert len(steps) == len(stages)
                for i in steps:  # each decision is written inside a transaction that commits after it
                    opened = max(j for j in range(i) if sent[j].startswith("BEGIN"))
                    assert not any(t.startswith("COMMIT") for t in sent[opened:i])
            else:
                assert driver.autocommit is True
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- interrupts at a step boundary


class _Interrupt:
    """Raises KeyboardInterrupt (as Ctrl-C or a signal would) at one chosen point of the second step."""

    def __init__(self, monkeypatch, point: str):
        from wfkit.store.recorder import SqlRecorder

        self.fired = False
        seen = {"step_done": 0}
        step_done = SqlRecorder.step_done
        run = SqlRecorder._run

        def interrupting_step_done(recorder, *args, **kwargs):
            seen["step_done"] += 1
            if point == "before buffering" and seen["step_done"] == 2:
                self.fire()
            step_done(recorder, *args, **kwargs)
            if point == "after buffering" and seen["step_done"] == 2:
                self.fire()

        def interrupting_run(recorder, name, params):
            # SQLite writes a step statement by statement: interrupt it between the completion and
            # the checkpoint, inside the open transaction
            if point == "mid-write" and name == "update_checkpoint" and seen["step_done"] == 2 and not self.fired:
                self.fire()
            return run(recorder, name, params)

        monkeypatch.setattr(SqlRecorder, "step_done", interrupting_step_done)
        monkeypatch.setattr(SqlRecorder, "_run", interrupting_run)

    def fire(self) -> None:
        self.fired = True
        raise KeyboardInterrupt


@pytest.mark.parametrize("point", ["before buffering", "after buffering"])
def test_an_interrupt_at_a_step_boundary_never_commits_half_a_step(engine, monkeypatch, point):
    """Whatever the instant, a completed node's stage, decision and checkpoint are committed together
    or not at all: the resumed run runs no completed node again, and ends as an uninterrupted one."""
    _interrupted_at_a_boundary(engine, monkeypatch, point)


def test_an_interrupt_inside_a_step_write_commits_none_of_it(sqlite_url, monkeypatch):
    """SQLite writes a step statement by statement: interrupted between two of them, inside the open
    transaction, none of the step is committed. (On PostgreSQL a step is one statement: there is no
    instant inside it to interrupt.)"""
    from wfkit.store.db import create_engine

    engine = create_engine(sqlite_url)
    try:
        _interrupted_at_a_boundary(engine, monkeypatch, "mid-write")
    finally:
        engine.dispose()


def _interrupted_at_a_boundary(engine, monkeypatch, point: str) -> None:
    calls: list[str] = []
    executor = Executor(engine, registry=chain_registry("four", "abcd", calls, "", lambda: True))
    interrupt = _Interrupt(monkeypatch, point)
    with pytest.raises(KeyboardInterrupt):
        executor.execute("four")
    assert interrupt.fired
    monkeypatch.undo()
    [run] = executor.repository.list_runs().data
    assert run.status is RunStatus.CANCELLED
    stages = executor.repository.get_stages(run.id)
    completed = [s.node_name for s in stages if s.status is StageStatus.COMPLETED]
    decisions = [d.from_node for d in executor.repository.get_decisions(run.id)]
    node, snapshot = saved_checkpoint(engine, run.id)
    assert decisions == completed and node == completed[-1]  # history and checkpoint agree
    assert snapshot.next_node == "abcd"[len(completed)] and snapshot.state == {"seen": completed}
    resumed = executor.resume(run.id)
    assert resumed.status is RunStatus.COMPLETED and resumed.result == {"seen": list("abcd")}
    after = [s.node_name for s in executor.repository.get_stages(run.id) if s.status is StageStatus.COMPLETED]
    assert after == list("abcd")  # no completed node ran again


def test_a_full_pool_is_a_clear_error_and_no_run_is_left_pending(db_url):
    """Each background run holds a connection: with the pool full, start() says which limit was hit
    (and how to raise it) before creating a run that could never start."""
    from wfkit.errors import DatabaseError
    from wfkit.store.db import create_engine

    gate, started = threading.Event(), threading.Event()
    engine = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        executor = Executor(engine, registry=gate_registry(gate, started))
        first = executor.start("gated")
        assert started.wait(10)
        with pytest.raises(DatabaseError, match=r"all 1 connections of the engine's pool are in use "
                                                r"\(pool_size=1, max_overflow=0; each run being executed holds one\)"):
            executor.start("gated")
        with pytest.raises(DatabaseError, match="pool_size=1"):
            asyncio.run(executor.astart("gated"))
        gate.set()
        assert executor.wait(first, timeout=10).status is RunStatus.COMPLETED
        assert executor.repository.list_runs().total == 1  # no other run was created
    finally:
        gate.set()
        engine.dispose()


# --------------------------------------------------------------------------- routing that fails after a node


@pytest.mark.parametrize("failure", ["no edge holds", "the predicate raises"])
def test_a_routing_failure_is_the_routes_not_the_nodes_and_a_resume_routes_again(engine, failure):
    """The node succeeded: its stage is completed, a decision records that no edge held, the run
    fails with the routing error, and a resume chooses the route again without running the node."""
    from wfkit.errors import NoRouteError, RouteError

    calls: list[str] = []
    fixed = {"value": False}

    def ready(state):
        if not fixed["value"] and failure == "the predicate raises":
            raise KeyError("threshold")
        return fixed["value"]

    def factory(graph, runtime, params):
        graph.add_node("a", lambda s: calls.append("a") or {"a": True})
        graph.add_node("b", lambda s: calls.append("b") or {"b": True})
        graph.set_entry_point("a")
        graph.add_edge("a", "b", when=ready, name="ready")
        graph.add_edge("b", END)
        return {}

    reg = Registry()
    reg.register("routed", factory)
    events = Recorder()
    executor = Executor(engine, registry=reg, observers=[events])
    run = executor.execute("routed")
    assert run.status is RunStatus.FAILED and calls == ["a"]
    expected = NoRouteError if failure == "no edge holds" else RouteError
    assert isinstance(events.events[-1].exception, expected)
    [stage] = executor.repository.get_stages(run.id)
    assert stage.node_name == "a" and stage.status is StageStatus.COMPLETED  # the node is not blamed
    [decision] = executor.repository.get_decisions(run.id)
    assert (decision.from_node, decision.to_node, decision.predicate_name, decision.predicate_result) == \
        ("a", None, "ready", False)
    assert decision.reason == run.error_message
    node, snapshot = saved_checkpoint(engine, run.id)
    assert (node, snapshot.next_node, snapshot.route_from, snapshot.state) == ("a", None, "a", {"a": True})

    again = executor.resume(run.id)  # still no route: fails again, runs nothing
    assert again.status is RunStatus.FAILED and calls == ["a"]
    fixed["value"] = True
    done = executor.resume(run.id)
    assert done.status is RunStatus.COMPLETED and done.result == {"a": True, "b": True}
    assert calls == ["a", "b"]  # a ran once
    decisions = [(d.from_node, d.to_node, d.predicate_result) for d in executor.repository.get_decisions(run.id)]
    assert decisions == [("a", None, False), ("a", None, False), ("a", "b", True), ("b", None, True)]


def test_waiting_is_like_a_future_and_close_waits_for_the_threads(engine, samples):
    """wait() with a timeout raises TimeoutError while the run goes on; wait() works on any run this
    executor started, a task's too (from another thread); close() waits for its threads, and the
    executor is a context manager."""
    gate, started = threading.Event(), threading.Event()
    with Executor(engine, registry=gate_registry(gate, started)) as executor:
        run_id = executor.start("gated")
        assert started.wait(10)
        with pytest.raises(TimeoutError, match=f"run {run_id} has not ended after 0.2 s"):
            executor.wait(run_id, timeout=0.2)
        assert executor.repository.find_run(run_id).status is RunStatus.RUNNING
        gate.set()
        assert executor.wait(run_id, timeout=10).status is RunStatus.COMPLETED
        slow_gate, slow_started = threading.Event(), threading.Event()
        slow = Executor(engine, registry=gate_registry(slow_gate, slow_started))
        left_running = slow.start("gated")
        assert slow_started.wait(10)
        threading.Timer(0.3, slow_gate.set).start()
        slow.close()  # returns once the run has ended
        assert slow.repository.find_run(left_running).status is RunStatus.COMPLETED

    executor = Executor(engine, registry=samples)
    loop_started = threading.Event()
    results: dict[str, Any] = {}

    async def on_a_loop():
        results["id"] = await executor.astart("text-pipeline")
        loop_started.set()
        await asyncio.sleep(0.5)  # keep the loop alive while another thread waits

    runner = threading.Thread(target=lambda: asyncio.run(on_a_loop()))
    runner.start()
    assert loop_started.wait(10)
    assert executor.wait(results["id"], timeout=10).status is RunStatus.COMPLETED  # from this thread
    runner.join(10)
    assert executor.await_run == executor.await_  # the earlier name stays


def test_params_and_outputs_that_nest_too_deeply_are_refused_before_anything_is_stored(engine):
    from wfkit.jsontext import MAX_DEPTH

    def nested(levels):
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    reg = Registry()

    def deep_output(graph, runtime, params):
        graph.add_node("n", lambda s: {"payload": nested(MAX_DEPTH + 20)}).set_entry_point("n").set_finish_point("n")
        return {}

    reg.register("plain", lambda graph, runtime, params: graph.add_node("n", lambda s: None).set_entry_point("n")
                 .set_finish_point("n") and {})
    reg.register("deep-output", deep_output)
    from pydantic import BaseModel

    class Anything(BaseModel):
        data: Any = None

    reg.register("modelled", lambda graph, runtime, params: graph.add_node("n", lambda s: None).set_entry_point("n")
                 .set_finish_point("n") and {}, params=Anything)
    executor = Executor(engine, registry=reg)
    for name, key in (("plain", "x"), ("modelled", "data")):  # a model's own depth limit is not reached first
        for levels in (MAX_DEPTH + 1, 5000):
            with pytest.raises(InvalidParamsError, match=rf"invalid params for workflow '{name}': it nests deeper "
                                                         rf"than 100 levels \(at \['{key}'\]\[0\]"):
                executor.execute(name, {key: nested(levels)})
    assert executor.execute("modelled", {"data": nested(MAX_DEPTH - 1)}).status is RunStatus.COMPLETED
    assert executor.repository.list_runs().total == 1
    run = executor.execute("deep-output")
    assert run.status is RunStatus.FAILED
    assert "the output of node 'n' cannot be stored: it nests deeper than 100 levels" in run.error_message
    assert saved_checkpoint(engine, run.id) == (None, None)  # nothing of it was stored: the run's start only


def test_one_deeply_nested_stored_row_does_not_break_a_listing(engine):
    """A row written before the limit existed (or by hand), 300 levels deep: listings, to_dict and
    show still work."""
    from factories import add, make_run

    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    run = make_run(params={"deep": deep}, result=deep)
    add(engine, run)
    repo = Repository(engine)
    assert repo.list_runs(fields="summary").total == 1
    [full] = repo.list_runs().data
    assert json.dumps(full.to_dict()).count("[") == 600  # no serialisation depth limit
    assert repo.find_run(run.id).to_dict()["result"] == deep


def test_a_stored_row_too_deep_to_parse_never_breaks_a_listing(engine, wfkit_cli):
    """Deeper than Python's JSON parser goes (written by hand: wfkit refuses to write it): the summary
    listing never reads it; a full listing shows it marked, with every other run of the page whole;
    reading that one run is a wfkit error, on the command line one line."""
    from factories import add, make_run
    from wfkit.errors import DatabaseError
    from wfkit.store.codec import UNREADABLE_MARK
    from wfkit.store.models import Run

    run, other = make_run(), make_run(result={"fine": True})
    add(engine, other, run)
    text = "[" * 5000 + "1" + "]" * 5000
    cast = "CAST(:text AS jsonb)" if engine.dialect.name == "postgresql" else ":text"
    update = sa.text(f"UPDATE runs SET result = {cast} WHERE id = :id").bindparams(
        sa.bindparam("id", type_=Run.__table__.c.id.type))
    with engine.begin() as conn:
        assert conn.execute(update, {"text": text, "id": run.id}).rowcount == 1
    repo = Repository(engine)
    assert {r.id for r in repo.list_runs(fields="summary").data} == {run.id, other.id}
    by_id = {r.id: r for r in repo.list_runs().data}
    assert by_id[run.id].result == UNREADABLE_MARK and by_id[other.id].result == {"fine": True}
    with pytest.raises(DatabaseError, match=r"nests too deeply to be read .*\(list_runs\(fields='summary'\)"):
        repo.find_run(run.id)
    assert repo.find_run(other.id).result == {"fine": True}
    url = engine.url.render_as_string(hide_password=False)
    assert wfkit_cli.run("runs", "list", url=url).returncode == 0
    out = wfkit_cli.run("runs", "list", "--json", "--full", url=url)
    assert out.returncode == 0 and len(json.loads(out.stdout)["data"]) == 2
    out = wfkit_cli.run("runs", "show", str(run.id), url=url)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert "nests too deeply to be read" in line


def test_a_node_or_factory_that_calls_sys_exit_fails_its_run_and_errors_stay_one_line(engine):
    """sys.exit in a node is the node's failure (the program goes on); in a factory, the workflow's
    build error; an exception whose message has several lines is one line in error_message (its
    traceback keeps the whole)."""
    import sys

    from wfkit.errors import WorkflowBuildError

    reg = Registry()

    def one_node(fn):
        return lambda graph, runtime, params: graph.add_node("n", fn).set_entry_point("n").set_finish_point("n") and {}

    def exits(state):
        sys.exit(3)

    def multiline(state):
        raise ValueError("first line\nsecond line")

    def factory_exits(graph, runtime, params):
        sys.exit(4)

    reg.register("exits", one_node(exits))
    reg.register("multiline", one_node(multiline))
    reg.register("factory-exits", factory_exits)
    executor = Executor(engine, registry=reg)
    run = executor.execute("exits")
    assert run.status is RunStatus.FAILED and run.error_message == "node 'n' (iteration 1) failed: called sys.exit(3)"
    run = executor.execute("multiline")
    assert run.error_message == "node 'n' (iteration 1) failed: ValueError: first line second line"
    [stage] = executor.repository.get_stages(run.id)
    assert "\n" not in stage.error_message and "ValueError: first line\nsecond line" in stage.error_traceback
    with pytest.raises(WorkflowBuildError, match=r"the factory of workflow 'factory-exits' raised called sys.exit\(4\)"):
        executor.execute("factory-exits")
