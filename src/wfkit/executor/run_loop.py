"""One execution of one run: the plan of a (re)start, and the bookkeeping around each step."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from wfkit.errors import GraphError, MaxIterationsError, StateNotSerializableError
from wfkit.events import (
    DecisionMade,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    StageCompleted,
    StageFailed,
    StageStarted,
)
from wfkit.graph import RouteDecision, StateGraph, Walker
from wfkit.jsontext import dumps, dumps_state
from wfkit.store.models import Run, RunStatus, StageStatus, row_loader
from wfkit.store.recorder import Finished, SqlRecorder
from wfkit.registry import Workflow

if TYPE_CHECKING:
    from wfkit.executor.executor import Executor

#: What a stage killed by a process that is gone is marked with when its run is taken over.
INTERRUPTED = "interrupted: the process executing this stage stopped before it finished"
#: Checkpoint format written into ``checkpoints.state_data``.
CHECKPOINT_FORMAT = 1
#: A finished run from values this process wrote itself (typed already: no validation needed).
new_run = row_loader(Run)


@dataclass
class Plan:
    """A run about to be (re)started: what the hot start needs, and what it learns on the way."""

    run_id: uuid.UUID
    workflow: Workflow
    params: dict[str, Any]
    from_status: RunStatus
    snapshot: dict[str, Any] | None
    resumed: bool
    created_at: datetime
    started_at: datetime | None = None
    error: str | None = None
    failed: Finished | None = None  # the graph could not be built: how the run ended
    started: bool = False  # already moved to running (together with its creation)


class StageCapture:
    """The walker observer that keeps the last stage's updates, duration and error."""

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

    def __init__(self, executor: Executor, recorder: SqlRecorder, run_id: uuid.UUID, graph: StateGraph,
                 walker: Walker, capture: StageCapture, cancel: threading.Event):
        self.ex, self.rec, self.run_id = executor, recorder, run_id
        self.graph, self.walker, self.capture, self.cancel = graph, walker, capture, cancel
        self.state_json = dumps_state(walker.state, "the state to resume from" if walker.counters else
                                      f"the initial state of workflow {graph.name!r}")
        self.stage_id: uuid.UUID | None = None
        self.stage_began = 0.0  # perf_counter() when the current stage's start was recorded
        self.node = ""
        self.iteration = 0
        self.steps = 0
        self.outcome: RunStatus | None = None
        self.finished: Finished | None = None  # as written (None: not written, or not by us)
        self.error: str | None = None
        self.result: Any = None

    def emit(self, event: Event) -> None:
        self.ex.observers.on_event(event)

    @property
    def observed(self) -> bool:
        """Whether any observer listens (events are only built for someone)."""
        return bool(self.ex.observers)

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
        stage_id, cancel_requested = self.rec.begin_stage(self.run_id, node, iteration, self.state_json)
        if cancel_requested:
            self.cancelled("cancel requested")
            return False
        self.stage_id, self.node, self.iteration = stage_id, node, iteration
        self.stage_began = perf_counter()
        if self.observed:
            self.emit(StageStarted(self.run_id, node, iteration, MappingProxyType(walker.state)))
        return True

    def after_step(self, decision: RouteDecision) -> None:
        """Buffer the stage's completion, the decision and the checkpoint (committed at the next boundary)."""
        walker, cap = self.walker, self.capture
        assert self.stage_id is not None
        try:
            self.state_json = dumps_state(walker.state, f"the state after node {self.node!r}")
            updates_json = dumps_state(cap.updates or {}, f"the output of node {self.node!r}")
        except StateNotSerializableError as err:
            self.stage_failed(str(err), cap.duration_ms)
            self.fail(str(err))
            return
        self.rec.end_stage(self.stage_id, StageStatus.COMPLETED, output_json=updates_json,
                           duration_ms=cap.duration_ms)
        self.stage_id = None  # completed: nothing after this may mark it failed
        self.rec.decision(self.run_id, decision.from_node, decision.to_node, decision.predicate_name,
                          decision.predicate_result, decision.reason)
        self.steps += 1
        if walker.done or self.steps % self.ex.checkpoint_every == 0:
            meta = dumps({"next_node": walker.node, "counters": walker.counters, "format": CHECKPOINT_FORMAT})
            self.rec.checkpoint(self.run_id, self.node, f'{{"state":{self.state_json},{meta[1:]}')
        if not self.observed:
            return
        self.emit(StageCompleted(self.run_id, self.node, self.iteration, MappingProxyType(dict(cap.updates or {})),
                                 cap.duration_ms))
        self.emit(DecisionMade(self.run_id, decision.from_node, decision.to_node, decision.predicate_name,
                               decision.predicate_result, decision.reason))

    def stepped(self, decision: RouteDecision) -> bool:
        """After a successful step: record it; whether the walk may go on."""
        self.after_step(decision)
        return self.outcome is None

    def stage_failed(self, error: str, duration_ms: float) -> None:
        if self.stage_id is not None:
            self.rec.end_stage(self.stage_id, StageStatus.FAILED, duration_ms=duration_ms, error=error)
            self.emit(StageFailed(self.run_id, self.node, self.iteration, error, duration_ms))
            self.stage_id = None

    def node_failed(self, err: GraphError) -> None:
        message = str(err)
        self.stage_failed(message, self.capture.duration_ms)
        self.fail(message)

    def interrupted(self, err: BaseException) -> None:
        """A KeyboardInterrupt or task cancellation during a node: the run ends cancelled, resumable."""
        reason = "interrupted (Ctrl-C)" if isinstance(err, KeyboardInterrupt) else "cancelled while running"
        # the walker never saw the node end: its time is what ran until now
        self.stage_failed(f"cancelled: {reason}", (perf_counter() - self.stage_began) * 1000.0)
        self.cancelled(reason)

    def fail(self, message: str) -> None:
        self.finished = self.rec.finish_run(self.run_id, RunStatus.FAILED, error=message)
        self.outcome, self.error = RunStatus.FAILED, message
        self.emit(RunFailed(self.run_id, message))

    def cancelled(self, reason: str) -> None:
        self.finished = self.rec.finish_run(self.run_id, RunStatus.CANCELLED, error=None)
        self.outcome = RunStatus.CANCELLED
        self.emit(RunCancelled(self.run_id, reason))

    def finish(self) -> None:
        if self.outcome is not None:
            return
        result = self.graph.result_of(self.walker.state)
        result_json = self.state_json if self.graph.result_key is None else dumps(result)
        self.finished = self.rec.finish_run(self.run_id, RunStatus.COMPLETED, result_json=result_json)
        self.outcome, self.result = RunStatus.COMPLETED, result
        self.emit(RunCompleted(self.run_id, result))
