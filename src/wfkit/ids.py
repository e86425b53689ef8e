"""Run ids: UUIDs, accepted as ``UUID`` or text; and the short forms people type (standard library only).

A run id may be given as the whole UUID (any form :class:`uuid.UUID` reads), as a prefix of at least
:data:`MIN_PREFIX` of its hex digits (dashes anywhere, any case), or as ``latest`` (the newest run).
:func:`parse_run_ref` reads that text; the store resolves a prefix or ``latest`` to one run
(``Repository.resolve_run_id``).
"""

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


#: The fewest hex digits a short run id may have (16.7 million values: few runs share a prefix by chance).
MIN_PREFIX = 6
#: The word that names the newest run wherever a run id is taken.
LATEST = "latest"
_HEX = frozenset("0123456789abcdef")
RUN_REF_FORMS = (f"a UUID, at least {MIN_PREFIX} of its first hex digits, or {LATEST} (the newest run)")


def parse_run_ref(value: uuid.UUID | str, what: str = "run id") -> uuid.UUID | str:
    """What a run id as typed names: a whole id (a :class:`uuid.UUID`), :data:`LATEST`, or a prefix
    (its lower-case hex digits, dashes removed, as a ``str`` of :data:`MIN_PREFIX` to 31 digits);
    :class:`InvalidQueryError` naming the value and the forms allowed otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    text = value.strip() if isinstance(value, str) else None
    if text is not None:
        if text.lower() == LATEST:
            return LATEST
        try:
            return uuid.UUID(text)  # every form of a whole id taken before short ones were
        except ValueError:
            pass
        digits = text.replace("-", "").lower()
        if MIN_PREFIX <= len(digits) < 32 and set(digits) <= _HEX:
            return digits
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + f"... ({len(str(value)):,} characters)"
    if text is not None and set(text.replace("-", "").lower()) <= _HEX and len(text.replace("-", "")) < MIN_PREFIX:
        raise InvalidQueryError(f"{what} {shown} is too short: give {RUN_REF_FORMS}")
    raise InvalidQueryError(f"invalid {what} {shown}: expected {RUN_REF_FORMS}")


def prefix_range(digits: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The lowest and highest ids that start with these hex digits: a prefix is looked up as this
    range of the primary key, which both engines' indexes answer (SQLite keeps ids as 32 hex
    digits, PostgreSQL as ``uuid``; both order them as their hex text)."""
    pad = 32 - len(digits)
    return uuid.UUID(digits + "0" * pad), uuid.UUID(digits + "f" * pad)


def id_prefix(value: uuid.UUID, digits: int) -> str:
    """The start of ``value``'s usual (dashed) form that holds ``digits`` hex digits: what listings
    print as a short id (dashes included where they fall, so that it reads as the whole id does)."""
    text = str(value)
    if digits >= 32:
        return text
    seen = 0
    for end, char in enumerate(text, 1):
        if char != "-":
            seen += 1
            if seen == digits:
                return text[:end]
    return text  # pragma: no cover - a UUID has 32 digits


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
