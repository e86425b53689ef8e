"""Small text formatters shared by the command line and the event log (standard library only)."""

from __future__ import annotations


def format_ms(value: float | None) -> str:
    """A duration in milliseconds for people: ``"-"``, ``"85us"``, ``"12.3ms"``, ``"4.20s"``."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f}s"
    if value < 1:
        return f"{value * 1000:.0f}us"
    return f"{value:.1f}ms"
