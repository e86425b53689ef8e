"""The executor: runs registered workflows and records their history as it happens.

    from wfkit.executor import Executor
    executor = Executor("sqlite:///runs.db")        # the database must be migrated
    run = executor.execute("review-loop", {"threshold": 0.9})
    run.status, run.result

A run goes through three phases:

1. cold start: resolve the workflow (``WorkflowNotFoundError``), validate its
   params (``InvalidParamsError``), create the run as ``pending``;
2. hot start: mark it ``running``, build the graph through the factory, walk
   it; each stage start is committed before its node runs, and each stage's
   completion, its decision, the checkpoint and the run's ``updated_at`` are
   committed together with the start of the next stage (one transaction per
   step boundary, see :mod:`wfkit.recorder`);
3. post-commit: the result (the final state, or ``state[graph.result_key]``)
   or the error, ``completed_at`` and the final status.

A failed or cancelled run resumes from its checkpoint without re-running the
nodes that completed. Cancellation is cooperative between nodes (also from
another process: :meth:`Executor.cancel` records the request in the database),
and cancels the running task of an async node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.db import as_engine
from wfkit.errors import (
    DatabaseError,
    GraphError,
    InvalidParamsError,
    InvalidStatusError,
    MaxIterationsError,
    StateNotSerializableError,
    WfkitError,
    error_text,
)
from wfkit.events import (
    DecisionMade,
    Event,
    MultiObserver,
    Observer,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunStarted,
    StageCompleted,
    StageFailed,
    StageStarted,
)
from wfkit.graph import RouteDecision, StateGraph, Walker
from wfkit.models import Run, RunStatus, StageStatus, check_transition, row_loader
from wfkit.query import parse_uuid
from wfkit.recorder import SqlRecorder
from wfkit.storage import dumps
from wfkit.registry import Registry, Workflow, default_registry
from wfkit.repository import Repository
from wfkit.runtime import Runtime

#: What a stage killed by a process that is gone is marked with when its run is taken over.
INTERRUPTED = "interrupted: the process executing this stage stopped before it finished"
#: Checkpoint format written into ``checkpoints.state_data``.
CHECKPOINT_FORMAT = 1
#: A finished run from values this process wrote itself (typed already: no validation needed).
_new_run = row_loader(Run)


def _check_json(value: Any) -> str:
    """``value`` as JSON text that every backend stores: no NaN, valid UTF-8, no NUL character."""
    text = dumps(value)
    text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError (a ValueError)
    if "\\u0000" in text:
        raise ValueError("the NUL character (\\u0000) cannot be stored")
    return text


def dumps_state(state: Mapping[str, Any], where: str) -> str:
    """``state`` as JSON text, or :class:`StateNotSerializableError` naming ``where`` and the key."""
    try:
        return _check_json(state)
    except (TypeError, ValueError):
        pass
    for key, value in state.items():
        try:
            _check_json(value)
        except (TypeError, ValueError) as err:
            raise StateNotSerializableError(
                f"{where} is not JSON-serializable: key {key!r} holds {type(value).__name__} ({err})"
            ) from None
    raise StateNotSerializableError(f"{where} is not JSON-serializable")  # e.g. a non-string key


@dataclass
class _Plan:
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
    failed_at: datetime | None = None
    started: bool = False  # already moved to running (together with its creation)


class _StageCapture:
    """The walker observer that keeps the last stage's updates, duration and error."""

    __slots__ = ("updates", "duration_ms", "error")

    def __init__(self) -> None:
        self.updates: Mapping[str, Any] | None = None
        self.duration_ms = 0.0
        self.error: BaseException | None = None

    def on_stage_end(self, node: str, iteration: int, state: Any, updates: Any, duration_ms: float,
                     error: BaseException | None) -> None:
        self.updates, self.duration_ms, self.error = updates, duration_ms, error


class _RunLoop:
    """One execution of one run: the bookkeeping around each step, shared by the sync and async walks."""

    def __init__(self, executor: Executor, recorder: SqlRecorder, run_id: uuid.UUID, graph: StateGraph,
                 walker: Walker, capture: _StageCapture, cancel: threading.Event):
        self.ex, self.rec, self.run_id = executor, recorder, run_id
        self.graph, self.walker, self.capture, self.cancel = graph, walker, capture, cancel
        self.state_json = dumps_state(walker.state, "the state to resume from" if walker.counters else
                                      f"the initial state of workflow {graph.name!r}")
        self.stage_id: uuid.UUID | None = None
        self.node = ""
        self.iteration = 0
        self.steps = 0
        self.outcome: RunStatus | None = None
        self.completed_at: Any = None
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
        self.stage_failed(f"cancelled: {reason}", self.capture.duration_ms)
        self.cancelled(reason)

    def fail(self, message: str) -> None:
        self.completed_at = self.rec.finish_run(self.run_id, RunStatus.FAILED, error=message)
        self.outcome, self.error = RunStatus.FAILED, message
        self.emit(RunFailed(self.run_id, message))

    def cancelled(self, reason: str) -> None:
        self.completed_at = self.rec.finish_run(self.run_id, RunStatus.CANCELLED, error=None)
        self.outcome = RunStatus.CANCELLED
        self.emit(RunCancelled(self.run_id, reason))

    def finish(self) -> None:
        if self.outcome is not None:
            return
        result = self.graph.result_of(self.walker.state)
        result_json = self.state_json if self.graph.result_key is None else dumps(result)
        self.completed_at = self.rec.finish_run(self.run_id, RunStatus.COMPLETED, result_json=result_json)
        self.outcome, self.result = RunStatus.COMPLETED, result
        self.emit(RunCompleted(self.run_id, result))


