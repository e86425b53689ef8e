"""One execution of one run: the plan of a (re)start, and the bookkeeping around each step.

A :class:`RunLoop` walks the graph (:meth:`RunLoop.walk`, or :meth:`RunLoop.awalk` for async
nodes) and records each step through its :class:`~wfkit.store.recorder.SqlRecorder`, fenced by the
lease epoch it holds. It is handed everything it needs (the observers, the checkpoint interval, the
cancel flag): it knows nothing of the :class:`~wfkit.executor.Executor` that made it.

Each step boundary is one write: the stage that ended (its row), the decision and the checkpoint,
with either the next stage made current or the run's end. Observers hear of a step once it is
written.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from time import perf_counter
from types import MappingProxyType
from typing import Any

from wfkit.errors import (
    DatabaseError,
    GraphError,
    Interrupted,
    LeaseLostError,
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
from wfkit.ids import new_id
from wfkit.jsontext import changed_texts, dumps, dumps_state, key_texts
from wfkit.registry import Workflow
from wfkit.runtime import NodeExecution, set_execution
from wfkit.store.models import RunStatus, StageStatus, utcnow
from wfkit.store.recorder import Claim, Finished, OpenStage, SqlRecorder

#: How often (seconds) an async walk looks at the cancel flag while a node runs.
CANCEL_POLL_S = 0.05
#: What a stage left running by a process that is gone is recorded with when its run is taken over.
INTERRUPTED = "interrupted: the process executing this stage stopped before it finished"


@dataclass
class Plan:
    """A run about to be (re)started: what the hot start needs, and what it learns on the way."""

    run_id: uuid.UUID
    workflow: Workflow
    params: dict[str, Any]  # as stored
    walker: Walker  # on the validated graph, at the start or where a resumed run's checkpoint left it
    capture: StageCapture  # the walker's observer
    state_json: str | None  # the walker's state, encoded already (None: it is the end state of ``state_from``)
    resumed: bool
    created_at: datetime
    epoch: int  # the lease epoch this process holds the run with
    attempt: int
    started_at: datetime | None = None
    pending: bool = False  # created pending by this process: to be started (unless cancelled meanwhile)
    opened: OpenStage | None = None  # the first stage, made current when the run was created
    claim: Claim | None = None  # how this process claimed the run (a resume), with the stage left running
    state_from: uuid.UUID | None = None  # the stage whose end state the walk starts from (a resume)
    checkpoint_row: bool = True  # the run has its checkpoint row (runs made before wfkit 0004 may not)
    idempotency_key: str | None = None
    # the walker's state as stored, a JSON text per key (see RunLoop.step_done); None: made from the
    # walker's state when the run loop begins
    texts: dict[str, str] | None = None


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


@dataclass
class Stop:
    """Why a run must stop at once, set from another thread: a lost lease (its heartbeat), or its
    executor stopping what it executes (a stop signal); and the run's cancel event."""

    reason: str | None = None  # the lease was lost: the run fails, for this reason
    cancel_reason: str | None = None  # the run is cancelled, for this reason (else "cancel requested")
    forced: bool = False  # its own executor force-cancelled it: a fenced-off write is no surprise
    # set when its executor's worker stops: the run goes back to the queue before its next node, with
    # the job this enqueues (see SqlRecorder.hand_back)
    handback: Any = None
    event: threading.Event = field(default_factory=threading.Event)
    held: Any = None  # the executor's hold on the run (its heartbeat)


