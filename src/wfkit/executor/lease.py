"""Run ownership: who holds a run, for how long, and the heartbeat that keeps holding it.

A run being executed is held by one process through a lease on its row: the owner (``host pid N
(random id)``), the fencing number ``lease_epoch`` that every claim raises by one, and when the
lease expires by the database's clock. The executor claims a run with one compare-and-set
statement (:meth:`~wfkit.store.recorder.SqlRecorder.claim`), extends the lease at every step
boundary, and, while a node runs long, the executor's :class:`Heartbeat` extends it every third of
its length. Every
write of the run is fenced by the epoch (see :mod:`wfkit.store.recorder`): once another process
has taken the run over (only possible after the lease expired) or a forced cancel ended it, this
process writes nothing more and stops.

Settings: ``WFKIT_LEASE_SECONDS`` (default 30) and ``WFKIT_DURABILITY`` (``sync``, the default,
or ``async``), both also ``Executor`` arguments.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, WfkitError
from wfkit.store.recorder import SqlRecorder, check_durability, what_became

log = logging.getLogger("wfkit.executor")

LEASE_SECONDS_ENV = "WFKIT_LEASE_SECONDS"
DURABILITY_ENV = "WFKIT_DURABILITY"
#: The lease length when nothing sets one.
DEFAULT_LEASE_SECONDS = 30.0
#: The shortest lease wfkit takes: a renewal must have time to reach the database.
MIN_LEASE_SECONDS = 0.5


def new_owner() -> str:
    """A readable, unique owner for an executor: its host, its process and a random id."""
    return f"{socket.gethostname()} pid {os.getpid()} ({secrets.token_hex(4)})"


def lease_seconds(value: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """The lease length: ``value`` if given, else ``$WFKIT_LEASE_SECONDS``, else 30 s; a
    :class:`ConfigurationError` naming the bad value otherwise."""
    source = "lease_seconds"
    if value is None:
        text = (os.environ if environ is None else environ).get(LEASE_SECONDS_ENV, "").strip()
        if not text:
            return DEFAULT_LEASE_SECONDS
        source = LEASE_SECONDS_ENV
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(f"{LEASE_SECONDS_ENV}={text!r} is not a number of seconds "
                                     f"(at least {MIN_LEASE_SECONDS:g})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            value < MIN_LEASE_SECONDS or value > 86400 * 365:
        raise ConfigurationError(f"{source} must be a number of seconds from {MIN_LEASE_SECONDS:g} to a year, "
                                 f"got {value!r}")
    return float(value)


def durability(value: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The durability mode: ``value`` if given, else ``$WFKIT_DURABILITY``, else ``sync``."""
    if value is None:
        text = (os.environ if environ is None else environ).get(DURABILITY_ENV, "").strip()
        if not text:
            return "sync"
        try:
            return check_durability(text.lower())
        except ConfigurationError:
            raise ConfigurationError(f"{DURABILITY_ENV}={text!r}: expected sync (the default) or async") from None
    if not isinstance(value, str):
        raise ConfigurationError(f"durability must be 'sync' or 'async', got {value!r}")
    return check_durability(value)


class Held:
    """A run an executor holds: renewed by its heartbeat when no step has renewed it for a while."""

    __slots__ = ("run_id", "epoch", "on_lost", "renewed_at", "failures")

    def __init__(self, run_id: uuid.UUID, epoch: int, on_lost: Callable[[str], None]):
        self.run_id, self.epoch, self.on_lost = run_id, epoch, on_lost
        self.renewed_at = time.monotonic()  # when the lease was last extended (by a step or a renewal)
        self.failures = 0

    def renewed(self) -> None:
        """A step's write extended the lease just now."""
        self.renewed_at = time.monotonic()


