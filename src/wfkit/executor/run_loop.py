"""One execution of one run: the plan of a (re)start, and the bookkeeping around each step.

A :class:`RunLoop` walks the graph (:meth:`RunLoop.walk`, or :meth:`RunLoop.awalk` for async
nodes) and records each step through its :class:`~wfkit.store.recorder.SqlRecorder`. It is handed
everything it needs (the observers, the checkpoint interval, the cancel flag): it knows nothing
of the :class:`~wfkit.executor.Executor` that made it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from types import MappingProxyType
from typing import Any

from wfkit.errors import (
    DatabaseError,
    GraphError,
    Interrupted,
    MaxIterationsError,
    RouteError,
    StateNotSerializableError,
    error_text,
)
from wfkit.events import (
    DecisionMade,
    Event,
    MultiObserver,
    RunCancelled,
    RunCompleted,
    RunFailed,
    StageCompleted,
    StageFailed,
    StageStarted,
    traceback_text,
)
from wfkit.executor import checkpoints
from wfkit.graph import RouteDecision, StateGraph, Walker
from wfkit.jsontext import dumps, dumps_state
from wfkit.registry import Workflow
from wfkit.store.models import RunStatus, StageStatus
from wfkit.store.recorder import Finished, SqlRecorder

#: How often (seconds) an async walk looks at the cancel flag while a node runs.
CANCEL_POLL_S = 0.05


@dataclass
class Plan:
    """A run about to be (re)started: what the hot start needs, and what it learns on the way."""

    run_id: uuid.UUID
    workflow: Workflow
    params: dict[str, Any]  # as stored
    from_status: RunStatus
    walker: Walker  # on the validated graph, at the start or where a resumed run's checkpoint left it
    capture: StageCapture  # the walker's observer
    state_json: str  # the walker's state, encoded already (checked before anything was written)
    resumed: bool
    created_at: datetime
    started_at: datetime | None = None
    started: bool = False  # already moved to running (together with its creation)


class StageCapture:
    """The walk observer that keeps the last stage's updates, duration and error."""

    __slots__ = ("updates", "duration_ms", "error")

    def __init__(self) -> None:
        self.updates: Mapping[str, Any] | None = None
        self.duration_ms = 0.0
        self.error: BaseException | None = None

    def on_stage_end(self, node: str, iteration: int, state: Any, updates: Any, duration_ms: float,
                     error: BaseException | None) -> None:
        self.updates, self.duration_ms, self.error = updates, duration_ms, error


