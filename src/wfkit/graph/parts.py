"""The pieces of a graph (nodes, edges, named predicates) and what a walk produces and reports."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from wfkit.errors import GraphError

#: The finish marker: ``add_edge("x", END)`` ends the walk after ``x``.
END = "__end__"
#: Longest node or predicate name (the database columns that record them hold 200 characters).
MAX_NAME_LENGTH = 200

State = Mapping[str, Any]


def name_problem(name: object, what: str) -> str | None:
    """Why ``name`` cannot name a node or predicate, or None if it can."""
    if not isinstance(name, str) or not name.strip():
        return f"{what} name must be a non-empty string, got {name!r}"
    if len(name) > MAX_NAME_LENGTH:
        return f"{what} name {name[:40]!r}... is longer than {MAX_NAME_LENGTH} characters"
    return None


@dataclass(frozen=True, slots=True)
class Predicate:
    """A named routing condition: ``fn(state) -> bool``. The name is what the decision log records."""

    name: str
    fn: Callable[[State], Any]

    def __post_init__(self) -> None:
        problem = name_problem(self.name, "predicate")
        if problem is None and self.name == "<lambda>":
            problem = "a lambda predicate needs a name: add_edge(..., when=lambda s: ..., name='score_ok')"
        if problem is None and not callable(self.fn):
            problem = f"predicate {self.name!r} is not callable (got {type(self.fn).__name__})"
        if problem is None and inspect.iscoroutinefunction(self.fn):
            problem = f"predicate {self.name!r} is async; predicates must be plain functions of the state"
        if problem:
            raise GraphError(problem)

    def __call__(self, state: State) -> bool:
        return bool(self.fn(state))


def predicate(name: str | Callable[[State], Any] | None = None) -> Any:
    """Make a :class:`Predicate`: ``@predicate``, ``@predicate()`` or ``@predicate("score_ok")``."""
    if callable(name):  # used bare: @predicate
        return Predicate(getattr(name, "__name__", ""), name)
    return lambda fn: Predicate(name if name is not None else getattr(fn, "__name__", ""), fn)


@dataclass(frozen=True, slots=True)
class Node:
    """A node of a graph: its name, function, description and whether it is ``async``."""

    name: str
    fn: Callable[[State], Any]
    description: str | None = None
    is_async: bool = False


@dataclass(frozen=True, slots=True)
class Edge:
    """An edge ``from_node -> to_node`` (``to_node`` None means END), taken when ``predicate`` holds."""

    from_node: str
    to_node: str | None
    predicate: Predicate | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``from_node``, ``to_node`` (None for END), ``predicate`` (name or None)."""
        return {"from_node": self.from_node, "to_node": self.to_node,
                "predicate": None if self.predicate is None else self.predicate.name}


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """One routing choice after a node, in the shape of the ``decisions`` table.

    ``to_node`` is None for END; ``predicate_name`` is None for an unconditional edge. The reason
    also names the predicates tried before that did not hold.
    """

    from_node: str
    to_node: str | None
    predicate_name: str | None
    predicate_result: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (snake_case keys, the same names as the fields)."""
        return {"from_node": self.from_node, "to_node": self.to_node, "predicate_name": self.predicate_name,
                "predicate_result": self.predicate_result, "reason": self.reason}


class Visit(NamedTuple):
    """One execution of a node: its name and its 1-based iteration (visit count of that node)."""

    node: str
    iteration: int


@dataclass(slots=True)
class RunResult:
    """What a walk produced: the final state, the visits and the routing decisions, in order."""

    state: dict[str, Any]
    visits: list[Visit]
    decisions: list[RouteDecision]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"state": self.state, "visits": [v._asdict() for v in self.visits],
                "decisions": [d.to_dict() for d in self.decisions]}


@dataclass(slots=True)
class Snapshot:
    """Where a walk stands between two nodes: enough to resume it without re-running finished nodes.

    ``next_node`` is None once the walk reached END; ``counters`` maps node name to visits so far.
    ``route_from`` names a node that completed but whose route could not be chosen (a
    :class:`~wfkit.errors.RouteError`): resuming chooses it again before anything runs.
    The ``state`` dict is shared with the walker (which never mutates it): do not mutate it either.
    """

    state: dict[str, Any]
    next_node: str | None
    counters: dict[str, int] = field(default_factory=dict)
    route_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``state``, ``next_node``, ``counters``, ``route_from``."""
        return {"state": self.state, "next_node": self.next_node, "counters": dict(self.counters),
                "route_from": self.route_from}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """Read back what :meth:`to_dict` wrote."""
        return cls(dict(data["state"]), data.get("next_node"), dict(data.get("counters") or {}),
                   data.get("route_from"))


class WalkObserver(Protocol):
    """What a walk reports, in order: stage start, stage end, decision (per node). (The run events
    an executor reports to its observers are :mod:`wfkit.events`'s.)

    Every method is optional: a :class:`Walker` calls only those its observer has. ``state`` is a
    read-only view: the input state at start, the new state at a successful end (the input state when
    ``error`` is set; ``updates`` is then None). An exception raised by an observer stops the walk.
    """

    def on_stage_start(self, node: str, iteration: int, state: State) -> None: ...

    def on_stage_end(self, node: str, iteration: int, state: State, updates: Mapping[str, Any] | None,
                     duration_ms: float, error: BaseException | None) -> None: ...

    def on_decision(self, decision: RouteDecision) -> None: ...


def run_coroutine(coro: Any, what: str) -> Any:
    """Run ``coro`` to completion from synchronous code, or explain why that is not possible."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise GraphError(f"{what} is async and an event loop is already running: use the async API "
                     "(await graph.arun(...), walker.astep(), graph.aexecute_node(...))")
