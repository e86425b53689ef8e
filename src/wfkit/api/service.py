"""What the routes share: the executor that runs workflows in the server's background, its
repository, the thread pool the (synchronous) database work runs in, and the hub that wakes the
event streams of this process's runs as they change."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from wfkit.events import Event
from wfkit.executor import Executor
from wfkit.registry import Registry
from wfkit.runtime import Runtime

T = TypeVar("T")
#: How often the runs watched by this process's streams are looked at for changes made elsewhere
#: (another process executing them): one query for all of them.
POLL_SECONDS = 0.05
#: The most threads that do the database work of requests at once (and so the most connections
#: they hold): a burst of requests waits for one instead of exhausting the pool.
MAX_THREADS = 8


class Hub:
    """Wakes the streams waiting on a run when this process's executor reports an event of it (an
    observer: called from the threads that execute runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[uuid.UUID, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def on_event(self, event: Event) -> None:
        self.wake(event.run_id)

    def watched(self) -> list[uuid.UUID]:
        """The runs somebody waits on."""
        with self._lock:
            return list(self._waiting)

    def wake(self, run_id: uuid.UUID) -> None:
        """Wake whoever waits on ``run_id``."""
        with self._lock:
            waiting = list(self._waiting.get(run_id, ()))
        for loop, woken in waiting:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:  # its loop closed: nobody waits any more
                pass

    async def wait(self, run_id: uuid.UUID, timeout: float) -> None:
        """Until an event of ``run_id`` is reported here, or ``timeout`` seconds pass."""
        woken = asyncio.Event()
        entry = (asyncio.get_running_loop(), woken)
        with self._lock:
            self._waiting.setdefault(run_id, set()).add(entry)
        try:
            await asyncio.wait_for(woken.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiting.get(run_id)
                if waiting is not None:
                    waiting.discard(entry)
                    if not waiting:
                        del self._waiting[run_id]


class Service:
    """The API's state: build with the database, registry and runtime the router was given."""

    def __init__(self, database: Any = None, registry: Registry | None = None, runtime: Runtime | None = None,
                 *, grace: float = 0.0, stop_timeout: float = 10.0):
        self.hub = Hub()
        self.executor = Executor(database, registry=registry, runtime=runtime, observers=[self.hub])
        self.registry = self.executor.registry
        self.repository = self.executor.repository
        self.grace, self.stop_timeout = grace, stop_timeout
        self.limiter = anyio.CapacityLimiter(min(MAX_THREADS, _pool_room(self.executor.engine)))
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None

    async def wait(self, run_id: uuid.UUID, timeout: float) -> None:
        """Until ``run_id`` changes (an event of this process's executor, or a change another
        process made, which the watcher sees), or ``timeout`` seconds pass."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        await self.hub.wait(run_id, timeout)

    def stop_watching(self) -> None:
        """Stop the watcher (the event loop is ending)."""
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        """While any run is waited on: every POLL_SECONDS, one query for all of them, and a wake for
        each whose row changed (or that is gone)."""
        seen: dict[uuid.UUID, Any] = {}
        while True:
            await asyncio.sleep(POLL_SECONDS)
            watched = self.hub.watched()
            if not watched:
                return
            try:
                now = await self.call(self.repository.run_versions, watched)
            except Exception:  # the database is away: the streams find out themselves when they read
                continue
            for run_id in watched:
                # A run seen for the first time wakes too: it may have changed between its waiter's
                # last read and the wait (nothing is missed, at the cost of one read more).
                version = now.get(run_id)
                if seen.get(run_id, ...) != version:
                    self.hub.wake(run_id)
                    seen[run_id] = version
            for run_id in set(seen) - set(watched):
                del seen[run_id]

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread pool, at most ``limiter`` at once."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def close(self) -> None:
        """Stop the runs this server executes in the background (after ``grace`` seconds, before
        their next node: cancelled, resumable), and close the database connections."""
        if not self._closed:
            self._closed = True
            self.executor.shutdown(self.grace, reason="the server executing it stopped", stop_timeout=self.stop_timeout)


def _pool_room(engine: Any) -> int:
    """How many connections the engine's pool gives out at once, leaving some to running runs."""
    pool = engine.pool
    try:
        size = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
    except Exception:  # a pool with no size (NullPool, StaticPool)
        return MAX_THREADS
    return max(1, size // 2)
