"""Driver connections kept one per thread, for the read path on a SQLite file.

A SQLite connection is a handle on a local file: keeping one per thread saves the pool's
check-out and reset on every read (see :class:`ThreadConnections`). Connections inherited over a
``fork()`` stay the parent's: the child opens its own.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class ThreadConnections:
    """Driver connections made by ``engine`` and kept, one per thread, for reuse (SQLite file reads).

    A SQLite connection is a handle on a local file. Keeping one per thread saves the pool's
    check-out and reset on every read, which cost more than a lookup by primary key. What an
    idle one holds: an open file and its page cache (up to ``SQLITE_CACHE_KIB``, filled only
    as pages are read); no snapshot, since no statement stays open. A server that makes a
    thread per request gets a new connection per request (a few PRAGMAs, well under a
    millisecond). Each connection comes from the engine, so its connect-time settings apply,
    and is then detached from the pool, which it no longer counts against. A thread's
    connection closes when the thread ends, or on :meth:`close`. A forked child opens its own
    and never touches (nor closes) what it inherited.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        # the pool's wrappers (a sqlite3 connection has no weak reference)
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()
        self._generation = 0
        self._busy: set[Any] = set()  # the wrappers of the connections a read is using now
        self._pid = os.getpid()
        _THREAD_CONNECTIONS.add(self)

    @staticmethod
    def suits(engine: Engine) -> bool:
        """Whether ``engine`` is a SQLite file database with a pool of its own connections (an
        in-memory database lives in its pool's single connection: that one must stay pooled)."""
        return engine.dialect.name == "sqlite" and isinstance(engine.pool, sa.pool.QueuePool)

    def get(self) -> Any:
        """This thread's driver connection (made on first use)."""
        local = self._local
        if getattr(local, "key", None) != (self._pid, self._generation):
            fairy = self.engine.raw_connection()
            fairy.detach()
            with self._lock:
                self._open.add(fairy)
                local.key, local.fairy = (self._pid, self._generation), fairy
        return local.fairy.dbapi_connection

    @contextlib.contextmanager
    def using(self) -> Iterator[Any]:
        """This thread's driver connection for one read. A :meth:`close` from another thread
        meanwhile leaves it open until the read is done (closing a SQLite connection that another
        thread is reading from can crash the process); it closes then."""
        while True:
            connection = self.get()
            fairy = self._local.fairy
            with self._lock:
                if self._local.key == (self._pid, self._generation):  # not closed since get()
                    self._busy.add(fairy)
                    break
        try:
            yield connection
        finally:
            with self._lock:
                self._busy.discard(fairy)
                closed = self._local.key != (self._pid, self._generation)
            if closed:  # close() ran during the read and left this connection to it
                if self._local.fairy is fairy:
                    self._local.key = self._local.fairy = None
                _close_quietly(fairy)

    def discard(self) -> None:
        """Close this thread's connection (after an error that may have broken it)."""
        fairy = getattr(self._local, "fairy", None)
        self._local.key = self._local.fairy = None
        if fairy is not None:
            with self._lock:
                self._open.discard(fairy)
            _close_quietly(fairy)

    def close(self) -> None:
        """Close every thread's connection; threads open new ones if they read again."""
        with self._lock:
            self._generation += 1
            fairies, self._open = list(self._open), weakref.WeakSet()
            busy = set(self._busy)
        for fairy in fairies:
            if fairy not in busy:  # one in use is closed by its reader when it is done (see using)
                _close_quietly(fairy)

    def _forked(self) -> None:
        # In the child: another thread may have held the lock at fork time. The parent's connections
        # stay the parent's: _HELD_OVER_FORK keeps them from being closed here (closing would disturb
        # the parent's locks and WAL); this process opens its own.
        self._lock = threading.Lock()
        self._open = weakref.WeakSet()
        self._busy = set()
        self._pid = os.getpid()


_THREAD_CONNECTIONS: weakref.WeakSet[ThreadConnections] = weakref.WeakSet()
# Strong references to every kept connection while a fork happens: in the child, the threads that
# held them are gone, and without these their connections would be closed as their locals are freed.
_HELD_OVER_FORK: list[Any] = []


def _before_fork() -> None:
    for kept in list(_THREAD_CONNECTIONS):
        _HELD_OVER_FORK.extend(kept._open)


def _after_fork_in_parent() -> None:
    _HELD_OVER_FORK.clear()


def _after_fork_in_child() -> None:
    for kept in list(_THREAD_CONNECTIONS):
        kept._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


def _close_quietly(fairy: Any) -> None:
    with contextlib.suppress(Exception):
        fairy.dbapi_connection.close()
