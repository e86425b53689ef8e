"""Run ids: UUIDs, accepted as ``UUID`` or text (standard library only)."""

from __future__ import annotations

import os
import threading
import time
import uuid

from wfkit.errors import InvalidQueryError


def parse_uuid(value: uuid.UUID | str, what: str = "run id") -> uuid.UUID:
    """``value`` as a UUID, or :class:`InvalidQueryError` naming it."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except (ValueError, AttributeError, TypeError):
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + f"... ({len(str(value)):,} characters)"
        raise InvalidQueryError(
            f"invalid {what} {shown}: expected a UUID such as 123e4567-e89b-12d3-a456-426614174000"
        ) from None


def new_id() -> uuid.UUID:
    """A new random id that sorts by creation time (a UUID version 7, RFC 9562): 48 bits of Unix
    milliseconds, then 74 random bits. Rows keyed by such ids are added at the right edge of their
    primary-key index, as they are by time, instead of at random places in it: fewer index pages
    are touched, and written to the database's log, per row."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(_random_bits(), "big")
    # version 7 in bits 76-79, the RFC's variant (0b10) in bits 62-63
    return uuid.UUID(int=value & _CLEAR | _SET)


_CLEAR = ~(0xF << 76) & ~(0x3 << 62)
_SET = (0x7 << 76) | (0x2 << 62)
_POOL_BYTES = 4000  # os.urandom is a system call: random bytes are taken 400 ids at a time
_pool = bytearray()
_pool_lock = threading.Lock()


def _random_bits() -> bytes:
    """10 random bytes from the operating system's source, bought in bulk. (After a fork the child
    must not reuse the parent's bytes: the pool is emptied then.)"""
    global _pool
    with _pool_lock:
        if len(_pool) < 10:
            _pool = bytearray(os.urandom(_POOL_BYTES))
        out = bytes(_pool[-10:])
        del _pool[-10:]
    return out


def _forget_pool() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = bytearray(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
