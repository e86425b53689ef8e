"""Small text formatters shared by the command line and the event log (standard library only)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

# user:password@ in the authority, and a password= query parameter (libpq's URLs take both). The
# password runs to the last "@": SQLAlchemy takes "/", "?", "#" and "@" in one unescaped, so a mask
# that stopped at any of them would show the rest.
_AUTHORITY_PASSWORD = re.compile(r"(://[^/?#@:]*):.*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def format_ms(value: float | None) -> str:
    """A duration in milliseconds for people: ``"-"``, ``"85us"``, ``"12.3ms"``, ``"4.20s"``."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    if value < 1:
        return f"{value * 1000:.0f}us"
    return f"{value:.1f}ms"


def mask_password(url: str) -> str:
    """``url`` as written, its password (after ``user:``, or a ``password=`` parameter) as ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _AUTHORITY_PASSWORD.sub(r"\1:***@", url))


def fmt_when(value: datetime, now: datetime | None = None) -> str:
    """A moment for messages: ISO 8601 UTC to the second, and how far from now (``"in 12 s"``)."""
    value = value.astimezone(timezone.utc)
    delta = (value - (now or datetime.now(timezone.utc))).total_seconds()
    away = f"in {delta:.0f} s" if delta >= 0 else f"{-delta:.0f} s ago"
    return f"{value.strftime('%Y-%m-%dT%H:%M:%SZ')} ({away})"


#: How much of a value a message echoes (a value can be as long as a command line allows).
ECHO_LIMIT = 80


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with the length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:limit]}... ({length:,} characters)"
