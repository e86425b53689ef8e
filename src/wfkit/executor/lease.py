"""Run ownership: who holds a run, for how long, and the heartbeat that keeps holding it.

A run being executed is held by one process through a lease on its row: the owner (``host pid N
(random id)``), the fencing number ``lease_epoch`` that every claim raises by one, and when the
lease expires by the database's clock. The executor claims a run with one compare-and-set
statement (:meth:`~wfkit.store.recorder.SqlRecorder.claim`), extends the lease at every step
boundary, and, while a node runs, a :class:`Heartbeat` extends it every third of its length. Every
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
import uuid
from collections.abc import Callable, Mapping

from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, WfkitError
from wfkit.store.recorder import SqlRecorder, check_durability

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


class Heartbeat:
    """Extends a run's lease every third of its length while the run executes, in a thread of its
    own (a node that blocks for longer than the lease does not lose its run).

    When a renewal finds the lease taken (another process took the run over, or a forced cancel
    ended it), or cannot reach the database twice in a row, ``on_lost`` is called once with the
    reason: the executor then stops the run at once (an async node is cancelled; a sync node's
    result is rejected by its fenced commit).
    """

    def __init__(self, engine: Engine, run_id: uuid.UUID, epoch: int, *, lease_seconds: float, durability: str,
                 on_lost: Callable[[str], None]):
        self.engine, self.run_id, self.epoch = engine, run_id, epoch
        self.lease_seconds, self.durability = lease_seconds, durability
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"wfkit-heartbeat-{run_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.lease_seconds)

    def _renew(self) -> bool:
        with SqlRecorder(self.engine, durability=self.durability, lease_seconds=self.lease_seconds) as recorder:
            if recorder.renew(self.run_id, self.epoch):
                return True
            holder = recorder.holder(self.run_id)
        if holder is None:
            self._lost(f"run {self.run_id} was deleted by another process")
        elif holder[0] == "running":
            self._lost(f"run {self.run_id} was taken over by {holder[1]} at attempt {holder[2]}")
        else:
            self._lost(f"run {self.run_id} was ended {holder[0]} by another process")
        return False

    def _beat(self) -> None:
        interval = self.lease_seconds / 3
        failures = 0
        while not self._stop.wait(interval if failures == 0 else min(interval, 1.0)):
            try:
                if not self._renew():
                    return
                failures = 0
            except WfkitError as err:  # the database could not answer
                failures += 1
                if failures >= 2:
                    self._lost(f"its lease could not be renewed: {err}")
                    return
                log.warning("run %s: renewing its lease failed, trying again: %s", self.run_id, err)
            except Exception as err:  # never let the thread die silently: the run must learn of it
                self._lost(f"its lease could not be renewed: {type(err).__name__}: {err}")
                return

    def _lost(self, reason: str) -> None:
        if not self._stop.is_set():
            log.error("run %s: %s; stopping it", self.run_id, reason)
            self.on_lost(reason)
