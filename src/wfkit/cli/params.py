"""Workflow params from the command line: ``-p key=value`` and ``--params-json`` (for ``run`` and ``graph``).

Kept apart from :mod:`wfkit.cli.common`, which every command loads."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Sequence
from typing import Any

import click


def parse_params(pairs: Sequence[str], params_json: str | None,
                 text_fields: Collection[str] = ()) -> dict[str, Any]:
    """``--params-json`` then ``-p key=value`` pairs over it, in order: a later value of a key
    replaces an earlier one. ``--params-json @FILE`` reads the JSON from a file, ``-`` from
    standard input. A ``-p`` value is read as JSON if it is a JSON value (a number, true, null,
    a list...), else taken as text; for a key in ``text_fields`` (its params model says it is
    text) it is always taken as text. NaN and the infinities are not JSON values."""
    params: dict[str, Any] = {}
    if params_json:
        loaded = _load_params_json(params_json)
        if not isinstance(loaded, dict):
            raise click.BadParameter(
                f"must be a JSON object, got {type(loaded).__name__}", param_hint="'--params-json'"
            )
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {_short(pair)!r}", param_hint="'-p' / '--param'")
        params[key] = raw if key in text_fields else _param_value(key, raw)
    return params


def _load_params_json(given: str) -> Any:
    """The JSON of ``--params-json``: the text itself, ``@FILE``'s contents, or ``-``: standard input."""
    hint = "'--params-json'"
    if given == "-":
        text, where = sys.stdin.read(), "standard input"
    elif given.startswith("@"):
        from pathlib import Path

        try:
            text, where = Path(given[1:]).expanduser().read_text(encoding="utf-8"), given[1:]
        except (OSError, UnicodeDecodeError) as err:
            raise click.BadParameter(f"cannot read {given[1:]!r}: {getattr(err, 'strerror', None) or err}",
                                     param_hint=hint) from None
    else:
        text, where = given, None
    try:
        value = json.loads(text, parse_constant=_Unstorable.constant, parse_int=_Unstorable.integer)
    except json.JSONDecodeError as err:
        source = f" in {where}" if where else ""
        raise click.BadParameter(f"not valid JSON{source} ({err.msg} at position {err.pos})", param_hint=hint) from None
    except RecursionError:
        raise click.BadParameter("nests too deeply to read", param_hint=hint) from None
    found = _Unstorable.find(value)
    if found is not None:  # NaN, Infinity, or a number too long: named by where it is
        path, problem = found
        raise click.BadParameter(f"{path}: {problem}" if path else problem, param_hint=hint)
    return value


class _Unstorable:
    """Stands, while JSON is read, for a value wfkit cannot store, so that the error can name where
    it is (a key path such as ``a.b[2]``) rather than only what it is."""

    __slots__ = ("problem",)
    MAX_DIGITS = 4300  # Python's own limit for turning text into an int

    def __init__(self, problem: str):
        self.problem = problem

    @classmethod
    def constant(cls, name: str) -> Any:
        return cls(f"{name} is not a JSON value wfkit can store")

    @classmethod
    def integer(cls, text: str) -> Any:
        if len(text.lstrip("-")) > cls.MAX_DIGITS:
            return cls(f"a number of {len(text.lstrip('-')):,} digits is longer than a number may be "
                       f"({cls.MAX_DIGITS:,} digits)")
        return int(text)

    @classmethod
    def find(cls, value: Any) -> tuple[str, str] | None:
        """The path and problem of the first such value in ``value`` (walked without recursion)."""
        todo: list[tuple[str, Any]] = [("", value)]
        while todo:
            path, item = todo.pop()
            if isinstance(item, cls):
                return path, item.problem
            if isinstance(item, dict):
                todo += [(f"{path}.{k}" if path else str(k), v) for k, v in reversed(list(item.items()))]
            elif isinstance(item, list):
                todo += [(f"{path}[{i}]", v) for i, v in reversed(list(enumerate(item)))]
        return None


def _param_value(key: str, raw: str) -> Any:
    try:
        value = json.loads(raw, parse_constant=_Unstorable.constant, parse_int=_Unstorable.integer)
    except json.JSONDecodeError:
        return raw  # not a JSON value: text
    except RecursionError:  # JSON, but deeper than the parser goes (and than wfkit stores)
        raise click.BadParameter(f"{key}: nests too deeply to read", param_hint="'-p' / '--param'") from None
    found = _Unstorable.find(value)
    if found is not None:  # NaN, Infinity, or a number too long
        path, problem = found
        where = f"{key}.{path}" if path and not path.startswith("[") else f"{key}{path}"
        raise click.BadParameter(f"{where}: {problem}", param_hint="'-p' / '--param'")
    return value


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def text_fields_of(workflow: Any) -> frozenset[str]:
    """The params a workflow's model declares as text (str, optional str, or a choice of strings):
    their ``-p`` values are taken as they are, never read as JSON."""
    import enum
    import types
    import typing

    model = workflow.resolve_params_model()
    if model is None:
        return frozenset()

    def is_text(annotation: Any) -> bool:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            return bool(options) and all(is_text(a) for a in options)
        if origin is typing.Literal:
            return all(isinstance(a, str) for a in typing.get_args(annotation))
        return annotation is str or isinstance(annotation, type) and issubclass(annotation, (str, enum.StrEnum))

    return frozenset(name for name, field in model.model_fields.items() if is_text(field.annotation))
