"""JSON text as wfkit stores it: one encoder, and the checks every backend needs.

Standard library only, so that light modules (checkpoint stores, events) can use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from wfkit.errors import StateNotSerializableError

# \u0000 after an even number of backslashes (an odd number in all: the last one escapes "u0000")
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# One encoder for every call: ``json.dumps`` with options builds a new encoder each time.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON as wfkit stores it (NaN and infinities are errors: PostgreSQL's jsonb rejects them)."""
    return _ENCODE(value)


def check_json(value: Any) -> str:
    """``value`` as JSON text that every backend stores: no NaN, valid UTF-8, no NUL character."""
    text = _ENCODE(value)
    text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError (a ValueError)
    # The encoder writes a NUL as \\u0000; the quick test also matches an escaped backslash followed
    # by "u0000" (text a user may well store), which the regular expression tells apart.
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError("the NUL character (\\u0000) cannot be stored")
    return text


def dumps_state(state: Mapping[str, Any], where: str) -> str:
    """``state`` as JSON text, or :class:`StateNotSerializableError` naming ``where`` and the key."""
    try:
        return check_json(state)
    except (TypeError, ValueError):
        pass
    for key, value in state.items():
        try:
            check_json(value)
        except (TypeError, ValueError) as err:
            raise StateNotSerializableError(
                f"{where} is not JSON-serializable: key {key!r} holds {type(value).__name__} ({err})"
            ) from None
    raise StateNotSerializableError(f"{where} is not JSON-serializable")  # e.g. a non-string key
