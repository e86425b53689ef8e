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
#: How often a stream of a run executed elsewhere (another process) looks for what is new.
POLL_SECONDS = 0.1
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
        with self._lock:
            waiting = list(self._waiting.get(event.run_id, ()))
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
                 *, grace: float = 0.0):
        self.hub = Hub()
        self.executor = Executor(database, registry=registry, runtime=runtime, observers=[self.hub])
        self.registry = self.executor.registry
        self.repository = self.executor.repository
        self.grace = grace
        self.limiter = anyio.CapacityLimiter(min(MAX_THREADS, _pool_room(self.executor.engine)))
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread pool, at most ``limiter`` at once."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    def close(self) -> None:
        """Stop the runs this server executes in the background (after ``grace`` seconds, before
        their next node: cancelled, resumable), and close the database connections."""
        if not self._closed:
            self._closed = True
            self.executor.shutdown(self.grace, reason="the server executing it stopped")


def _pool_room(engine: Any) -> int:
    """How many connections the engine's pool gives out at once, leaving some to running runs."""
    pool = engine.pool
    try:
        size = pool.size() + max(0, getattr(pool, "_max_overflow", 0))
    except Exception:  # a pool with no size (NullPool, StaticPool)
        return MAX_THREADS
    return max(1, size // 2)