class Executor:
    """Runs workflows from a registry against a database, recording every stage and decision.

    ``database``: an engine, a URL, or None for the configured default (it must be migrated).
    ``registry``: where workflows are looked up (default: the default registry, with plugins).
    ``runtime``: the services handed to factories. ``observers``: extra observers of every run
    (isolated: one that raises is logged). With the default registry, observers that plugins
    contribute through ``wfkit_observers()`` are added. ``checkpoint_every``: save a checkpoint
    after every N nodes (default 1; a larger N writes less but re-runs up to N-1 nodes on resume).
    """

    def __init__(self, database: Engine | str | None = None, registry: Registry | None = None,
                 runtime: Runtime | None = None, observers: Iterable[Observer] = (), *, checkpoint_every: int = 1):
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise InvalidParamsError(f"checkpoint_every must be a whole number of at least 1, got {checkpoint_every!r}")
        self.engine = as_engine(database, create_missing=False)  # it must exist, migrated
        self.registry = registry if registry is not None else default_registry()
        self.runtime = runtime if runtime is not None else Runtime()
        extra = list(observers)
        if registry is None:
            extra += plugin_observers()
        self.observers = MultiObserver(extra)
        self.checkpoint_every = checkpoint_every
        self.repository = Repository(self.engine)
        self._cancel: dict[uuid.UUID, threading.Event] = {}
        self._threads: dict[uuid.UUID, threading.Thread] = {}
        self._lock = threading.Lock()

    # -- public API

    def execute(self, name: str, params: Mapping[str, Any] | None = None) -> Run:
        """Create a run of workflow ``name`` and execute it to the end; return the finished run."""
        with SqlRecorder(self.engine) as rec:
            return self._hot(self._cold_start(name, params, rec, start=True), rec)

    async def aexecute(self, name: str, params: Mapping[str, Any] | None = None) -> Run:
        """Like :meth:`execute`, awaiting async nodes (a cancelled task cancels the run)."""
        with SqlRecorder(self.engine) as rec:
            return await self._ahot(self._cold_start(name, params, rec, start=True), rec)

    def start(self, name: str, params: Mapping[str, Any] | None = None) -> uuid.UUID:
        """Create a run and execute it in a background thread; return its id at once (see :meth:`wait`)."""
        plan = self._cold_start(name, params)
        thread = threading.Thread(target=self._hot_in_background, name=f"wfkit-run-{plan.run_id}", args=(plan,),
                                  daemon=True)
        with self._lock:
            self._threads[plan.run_id] = thread
        thread.start()
        return plan.run_id

    def wait(self, run_id: uuid.UUID | str, timeout: float | None = None) -> Run:
        """Wait for a run started by :meth:`start` in this executor; return it as it stands."""
        rid = parse_uuid(run_id)
        with self._lock:
            thread = self._threads.get(rid)
        if thread is not None:
            thread.join(timeout)
            if not thread.is_alive():
                with self._lock:
                    self._threads.pop(rid, None)
        return self.repository.find_run(rid)

    def cancel(self, run_id: uuid.UUID | str) -> Run:
        """Cancel a run: a pending one at once; a running one before its next node (from any process).

        Cancelling a finished run is an :class:`InvalidStatusError`.
        """
        rid = parse_uuid(run_id)
        run = self.repository.find_run(rid)
        check_transition(run.status, RunStatus.CANCELLED)
        with SqlRecorder(self.engine) as rec:
            if run.status is RunStatus.PENDING:
                changed = rec.finish_run(rid, RunStatus.CANCELLED, from_status=RunStatus.PENDING) is not None
            else:
                changed = rec.request_cancel(rid)
        with self._lock:
            event = self._cancel.get(rid)
        if event is not None:
            event.set()
        if not changed:  # it moved on meanwhile: say where it is now
            now = self.repository.find_run(rid)
            check_transition(now.status, RunStatus.CANCELLED)
        return self.repository.find_run(rid)

    def resume(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Continue a failed or cancelled run from its checkpoint; ``force`` takes over a ``running`` run
        whose process is gone. Completed nodes are not run again."""
        return self._hot(self._prepare_resume(run_id, force))

    async def aresume(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Like :meth:`resume`, awaiting async nodes."""
        return await self._ahot(self._prepare_resume(run_id, force))

    def delete(self, run_id: uuid.UUID | str, *, force: bool = False) -> None:
        """Delete a run with its stages, decisions and checkpoint. A running run needs ``force``."""
        rid = parse_uuid(run_id)
        self.repository.find_run(rid)  # NotFoundError if there is none
        with SqlRecorder(self.engine) as rec:
            deleted = rec.delete_run(rid, force=force)
        if not deleted:  # it is running (the check and the delete are one statement)
            raise InvalidStatusError(
                f"run {rid} is running: cancel it first, or force the deletion (--force) if its process is gone"
            )

    # -- phases

    def _cold_start(self, name: str, params: Mapping[str, Any] | None, rec: SqlRecorder | None = None,
                    *, start: bool = False) -> _Plan:
        """Resolve the workflow, check its params, create the run as pending. With ``start`` (and
        the hot start's recorder), also move it to running in the same round trip."""
        workflow = self.registry.get(name)
        checked = workflow.validate_params(params)
        stored = checked.model_dump(mode="json") if hasattr(checked, "model_dump") else dict(checked)
        try:
            _check_json(stored)
        except (TypeError, ValueError) as err:
            raise InvalidParamsError(f"params of workflow {name!r} must be JSON-serializable: {err}") from None
        run_id = uuid.uuid4()
        if rec is not None and start:
            created_at, started_at = rec.create_and_start_run(run_id, name, stored)
            return _Plan(run_id, workflow, stored, RunStatus.RUNNING, None, False, created_at, started_at,
                         started=True)
        if rec is None:
            with SqlRecorder(self.engine) as own:
                created_at = own.create_run(run_id, name, stored)
        else:
            created_at = rec.create_run(run_id, name, stored)
        return _Plan(run_id, workflow, stored, RunStatus.PENDING, None, False, created_at)

    def _prepare_resume(self, run_id: uuid.UUID | str, force: bool) -> _Plan:
        rid = parse_uuid(run_id)
        run = self.repository.find_run(rid)
        if run.status is RunStatus.RUNNING:
            if not force:
                raise InvalidStatusError(
                    f"run {rid} is running: if no process is executing it any more (it was killed), "
                    "take it over with --force (force=True)"
                )
        else:
            check_transition(run.status, RunStatus.RUNNING)
        workflow = self.registry.get(run.workflow_name)
        from wfkit.checkpoints import SqlCheckpointStore

        saved = SqlCheckpointStore(self.engine).load(rid)
        snapshot = None if saved is None else {
            "state": saved.state, "next_node": saved.meta.get("next_node"), "counters": saved.meta.get("counters", {})
        }
        with SqlRecorder(self.engine) as rec:  # stages a dead process (or a lost write) left 'started'
            rec.interrupt_stages(rid, INTERRUPTED)
        return _Plan(rid, workflow, run.params, run.status, snapshot, True, run.created_at, run.started_at)

    def _begin(self, rec: SqlRecorder, plan: _Plan) -> _RunLoop | None:
        """Mark the run running, build its graph, and set up the walk (None if the build failed)."""
        run_id = plan.run_id
        if not plan.started:
            started = rec.start_run(run_id, plan.from_status)
            if started is None:
                now = self.repository.find_run(run_id)
                raise InvalidStatusError(f"run {run_id} is {now.status.value} now (it changed meanwhile); not started")
            plan.started_at = plan.started_at or started
        self.observers.on_event(RunStarted(run_id, plan.workflow.name, plan.params, plan.resumed))
        capture = _StageCapture()
        try:
            graph, initial = plan.workflow.build(plan.params, self.runtime)
            snap = plan.snapshot
            if snap is None:
                walker = Walker(graph, initial, observer=capture)
            else:
                walker = Walker(graph, snap["state"], node=snap["next_node"], counters=snap["counters"],
                                observer=capture)
            with self._lock:
                cancel = self._cancel.setdefault(run_id, threading.Event())
            return _RunLoop(self, rec, run_id, graph, walker, capture, cancel)
        except WfkitError as err:
            plan.error = str(err)
            plan.failed_at = rec.finish_run(run_id, RunStatus.FAILED, error=plan.error)
            self.observers.on_event(RunFailed(run_id, plan.error))
            return None
        except BaseException as err:  # Ctrl-C, or a factory bug: the run must not stay 'running'
            if isinstance(err, (KeyboardInterrupt, asyncio.CancelledError)):
                rec.finish_run(run_id, RunStatus.CANCELLED)
                self.observers.on_event(RunCancelled(run_id, "interrupted while building the graph"))
            else:
                rec.finish_run(run_id, RunStatus.FAILED, error=f"building the graph failed: {error_text(err)}")
            raise

    def _outcome(self, plan: _Plan, loop: _RunLoop | None) -> Run:
        """The finished run, from what this process wrote (no read back), or as stored if unsure."""
        completed_at = loop.completed_at if loop is not None else plan.failed_at
        if completed_at is None or (loop is not None and loop.outcome is None):
            return self.repository.find_run(plan.run_id)
        return _new_run(dict(
            id=plan.run_id, workflow_name=plan.workflow.name,
            status=loop.outcome if loop is not None else RunStatus.FAILED,
            params=plan.params, result=loop.result if loop is not None else None,
            error_message=loop.error if loop is not None else plan.error,
            started_at=plan.started_at, completed_at=completed_at, created_at=plan.created_at,
            updated_at=completed_at, cancel_requested_at=None,
        ))

    def _recorder(self, rec: SqlRecorder | None) -> Any:
        return contextlib.nullcontext(rec) if rec is not None else SqlRecorder(self.engine)

    def _hot(self, plan: _Plan, rec: SqlRecorder | None = None) -> Run:
        loop = None
        try:
            with self._recorder(rec) as rec:
                loop = self._begin(rec, plan)
                if loop is not None:
                    self._guarded(loop, self._walk_sync)
        finally:
            with self._lock:
                self._cancel.pop(plan.run_id, None)
        return self._outcome(plan, loop)

    async def _ahot(self, plan: _Plan, rec: SqlRecorder | None = None) -> Run:
        loop = None
        try:
            with self._recorder(rec) as rec:
                loop = self._begin(rec, plan)
                if loop is not None:
                    try:
                        await self._walk_async(loop)
                    except BaseException as err:
                        self._after_crash(loop, err)
                        raise
        finally:
            with self._lock:
                self._cancel.pop(plan.run_id, None)
        return self._outcome(plan, loop)

    def _hot_in_background(self, plan: _Plan) -> None:
        try:
            self._hot(plan)
        except Exception:  # recorded in the run where possible; never kill the thread silently
            logging.getLogger("wfkit.executor").exception("run %s failed in the background", plan.run_id)

    def _guarded(self, loop: _RunLoop, walk: Any) -> None:
        try:
            walk(loop)
        except BaseException as err:
            self._after_crash(loop, err)
            raise

    def _after_crash(self, loop: _RunLoop, err: BaseException) -> None:
        """The walk was interrupted (Ctrl-C, task cancelled) or history could not be written."""
        if loop.outcome is not None:
            return
        try:
            if isinstance(err, (KeyboardInterrupt, asyncio.CancelledError)):
                loop.interrupted(err)
            else:
                loop.stage_failed(error_text(err), loop.capture.duration_ms)
                # a stage whose completion was rolled back with the failed write is not left 'started'
                loop.rec.interrupt_stages(loop.run_id, f"its end was not recorded: {error_text(err)}")
                loop.fail(f"the run stopped: {error_text(err)}")
        except DatabaseError:
            pass  # the database is what failed: the run stays as last committed, resumable with --force

    @staticmethod
    def _walk_sync(loop: _RunLoop) -> None:
        walker = loop.walker
        while loop.before_step():
            try:
                decision = walker.step()
            except GraphError as err:
                loop.node_failed(err)
                return
            if not loop.stepped(decision):
                return
        loop.finish()

    @staticmethod
    async def _walk_async(loop: _RunLoop) -> None:
        walker = loop.walker
        while loop.before_step():
            task = asyncio.ensure_future(walker.astep())
            try:
                while True:
                    done, _ = await asyncio.wait({task}, timeout=0.05)
                    if done:
                        break
                    if loop.cancel.is_set():
                        task.cancel()
                        await asyncio.wait({task})
                        break
                decision = task.result()
            except asyncio.CancelledError as err:
                if not task.done():
                    task.cancel()
                loop.interrupted(err)
                if loop.cancel.is_set() and not _current_task_cancelling():
                    return
                raise
            except GraphError as err:
                loop.node_failed(err)
                return
            if not loop.stepped(decision):
                return
        loop.finish()


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


def plugin_observers() -> list[Observer]:
    """The observers that installed plugins contribute through ``wfkit_observers()``."""
    from wfkit.plugins import plugin_manager

    found: list[Observer] = []
    for impl in plugin_manager().hook.wfkit_observers.get_hookimpls():
        try:
            result = impl.function()
        except Exception:  # one plugin's failure must not stop runs
            logging.getLogger("wfkit.plugins").exception("plugin %r: wfkit_observers() raised", impl.plugin_name)
            continue
        if result is None:
            continue
        found.extend([result] if hasattr(result, "on_event") else list(result))
    return found
