"""``wfkit worker``: executes the runs submitted to the workers' queue (Procrastinate on PostgreSQL).

Each job names a run (``Executor.submit`` wrote both in one transaction); the worker claims the run
(one compare-and-set: of two deliveries of a job, one executes it) and executes it with its lease
and heartbeat in a thread of Procrastinate's pool, never on the worker's event loop, so a blocking
node cannot freeze the worker. A job whose run was cancelled, deleted or taken meanwhile does
nothing. Needs the ``worker`` extra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from wfkit.events import Event, RunCancelled, RunCompleted, RunFailed, RunStarted

log = logging.getLogger("wfkit.worker")


def conninfo(url: str) -> str:
    """The libpq connection string of a wfkit PostgreSQL URL (``postgresql+psycopg://`` too)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Announcer:
    """Says each run's start and end, one line each (an observer of the worker's executor)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def on_event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.say(f"started run {event.run_id} of {event.workflow_name}")
        elif isinstance(event, (RunCompleted, RunFailed, RunCancelled)):
            status = {RunCompleted: "completed", RunFailed: "failed", RunCancelled: "cancelled"}[type(event)]
            self.say(f"ended run {event.run_id}: {status}")


def run_worker(url: str, *, queues: Sequence[str] = (), concurrency: int = 1, name: str | None = None,
               say: Callable[[str], None] = print) -> None:
    """Execute submitted runs until a stop signal (SIGINT, SIGTERM): Procrastinate's worker, with
    the task that executes a run. ``queues``: only these (default: every queue)."""
    import procrastinate

    from wfkit.executor import Executor
    from wfkit.store.queue import EXECUTE_TASK

    executor = Executor(url, observers=[Announcer(say)])
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(url)))

    @app.task(name=EXECUTE_TASK)
    def execute_run(run_id: str) -> None:
        # A sync task: Procrastinate runs it in a thread of its own, off the worker's event loop.
        if executor.execute_submitted(run_id) is None:
            log.info("run %s is no longer waiting for a worker: nothing to do", run_id)

    try:
        app.run_worker(queues=list(queues) or None, concurrency=concurrency, name=name)
    finally:
        executor.close()


__all__ = ["Announcer", "conninfo", "run_worker"]
