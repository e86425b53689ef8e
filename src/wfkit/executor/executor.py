"""The executor: runs registered workflows and records their history as it happens.

    from wfkit.executor import Executor
    executor = Executor("sqlite:///runs.db")        # the database must be migrated
    run = executor.execute("review-loop", {"threshold": 0.9})
    run.status, run.result

A run goes through three phases:

1. cold start: resolve the workflow (``WorkflowNotFoundError``), validate its
   params (``InvalidParamsError``), create the run as ``pending``;
2. hot start: mark it ``running``, build the graph through the factory, walk
   it (:meth:`Executor.execute` records the creation and the start in one
   transaction, so its run is created ``running``; :meth:`Executor.start`
   creates it ``pending`` and its background thread starts it); each stage start is committed before its node runs, and each stage's
   completion, its decision, the checkpoint and the run's ``updated_at`` are
   committed together with the start of the next stage (one transaction per
   step boundary, see :mod:`wfkit.store.recorder`);
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
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.store.db import as_engine
from wfkit.errors import (
    DatabaseError,
    GraphError,
    InvalidParamsError,
    InvalidStatusError,
    WfkitError,
    error_text,
)
from wfkit.events import MultiObserver, Observer, RunCancelled, RunFailed, RunStarted
from wfkit.executor.run_loop import (
    CHECKPOINT_FORMAT,
    INTERRUPTED,
    Plan,
    RunLoop,
    StageCapture,
    new_run,
)
from wfkit.graph import Walker
from wfkit.jsontext import check_json, dumps_state
from wfkit.store.models import Run, RunStatus, check_transition
from wfkit.store.query import parse_uuid
from wfkit.store.recorder import SqlRecorder
from wfkit.plugins import default_registry, plugin_observers
from wfkit.registry import Registry
from wfkit.store.repository import Repository
from wfkit.runtime import Runtime

__all__ = ["CHECKPOINT_FORMAT", "INTERRUPTED", "Executor", "dumps_state"]


class Executor:
    """Runs workflows from a registry against a database, recording every stage and decision.

    ``database``: an engine, a URL, or None for the configured default (it must be migrated).
    ``registry``: where workflows are looked up (default: the default registry, with plugins).
    ``runtime``: the services handed to factories. ``observers``: extra observers of every run
    (isolated: one that raises is logged). When no registry is given, observers that plugins
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
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
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
            self._cancel.setdefault(plan.run_id, threading.Event())  # a cancel() before it starts is seen
        thread.start()
        return plan.run_id

    async def astart(self, name: str, params: Mapping[str, Any] | None = None) -> uuid.UUID:
        """Like :meth:`start`, as a task on the running event loop: its async nodes are awaited there,
        and a cancel through this executor cancels the task of the node that is running (one from
        another process stops it before its next node). Returns the run's id at once (see
        :meth:`await_run`). Should the loop end first, the run ends cancelled, resumable."""
        plan = await asyncio.to_thread(self._cold_start, name, params)
        rid = plan.run_id
        task = asyncio.get_running_loop().create_task(self._ahot_in_background(plan), name=f"wfkit-run-{rid}")
        with self._lock:
            self._tasks[rid] = task
            self._cancel.setdefault(rid, threading.Event())
        task.add_done_callback(lambda _: self._forget_task(rid, task))
        return rid

    def _forget_task(self, run_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        with self._lock:
            if self._tasks.get(run_id) is task:
                del self._tasks[run_id]

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

    async def await_run(self, run_id: uuid.UUID | str, timeout: float | None = None) -> Run:
        """Like :meth:`wait`, without blocking the event loop, for a run started by :meth:`astart` (or
        :meth:`start`) in this executor; return it as it stands."""
        rid = parse_uuid(run_id)
        with self._lock:
            task = self._tasks.get(rid)
        if task is None:  # a thread's run, or a task that is over
            return await asyncio.to_thread(self.wait, rid, timeout)
        if task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({task}, timeout=timeout)
        else:  # a task of another loop cannot be awaited here: look until it is done
            deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
            while not task.done() and (deadline is None or asyncio.get_running_loop().time() < deadline):
                await asyncio.sleep(0.01)
        return await asyncio.to_thread(self.repository.find_run, rid)

    def cancel(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Cancel a run: a pending one at once; a running one before its next node (from any process).

        ``force`` ends a running run as cancelled at once, for a run whose process is gone (it would
        otherwise stay ``running``); the stage it left started is marked failed, and the run can be
        resumed. Should its process still be alive, it stops before its next node. Cancelling a
        finished run is an :class:`InvalidStatusError`.
        """
        rid = parse_uuid(run_id)
        run = self.repository.find_run(rid)
        check_transition(run.status, RunStatus.CANCELLED)
        with SqlRecorder(self.engine) as rec:
            changed = False
            if run.status is RunStatus.PENDING:  # at once; unless it started meanwhile: then as a running run
                changed = rec.finish_run(rid, RunStatus.CANCELLED, from_status=RunStatus.PENDING) is not None
            if not changed:
                changed = rec.force_cancel(rid, INTERRUPTED) if force else rec.request_cancel(rid)
        with self._lock:
            event = self._cancel.get(rid)
        if event is not None:
            event.set()
        if not changed:  # it moved on meanwhile: say where it is now
            now = self.repository.find_run(rid)
            check_transition(now.status, RunStatus.CANCELLED)
        return self.repository.find_run(rid)

    async def acancel(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Like :meth:`cancel`, its database work in a thread (the event loop goes on meanwhile)."""
        return await asyncio.to_thread(self.cancel, run_id, force=force)

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

    async def adelete(self, run_id: uuid.UUID | str, *, force: bool = False) -> None:
        """Like :meth:`delete`, its database work in a thread."""
        await asyncio.to_thread(self.delete, run_id, force=force)

    # -- phases

    def _cold_start(self, name: str, params: Mapping[str, Any] | None, rec: SqlRecorder | None = None,
                    *, start: bool = False) -> Plan:
        """Resolve the workflow, check its params, create the run as pending. With ``start`` (and
        the hot start's recorder), create it running instead: creation and start in one transaction."""
        workflow = self.registry.get(name)
        checked = workflow.validate_params(params)
        stored = checked.model_dump(mode="json") if hasattr(checked, "model_dump") else dict(checked)
        try:
            check_json(stored)
        except (TypeError, ValueError) as err:
            raise InvalidParamsError(f"params of workflow {name!r} must be JSON-serializable: {err}") from None
        run_id = uuid.uuid4()
        if rec is not None and start:
            created_at, started_at = rec.create_and_start_run(run_id, name, stored)
            return Plan(run_id, workflow, stored, RunStatus.RUNNING, None, False, created_at, started_at,
                         started=True)
        if rec is None:
            with SqlRecorder(self.engine) as own:
                created_at = own.create_run(run_id, name, stored)
        else:
            created_at = rec.create_run(run_id, name, stored)
        return Plan(run_id, workflow, stored, RunStatus.PENDING, None, False, created_at)

    def _prepare_resume(self, run_id: uuid.UUID | str, force: bool) -> Plan:
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
        from wfkit.executor.checkpoints import SqlCheckpointStore

        saved = SqlCheckpointStore(self.engine).load(rid)
        snapshot = None if saved is None else {
            "state": saved.state, "next_node": saved.meta.get("next_node"), "counters": saved.meta.get("counters", {})
        }
        with SqlRecorder(self.engine) as rec:  # stages a dead process (or a lost write) left 'started'
            rec.interrupt_stages(rid, INTERRUPTED)
        return Plan(rid, workflow, run.params, run.status, snapshot, True, run.created_at, run.started_at)

    def _begin(self, rec: SqlRecorder, plan: Plan) -> RunLoop | None:
        """Mark the run running, build its graph, and set up the walk (None if the build failed, or
        if the run was cancelled before it started)."""
        run_id = plan.run_id
        if not plan.started:
            started = rec.start_run(run_id, plan.from_status)
            if started is None:
                now = self.repository.find_run(run_id)
                if plan.from_status is RunStatus.PENDING and now.status is RunStatus.CANCELLED:
                    return None  # cancelled before it started: nothing to run (the outcome reads it back)
                raise InvalidStatusError(f"run {run_id} is {now.status.value} now (it changed meanwhile); not started")
            plan.started_at = plan.started_at or started
        self.observers.on_event(RunStarted(run_id, plan.workflow.name, plan.params, plan.resumed))
        capture = StageCapture()
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
            return RunLoop(self, rec, run_id, graph, walker, capture, cancel)
        except WfkitError as err:
            plan.error = str(err)
            plan.failed = rec.finish_run(run_id, RunStatus.FAILED, error=plan.error)
            self.observers.on_event(RunFailed(run_id, plan.error))
            return None
        except BaseException as err:  # Ctrl-C, or a factory bug: the run must not stay 'running'
            if isinstance(err, (KeyboardInterrupt, asyncio.CancelledError)):
                rec.finish_run(run_id, RunStatus.CANCELLED)
                self.observers.on_event(RunCancelled(run_id, "interrupted while building the graph"))
            else:
                rec.finish_run(run_id, RunStatus.FAILED, error=f"building the graph failed: {error_text(err)}")
            raise

    def _outcome(self, plan: Plan, loop: RunLoop | None) -> Run:
        """The finished run, from what this process wrote (no read back), or as stored if unsure."""
        finished = loop.finished if loop is not None else plan.failed
        if finished is None or (loop is not None and loop.outcome is None):
            return self.repository.find_run(plan.run_id)
        return new_run(dict(
            id=plan.run_id, workflow_name=plan.workflow.name,
            status=loop.outcome if loop is not None else RunStatus.FAILED,
            params=plan.params, result=loop.result if loop is not None else None,
            error_message=loop.error if loop is not None else plan.error,
            started_at=plan.started_at, completed_at=finished.completed_at, created_at=plan.created_at,
            updated_at=finished.completed_at, cancel_requested_at=finished.cancel_requested_at,
        ))

    def _recorder(self, rec: SqlRecorder | None) -> Any:
        return contextlib.nullcontext(rec) if rec is not None else SqlRecorder(self.engine)

    def _hot(self, plan: Plan, rec: SqlRecorder | None = None) -> Run:
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

    async def _ahot(self, plan: Plan, rec: SqlRecorder | None = None) -> Run:
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

    def _hot_in_background(self, plan: Plan) -> None:
        try:
            self._hot(plan)
        except Exception:  # recorded in the run where possible; never kill the thread silently
            logging.getLogger("wfkit.executor").exception("run %s failed in the background", plan.run_id)

    async def _ahot_in_background(self, plan: Plan) -> None:
        try:
            await self._ahot(plan)
        except Exception:  # as in a thread (a cancelled task is recorded as a cancelled run, and re-raised)
            logging.getLogger("wfkit.executor").exception("run %s failed in the background", plan.run_id)

    def _guarded(self, loop: RunLoop, walk: Any) -> None:
        try:
            walk(loop)
        except BaseException as err:
            self._after_crash(loop, err)
            raise

    def _after_crash(self, loop: RunLoop, err: BaseException) -> None:
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
    def _walk_sync(loop: RunLoop) -> None:
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
    async def _walk_async(loop: RunLoop) -> None:
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