class Heartbeat:
    """Extends the leases of the runs an executor holds, in a thread of its own, so that a node that
    blocks for longer than the lease does not lose its run: each run whose lease no step has
    extended for a third of its length is renewed (all that are due, in one statement), whatever
    its own thread is doing. A run whose steps are short is never renewed here at all: its steps
    extend its lease. The thread starts with the first run held, sleeps between renewals, and ends
    when no run is held. It renews through a connection pool of its own (made like the engine's):
    runs being executed, which each hold a connection of the engine's pool, cannot starve it.

    When a renewal finds a lease taken (another process took the run over, or a forced cancel
    ended it), or the database does not answer until the lease is about to expire (retried every
    second until then), the run's ``on_lost`` is called once with the reason: the executor then
    stops the run at once (an async node is cancelled; a sync node's result is rejected by its
    fenced commit).
    """

    def __init__(self, engine: Engine, *, lease_seconds: float, durability: str):
        self.engine, self.lease_seconds, self.durability = engine, lease_seconds, durability
        self._held: dict[uuid.UUID, Held] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: Any = None

    def hold(self, run_id: uuid.UUID, epoch: int, on_lost: Callable[[str], None]) -> Held:
        held = Held(run_id, epoch, on_lost)
        with self._lock:
            self._held[run_id] = held
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._beat, name="wfkit-heartbeat", daemon=True)
                self._thread.start()
        return held

    def release(self, held: Held) -> None:
        with self._lock:
            if self._held.get(held.run_id) is held:
                del self._held[held.run_id]

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.lease_seconds)

    def _beat(self) -> None:
        every = self.lease_seconds / 3
        try:
            while not self._closed.is_set():
                with self._lock:
                    held = list(self._held.values())
                    if not held:  # nothing to renew: the thread ends (the next hold starts one)
                        self._thread = None
                        return
                now = time.monotonic()
                due = [h for h in held if now - h.renewed_at >= every * 0.9]
                if due:
                    self._renew(due)
                # Sleep until the next run falls due; retry a failed renewal within a second.
                wake = min(h.renewed_at + every for h in held)
                if any(h.failures for h in due):
                    wake = min(wake, now + 1.0)
                self._wake.wait(max(0.05, wake - time.monotonic()))
        finally:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.dispose()

    def _recorder(self) -> SqlRecorder:
        if self._pool is None:
            # The engine's own pool, made again: same connections, same settings, none of its slots.
            self._pool = self.engine.pool.recreate()
        return SqlRecorder(self.engine, durability=self.durability, lease_seconds=self.lease_seconds,
                           pool=self._pool)

    def _renew(self, due: list[Held]) -> None:
        try:
            with self._recorder() as recorder:
                kept = recorder.renew_many([(h.run_id, h.epoch) for h in due])
                at = time.monotonic()
                for h in due:
                    if h.run_id in kept:
                        h.renewed_at, h.failures = at, 0
                        continue
                    holder = recorder.holder(h.run_id)
                    if holder is not None and holder[3] == h.epoch and holder[0] not in ("pending", "running"):
                        self.release(h)  # it just ended, by its own process's write: nothing was lost
                    else:
                        self._lost(h, what_became(h.run_id, holder, h.epoch))
        except WfkitError as err:  # the database could not answer: try again until the lease is at risk
            for h in due:
                h.failures += 1
                if time.monotonic() + 1.5 >= h.renewed_at + self.lease_seconds:
                    self._lost(h, f"its lease could not be renewed before it expired: {err}")
                else:
                    log.warning("run %s: renewing its lease failed, trying again: %s", h.run_id, err)
        except Exception as err:  # never let the thread die silently: the runs must learn of it
            for h in due:
                self._lost(h, f"its lease could not be renewed: {type(err).__name__}: {err}")

    def _lost(self, held: Held, reason: str) -> None:
        with self._lock:
            if self._held.get(held.run_id) is not held:
                return  # it ended meanwhile
            del self._held[held.run_id]
        log.error("run %s: %s; stopping it", held.run_id, reason)
        held.on_lost(reason)
