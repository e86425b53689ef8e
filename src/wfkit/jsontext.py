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
#: How deeply params and state may nest (objects and arrays within each other). Deeper values are
#: refused before they are stored: every reader of them (Python's JSON parser, pydantic, the
#: databases' JSON functions) has a limit of its own somewhere above this one.
MAX_DEPTH = 100


def dumps(value: Any) -> str:
    """Compact JSON as wfkit stores it (NaN and infinities are errors: PostgreSQL's jsonb rejects them)."""
    return _ENCODE(value)


def check_json(value: Any, *, check_depth: bool = True) -> str:
    """``value`` as JSON text that every backend stores: no NaN, valid UTF-8, no NUL character,
    nested at most :data:`MAX_DEPTH` levels (deeper is a ValueError naming where; ``check_depth``
    False skips that check, for a value whose depth is known: see :func:`dumps_state`)."""
    try:
        text = _ENCODE(value)
    except RecursionError:
        raise ValueError(too_deep(value) or "it nests too deeply for JSON") from None
    # Nesting deeper than the limit needs at least as many brackets: most values are spared the walk.
    if check_depth and text.count("[") + text.count("{") > MAX_DEPTH:
        problem = too_deep(value)
        if problem:
            raise ValueError(problem)
    text.encode("utf-8")  # lone surrogates raise UnicodeEncodeError (a ValueError)
    # The encoder writes a NUL as \\u0000; the quick test also matches an escaped backslash followed
    # by "u0000" (text a user may well store), which the regular expression tells apart.
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise ValueError("the NUL character (\\u0000) cannot be stored")
    return text


_CONTAINERS = (dict, list, tuple)


def too_deep(value: Any) -> str | None:
    """Where ``value`` nests deeper than :data:`MAX_DEPTH` (the path to the first place), or None.
    It recurses nowhere, so a value of any depth gets an answer.

    The containers are visited a level at a time, with no bookkeeping per item (this runs for
    every state with more than MAX_DEPTH containers); the path is looked for only once it is known
    to exist."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    for _ in range(MAX_DEPTH):
        deeper: list[Any] = []
        for item in level:
            deeper.extend([x for x in (item.values() if isinstance(item, dict) else item) if isinstance(x, _CONTAINERS)])
        if not deeper:
            return None
        level = deeper
    path: list[Any] = []
    item = value
    while len(path) < 6:
        children = item.items() if isinstance(item, dict) else enumerate(item)
        key, item = next(((k, c) for k, c in children if isinstance(c, _CONTAINERS) and _nests(c, MAX_DEPTH - 1 - len(path))),
                         (None, None))
        if item is None:
            break
        path.append(key)
    where = "".join(f"[{p!r}]" for p in path) + "..."
    return f"it nests deeper than {MAX_DEPTH} levels (at {where})"


def _nests(value: Any, levels: int) -> bool:
    """Whether ``value`` has containers ``levels`` deep below it."""
    level = [value]
    for _ in range(levels):
        level = [x for item in level for x in (item.values() if isinstance(item, dict) else item)
                 if isinstance(x, _CONTAINERS)]
        if not level:
            return False
    return True


def dumps_state(state: Mapping[str, Any], where: str, *, check_depth: bool = True) -> str:
    """``state`` as JSON text, or :class:`StateNotSerializableError` naming ``where`` and the key.

    The run loop checks the depth of each node's updates and of the initial state, and passes
    ``check_depth=False`` for the state they make up: a state is never deeper than the deepest of
    them, and walking a large state at every step would cost more than encoding it."""
    try:
        return check_json(state, check_depth=check_depth)
    except (TypeError, ValueError) as err:
        whole = err
    for key, value in state.items():
        try:
            check_json(value, check_depth=False)
        except (TypeError, ValueError) as err:
            raise StateNotSerializableError(
                f"{where} is not JSON-serializable: key {key!r} holds {type(value).__name__} ({err})"
            ) from None
    raise StateNotSerializableError(f"{where} cannot be stored: {whole}")  # too deep, or a non-string key
