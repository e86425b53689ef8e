"""What the routes share: the executor that runs workflows in the server's background, its
repository, the thread pool the (synchronous) database work runs in, and the hub that wakes the
event streams of this process's runs as they change."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from wfkit.errors import ConfigurationError, ServerBusyError, WfkitError
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
#: Why a run executed in a server's background was cancelled when the server stopped.
STOPPED = "the server executing it stopped"
#: The most runs executed in the server's background at once when its pool sets no limit.
MAX_BACKGROUND_RUNS = 16
#: Where the API's new runs and resumes execute (``create_router(dispatch=...)``): in the server's
#: background, or on the workers (``wfkit worker``).
DISPATCHES = ("in-process", "workers")


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
        self._set(waiting)

    def wake_all(self) -> None:
        """Wake everybody who waits (the server is stopping)."""
        with self._lock:
            waiting = [entry for entries in self._waiting.values() for entry in entries]
        self._set(waiting)

    @staticmethod
    def _set(waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
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
                 *, grace: float = 0.0, stop_timeout: float = 10.0, dispatch: str = "in-process"):
        if dispatch not in DISPATCHES:
            raise ConfigurationError(f"unknown dispatch {dispatch!r}: expected one of {', '.join(DISPATCHES)}")
        self.hub = Hub()
        self.executor = Executor(database, registry=registry, runtime=runtime, observers=[self.hub])
        #: whether new runs and resumes go to the workers (``wfkit worker``) instead of this process
        self.workers = dispatch == "workers"
        if self.workers:
            try:
                self.executor.check_workers()
            except WfkitError:
                self.executor.close()
                raise
        self.registry = self.executor.registry
        self.repository = self.executor.repository
        self.grace, self.stop_timeout = grace, stop_timeout
        connections = _pool_connections(self.executor.engine)
        threads = thread_limit(self.executor.engine)
        self.limiter = anyio.CapacityLimiter(threads)
        #: How many runs this server executes in its background at once: each holds a connection of
        #: the pool for as long as it runs, and the requests' threads must keep theirs.
        self.run_slots = max(1, connections - threads) if connections else MAX_BACKGROUND_RUNS
        self._starting = 0
        self._slots = threading.Lock()
        self._closed = self._runs_stopped = False
        self._closing = threading.Lock()
        #: set once this server's background runs have stopped: the streams and long-polls end then
        self.stopped = False
        self._stopper: threading.Thread | None = None
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

    @contextlib.contextmanager
    def run_slot(self) -> Iterator[None]:
        """Room for one more run in this server's background, or :class:`ServerBusyError` at once
        (a request that waited for a connection would hang, then fail, and hold up others)."""
        with self._slots:
            if self.stopped or self._stopper is not None:
                raise ServerBusyError("this server is stopping: send the request to another one, or again "
                                      "once it is back")
            busy = self.executor.background_count() + self._starting
            if busy >= self.run_slots:
                raise ServerBusyError(f"this server executes {busy} runs already, as many as its database "
                                      f"connections allow ({self.run_slots}): try again once one has ended")
            self._starting += 1
        try:
            yield
        finally:
            with self._slots:
                self._starting -= 1

    def begin_stop(self) -> None:
        """The server is asked to stop (a signal): stop its background runs now, in a thread (see
        :meth:`close`), and then end every stream and long-poll, so that no open connection holds
        the server up. Safe to call from a signal handler, and more than once."""
        with self._slots:
            if self._stopper is not None:
                return
            self._stopper = threading.Thread(target=self._stop, name="wfkit-api-stop", daemon=True)
        self._stopper.start()

    def _stop(self) -> None:
        try:
            self._stop_runs()
        finally:
            self.stopped = True
            self.hub.wake_all()

    def _stop_runs(self) -> None:
        """Stop the runs this server executes in the background (after ``grace`` seconds, before
        their next node: cancelled, resumable), once; the connections stay open for the streams."""
        with self._closing:
            if not self._runs_stopped:
                self._runs_stopped = True
                self.executor.stop_background(self.grace, reason=STOPPED, stop_timeout=self.stop_timeout)

    def close(self) -> None:
        """Stop the background runs as :meth:`_stop_runs` does, unless that was done, and close the
        database connections (the app is ending: no request reads any more)."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            if self._runs_stopped:  # by begin_stop: a node still executing was forced off already
                self.executor.shutdown(0.0, reason=STOPPED, stop_timeout=0.0)
            else:
                self._runs_stopped = True
                self.executor.shutdown(self.grace, reason=STOPPED, stop_timeout=self.stop_timeout)


def thread_limit(engine: Any) -> int:
    """How many threads do the database work of requests at once: half the connections of the
    engine's pool (the other half is for the runs executed in the background), at most MAX_THREADS."""
    connections = _pool_connections(engine)
    return min(MAX_THREADS, max(1, connections // 2)) if connections else MAX_THREADS


def _pool_connections(engine: Any) -> int:
    """How many connections the engine's pool gives out at once (0: no limit it can tell)."""
    pool = engine.pool
    try:
        return int(pool.size()) + max(0, int(getattr(pool, "_max_overflow", 0)))
    except Exception:  # a pool with no size (NullPool, StaticPool)
        return 0
