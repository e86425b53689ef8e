"""StateGraph: nodes, edges with named predicates, validation and running (mermaid: :mod:`wfkit.graph.mermaid`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from wfkit.errors import GraphError, GraphValidationError, NodeError, NoRouteError, RouteError, error_text
from wfkit.graph.parts import (
    END,
    Edge,
    Node,
    Predicate,
    RouteDecision,
    RunResult,
    State,
    WalkObserver,
    name_problem,
    run_coroutine,
)
from wfkit.graph.walker import Walker


class StateGraph:
    """A workflow graph: named nodes, ordered edges with named predicates, one entry point.

    Building methods return the graph, for chaining. Mistakes in names and edges are collected,
    not raised, and :meth:`validate` reports them all at once; :meth:`run` validates first.
    """

    def __init__(self, name: str | None = None, *, max_iterations: int = 100):
        self.name = name
        self._max_iterations = max_iterations
        self._nodes: dict[str, Node] = {}
        self._duplicates: list[str] = []
        self._bad: list[str] = []  # problems found while building: bad names, non-callables
        self._edges: list[Edge] = []
        self._out: dict[str, list[Edge]] = {}
        self._entry: str | None = None
        self._valid = False  # validated since the last change?
        #: the state key holding the run's result (None: the whole final state is the result)
        self.result_key: str | None = None

    # -- building ------------------------------------------------------------------------------------

    def add_node(self, name: str, fn: Callable[[State], Any], *, description: str | None = None) -> StateGraph:
        """Add node ``name`` running ``fn(state) -> mapping | None`` (plain or ``async def``)."""
        self._valid = False
        problem = name_problem(name, "node")
        if problem:
            self._bad.append(problem)
            return self
        if not callable(fn):
            self._bad.append(f"node {name!r}: fn is not callable (got {type(fn).__name__})")
        if name in self._nodes:
            self._duplicates.append(name)
            return self
        # A callable object may have an ``async def __call__``; a function or method is what it says.
        is_async = inspect.iscoroutinefunction(fn) or (
            not inspect.isroutine(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None)))
        self._nodes[name] = Node(name, fn, description, is_async)
        return self

    def add_edge(self, src: str, dst: str, *, when: Predicate | Callable[[State], Any] | None = None,
                 name: str | None = None) -> StateGraph:
        """Add an edge ``src -> dst`` (``dst`` may be END), taken if ``when`` holds (always if None).

        A plain function's predicate name is ``name`` or else its ``__name__``; a lambda needs ``name``.
        Raises :class:`GraphError` at once for a bad predicate (the caller's line is in the traceback).
        """
        if when is None:
            if name is not None:
                raise GraphError(f"edge {src!r} -> {dst!r}: name={name!r} labels a predicate, but when= is missing")
            pred = None
        elif isinstance(when, Predicate):
            pred = when if name is None or name == when.name else Predicate(name, when.fn)
        else:
            if not callable(when):
                raise GraphError(f"edge {src!r} -> {dst!r}: when= must be a function of the state, "
                                 f"got {type(when).__name__}")
            pred_name = name if name is not None else getattr(when, "__name__", None)
            if pred_name is None:
                raise GraphError(f"edge {src!r} -> {dst!r}: give the predicate a name with name='...'")
            pred = Predicate(pred_name, when)
        edge = Edge(src, None if dst == END else dst, pred)
        self._edges.append(edge)
        self._out.setdefault(src, []).append(edge)
        self._valid = False
        return self

    def set_entry_point(self, name: str) -> StateGraph:
        """Make ``name`` the first node of every walk."""
        self._entry = name
        self._valid = False
        return self

    def set_max_iterations(self, limit: int) -> StateGraph:
        """Allow any one node to run at most ``limit`` times in one walk (default 100)."""
        self._max_iterations = limit
        self._valid = False
        return self

    def set_result_key(self, key: str | None) -> StateGraph:
        """Make ``state[key]`` at the end the run's result, instead of the whole final state."""
        self.result_key = key
        return self

    def result_of(self, state: Mapping[str, Any]) -> Any:
        """The run's result for a final ``state``: ``state[result_key]`` if set (None if missing), else the state."""
        return state if self.result_key is None else state.get(self.result_key)

    def set_finish_point(self, name: str) -> StateGraph:
        """Finish the walk after ``name``: the same as ``add_edge(name, END)``."""
        return self.add_edge(name, END)

    # -- reading -------------------------------------------------------------------------------------

    @property
    def max_iterations(self) -> int:
        """How many times any one node may run in one walk."""
        return self._max_iterations

    @property
    def entry_point(self) -> str | None:
        """The first node, if set."""
        return self._entry

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes by name, in the order they were added (a read-only view)."""
        return MappingProxyType(self._nodes)

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge, in the order it was added."""
        return tuple(self._edges)

    def edges_from(self, name: str) -> tuple[Edge, ...]:
        """The edges leaving ``name``, in the order they are tried."""
        return tuple(self._out.get(name, ()))

    @property
    def has_async_nodes(self) -> bool:
        """Whether any node is ``async`` (then :meth:`run` drives the walk with asyncio)."""
        return any(node.is_async for node in self._nodes.values())

    # -- validation ----------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Every problem of the graph, one line each, in a stable order; empty if it is valid."""
        found: list[str] = []
        limit = self._max_iterations
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            found.append(f"max_iterations must be an integer >= 1, got {limit!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            found.append(f"graph name must be a non-empty string or None, got {self.name!r}")
        found.extend(self._bad)
        for name in dict.fromkeys(self._duplicates):
            found.append(f"duplicate node name {name!r} (added {self._duplicates.count(name) + 1} times)")
        for name in self._nodes:
            if name == END:
                found.append(f"node name {name!r} is reserved: it is END, the finish marker")
            elif name.startswith("__"):
                found.append(f"node name {name!r} is reserved: names starting with '__' belong to wfkit")
        if not self._nodes:
            found.append("graph has no nodes: add_node(name, fn)")
        if self._entry is None:
            found.append("no entry point: call set_entry_point(name)")
        elif self._entry not in self._nodes:
            found.append(f"entry point {self._entry!r} is not a node")
        for edge in self._edges:
            src, dst = edge.from_node, edge.to_node
            label = _edge_label(edge)
            if src == END:
                found.append(f"edge {label} leaves END: nothing runs after END")
            elif src not in self._nodes:
                found.append(f"edge {label} comes from unknown node {src!r}")
            if dst is not None and dst not in self._nodes:
                found.append(f"edge {label} goes to unknown node {dst!r}")
        for src, edges in self._out.items():
            seen: dict[str, Edge] = {}
            for i, edge in enumerate(edges):
                if i and edges[i - 1].predicate is None:
                    found.append(f"edge {_edge_label(edge)} can never be taken: "
                                 f"the unconditional edge {_edge_label(edges[i - 1])} comes before it")
                    break
                if edge.predicate is not None:
                    first = seen.setdefault(edge.predicate.name, edge)
                    if first is not edge:
                        found.append(f"node {src!r} has two edges with predicate {edge.predicate.name!r} "
                                     f"({_edge_label(first)} and {_edge_label(edge)}): give them distinct names")
        no_way_out = [n for n in self._nodes if n not in self._out]
        found.extend(f"node {n!r} has no way out: add an edge from it or set_finish_point({n!r})"
                     for n in no_way_out)
        if self._entry in self._nodes:
            reached = self._reachable([self._entry], forward=True)
            found.extend(f"node {n!r} cannot be reached from entry point {self._entry!r}"
                         for n in self._nodes if n not in reached)
            # Reason: a loop with no edge to END can only end in MaxIterationsError.
            finishing = self._reachable([e.from_node for e in self._live_edges() if e.to_node is None], forward=False)
            found.extend(f"node {n!r} has no path to END: the walk could never finish from it"
                         for n in self._nodes if n in reached and n not in finishing and n not in no_way_out)
        return found

    def _reachable(self, start: list[str], *, forward: bool) -> set[str]:
        """Nodes reachable from ``start`` following edges forward (or backward)."""
        links: dict[str, list[str]] = {}
        for e in self._live_edges():
            if e.to_node is not None:
                a, b = (e.from_node, e.to_node) if forward else (e.to_node, e.from_node)
                links.setdefault(a, []).append(b)
        seen = set(start)
        todo = list(start)
        while todo:
            for nxt in links.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    def _live_edges(self) -> list[Edge]:
        """The edges that can be taken: from each node, those up to its first unconditional edge."""
        live = []
        for edges in self._out.values():
            for edge in edges:
                live.append(edge)
                if edge.predicate is None:
                    break
        return live

    def validate(self) -> StateGraph:
        """Raise :class:`GraphValidationError` listing every problem (``.problems``); else return self."""
        if not self._valid:
            found = self.problems()
            if found:
                raise GraphValidationError(found, self.name if isinstance(self.name, str) else None)
            self._valid = True
        return self

    # -- one step, in pieces an executor can drive ----------------------------------------------------

    def _node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except (KeyError, TypeError):
            known = ", ".join(map(repr, self._nodes)) or "none"
            raise GraphError(f"unknown node {name!r}; nodes: {known}") from None

    def execute_node(self, name: str, state: State, *, iteration: int = 1
                     ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Run node ``name`` on ``state``; return ``(updates, new_state)`` (``updates`` is ``{}`` for None).

        An async node is run with ``asyncio.run`` (use :meth:`aexecute_node` inside an event loop).
        Raises :class:`NodeError` (the node's exception as ``__cause__``) if the node fails.
        """
        node = self._node(name)
        if node.is_async:
            return run_coroutine(self.aexecute_node(name, state, iteration=iteration), f"node {name!r}")
        try:
            updates = node.fn(MappingProxyType(state))
        except (Exception, SystemExit) as exc:  # a node that calls sys.exit fails: it does not end the program
            raise NodeError(name, iteration, f"failed: {error_text(exc)}") from exc
        if type(updates) is dict:  # the common case, kept short
            return updates, {**state, **updates}
        return _merge(name, iteration, state, updates)

    async def aexecute_node(self, name: str, state: State, *, iteration: int = 1
                            ) -> tuple[Mapping[str, Any], dict[str, Any]]:
        """Like :meth:`execute_node`, awaiting an async node (a plain node is called directly)."""
        node = self._node(name)
        try:
            updates = node.fn(MappingProxyType(state))
            if inspect.isawaitable(updates):
                updates = await updates
        except (Exception, SystemExit) as exc:
            raise NodeError(name, iteration, f"failed: {error_text(exc)}") from exc
        return _merge(name, iteration, state, updates)

    def route(self, name: str, state: State) -> RouteDecision:
        """Choose the edge leaving ``name`` for ``state``: the first, in added order, whose predicate holds.

        Raises :class:`NoRouteError` if none holds, :class:`RouteError` if a predicate raises.
        """
        edges = self._out.get(name)
        if not edges:
            self._node(name)  # unknown node: say so
            raise NoRouteError(name, [])
        view = state if type(state) is MappingProxyType else MappingProxyType(state)
        failed: list[str] = []
        for edge in edges:
            pred = edge.predicate
            if pred is None:
                reason = "unconditional edge"
            else:
                try:
                    held = pred.fn(view)
                except (Exception, SystemExit) as exc:
                    raise RouteError(name, f"predicate {pred.name!r} on edge {_edge_label(edge)} raised "
                                           f"{error_text(exc)}", pred.name) from exc
                if not held:
                    failed.append(pred.name)
                    continue
                reason = f"{pred.name} held"
            if failed:
                reason += f" ({', '.join(failed)} did not hold)"
            return RouteDecision(name, edge.to_node, None if pred is None else pred.name, True, reason)
        raise NoRouteError(name, failed)

    # -- whole walks ---------------------------------------------------------------------------------

    def walker(self, state: State, *, observer: WalkObserver | None = None) -> Walker:
        """A :class:`Walker` at the entry point with ``state`` (validates the graph first)."""
        return Walker(self, state, observer=observer)

    def run(self, state: State, *, observer: WalkObserver | None = None) -> RunResult:
        """Walk from the entry point to END and return the :class:`RunResult`.

        A graph with async nodes is walked by :meth:`arun` under ``asyncio.run``.
        """
        walker = Walker(self, state, observer=observer)
        if self.has_async_nodes:
            return run_coroutine(walker.arun(), "this graph" if self.name is None else f"graph {self.name!r}")
        return walker.run()

    async def arun(self, state: State, *, observer: WalkObserver | None = None) -> RunResult:
        """Walk from the entry point to END, awaiting async nodes (plain nodes are called directly)."""
        return await Walker(self, state, observer=observer).arun()

    # -- descriptions --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON description: name, entry_point, max_iterations, nodes, edges (``to_node`` None is END)."""
        return {
            "name": self.name,
            "entry_point": self._entry,
            "max_iterations": self._max_iterations,
            "result_key": self.result_key,
            "nodes": [{"name": n.name, "description": n.description, "is_async": n.is_async}
                      for n in self._nodes.values()],
            "edges": [e.to_dict() for e in self._edges],
        }

    def to_mermaid(self) -> str:
        """The graph as a mermaid ``flowchart TD`` (see :func:`wfkit.graph.mermaid.to_mermaid`)."""
        from wfkit.graph.mermaid import to_mermaid

        return to_mermaid(self)

    def __repr__(self) -> str:
        return f"StateGraph({self.name!r}, nodes={len(self._nodes)}, edges={len(self._edges)})"


def _edge_label(edge: Edge) -> str:
    dst = "END" if edge.to_node is None else repr(edge.to_node)
    when = "" if edge.predicate is None else f" when {edge.predicate.name}"
    return f"{edge.from_node!r} -> {dst}{when}"


def _merge(name: str, iteration: int, state: State, updates: Any) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """``(updates, {**state, **updates})``, or a NodeError if the node returned something else."""
    if type(updates) is dict:
        return updates, {**state, **updates}
    if updates is None:
        return {}, state if type(state) is dict else dict(state)
    if isinstance(updates, Mapping):
        return updates, {**state, **updates}
    if inspect.iscoroutine(updates):
        updates.close()
        raise NodeError(name, iteration, "returned a coroutine: define the node with async def")
    raise NodeError(name, iteration, f"returned {type(updates).__name__}, expected a mapping of updates or None")