class RunLoop:
    """One execution of one run: the bookkeeping around each step, shared by the sync and async walks."""

    def __init__(self, recorder: SqlRecorder, run_id: uuid.UUID, walker: Walker, capture: StageCapture,
                 state_json: str, *, observers: MultiObserver, checkpoint_every: int, cancel: threading.Event):
        self.recorder, self.run_id, self.walker, self.capture = recorder, run_id, walker, capture
        self.graph: StateGraph = walker.graph
        self.observers, self.checkpoint_every, self.cancel = observers, checkpoint_every, cancel
        self.state_json = state_json  # the state the next stage starts from, as stored
        self.stage_id: uuid.UUID | None = None
        self.stage_began = 0.0  # perf_counter() when the current stage's start was recorded
        self.node = ""
        self.iteration = 0
        self.steps = 0
        self.outcome: RunStatus | None = None
        self.finished: Finished | None = None  # as written (None: not written, or not by us)
        self.error: str | None = None
        self.result: Any = None

    # -- the walks

    def walk(self) -> None:
        """Run the graph to its end (or until it fails or is cancelled), recording every step. Whatever
        escapes it (Ctrl-C, a failed write) must go through :meth:`crashed` on its way out."""
        if not self.rerouted():
            return
        while self.before_step():
            try:
                result: RouteDecision | GraphError = self.walker.step()
            except GraphError as err:
                result = err
            if not self.stepped(result):
                return
        self.finish()

    async def awalk(self) -> None:
        """Like :meth:`walk`, awaiting async nodes: a cancel (from this process's executor) cancels the
        task of the node that is running; a cancelled task ends the run cancelled, and is re-raised."""
        if not self.rerouted():
            return
        while self.before_step():
            result = await self._astep()
            if result is None or not self.stepped(result):
                return
        self.finish()

    async def _astep(self) -> RouteDecision | GraphError | None:
        """One step with the node as a task, cancelled if this process's executor cancels the run
        (None then: the run has ended cancelled)."""
        task = asyncio.ensure_future(self.walker.astep())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_S)
                if done:
                    break
                if self.cancel.is_set():
                    task.cancel()
                    await asyncio.wait({task})
                    break
            return task.result()
        except asyncio.CancelledError as err:
            if not task.done():
                task.cancel()
            requested = self.cancel.is_set() and not _current_task_cancelling()  # we cancelled the node
            self.interrupted(err, "cancel requested while the node ran" if requested else None)
            if requested:
                return None
            raise
        except GraphError as err:
            return err

    def crashed(self, err: BaseException) -> None:
        """The walk was interrupted (Ctrl-C, task cancelled) or history could not be written: end the
        run as well as can be, so that it does not stay ``running``."""
        if self.outcome is not None:
            return
        try:
            self._end_after(err)
        except DatabaseError:
            # The connection may be what broke (a server restart, a terminated backend): once more on a
            # fresh one. Should that fail too, the run stays as last committed, resumable with --force.
            try:
                with SqlRecorder(self.recorder.engine) as fresh:
                    self.recorder = fresh
                    self._end_after(err)
            except DatabaseError:
                pass

    def _end_after(self, err: BaseException) -> None:
        if isinstance(err, (KeyboardInterrupt, asyncio.CancelledError)):
            self.interrupted(err)
        else:
            self.stage_failed(error_text(err), self.capture.duration_ms, err)
            # a stage whose completion was rolled back with the failed write is not left 'started'
            self.recorder.interrupt_stages(self.run_id, f"its end was not recorded: {error_text(err)}")
            self.fail(f"the run stopped: {error_text(err)}", err)

    # -- around each step

    def emit(self, event: Event) -> None:
        self.observers.on_event(event)

    @property
    def observed(self) -> bool:
        """Whether any observer listens (events are only built for someone)."""
        return bool(self.observers)

    def before_step(self) -> bool:
        """Commit the last step, check for a cancel request, record the next stage's start."""
        walker = self.walker
        if walker.done:
            return False
        node = walker.node
        assert node is not None
        iteration = walker.counters.get(node, 0) + 1
        if iteration > self.graph.max_iterations:
            self.fail(str(MaxIterationsError(node, self.graph.max_iterations)))
            return False
        if self.cancel.is_set():
            self.cancelled("cancel requested")
            return False
        stage_id, cancel_requested = self.recorder.begin_stage(self.run_id, node, iteration, self.state_json)
        if cancel_requested:
            self.cancelled("cancel requested")
            return False
        self.stage_id, self.node, self.iteration = stage_id, node, iteration
        self.stage_began = perf_counter()
        if self.observed:
            self.emit(StageStarted(self.run_id, node, iteration, MappingProxyType(walker.state)))
        return True

    def after_step(self, decision: RouteDecision, *, checkpoint_now: bool = False) -> None:
        """Buffer the stage's completion, the decision and the checkpoint (committed at the next boundary)."""
        walker, cap = self.walker, self.capture
        assert self.stage_id is not None
        try:
            self.state_json = dumps_state(walker.state, f"the state after node {self.node!r}", check_depth=False)
            updates_json = dumps_state(cap.updates or {}, f"the output of node {self.node!r}")
        except StateNotSerializableError as err:
            self.stage_failed(str(err), cap.duration_ms)
            self.fail(str(err))
            return
        self.steps += 1
        due = checkpoint_now or walker.done or self.steps % self.checkpoint_every == 0
        checkpoint = (self.node, checkpoints.encode(walker.snapshot(), self.state_json)) if due else None
        # The stage is no longer this loop's to fail before its completion is buffered: interrupted in
        # between, it stays 'started' (and runs again on resume) rather than ending twice.
        stage_id, self.stage_id = self.stage_id, None
        self.recorder.step_done(self.run_id, (stage_id, updates_json, cap.duration_ms), _row(decision), checkpoint)
        if not self.observed:
            return
        self.emit(StageCompleted(self.run_id, self.node, self.iteration, MappingProxyType(dict(cap.updates or {})),
                                 cap.duration_ms))
        self.emit(DecisionMade(self.run_id, *_row(decision)))

    def stepped(self, result: RouteDecision | GraphError) -> bool:
        """After a step: record it (or its node's failure); whether the walk may go on."""
        if isinstance(result, RouteError):
            self.route_failed(result)
            return False
        if isinstance(result, GraphError):
            self.node_failed(result)
            return False
        self.after_step(result)
        return self.outcome is None

    def route_failed(self, err: RouteError) -> None:
        """The node completed but no edge leaving it could be chosen: record the node's completion,
        a decision saying that no edge held, and a checkpoint at the node (a resume chooses the route
        again, without running the node again); then fail the run with the routing error."""
        self.after_step(_no_route(err), checkpoint_now=True)
        if self.outcome is None:
            self.fail(str(err), err)

    def rerouted(self) -> bool:
        """A run resumed after a routing failure: choose the route again first. Whether the walk may go on."""
        walker = self.walker
        node = walker.route_from
        if node is None:
            return True
        try:
            decision = walker.reroute()
        except RouteError as err:
            decision, failed = _no_route(err), err
        else:
            failed = None
        checkpoint = (node, checkpoints.encode(walker.snapshot(), self.state_json))
        self.recorder.step_done(self.run_id, None, _row(decision), checkpoint)
        self.emit(DecisionMade(self.run_id, *_row(decision)))
        if failed is not None:
            self.fail(str(failed), failed)
            return False
        return True

    def stage_failed(self, error: str, duration_ms: float, exception: BaseException | None = None) -> None:
        """Buffer the current stage's failure: ``error`` one line, and the traceback of ``exception``."""
        if self.stage_id is not None:
            self.recorder.end_stage(self.stage_id, StageStatus.FAILED, duration_ms=duration_ms, error=error,
                                    traceback=traceback_text(exception))
            self.emit(StageFailed(self.run_id, self.node, self.iteration, error, duration_ms, exception))
            self.stage_id = None

    def node_failed(self, err: GraphError) -> None:
        message = str(err)
        self.stage_failed(message, self.capture.duration_ms, err)
        self.fail(message, err)

    def interrupted(self, err: BaseException, reason: str | None = None) -> None:
        """A KeyboardInterrupt, a signal or a task cancellation during a node: the run ends cancelled,
        resumable, with the reason (by default, what ``err`` says)."""
        reason = reason or interrupt_reason(err)
        # the walker never saw the node end: its time is what ran until now
        self.stage_failed(f"cancelled: {reason}", (perf_counter() - self.stage_began) * 1000.0)
        self.cancelled(reason)

    # -- the run's end

    def fail(self, message: str, exception: BaseException | None = None) -> None:
        self.finished = self.recorder.finish_run(self.run_id, RunStatus.FAILED, error=message)
        self.outcome, self.error = RunStatus.FAILED, message
        self.emit(RunFailed(self.run_id, message, exception))

    def cancelled(self, reason: str) -> None:
        """End the run cancelled: for ``reason`` unless a cancel request stored its own first."""
        self.finished = self.recorder.finish_run(self.run_id, RunStatus.CANCELLED, cancel_reason=reason)
        self.outcome = RunStatus.CANCELLED
        stored = self.finished.cancel_reason if self.finished is not None else None
        self.emit(RunCancelled(self.run_id, stored or reason))

    def finish(self) -> None:
        if self.outcome is not None:
            return
        result = self.graph.result_of(self.walker.state)
        result_json = self.state_json if self.graph.result_key is None else dumps(result)
        self.finished = self.recorder.finish_run(self.run_id, RunStatus.COMPLETED, result_json=result_json)
        self.outcome, self.result = RunStatus.COMPLETED, result
        self.emit(RunCompleted(self.run_id, result))


def _row(decision: RouteDecision) -> tuple[str, str | None, str | None, bool, str]:
    """A decision as the recorder and the events take it."""
    return (decision.from_node, decision.to_node, decision.predicate_name, decision.predicate_result,
            decision.reason)


def _no_route(err: RouteError) -> RouteDecision:
    """The decision that records a routing failure: no edge held (``predicate_result`` false, no
    ``to_node``), with the predicate that last failed or raised, and why."""
    return RouteDecision(err.node, None, err.predicate, False, str(err))


def interrupt_reason(err: BaseException) -> str:
    """Why an interrupted run was cancelled, in words: Ctrl-C, a signal, a cancelled task."""
    if isinstance(err, Interrupted):
        return err.reason
    if isinstance(err, KeyboardInterrupt):
        return "interrupted by Ctrl-C (SIGINT)"
    return "its asyncio task was cancelled"


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())
