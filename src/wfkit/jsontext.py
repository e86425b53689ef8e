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
_NO_KEY = object()


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


def unfaithful(value: Any, key: Any = _NO_KEY) -> str | None:
    """What in ``value`` JSON would read back as something else, with where, or None: a tuple (it
    reads back as a list) or a mapping key that is not a string (it reads back as a string). A run
    stores its state as JSON and a resumed run reads it back: with such values, it would see other
    types than the uninterrupted run did. (Subclasses of str, int, float, list and dict read back as
    the base type, which compares equal: those are let through.)

    The containers are visited a level at a time, as :func:`too_deep` does; the path is looked for
    only once something is found. ``key``: the state's key that holds ``value``, for the path."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    found = False
    while level and not found:
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, tuple) or (isinstance(item, dict) and any(type(k) is not str for k in item)
                                           and not all(isinstance(k, str) for k in item)):
                found = True
                break
            deeper.extend([x for x in (item.values() if isinstance(item, dict) else item) if isinstance(x, _CONTAINERS)])
        level = deeper
    if not found:
        return None
    # Depth first, without recursion, to name the first such place.
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, () if key is _NO_KEY else (key,))]
    while stack:
        item, path = stack.pop()
        where = f" (at {''.join(f'[{p!r}]' for p in path)})" if len(path) > (key is not _NO_KEY) else ""
        if isinstance(item, tuple):
            return f"a tuple{where}, which JSON stores as a list (a resumed run would see a list): use a list"
        if isinstance(item, dict):
            bad = next((k for k in item if not isinstance(k, str)), _NO_KEY)
            if bad is not _NO_KEY:
                return (f"a mapping with a key of type {type(bad).__name__}, {bad!r}{where}, which JSON stores as "
                        f"the string {_ENCODE(_json_key(bad))} (a resumed run would see a string): use string keys")
            children = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:
            continue
        stack.extend((child, (*path, key)) for key, child in reversed(children) if isinstance(child, _CONTAINERS))
    return None  # pragma: no cover - found above


def _json_key(key: Any) -> str:
    """The string JSON makes of a mapping key that is not one."""
    try:
        return next(iter(json.loads(_ENCODE({key: 0}))))
    except (TypeError, ValueError):
        return str(key)


def dumps_state(state: Mapping[str, Any], where: str, *, check_depth: bool = True) -> str:
    """``state`` as JSON text, or :class:`StateNotSerializableError` naming ``where`` and the key.

    It refuses what JSON would change (see :func:`unfaithful`): a resumed run must see the state an
    uninterrupted one saw. The run loop checks the depth of each node's updates and of the initial
    state, and passes ``check_depth=False`` for the state they make up: a state is never deeper than
    the deepest of them, and walking a large state at every step would cost more than encoding it."""
    try:
        text = check_json(state, check_depth=check_depth)
    except (TypeError, ValueError) as err:
        whole = err
    else:
        if check_depth:  # with check_depth False, the parts were checked (and for fidelity too)
            _check_faithful(state, where)
        return text
    for key, value in state.items():
        if not isinstance(key, str):
            break
        try:
            check_json(value, check_depth=False)
        except (TypeError, ValueError) as err:
            raise StateNotSerializableError(
                f"{where} is not JSON-serializable: key {key!r} holds {type(value).__name__} ({err})"
            ) from None
    raise StateNotSerializableError(f"{where} cannot be stored: {whole}")  # too deep, or a non-string key


def _check_faithful(state: Mapping[str, Any], where: str) -> None:
    """:class:`StateNotSerializableError` naming ``where`` and the key if JSON would change a value of
    ``state`` (see :func:`unfaithful`)."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise StateNotSerializableError(
                f"{where} cannot be stored faithfully: it has a key of type {type(key).__name__}, {key!r}, which "
                f"JSON stores as the string {_ENCODE(_json_key(key))} (a resumed run would see a string): use string "
                "keys")
        if isinstance(value, _CONTAINERS):
            problem = unfaithful(value, key)
            if problem:
                raise StateNotSerializableError(f"{where} cannot be stored faithfully: key {key!r} holds {problem}")


def key_texts(state: Mapping[str, Any], where: str) -> dict[str, str]:
    """Each key of ``state`` with its value as JSON text, checked as :func:`dumps_state` checks a
    state (:class:`StateNotSerializableError` naming ``where`` and the key). :func:`join_texts`
    makes the state's JSON text from them; :func:`changed_texts` compares updates with them."""
    texts: dict[str, str] = {}
    changed_texts(state, texts, where)
    return texts


def join_texts(texts: Mapping[str, str]) -> str:
    """The JSON text of a mapping whose values' JSON texts are ``texts``."""
    return "{" + ",".join(f"{_ENCODE(key)}:{text}" for key, text in texts.items()) + "}"


def changed_texts(updates: Mapping[str, Any], texts: dict[str, str], where: str) -> tuple[str, list[str] | None]:
    """A node's ``updates`` as JSON text, leaving out the keys whose values are stored already as they
    are (their JSON text in ``texts``, the state's keys as stored), and those keys (None: none). The
    texts of the keys written are updated in ``texts``. Each value is checked as :func:`dumps_state`
    checks a state: :class:`StateNotSerializableError` names ``where`` and the key.

    A node that returns the whole state with one key changed (``{**state, "n": n + 1}``) then costs
    the history that key, not the whole state, at every step. The comparison is of JSON texts, not
    of values: a value mutated in place by the node compares with what was stored, and ``1``,
    ``1.0`` and ``True`` (equal in Python) are told apart."""
    parts: list[str] = []
    unchanged: list[str] = []
    for key, value in updates.items():
        if not isinstance(key, str):
            _check_faithful({key: value}, where)
        try:
            # The value is a key's: the state nests one level more than it does.
            text = check_json(value, check_depth=False)
            if text.count("[") + text.count("{") >= MAX_DEPTH:
                problem = too_deep({key: value})
                if problem:
                    raise ValueError(problem)
        except (TypeError, ValueError) as err:
            if "nests deeper" in str(err):
                raise StateNotSerializableError(f"{where} cannot be stored: {err}") from None
            raise StateNotSerializableError(
                f"{where} is not JSON-serializable: key {key!r} holds {type(value).__name__} ({err})"
            ) from None
        if texts.get(key) == text:
            unchanged.append(key)
            continue
        if isinstance(value, _CONTAINERS):
            problem = unfaithful(value, key)
            if problem:
                raise StateNotSerializableError(f"{where} cannot be stored faithfully: key {key!r} holds {problem}")
        texts[key] = text
        parts.append(f"{_ENCODE(key)}:{text}")
    return "{" + ",".join(parts) + "}", unchanged or None
