"""The executor: runs registered workflows and records their history as it happens.

    from wfkit.executor import Executor
    executor = Executor("sqlite:///runs.db")        # the database must be migrated
    run = executor.execute("review-loop", {"threshold": 0.9})
    run.status, run.result

A run goes through three phases:

1. cold start: resolve the workflow (``WorkflowNotFoundError``), validate its
   params (``InvalidParamsError``), build and validate its graph, and create the
   run, held by this executor (its lease: :mod:`wfkit.executor.lease`):
   :meth:`Executor.execute` creates it ``running`` with its first stage current,
   in one statement; :meth:`Executor.start` creates it ``pending``, and its
   background thread starts it;
2. hot start: walk the graph; each step boundary is one transaction, fenced by
   the lease (the stage that ended, its decision, the checkpoint, and the next
   stage made current or the run's end: see :mod:`wfkit.store.recorder`; the
   steps themselves are :mod:`wfkit.executor.run_loop`'s), while a heartbeat
   thread extends the lease during long nodes;
3. the end: the result (the final state, or ``state[graph.result_key]``) or the
   error, ``completed_at`` and the final status, in the last step's transaction.

A failed or cancelled run resumes from its checkpoint
(:mod:`wfkit.executor.checkpoints`) without re-running the nodes that completed:
the resume claims it (one compare-and-set statement; a running run only once its
lease expired, with ``force``), so that at most one process executes a run at any
instant. :meth:`Executor.recover` resumes every run whose lease expired.
Cancellation is cooperative between nodes (also from another process: cancel
and delete are :mod:`wfkit.executor.control`'s, and need no executor), and
cancels the running task of an async node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.errors import (
    CheckpointError,
    ConfigurationError,
    ConflictError,
    DatabaseNotMigratedError,
    GraphError,
    InvalidParamsError,
    InvalidStatusError,
    LeaseLostError,
    NotFoundError,
    StateNotSerializableError,
    WfkitError,
    WorkflowBuildError,
    WorkflowNotFoundError,
)
from wfkit.events import MultiObserver, Observer, RunStarted
from wfkit.executor import checkpoints
from wfkit.executor.control import RunControl
from wfkit.executor import lease as leases
from wfkit.executor.lease import Heartbeat, new_owner
from wfkit.executor.run_loop import INTERRUPTED, Plan, RunLoop, StageCapture, Stop
from wfkit.formatting import shown
from wfkit.graph import Walker
from wfkit.ids import new_id, parse_uuid
from wfkit.jsontext import dumps_state, join_texts, key_texts
from wfkit.plugins import default_registry, plugin_observers
from wfkit.registry import Registry
from wfkit.runtime import Runtime
from wfkit.store.codec import row_loader
from wfkit.store.db import as_engine, display_url
from wfkit.store.models import Run, RunStatus, StageStatus, check_transition, utcnow
from wfkit.store.query import parse_workflow_names
from wfkit.store.recorder import OpenStage, SqlRecorder
from wfkit.store.repository import Repository

log = logging.getLogger("wfkit.executor")
#: A finished run from values this process wrote itself (typed already: no validation needed).
_load_run = row_loader(Run)
_RUN_FIELDS = tuple(column.key for column in Run.__table__.columns)


@dataclass(frozen=True)
class Recovered:
    """What :meth:`Executor.recover` did with one run: the run as it ended, or the error that kept it
    from being recovered (another process took it first, its workflow is gone...)."""

    run_id: uuid.UUID
    run: Run | None = None
    error: WfkitError | None = None


class Executor:
    """Runs workflows from a registry against a database, recording every stage and decision.

    ``database``: an engine, a URL, or None for the configured default (it must be migrated).
    ``registry``: where workflows are looked up (default: the default registry, with plugins).
    ``runtime``: the services handed to factories. ``observers``: extra observers of every run
    (isolated: one that raises is logged). When no registry is given, observers that plugins
    contribute through ``wfkit_observers()`` are added. ``checkpoint_every``: save a checkpoint
    after every N nodes (default 1; a larger N writes less but re-runs up to N-1 nodes on resume).
    ``lease_seconds``: how long this executor holds a run without renewing it (default
    ``$WFKIT_LEASE_SECONDS``, else 30). ``durability``: ``"sync"`` (default ``$WFKIT_DURABILITY``,
    else sync: a committed step survives a crash of the database server or of the machine) or
    ``"async"`` (it survives a killed process; see :mod:`wfkit.store.recorder`).
    """

    def __init__(self, database: Engine | str | None = None, registry: Registry | None = None,
                 runtime: Runtime | None = None, observers: Iterable[Observer] = (), *, checkpoint_every: int = 1,
                 lease_seconds: float | None = None, durability: str | None = None):
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise InvalidParamsError(f"checkpoint_every must be a whole number of at least 1, got {checkpoint_every!r}")
        self.lease_seconds = leases.lease_seconds(lease_seconds)
        self.durability = leases.durability(durability)
        self.engine = as_engine(database, create_missing=False)  # it must exist, migrated
        self._own_engine = not isinstance(database, Engine)
        self.registry = registry if registry is not None else default_registry()
        self.runtime = runtime if runtime is not None else Runtime()
        extra = list(observers)
        if registry is None:
            extra += plugin_observers()
        self.observers = MultiObserver(extra)
        self.checkpoint_every = checkpoint_every
        #: who this executor is to the runs it holds (``host pid N (random id)``)
        self.owner = new_owner()
        self.heartbeat = Heartbeat(self.engine, lease_seconds=self.lease_seconds, durability=self.durability)
        self.repository = Repository(self.engine)
        self.control = RunControl(repository=self.repository)
        self._cancel: dict[uuid.UUID, threading.Event] = {}
        self._stops: dict[uuid.UUID, Stop] = {}  # the runs this executor is executing, how to stop each
        self._background: dict[uuid.UUID, _Background] = {}  # the runs started by start() and astart()
        self._handback: Any = None  # set by drain(): how each run is handed back to the workers' queue
        self._lock = threading.Lock()

    # -- public API

    def execute(self, name: str, params: Mapping[str, Any] | None = None) -> Run:
        """Create a run of workflow ``name`` and execute it to the end; return the finished run.
        Raises :class:`LeaseLostError` if another process took the run over meanwhile (this one
        then wrote nothing more)."""
        with self._recorder() as recorder:
            return self._hot(self._cold_start(name, params, recorder, start=True), recorder)

    async def aexecute(self, name: str, params: Mapping[str, Any] | None = None) -> Run:
        """Like :meth:`execute`, awaiting async nodes (a cancelled task cancels the run)."""
        with self._recorder() as recorder:
            return await self._ahot(self._cold_start(name, params, recorder, start=True), recorder)

    def start(self, name: str, params: Mapping[str, Any] | None = None, *,
              idempotency_key: str | None = None) -> uuid.UUID:
        """Create a run and execute it in a background thread; return its id at once (see :meth:`wait`).
        The run's connection is taken before the run is created: with the pool full, this raises.
        Should this process end before the run does, the run's lease expires and
        :meth:`recover` (``wfkit runs recover``) finishes it from its checkpoint.

        ``idempotency_key``: a retried call with the same key returns the run the first one made
        (and starts nothing); with another workflow or other params it is a :class:`ConflictError`."""
        key = _idempotency_key(idempotency_key)
        earlier = self.started_with(key, name, params) if key is not None else None
        if earlier is not None:  # a retry: answered without building the workflow again
            return earlier.id
        recorder = self._open_recorder()
        try:
            plan = self._cold_start(name, params, recorder, start=False, idempotency_key=key)
        except BaseException:
            recorder.close()
            raise
        if isinstance(plan, Run):  # made before, with this key
            recorder.close()
            return plan.id
        self._in_background(plan, recorder)
        return plan.run_id

    def submit(self, name: str, params: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None,
               queue: str | None = None) -> uuid.UUID:
        """Create a run for the workers (``wfkit worker``) and return its id at once: the run,
        pending and held by nobody, and the job that hands it to a worker are written in one
        transaction on one connection, so that neither exists without the other. The workflow, its
        params and its graph are checked here first: an error then writes nothing. ``queue``: the
        workers' queue to put it in (default ``wfkit``). ``idempotency_key``: as :meth:`start`.
        Needs PostgreSQL and the ``worker`` extra."""
        from wfkit.store import queue as queues

        key = _idempotency_key(idempotency_key)
        self.check_workers()
        queue_name = _queue_name(queue)
        earlier = self.started_with(key, name, params) if key is not None else None
        if earlier is not None:
            return earlier.id
        enqueue_for = queues.enqueuer
        workflow, stored, walker, _capture, texts = self._built(name, params)
        state_json = join_texts(texts)
        run_id = new_id()
        with self._recorder() as recorder:
            made = recorder.submit_run(run_id, name, stored, idempotency_key=key,
                                       checkpoint_json=checkpoints.encode_start(walker.node, state_json),
                                       enqueue=enqueue_for(run_id, queue_name))
        if made is None:  # a run was made with this key meanwhile
            return _same_request(self.repository.find_run_by_idempotency_key(key), key, name, stored).id  # type: ignore[arg-type]
        return run_id

    def execute_submitted(self, run_id: uuid.UUID | str) -> Run | None:
        """Execute a run made by :meth:`submit` (a worker's job), here, to its end, on an event loop
        of its own in this thread (async nodes are awaited there, and cancelled at once when the run
        is): claimed first (one compare-and-set statement), so that of two deliveries of its job one
        executes it. A run whose worker stopped holding it (its lease expired: the workers'
        recovery handed it on) is taken over and continues from its checkpoint. None, and nothing
        done, if the run is no longer waiting (cancelled, ended or deleted before a worker took it,
        or held by another). The run as it ended, or as it stands if it was handed back to the queue
        (pending: see :meth:`drain`)."""
        return asyncio.run(self._aexecute_submitted(run_id))

    async def _aexecute_submitted(self, run_id: uuid.UUID | str) -> Run | None:
        with self._recorder() as recorder:
            plan = self._prepare_resume(run_id, False, recorder, submitted=True)
            if plan is None:
                return None
            return await self._ahot(plan, recorder)

    def drain(self, enqueue_for: Any) -> None:
        """Hand every run this executor executes (and any it starts from now on) back to the workers'
        queue before its next node (its node finishes first): for a worker that stops. Each run,
        with a checkpoint where it stopped, becomes pending again, held by nobody, with the job
        ``enqueue_for(run_id)`` makes, in one transaction; another worker continues it at once.
        A run asked to cancel meanwhile ends cancelled instead."""
        with self._lock:
            self._handback = enqueue_for
            stops = list(self._stops.items())
        for run_id, stop in stops:
            stop.handback = enqueue_for(run_id)

    def check_workers(self) -> None:
        """Raise, saying what to do, unless runs can be submitted to workers here: the database must
        be PostgreSQL with the workers' queue installed (``wfkit db upgrade``), and Procrastinate
        installed (the ``worker`` extra)."""
        check_workers(self.engine)

    def submit_resume(self, run_id: uuid.UUID | str, *, queue: str | None = None) -> Run:
        """Hand the resume of a failed or cancelled run to the workers (``wfkit runs resume ID
        --submit``): checked as :meth:`resume` checks it (its workflow still builds and fits its
        checkpoint), then made pending again with a job for it, in one transaction; a worker
        continues it from its checkpoint. A pending run that nobody holds and that has no job (its
        job was deleted from the queue) gets a job again. Returns the run, pending. Needs
        PostgreSQL and the ``worker`` extra."""
        from wfkit.store import queue as queues

        self.check_workers()
        queue_name = _queue_name(queue)
        enqueue_for = queues.enqueuer
        run = self.control.check_resume(run_id)
        if run.status is RunStatus.PENDING:
            if run.owner is not None:
                raise InvalidStatusError(f"run {run.id} is pending, held by {run.owner}: it starts when that "
                                         "process starts it")
            waiting = [job for job in queues.jobs_of(self.engine, run.id) if job[2] in ("todo", "doing")]
            if waiting:
                raise InvalidStatusError(f"run {run.id} is pending with a job in queue {waiting[-1][1]!r} "
                                         f"already: a worker takes it when one is free")
        workflow = self.registry.get(run.workflow_name)
        graph, initial = workflow.build(run.params, self.runtime)
        self._walker_at_checkpoint(run, graph, initial, StageCapture())  # it must fit, before anything changes
        with self._recorder() as recorder:
            if not recorder.resubmit(run.id, enqueue_for(run.id, queue_name)):
                check_transition(self.repository.find_run(run.id).status, RunStatus.PENDING)
                raise InvalidStatusError(f"run {run.id} changed meanwhile; not resubmitted")
        return self.repository.find_run(run.id)

    def started_with(self, idempotency_key: str, name: str, params: Mapping[str, Any] | None = None) -> Run | None:
        """The run a :meth:`start` with ``idempotency_key`` made, if there is one (None: a start with
        it would make a new run). Its workflow and params must be ``name`` and ``params`` (checked as
        a start checks them, without building the workflow), else :class:`ConflictError`."""
        key = _idempotency_key(idempotency_key)
        try:
            earlier = self.repository.find_run_by_idempotency_key(key)  # type: ignore[arg-type]
        except NotFoundError:
            return None
        _checked, stored = _checked_params(self.registry.get(name), params)
        return _same_request(earlier, key, name, stored)  # type: ignore[arg-type]

    def background_count(self) -> int:
        """How many runs started by :meth:`start`, :meth:`astart` or :meth:`resume_in_background`
        have not ended yet (each holds a connection of the pool)."""
        with self._lock:
            return len(self._background)

    def _in_background(self, plan: Plan, recorder: SqlRecorder) -> None:
        thread = threading.Thread(target=self._hot_in_background, name=f"wfkit-run-{plan.run_id}",
                                  args=(plan, recorder), daemon=True)
        self._track(plan.run_id, _Background(thread=thread))
        thread.start()

    def resume_in_background(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Like :meth:`resume`, but returns as soon as the run is claimed (as it stands then, running)
        and goes on in a background thread: a run that may not resume, or that another process
        holds, is an error here, before anything runs."""
        recorder = self._open_recorder()
        try:
            plan = self._prepare_resume(run_id, force, recorder)
        except BaseException:
            recorder.close()
            raise
        self._in_background(plan, recorder)
        return self.repository.find_run(plan.run_id)

    def shutdown(self, grace: float = 0.0, reason: str = "the process executing it stopped", *,
                 stop_timeout: float = 10.0) -> None:
        """Stop what this executor executes in threads, for a service that is shutting down: wait up
        to ``grace`` seconds for the runs to end, then stop the others before their next node
        (cancelled for ``reason``, resumable) and wait up to ``stop_timeout`` seconds for that. A
        run whose node is still executing then is cancelled as ``force`` cancels (its stage is
        recorded as interrupted and runs again on resume; the node's thread writes nothing more).
        Then its connections are closed, as :meth:`close` closes them."""
        self.stop_background(grace, reason, stop_timeout=stop_timeout)
        self._release()

    def stop_background(self, grace: float = 0.0, reason: str = "the process executing it stopped", *,
                        stop_timeout: float = 10.0) -> None:
        """:meth:`shutdown` but for its last step: the runs stop, the executor stays usable (its
        connections stay open for readers still at work, such as a server's event streams)."""
        import time

        deadline = time.monotonic() + max(0.0, grace)
        with self._lock:
            background = dict(self._background)
        for bg in background.values():
            bg.done.wait(max(0.0, deadline - time.monotonic()))
        self.interrupt(reason)
        deadline = time.monotonic() + max(0.0, stop_timeout)
        for run_id, bg in background.items():
            if not bg.done.wait(max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(WfkitError):  # it ended meanwhile: nothing to force
                    self.cancel(run_id, force=True, reason=f"{reason} (its node was still executing: it runs "
                                "again on resume)")
        # A thread whose node still executes is left to the process's end (it is a daemon, and it
        # writes nothing more: the forced cancel fenced it off).

    async def astart(self, name: str, params: Mapping[str, Any] | None = None) -> uuid.UUID:
        """Like :meth:`start`, as a task on the running event loop: its async nodes are awaited there,
        and a cancel through this executor cancels the task of the node that is running (one from
        another process stops it before its next node). Returns the run's id at once (see
        :meth:`await_`). Should the loop end first, the run ends cancelled, resumable."""
        recorder = await asyncio.to_thread(self._open_recorder)
        try:
            plan = await asyncio.to_thread(lambda: self._cold_start(name, params, recorder, start=False))
        except BaseException:
            recorder.close()
            raise
        rid = plan.run_id
        task = asyncio.get_running_loop().create_task(self._ahot_in_background(plan, recorder),
                                                      name=f"wfkit-run-{rid}")
        self._track(rid, _Background(task=task))
        return rid

    def _track(self, run_id: uuid.UUID, background: _Background) -> None:
        with self._lock:
            self._background[run_id] = background
            self._cancel.setdefault(run_id, threading.Event())  # a cancel() before it starts is seen

    def _started(self, run_id: uuid.UUID | str) -> tuple[uuid.UUID, _Background | None]:
        """The run's id, and how it runs if this executor started it (else None)."""
        rid = parse_uuid(run_id)
        with self._lock:
            return rid, self._background.get(rid)

    def wait(self, run_id: uuid.UUID | str, timeout: float | None = None) -> Run:
        """Wait for a run this executor started (:meth:`start` or :meth:`astart`) to end, and return
        it; a run it did not start is returned as it stands. Like a future's ``result(timeout)``: a
        run still going after ``timeout`` seconds raises :class:`TimeoutError` (the run goes on)."""
        rid, background = self._started(run_id)
        if background is not None:
            task = background.task
            if task is not None and _on_loop_of(task):
                raise InvalidStatusError(f"run {rid} runs as a task of this thread's event loop: waiting here "
                                         "would stop it; await executor.await_(run_id) instead")
            if not background.done.wait(timeout):
                raise TimeoutError(f"run {rid} has not ended after {timeout} s; it goes on")
        return self.repository.find_run(rid)

    async def await_(self, run_id: uuid.UUID | str, timeout: float | None = None) -> Run:
        """Like :meth:`wait`, without blocking the event loop (``a`` + ``wait`` is a keyword, hence the
        underscore): for a run started by :meth:`astart` or :meth:`start` in this executor."""
        rid, background = self._started(run_id)
        if background is not None:
            task = background.task
            if task is not None and _on_loop_of(task):
                await asyncio.wait({task}, timeout=timeout)
                ended = task.done()
            else:  # a thread's run, or a task of another loop
                ended = await asyncio.to_thread(background.done.wait, timeout)
            if not ended:
                raise TimeoutError(f"run {rid} has not ended after {timeout} s; it goes on")
        return await asyncio.to_thread(self.repository.find_run, rid)

    #: The earlier name of :meth:`await_`, kept for the code that uses it.
    await_run = await_

    def close(self) -> None:
        """Wait for the runs this executor started in threads to end, then close its connections
        (and the engine it made from a URL). Runs started with :meth:`astart` belong to their event
        loop: await them (:meth:`await_`) before closing."""
        with self._lock:
            threads = [bg.thread for bg in self._background.values() if bg.thread is not None]
        for thread in threads:
            thread.join()
        self._release()

    def _release(self) -> None:
        """Close the heartbeat, the connections and the engine this executor made."""
        self.heartbeat.close()
        self.repository.close()
        if self._own_engine:
            self.engine.dispose()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cancel(self, run_id: uuid.UUID | str, *, force: bool = False, reason: str | None = None) -> Run:
        """Cancel a run (see :meth:`RunControl.cancel <wfkit.executor.control.RunControl.cancel>`); one
        that this executor is executing stops before its next node without waiting for the database
        to say so, and the task of its async node, if one is running, is cancelled."""
        rid = parse_uuid(run_id)
        with self._lock:
            stop = self._stops.get(rid)
        if force and stop is not None:  # a run of ours: its fenced-off writes will be no loss to report
            stop.forced = True
            if stop.held is not None:
                self.heartbeat.release(stop.held)
        run = self.control.cancel(rid, force=force, reason=reason)  # raises, and stops nothing, if it did not stand
        with self._lock:
            event = self._cancel.get(rid)
        if event is not None:
            event.set()
        return run

    def interrupt(self, reason: str) -> None:
        """Stop every run this executor is executing, at once: each ends cancelled for ``reason``
        before its next node (an async node's task is cancelled), resumable. For a process that is
        stopping (a signal reached it while its runs execute in other threads)."""
        with self._lock:
            stops = list(self._stops.values())
        for stop in stops:
            stop.cancel_reason = stop.cancel_reason or reason
            stop.event.set()

    def interrupt_run(self, run_id: uuid.UUID | str, reason: str) -> None:
        """Stop one run this executor is executing, at once, as :meth:`interrupt` stops them all
        (a worker whose job was aborted: the run's cancel, recorded already by whoever asked)."""
        with self._lock:
            stop = self._stops.get(parse_uuid(run_id))
        if stop is not None:
            stop.cancel_reason = stop.cancel_reason or reason
            stop.event.set()

    async def acancel(self, run_id: uuid.UUID | str, *, force: bool = False, reason: str | None = None) -> Run:
        """Like :meth:`cancel`, its database work in a thread (the event loop goes on meanwhile)."""
        return await asyncio.to_thread(self.cancel, run_id, force=force, reason=reason)

    def resume(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Continue a failed or cancelled run from its checkpoint; ``force`` takes over a ``running``
        run whose lease expired (its process is gone, or stalled: it writes nothing more once this
        one holds the run). Completed nodes are not run again. A run another process holds is an
        :class:`InvalidStatusError` naming it."""
        with self._recorder() as recorder:
            return self._hot(self._prepare_resume(run_id, force, recorder), recorder)

    async def aresume(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """Like :meth:`resume`, awaiting async nodes."""
        with self._recorder() as recorder:
            plan = await asyncio.to_thread(self._prepare_resume, run_id, force, recorder)
            return await self._ahot(plan, recorder)

    def recover(self, workflow_name: str | Sequence[str] | None = None, *, concurrency: int = 1) -> list[Recovered]:
        """Resume, from its checkpoint, every run whose lease expired (its process died or stalled), of
        any workflow or of those named: one after another, or ``concurrency`` at a time in threads.
        Returns what became of each (oldest first). Automatic recovery for one machine: call it when
        a service starts, say; a run another process claims first is skipped (its ``error`` says so)."""
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidParamsError(f"concurrency must be a whole number of at least 1, got {concurrency!r}")
        names = parse_workflow_names([workflow_name] if isinstance(workflow_name, str) else workflow_name or ())
        with self._recorder() as recorder:
            expired = recorder.expired(names)

        def one(rid: uuid.UUID) -> Recovered:
            try:
                return Recovered(rid, run=self.resume(rid, force=True))
            except WfkitError as err:
                return Recovered(rid, error=err)

        if concurrency == 1 or len(expired) <= 1:
            return [one(rid) for rid in expired]
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="wfkit-recover")
        futures = [pool.submit(one, rid) for rid in expired]
        try:
            return [future.result() for future in futures]
        except BaseException as err:  # Ctrl-C or a stop signal, in this thread: the runs in flight stop too
            from wfkit.executor.run_loop import interrupt_reason

            pool.shutdown(wait=False, cancel_futures=True)
            self.interrupt(interrupt_reason(err) if isinstance(err, KeyboardInterrupt) else f"stopped: {err}")
            raise
        finally:
            pool.shutdown(wait=True)

    def delete(self, run_id: uuid.UUID | str, *, force: bool = False) -> None:
        """Delete a run with its stages, decisions and checkpoint. A running run needs ``force``."""
        self.control.delete(run_id, force=force)

    async def adelete(self, run_id: uuid.UUID | str, *, force: bool = False) -> None:
        """Like :meth:`delete`, its database work in a thread."""
        await asyncio.to_thread(self.delete, run_id, force=force)

    # -- phases

    def _recorder(self) -> SqlRecorder:
        return SqlRecorder(self.engine, durability=self.durability, lease_seconds=self.lease_seconds)

    def _open_recorder(self) -> SqlRecorder:
        """A recorder with its connection taken now: a run that has one never waits for the pool (a
        full pool is an error to the caller, before any run is created)."""
        recorder = self._recorder()
        recorder.__enter__()
        return recorder

    def _cold_start(self, name: str, params: Mapping[str, Any] | None, recorder: SqlRecorder, *,
                    start: bool, idempotency_key: str | None = None) -> Any:
        """Resolve the workflow, check its params, build and validate its graph, and only then create
        the run: a factory that raises or a graph that does not validate is an error to the caller,
        and no run is recorded (factories do not see the run's id, so nothing needs it before).
        With ``start``, the run is created running with its first stage current (one statement),
        else pending."""
        workflow, stored, walker, capture, texts = self._built(name, params)
        state_json = join_texts(texts)
        run_id = new_id()
        opened = OpenStage(new_id(), walker.node, 1, utcnow(), 1) if start and walker.node is not None else None
        created_at = recorder.create_run(run_id, name, stored, owner=self.owner, stage=opened,
                                         checkpoint_json=checkpoints.encode_start(walker.node, state_json),
                                         idempotency_key=idempotency_key)
        if created_at is None:  # a run was made with this key before: it, if it is the same request
            earlier = self.repository.find_run_by_idempotency_key(idempotency_key)  # type: ignore[arg-type]
            return _same_request(earlier, idempotency_key, name, stored)  # type: ignore[arg-type]
        if start:
            return Plan(run_id, workflow, stored, walker, capture, state_json, False, created_at, epoch=1, attempt=1,
                        started_at=created_at, opened=opened, texts=texts)
        return Plan(run_id, workflow, stored, walker, capture, state_json, False, created_at, epoch=1, attempt=0,
                    pending=True, idempotency_key=idempotency_key, texts=texts)

    def _built(self, name: str, params: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any], Walker,
                                                                           StageCapture, dict[str, str]]:
        """Workflow ``name`` resolved, ``params`` checked (and as stored), its graph built and
        validated, its walk at the start and the initial state's values as JSON text (see
        :func:`~wfkit.jsontext.key_texts`): every error a new run can meet before it is recorded."""
        workflow = self.registry.get(name)
        checked, stored = _checked_params(workflow, params)
        graph, initial = workflow.build_checked(checked, self.runtime)
        capture = StageCapture()
        walker = Walker(graph, initial, observer=capture)
        return workflow, stored, walker, capture, key_texts(walker.state, f"the initial state of workflow {name!r}")

    def _prepare_resume(self, run_id: uuid.UUID | str, force: bool, recorder: SqlRecorder, *,
                        submitted: bool = False) -> Any:
        """Check that the run may resume and that its workflow still builds and fits its checkpoint
        (an error before the run is touched), claim it (one compare-and-set statement), then rebuild
        its walk where its checkpoint left it: read again after the claim, since the run's last
        holder may have written a step between the first read and the claim."""
        if submitted:
            return self._prepare_submitted(run_id, recorder)
        run = self.control.check_resume(run_id, force=force)
        workflow = self.registry.get(run.workflow_name)
        graph, initial = workflow.build(run.params, self.runtime)
        capture = StageCapture()
        self._walker_at_checkpoint(run, graph, initial, capture)  # checked before the run is claimed
        return self._claimed_plan(run, workflow, graph, initial, capture, recorder, force=force)

    def _prepare_submitted(self, run_id: uuid.UUID | str, recorder: SqlRecorder) -> Any:
        """A worker's job: only a run waiting for one, or handed on by the recovery (None otherwise:
        cancelled, ended or deleted before a worker took it, or held by another). The run is claimed
        first (one compare-and-set statement): from then on its lease is live, so the workers'
        recovery leaves it alone while its workflow is built and its checkpoint read. A run that
        cannot be executed here (its workflow is not installed on this worker, or no longer builds
        with its params, or no longer fits its checkpoint) then fails, saying why, and the error is
        raised: it would fail the same way at every attempt, and a run left waiting would be
        dispatched again and again. Any other error (the database, say) leaves the run held until
        its lease expires: the recovery hands it on then."""
        try:
            run = self.repository.find_run(run_id)
        except NotFoundError:
            return None  # deleted before a worker took it
        if run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
            return None
        claim = recorder.claim(run.id, self.owner, submitted=True)
        if claim is None:
            return None
        try:
            workflow = self.registry.get(run.workflow_name)
            graph, initial = workflow.build(run.params, self.runtime)
            return self._plan_after_claim(run, workflow, graph, initial, StageCapture(), recorder, claim,
                                          submitted=True, fail=False)
        except _CANNOT_EXECUTE as err:
            message = str(err)
            if isinstance(err, WorkflowNotFoundError):
                message = (f"{message} (on worker {self.owner}): install its plugin on every worker that takes "
                           "its queue, or submit it to a queue only workers that have it take; then resume it "
                           f"with `wfkit runs resume {run.id} --submit`")
            if claim.left_running is not None:  # the stage its last holder was executing when it stopped
                stage_id, node, iteration, started_at = claim.left_running
                recorder.stage_ended(run.id, OpenStage(stage_id, node, iteration, started_at or utcnow(),
                                                       max(1, claim.attempt - 1)),
                                     StageStatus.FAILED, error=INTERRUPTED)
            recorder.finish_run(run.id, claim.epoch, RunStatus.FAILED, error=message)
            if message != str(err):
                raise WorkflowNotFoundError(message) from None
            raise

    def _claimed_plan(self, run: Run, workflow: Any, graph: Any, initial: Any, capture: StageCapture,
                      recorder: SqlRecorder, *, force: bool = False) -> Any:
        """Claim the run (one compare-and-set statement), then rebuild its walk where its checkpoint
        left it (read again after the claim)."""
        claim = recorder.claim(run.id, self.owner, take_over=force)
        if claim is None:
            raise self.control.not_claimable(run.id, recorder.holder(run.id), force=force)
        return self._plan_after_claim(run, workflow, graph, initial, capture, recorder, claim)

    def _plan_after_claim(self, run: Run, workflow: Any, graph: Any, initial: Any, capture: StageCapture,
                          recorder: SqlRecorder, claim: Any, *, submitted: bool = False, fail: bool = True) -> Any:
        """The run's walk rebuilt where its checkpoint left it, read after the claim (its last holder
        may have written a step meanwhile). A checkpoint that no longer fits fails the run (``fail``;
        else the caller does)."""
        try:
            walker, loaded = self._walker_at_checkpoint(run, graph, initial, capture)
            # Encoded now, before any node runs: a node may change a value in place (see RunLoop.step_done).
            texts = key_texts(walker.state, "the state to resume from")
            state_json = None if loaded.stage_id is not None else join_texts(texts)
        except WfkitError as err:  # the checkpoint changed meanwhile, and no longer fits: the run fails
            if fail:
                recorder.finish_run(run.id, claim.epoch, RunStatus.FAILED, error=str(err))
            raise
        return Plan(run.id, workflow, run.params, walker, capture, state_json, not submitted or claim.attempt > 1, run.created_at,
                    epoch=claim.epoch, attempt=claim.attempt, started_at=run.started_at or utcnow(), claim=claim,
                    state_from=loaded.stage_id, checkpoint_row=loaded.exists, idempotency_key=run.idempotency_key,
                    texts=texts)

    def _walker_at_checkpoint(self, run: Run, graph: Any, initial: Any,
                              capture: StageCapture) -> tuple[Walker, checkpoints.Loaded]:
        loaded = checkpoints.load(self.repository, run.id)
        if loaded.snapshot is None:
            return Walker(graph, initial, observer=capture), loaded
        try:
            return Walker.from_snapshot(graph, loaded.snapshot, observer=capture), loaded
        except GraphError as err:
            raise CheckpointError(f"the checkpoint of run {run.id} does not fit workflow {run.workflow_name!r} "
                                  f"as it is now: {err}") from None

    def _begin(self, recorder: SqlRecorder, plan: Plan, stop: Stop) -> RunLoop | None:
        """Start the run if it is pending and set up its walk (None if it was cancelled before it
        started: nothing to run)."""
        run_id = plan.run_id
        if plan.pending:
            try:
                plan.started_at = recorder.start_pending(run_id, plan.epoch)
            except LeaseLostError:
                try:
                    if self.repository.find_run(run_id).status is RunStatus.CANCELLED:
                        return None  # cancelled before it started (the outcome reads it back)
                except NotFoundError:
                    return None  # deleted before it started: nothing to run (the outcome says so)
                raise
            plan.attempt = 1
        with self._lock:
            cancel = self._cancel.setdefault(run_id, threading.Event())
            self._stops[run_id] = stop
            if self._handback is not None:  # a worker stopping: this run goes back before its first node
                stop.handback = self._handback(run_id)
        stop.event = cancel
        loop = RunLoop(recorder, plan, observers=self.observers, checkpoint_every=self.checkpoint_every,
                       cancel=cancel, lost=stop)
        if self.observers:
            self.observers.on_event(RunStarted(run_id, plan.workflow.name, plan.params, plan.resumed))
        return loop

    def _outcome(self, plan: Plan, loop: RunLoop | None) -> Run:
        """The finished run, from what this process wrote (no read back), or as stored if unsure."""
        finished = loop.finished if loop is not None else None
        if loop is None or finished is None or loop.outcome is None:
            return self.repository.find_run(plan.run_id)
        values = dict(
            id=plan.run_id, workflow_name=plan.workflow.name, status=loop.outcome, params=plan.params,
            result=loop.result, error_message=loop.error, started_at=plan.started_at,
            completed_at=finished.completed_at, created_at=plan.created_at, updated_at=finished.completed_at,
            cancel_requested_at=finished.cancel_requested_at, cancel_reason=finished.cancel_reason,
            owner=self.owner, attempt=plan.attempt, lease_epoch=plan.epoch, lease_expires_at=None,
            current_stage_id=None, current_node=None, current_iteration=None, current_stage_started_at=None,
            idempotency_key=plan.idempotency_key,
        )
        return _load_run([values[field] for field in _RUN_FIELDS])

    # -- the hot start, sync and async: the same, but for how the walk is driven

    @contextlib.contextmanager
    def _executing(self, plan: Plan, recorder: SqlRecorder | None, stop: Stop) -> Iterator[RunLoop | None]:
        """The run's walk, set up on ``recorder`` (or a recorder of its own), with its heartbeat: None
        if there is nothing to walk. Whatever escapes the walk (Ctrl-C, a cancelled task, a failed
        write) ends the run through :meth:`RunLoop.crashed` first; the run's cancel flag is dropped
        afterwards."""
        held = None
        try:
            with contextlib.nullcontext(recorder) if recorder is not None else self._recorder() as rec:
                loop = self._begin(rec, plan, stop)
                if loop is not None:
                    held = loop.held = stop.held = self.heartbeat.hold(plan.run_id, plan.epoch, _stopper(stop))
                try:
                    yield loop
                except BaseException as err:
                    if loop is not None:
                        loop.crashed(err)
                    raise
        finally:
            if held is not None:
                self.heartbeat.release(held)
            with self._lock:
                self._cancel.pop(plan.run_id, None)
                self._stops.pop(plan.run_id, None)

    def _hot(self, plan: Plan, recorder: SqlRecorder | None = None) -> Run:
        stop = Stop()
        try:
            with self._executing(plan, recorder, stop) as loop:
                if loop is not None:
                    loop.walk()
        except LeaseLostError as err:
            return self._lost(plan, stop, err)
        return self._outcome(plan, loop)

    async def _ahot(self, plan: Plan, recorder: SqlRecorder | None = None) -> Run:
        stop = Stop()
        try:
            with self._executing(plan, recorder, stop) as loop:
                if loop is not None:
                    await loop.awalk()
        except LeaseLostError as err:
            return self._lost(plan, stop, err)
        return self._outcome(plan, loop)

    def _lost(self, plan: Plan, stop: Stop, err: LeaseLostError) -> Run:
        """This process's write was fenced off: by its own forced cancel (the run, as it stands), or
        by another process (said once in the log, and raised)."""
        if stop.forced:
            return self.repository.find_run(plan.run_id)
        log.warning("%s", err)
        raise err

    def _hot_in_background(self, plan: Plan, recorder: SqlRecorder) -> None:
        try:
            self._hot(plan, recorder)
        except LeaseLostError:  # said once, in the log (see _lost): this process stopped
            pass
        except NotFoundError:  # deleted before it started: nothing ran, nothing to say
            pass
        except Exception:  # recorded in the run where possible; never kill the thread silently
            log.exception("run %s failed in the background", plan.run_id)
        finally:
            recorder.close()
            self._ended(plan.run_id)

    async def _ahot_in_background(self, plan: Plan, recorder: SqlRecorder) -> None:
        try:
            await self._ahot(plan, recorder)
        except LeaseLostError:
            pass
        except Exception:  # as in a thread (a cancelled task is recorded as a cancelled run, and re-raised)
            log.exception("run %s failed in the background", plan.run_id)
        finally:
            recorder.close()
            self._ended(plan.run_id)

    def _ended(self, run_id: uuid.UUID) -> None:
        """A background run ended: its waiters go on, and it is forgotten (a later wait reads it)."""
        with self._lock:
            background = self._background.pop(run_id, None)
        if background is not None:
            background.done.set()


def _stopper(stop: Stop) -> Any:
    """What the heartbeat calls when the lease is lost: the run stops at once."""

    def lost(reason: str) -> None:
        stop.reason = reason
        stop.event.set()

    return lost


def _checked_params(workflow: Any, params: Mapping[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """``params`` checked against ``workflow``'s model, and as they are stored with its run."""
    checked = workflow.validate_params(params)
    stored = checked.model_dump(mode="json") if hasattr(checked, "model_dump") else dict(checked)
    try:
        dumps_state(stored, f"the params of workflow {workflow.name!r}")
    except StateNotSerializableError as err:
        raise InvalidParamsError(str(err)) from None
    return checked, stored


def _same_request(earlier: Run, key: str, name: str, stored: dict[str, Any]) -> Run:
    """The run made before with idempotency ``key``, if this request (workflow ``name``, params
    ``stored``) is the one that made it; else a :class:`ConflictError`."""
    if earlier.workflow_name != name or earlier.params != stored:
        raise ConflictError(f"idempotency key {shown(key)} was used for run {earlier.id} of workflow "
                            f"{earlier.workflow_name!r} with other params: use a new key for a new request")
    return earlier


def check_workers(engine: Any) -> None:
    """Raise, saying what to do, unless runs can be submitted to workers on ``engine``'s database
    (see :meth:`Executor.check_workers`)."""
    from wfkit.store import queue as queues

    if engine.dialect.name != "postgresql":
        raise ConfigurationError(WORKERS_NEED_POSTGRESQL)
    if not queues.available():
        raise ConfigurationError("workers need Procrastinate, which is not installed: pip install 'wfkit[worker]'")
    if not queues.has_queue(engine):
        raise DatabaseNotMigratedError(f"the database at {display_url(engine)} has no workers' queue (Procrastinate's "
                                       "tables): run `wfkit db upgrade` with the worker extra installed")


#: What makes a submitted run impossible to execute on a worker, at any attempt: it fails at once.
_CANNOT_EXECUTE = (WorkflowNotFoundError, WorkflowBuildError, InvalidParamsError, CheckpointError, GraphError,
                   StateNotSerializableError)

#: Why a run cannot be submitted to workers on SQLite, and what to do.
WORKERS_NEED_POSTGRESQL = ("workers need PostgreSQL (they share the database from many machines), and this database "
                           "is SQLite: point wfkit at PostgreSQL with --database-url or WFKIT_DATABASE_URL "
                           "(postgresql://user@host/db), or run here with `wfkit run`")


def _queue_name(queue: str | None) -> str | None:
    """A workers' queue name as given, if it is one: 1 to 100 characters, no NUL, no spaces around."""
    if queue is None:
        return None
    if not isinstance(queue, str) or not queue.strip() or queue != queue.strip() or len(queue) > 100 \
            or "\x00" in queue:
        raise ConfigurationError(f"a queue name must be text of 1 to 100 characters with no spaces around it, "
                                 f"got {shown(queue)}")
    return queue


def _idempotency_key(key: str | None) -> str | None:
    """An idempotency key as given, if it is one: text of 1 to 200 characters, no NUL."""
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip() or len(key) > 200 or "\x00" in key:
        raise ConfigurationError(f"an idempotency key must be text of 1 to 200 characters, got {shown(key)}")
    return key


@dataclass
class _Background:
    """A run this executor executes in the background: its thread or its task, and when it ended."""

    thread: threading.Thread | None = None
    task: asyncio.Task[None] | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _on_loop_of(task: asyncio.Task[None]) -> bool:
    """Whether ``task`` belongs to the event loop running in this thread."""
    try:
        return task.get_loop() is asyncio.get_running_loop()
    except RuntimeError:  # no loop runs in this thread
        return False
