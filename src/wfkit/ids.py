"""Run ids: UUIDs, accepted as ``UUID`` or text (standard library only)."""

from __future__ import annotations

import os
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
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    # version 7 in bits 76-79, the RFC's variant (0b10) in bits 62-63
    value = value & ~(0xF << 76) | (0x7 << 76)
    value = value & ~(0x3 << 62) | (0x2 << 62)
    return uuid.UUID(int=value)
