"""``wfkit worker``: executes the runs submitted to the workers' queue (Procrastinate on PostgreSQL).

Each job names a run (``Executor.submit`` wrote both in one transaction). The worker claims the run
(one compare-and-set: of two deliveries of a job, one executes it) and executes it with its lease
and heartbeat in a thread of its own, on an event loop of its own for async nodes: never on the
worker's event loop, so a blocking node cannot freeze the worker or its heartbeats.

- Cancel: ``wfkit runs cancel`` on a run a worker executes records the request and asks the queue
  to abort its job; Procrastinate tells the worker by NOTIFY, and the worker stops the run at once
  (an async node's task is cancelled; a sync node finishes, and the run stops before the next).
- Stop: the first SIGTERM or SIGINT stops taking jobs and hands each run back to the queue before
  its next node (pending again, with a new job, in one transaction: another worker continues it at
  once); the worker exits once they are handed back. A second signal exits at once: its runs'
  leases expire, and the recovery hands them on.
- Recovery: every worker runs it every ``WFKIT_RECOVERY_SECONDS`` (default 10), one at a time (an
  advisory lock): the runs a worker held whose lease expired (it died, or stalls) get a new job and
  are taken over from their checkpoint; after ``WFKIT_MAX_ATTEMPTS`` (default 5) attempts a run
  fails instead, saying so. See :func:`wfkit.store.queue.recover`.

Needs the ``worker`` extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from wfkit.errors import ConfigurationError, LeaseLostError, WfkitError
from wfkit.events import Event, RunCancelled, RunCompleted, RunFailed, RunStarted

log = logging.getLogger("wfkit.worker")

RECOVERY_SECONDS_ENV = "WFKIT_RECOVERY_SECONDS"
MAX_ATTEMPTS_ENV = "WFKIT_MAX_ATTEMPTS"
DEFAULT_RECOVERY_SECONDS = 10.0
DEFAULT_MAX_ATTEMPTS = 5
#: After how long without a heartbeat a worker is taken for dead and its registration pruned, at
#: least: far longer than a lease (runs are taken over by their leases, not by this).
DEAD_AFTER_SECONDS = 300.0


def dead_seconds(lease_seconds: float) -> float:
    return max(DEAD_AFTER_SECONDS, 10 * lease_seconds)


def conninfo(url: str) -> str:
    """The libpq connection string of a wfkit PostgreSQL URL (``postgresql+psycopg://`` too)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def recovery_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``$WFKIT_RECOVERY_SECONDS`` (default 10): how often a worker looks for runs to recover."""
    text = (os.environ if environ is None else environ).get(RECOVERY_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_RECOVERY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0.1 <= value <= 86400):
        raise ConfigurationError(f"{RECOVERY_SECONDS_ENV} must be a number of seconds from 0.1 to 86400, "
                                 f"got {text!r}")
    return value


def max_attempts(environ: Mapping[str, str] | None = None) -> int:
    """``$WFKIT_MAX_ATTEMPTS`` (default 5): after how many attempts the recovery fails a run."""
    text = (os.environ if environ is None else environ).get(MAX_ATTEMPTS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_ATTEMPTS
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise ConfigurationError(f"{MAX_ATTEMPTS_ENV} must be a whole number from 1 to 1000, got {text!r}")
    return int(text)


class Say:
    """The worker's output: one line per thing that happened, as text or as JSON (``--json-logs``)."""

    def __init__(self, write: Callable[[str], None], *, json_lines: bool, worker: str):
        self.write, self.json_lines, self.worker = write, json_lines, worker
        self._lock = threading.Lock()

    def __call__(self, event: str, text: str, **fields: Any) -> None:
        if self.json_lines:
            line = json.dumps({"at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                               "event": event, "worker": self.worker, **fields}, default=str)
        else:
            line = text
        with self._lock:  # lines from several runs' threads never interleave
            self.write(line)


class Announcer:
    """Says each run's start and end (an observer of the worker's executor)."""

    def __init__(self, say: Say):
        self.say = say

    def on_event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.say("run_started", f"started run {event.run_id} of {event.workflow_name}", run_id=event.run_id,
                     workflow=event.workflow_name, resumed=event.resumed)
        elif isinstance(event, (RunCompleted, RunFailed, RunCancelled)):
            status = {RunCompleted: "completed", RunFailed: "failed", RunCancelled: "cancelled"}[type(event)]
            self.say("run_ended", f"ended run {event.run_id}: {status}", run_id=event.run_id, status=status)


class _JsonLogs(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"at": datetime.fromtimestamp(record.created, timezone.utc).isoformat().replace("+00:00", "Z"),
               "event": "log", "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def run_worker(url: str, *, queues: Sequence[str] = (), concurrency: int = 1, name: str | None = None,
               json_logs: bool = False, write: Callable[[str], None] = print) -> None:
    """Execute submitted runs until a stop signal (SIGINT, SIGTERM; see the module's docstring).
    ``queues``: only these (default: every queue). ``write``: where the worker's lines go."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(_JsonLogs())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    asyncio.run(_Worker(url, queues=queues, concurrency=concurrency, name=name or "worker",
                        json_logs=json_logs, write=write).main())


class _Worker:
    def __init__(self, url: str, *, queues: Sequence[str], concurrency: int, name: str, json_logs: bool,
                 write: Callable[[str], None]):
        from wfkit.executor import Executor

        self.recovery_seconds, self.max_attempts = recovery_seconds(), max_attempts()
        self.url, self.queues, self.concurrency, self.name = url, list(queues), concurrency, name
        self.say = Say(write, json_lines=json_logs, worker=name)
        self.executor = Executor(url, observers=[Announcer(self.say)])
        # The owner its runs are held by names the worker: `wfkit runs show` says which one holds a run.
        self.executor.owner = f"{name} on {self.executor.owner}"
        self.id = self.say.worker = self.executor.owner
        # Each run's job: its queue and recovery count, to hand the run back there with the same count.
        self.job_of: dict[str, tuple[str, int]] = {}
        self.signals = 0

    async def main(self) -> None:
        import procrastinate

        from wfkit.store import queue as queues
        from wfkit.store import workers

        executor = self.executor
        lease = executor.lease_seconds
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(self.url)))

        @app.task(name=queues.EXECUTE_TASK, pass_context=True)
        async def execute_run(context: Any, run_id: str, recoveries: int = 0) -> None:
            await self._execute(context, run_id, recoveries)

        self.registration = dict(name=self.name, host=socket.gethostname(), pid=os.getpid(), queues=self.queues,
                                 concurrency=self.concurrency, lease_seconds=lease)
        await asyncio.to_thread(workers.register, executor.engine, self.id, **self.registration)
        shown = ", ".join(self.queues) if self.queues else "every queue"
        self.say("worker_started", f"worker {self.name} started (queues: {shown}; concurrency {self.concurrency})",
                 queues=self.queues, concurrency=self.concurrency)
        self.stopping = False
        try:
            async with app.open_async():
                loop = asyncio.get_running_loop()
                side = asyncio.ensure_future(self._recovery())
                try:
                    while True:
                        self.procrastinate = asyncio.ensure_future(app.run_worker_async(
                            queues=self.queues or None, concurrency=self.concurrency, name=self.name,
                            install_signal_handlers=False, delete_jobs="successful",
                            update_heartbeat_interval=max(0.5, lease / 3), stalled_worker_timeout=dead_seconds(lease)))
                        for sig in (signal.SIGINT, signal.SIGTERM):
                            loop.add_signal_handler(sig, self._on_signal)
                        try:
                            await self.procrastinate
                            break
                        except asyncio.CancelledError:
                            break  # the stop signal: it stopped once its jobs returned (runs handed back)
                        except Exception as err:
                            # Procrastinate's worker ends on a database error (a restart, a lost connection,
                            # its registration pruned while this process was stopped): start it again.
                            if self.stopping:
                                break
                            log.warning("the queue's worker stopped on an error, starting it again in 1 s: %s: %s",
                                        type(err).__name__, err.__cause__ or err)
                            await asyncio.sleep(1.0)
                            if self.stopping:
                                break
                finally:
                    side.cancel()
                    await asyncio.gather(side, return_exceptions=True)
        finally:
            await asyncio.to_thread(workers.unregister, executor.engine, self.id)
            await asyncio.to_thread(executor.close)
            self.say("worker_stopped", f"worker {self.name} stopped")

    def _on_signal(self) -> None:
        from wfkit.store import queue as queues

        self.signals += 1
        if self.signals > 1:
            self.say("worker_exited", f"worker {self.name} exits now: its runs are recovered once their leases "
                     "expire")
            sys.stdout.flush()
            os._exit(1)
        self.say("worker_stopping", f"worker {self.name} stopping: handing its runs back to the queue before their "
                 "next node (a second signal exits at once)")
        self.stopping = True
        self.executor.drain(lambda run_id: queues.enqueuer(run_id, *self.job_of.get(str(run_id), (None, 0))))
        self.procrastinate.cancel()  # its graceful stop: no new job; waits for those running to return

    async def _execute(self, context: Any, run_id: str, recoveries: int) -> None:
        """One job: its run executed in a thread of its own; an abort of the job (the run's cancel)
        stops the run at once."""
        self.job_of[run_id] = (context.job.queue, recoveries)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def execute() -> None:
            try:
                outcome: Any = self.executor.execute_submitted(run_id)
            except BaseException as err:  # handed to the job's coroutine below
                outcome = err
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(outcome))

        threading.Thread(target=execute, name=f"wfkit-run-{run_id}", daemon=True).start()
        try:
            while True:
                try:
                    outcome = await asyncio.shield(done)
                    break
                except asyncio.CancelledError:
                    # Procrastinate aborts the job: the run was cancelled (its reason is stored already).
                    self.executor.interrupt_run(run_id, "cancel requested")
        finally:
            self.job_of.pop(run_id, None)
        if isinstance(outcome, LeaseLostError):
            self.say("run_lost", f"run {run_id} was taken over by another process: this worker stopped executing "
                     "it", run_id=run_id, reason=str(outcome))
        elif isinstance(outcome, WfkitError):
            self.say("run_error", f"run {run_id} not executed: {outcome}", run_id=run_id, error=str(outcome))
            raise outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        elif outcome is None:
            log.info("run %s is no longer waiting for a worker: nothing to do", run_id)
        elif outcome.status.value == "pending":
            self.say("run_handed_back", f"handed run {run_id} back to the queue", run_id=run_id)

    async def _recovery(self) -> None:
        """This worker's heartbeat (its row in ``workers``) and the recovery, every interval."""
        from wfkit.store import queue as queues
        from wfkit.store import workers

        engine, lease = self.executor.engine, self.executor.lease_seconds
        every = min(self.recovery_seconds, max(0.5, lease / 3))
        since = float("inf")
        while True:
            try:
                await asyncio.to_thread(workers.heartbeat, engine, self.id, **self.registration)
                since += every
                if since >= self.recovery_seconds:
                    since = 0.0
                    done = await asyncio.to_thread(queues.recover, engine, max_attempts=self.max_attempts,
                                                   dead_seconds=dead_seconds(lease), lease_seconds=lease)
                    for run_id in done.redispatched if done else ():
                        self.say("run_recovered", f"run {run_id}: its worker stopped holding it; handed to the "
                                 "queue again", run_id=run_id)
                    for run_id in done.given_up if done else ():
                        self.say("run_given_up", f"run {run_id} failed: its attempts are used up "
                                 f"({MAX_ATTEMPTS_ENV}={self.max_attempts})", run_id=run_id)
            except Exception as err:  # the database did not answer, or the queue failed: the next round tries again
                log.warning("recovery or heartbeat failed, trying again in %.1f s: %s: %s", every,
                            type(err).__name__, err)
            await asyncio.sleep(every)


__all__ = ["Announcer", "Say", "conninfo", "max_attempts", "recovery_seconds", "run_worker"]
