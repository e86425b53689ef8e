"""Run ids: UUIDs, accepted as ``UUID`` or text (standard library only)."""

from __future__ import annotations

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