class RunLoop:
    """One execution of one run: the bookkeeping around each step, shared by the sync and async walks."""

    def __init__(self, recorder: SqlRecorder, plan: Plan, *, observers: MultiObserver, checkpoint_every: int,
                 cancel: threading.Event, lost: Stop | None = None):
        self.recorder, self.run_id, self.walker, self.capture = recorder, plan.run_id, plan.walker, plan.capture
        self.epoch, self.attempt = plan.epoch, plan.attempt
        self.graph: StateGraph = plan.walker.graph
        self.observers, self.checkpoint_every, self.cancel = observers, checkpoint_every, cancel
        self.lost = lost if lost is not None else Stop()
        # The state the next stage starts from, as stored: the end state of a stage already written
        # (its id: the stage's row refers to it instead of holding it again), else as JSON text.
        self.state_from = plan.state_from
        self._state_json = plan.state_json
        # Each key of that state as its stored JSON text: a node's updates that are stored already as
        # they are (a node that returns the whole state) are not written again. Taken before any node
        # runs: a node may change a value in place, and then only the stored text tells it changed.
        self._texts = plan.texts if plan.texts is not None else key_texts(self.walker.state, "the state")
        self.checkpoint_row = plan.checkpoint_row
        self.stage: OpenStage | None = plan.opened  # the stage being executed (current on the run's row)
        self.stage_began = perf_counter()  # when the current stage began, for its duration if interrupted
        self.steps = 0
        self.outcome: RunStatus | None = None
        self.finished: Finished | None = None  # as written (None: not written, or not by us)
        self.error: str | None = None
        self.result: Any = None
        self._events: list[Event] = []  # what the next write records, told once it is written
        self._unwritten: OpenStage | None = None  # a stage whose row is buffered, not yet written
        self.held: Any = None  # the executor's hold on the run (its heartbeat): told of each lease extension
        self.handed_back = False  # the run went back to the workers' queue (its worker stopped)
        # the last step's node and stage when its checkpoint was not written with it (checkpoint_every > 1)
        self._unsaved: tuple[str, uuid.UUID] | None = None
        if plan.claim is not None:
            left = plan.claim.left_running
            if left is not None:  # the stage the previous holder was executing when it stopped
                stage_id, node, iteration, started_at = left
                walker = plan.walker
                # It started from the state this walk resumes from when it is the step the walk takes next.
                same = walker.node == node and walker.counters.get(node, 0) + 1 == iteration
                # It was the previous attempt's (each claim is one attempt more).
                recorder.stage_ended(self.run_id, OpenStage(stage_id, node, iteration, started_at or utcnow(),
                                                            max(1, self.attempt - 1)),
                                     StageStatus.FAILED, input=self._input() if same else (None, None),
                                     error=INTERRUPTED)
            recorder.interrupt_started(self.run_id, INTERRUPTED)

    # -- the walks

    def walk(self) -> None:
        """Run the graph to its end (or until it fails or is cancelled), recording every step. Whatever
        escapes it (Ctrl-C, a failed write) must go through :meth:`crashed` on its way out."""
        if not self.rerouted() or not self.first_stage():
            return
        walker = self.walker
        while True:
            self._enter_node()
            try:
                result: RouteDecision | GraphError = walker.step()
            except GraphError as err:
                result = err
            if not self.stepped(result):
                return

    async def awalk(self) -> None:
        """Like :meth:`walk`, awaiting async nodes: a cancel (from this process's executor, or a lost
        lease) cancels the task of the node that is running; a cancelled task ends the run
        cancelled, and is re-raised."""
        if not self.rerouted() or not self.first_stage():
            return
        while True:
            self._enter_node()  # before the task is made: it copies this context
            result = await self._astep()
            if result is None or not self.stepped(result):
                return

    def _enter_node(self) -> None:
        stage = self.stage
        assert stage is not None
        set_execution(NodeExecution(self.run_id, stage.node, stage.iteration, self.attempt, self.epoch))

    async def _astep(self) -> RouteDecision | GraphError | None:
        """One step with the node as a task, cancelled if this process's executor cancels the run or
        its lease is lost (None then: the run has ended)."""
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
            if requested and self.lost.reason is not None:
                self.stage_failed(f"stopped: {self.lost.reason}", self._elapsed_ms())
                self.fail(f"the run stopped: {self.lost.reason}")
                return None
            self.interrupted(err, (self.lost.cancel_reason or "cancel requested while the node ran") if requested
                             else None)
            if requested:
                return None
            raise
        except GraphError as err:
            return err

    def crashed(self, err: BaseException) -> None:
        """The walk was interrupted (Ctrl-C, task cancelled) or history could not be written: end the
        run as well as can be, so that it does not stay ``running`` until its lease expires. A
        process that lost its lease writes nothing (and a :class:`LeaseLostError` met on the way
        out is raised)."""
        set_execution(None)
        if self.outcome is not None or isinstance(err, LeaseLostError):
            return
        if self.stage is None and self._unwritten is not None and not self.recorder.buffered:
            self.stage = self._unwritten  # its step's write failed (and was rolled back): its row is to write
        stage = self.stage
        try:
            self._end_after(err)
        except DatabaseError:
            # The connection may be what broke (a server restart, a terminated backend): once more on a
            # fresh one. Should that fail too, the run stays as last committed, and becomes recoverable
            # once its lease expires (`wfkit runs recover`).
            self.stage, self._events = stage, []
            try:
                with SqlRecorder(self.recorder.engine, durability=self.recorder.durability,
                                 lease_seconds=self.recorder.lease_seconds) as fresh:
                    self.recorder = fresh
                    self._end_after(err)
            except DatabaseError:
                pass

    def _end_after(self, err: BaseException) -> None:
        if isinstance(err, (KeyboardInterrupt, asyncio.CancelledError)):
            self.interrupted(err)
        else:
            # the stage whose end could not be written (with the rest of its step) is recorded failed
            self.stage_failed(f"its end was not recorded: {error_text(err)}", self._elapsed_ms(), err)
            self.fail(f"the run stopped: {error_text(err)}", err)

    # -- around each step

    def emit(self, event: Event) -> None:
        self.observers.on_event(event)

    def _told(self) -> None:
        """The write that recorded the queued events succeeded: tell the observers."""
        events, self._events = self._events, []
        self._unwritten = None
        for event in events:
            self.emit(event)

    @property
    def observed(self) -> bool:
        """Whether any observer listens (events are only built for someone)."""
        return bool(self.observers)

    @property
    def state_json(self) -> str:
        """The walk's state as JSON text (made when first needed: a step writes only its updates)."""
        if self._state_json is None:
            self._state_json = dumps_state(self.walker.state, "the state", check_depth=False)
        return self._state_json

    def _input(self) -> tuple[str | None, uuid.UUID | None]:
        """How the current stage's row holds its input: a reference to the stage it started after, or
        the state as JSON text."""
        return (None, self.state_from) if self.state_from is not None else (self.state_json, None)

    def _elapsed_ms(self) -> float:
        return (perf_counter() - self.stage_began) * 1000.0

    def first_stage(self) -> bool:
        """Make the first stage of this attempt current (the run's creation may have done so);
        whether the walk may go on."""
        if self.walker.done:  # a resumed run whose walk had reached END: only its end is left
            self.finish()
            return False
        if self.stage is not None:
            self.stage_began = perf_counter()
            self._told()
            if self.observed:
                self.emit(StageStarted(self.run_id, self.stage.node, self.stage.iteration,
                                       MappingProxyType(self.walker.state)))
            return True
        return self.next_stage()

    def next_stage(self) -> bool:
        """Write what is buffered with the next stage made current (one transaction), unless the run
        must end first (its node's visits are used up, a cancel was asked, the lease was lost);
        whether the walk may go on."""
        walker = self.walker
        node = walker.node
        assert node is not None
        iteration = walker.counters.get(node, 0) + 1
        if iteration > self.graph.max_iterations:
            self.fail(str(MaxIterationsError(node, self.graph.max_iterations)))
            return False
        if self.cancel.is_set():
            if self.lost.reason is not None:
                self.fail(f"the run stopped: {self.lost.reason}")
            else:
                self.cancelled(self.lost.cancel_reason or "cancel requested")
            return False
        if self.lost.handback is not None:
            self.hand_back()
            return False
        stage = OpenStage(new_id(), node, iteration, utcnow(), self.attempt)
        requested, _ = self.recorder.open_stage(self.run_id, self.epoch, stage)
        if self.held is not None:
            self.held.renewed()
        self._told()
        if requested is not None:
            self.cancelled("cancel requested")
            return False
        self.stage, self.stage_began = stage, perf_counter()
        if self.observed:
            self.emit(StageStarted(self.run_id, node, iteration, MappingProxyType(walker.state)))
        return True

    def hand_back(self) -> None:
        """Give the run back to the workers' queue before its next node (its worker is stopping): what
        is buffered, with a checkpoint here, the run pending again and a new job for it, in one
        transaction; another worker continues it from here at once. A run asked to cancel meanwhile
        ends cancelled instead."""
        set_execution(None)
        if self._unsaved is not None:
            node, stage_id = self._unsaved
            walker = self.walker
            self.recorder.checkpoint(self.run_id, node, checkpoints.encode_at_stage(
                walker.node, walker.counters, walker.route_from, stage_id), upsert=not self.checkpoint_row)
            self._unsaved = None
        if self.recorder.hand_back(self.run_id, self.epoch, self.lost.handback):
            self.handed_back = True
            self._told()
            return
        self.cancelled("cancel requested")  # raises LeaseLostError if the run is no longer ours at all

    def stepped(self, result: RouteDecision | GraphError) -> bool:
        """After a step: record it (or its node's failure) with what comes next; whether the walk
        may go on."""
        if isinstance(result, RouteError):
            self.route_failed(result)
            return False
        if isinstance(result, GraphError):
            self.node_failed(result)
            return False
        if not self.step_done(result):
            return False
        if self.walker.done:
            self.finish()
            return False
        return self.next_stage()

    def step_done(self, decision: RouteDecision, *, checkpoint_now: bool = False) -> bool:
        """Buffer the stage's row, the decision and the checkpoint (written with what comes next);
        False if the run failed instead (a state that cannot be stored)."""
        walker, cap, stage = self.walker, self.capture, self.stage
        assert stage is not None
        try:
            # The state after the node is the state before it with these updates: checking and storing
            # the updates checks and stores it (the initial state was checked when the run was made).
            # Only the keys whose JSON text changed are written; the others are named (``unchanged``),
            # and readers take their values from the stage's input.
            updates_json, unchanged = changed_texts(cap.updates or {}, self._texts, f"the output of node {stage.node!r}")
        except StateNotSerializableError as err:
            self.stage_failed(str(err), cap.duration_ms)
            self.fail(str(err))
            return False
        input_ = self._input()
        self.state_from, self._state_json = stage.id, None
        self.steps += 1
        due = checkpoint_now or walker.done or self.steps % self.checkpoint_every == 0
        checkpoint = (stage.node, checkpoints.encode_at_stage(walker.node, walker.counters, walker.route_from,
                                                              stage.id)) if due else None
        # The stage is no longer this loop's to fail before its row is buffered: interrupted in between,
        # it stays current on the run's row (and runs again on resume) rather than ending twice.
        self.stage, self._unwritten = None, stage
        self.recorder.step_done(self.run_id, (stage, input_, updates_json, cap.duration_ms, unchanged), _row(decision),
                                checkpoint, upsert=not self.checkpoint_row)
        self.checkpoint_row = self.checkpoint_row or checkpoint is not None
        self._unsaved = None if checkpoint is not None else (stage.node, stage.id)
        if self.observed:
            self._events += [
                StageCompleted(self.run_id, stage.node, stage.iteration, MappingProxyType(dict(cap.updates or {})),
                               cap.duration_ms),
                DecisionMade(self.run_id, *_row(decision)),
            ]
        return True

    def route_failed(self, err: RouteError) -> None:
        """The node completed but no edge leaving it could be chosen: record the node's completion,
        a decision saying that no edge held, and a checkpoint at the node (a resume chooses the route
        again, without running the node again); then fail the run with the routing error."""
        if self.step_done(_no_route(err), checkpoint_now=True):
            self.fail(str(err), err)

    def rerouted(self) -> bool:
        """A run resumed after a routing failure: choose the route again first (buffered, written
        with what comes next). Whether the walk may go on."""
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
        self.recorder.step_done(self.run_id, None, _row(decision), checkpoint, upsert=not self.checkpoint_row)
        self.checkpoint_row = True
        self._events.append(DecisionMade(self.run_id, *_row(decision)))
        if failed is not None:
            self.fail(str(failed), failed)
            return False
        return True

    def stage_failed(self, error: str, duration_ms: float, exception: BaseException | None = None) -> None:
        """Buffer the current stage's row as failed: ``error`` one line, and the traceback of ``exception``."""
        stage = self.stage
        if stage is not None:
            self.recorder.stage_ended(self.run_id, stage, StageStatus.FAILED, input=self._input(),
                                      duration_ms=duration_ms, error=error, traceback=traceback_text(exception))
            self._events.append(StageFailed(self.run_id, stage.node, stage.iteration, error, duration_ms, exception))
            self.stage = None

    def node_failed(self, err: GraphError) -> None:
        message = str(err)
        self.stage_failed(message, self.capture.duration_ms, err)
        self.fail(message, err)

    def interrupted(self, err: BaseException, reason: str | None = None) -> None:
        """A KeyboardInterrupt, a signal or a task cancellation during a node: the run ends cancelled,
        resumable, with the reason (by default, what ``err`` says)."""
        reason = reason or interrupt_reason(err)
        # the walker never saw the node end: its time is what ran until now
        self.stage_failed(f"cancelled: {reason}", self._elapsed_ms())
        self.cancelled(reason)

    # -- the run's end (each one write, fenced; observers told once it is written)

    def _end(self, status: RunStatus, **values: Any) -> None:
        set_execution(None)
        self.finished = self.recorder.finish_run(self.run_id, self.epoch, status, **values)
        self.outcome = status
        self._told()

    def fail(self, message: str, exception: BaseException | None = None) -> None:
        self._end(RunStatus.FAILED, error=message)
        self.error = message
        self.emit(RunFailed(self.run_id, message, exception))

    def cancelled(self, reason: str) -> None:
        """End the run cancelled: for ``reason`` unless a cancel request stored its own first."""
        self._end(RunStatus.CANCELLED, cancel_reason=reason)
        stored = self.finished.cancel_reason if self.finished is not None else None
        self.emit(RunCancelled(self.run_id, stored or reason))

    def finish(self) -> None:
        if self.outcome is not None:
            return
        result = self.graph.result_of(self.walker.state)
        result_json = self.state_json if self.graph.result_key is None else dumps(result)
        self._end(RunStatus.COMPLETED, result_json=result_json)
        self.result = result
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
