"""Walker: one walk through a graph, a step at a time, with snapshots to resume from."""

from __future__ import annotations

from collections.abc import Mapping
from time import perf_counter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from wfkit.errors import GraphError, MaxIterationsError
from wfkit.graph.parts import RouteDecision, RunResult, Snapshot, State, Visit, WalkObserver

if TYPE_CHECKING:
    from wfkit.graph.state_graph import StateGraph

_START = object()  # Walker(node=...) default: begin at the entry point

class Walker:
    """A walk in progress: the state, the next node, per-node visit counters, visits and decisions.

    Advance it with :meth:`step` (or :meth:`astep`) one node at a time: run the node, then route.
    A step either completes (state, counters, visits and decisions all move) or raises and leaves the
    walker as it was, so the caller can :meth:`snapshot` after every step and resume from the last one
    with :meth:`from_snapshot`, and can stop cooperatively between steps. The one exception is a
    :class:`~wfkit.errors.RouteError`: the node completed, so its effects stand, and the walker waits
    at :attr:`route_from` for :meth:`reroute`. ``visits`` and ``decisions``
    hold what this walker did (not what ran before the snapshot it was resumed from).
    """

    __slots__ = ("graph", "state", "node", "counters", "visits", "decisions", "route_from", "_start", "_end",
                 "_decide")

    def __init__(self, graph: StateGraph, state: State, *, node: Any = _START,
                 counters: Mapping[str, int] | None = None, route_from: str | None = None,
                 observer: WalkObserver | None = None):
        graph.validate()
        if not isinstance(state, Mapping):
            raise GraphError(f"state must be a mapping, got {type(state).__name__}")
        self.graph = graph
        #: the current state (a dict the walker never mutates: each step makes a new one)
        self.state: dict[str, Any] = dict(state)
        #: the next node to run; None once END was reached
        self.node: str | None = graph.entry_point if node is _START else node
        #: visits so far per node name (survives a snapshot, so iteration numbers continue)
        self.counters: dict[str, int] = dict(counters or {})
        self.visits: list[Visit] = []
        self.decisions: list[RouteDecision] = []
        #: a node that completed but whose route could not be chosen (see :meth:`reroute`); else None
        self.route_from: str | None = route_from
        nodes = graph.nodes
        problems = [] if self.node is None or self.node in nodes else [f"next node {self.node!r} is not a node"]
        if route_from is not None and (route_from not in nodes or self.node is not None):
            problems.append(f"route_from {route_from!r} (want a node name, and no next node)")
        problems += [f"counter {k!r}={v!r} (want a node name and a count >= 0)" for k, v in self.counters.items()
                     if k not in nodes or not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if problems:
            raise GraphError("cannot resume the walk: " + "; ".join(problems))
        self._start = getattr(observer, "on_stage_start", None)
        self._end = getattr(observer, "on_stage_end", None)
        self._decide = getattr(observer, "on_decision", None)

    @classmethod
    def from_snapshot(cls, graph: StateGraph, snapshot: Snapshot | Mapping[str, Any], *,
                      observer: WalkObserver | None = None) -> Walker:
        """A walker resuming at ``snapshot`` (a :class:`Snapshot` or its ``to_dict()`` form)."""
        if not isinstance(snapshot, Snapshot):
            snapshot = Snapshot.from_dict(snapshot)
        return cls(graph, snapshot.state, node=snapshot.next_node, counters=snapshot.counters,
                   route_from=snapshot.route_from, observer=observer)

    @property
    def done(self) -> bool:
        """Whether the walk reached END."""
        return self.node is None and self.route_from is None

    def snapshot(self) -> Snapshot:
        """Where the walk stands now (take it between steps)."""
        return Snapshot(self.state, self.node, dict(self.counters), self.route_from)

    def reroute(self) -> RouteDecision:
        """Choose again the route from :attr:`route_from`, the node whose route failed (a predicate
        fixed since, say): the decision, and the walk goes on from there; a
        :class:`~wfkit.errors.RouteError` again leaves the walker as it was."""
        node = self.route_from
        if node is None:
            raise GraphError("nothing to route again: the route from the last node was chosen")
        decision = self.graph.route(node, self.state)
        if self._decide is not None:
            self._decide(decision)
        self.decisions.append(decision)
        self.node, self.route_from = decision.to_node, None
        return decision

    def result(self) -> RunResult:
        """The state, visits and decisions so far."""
        return RunResult(self.state, self.visits, self.decisions)

    def _begin(self) -> tuple[str, int]:
        node = self.node
        if node is None:
            if self.route_from is not None:
                raise GraphError(f"the route from node {self.route_from!r} is still to be chosen: call reroute()")
            raise GraphError("the walk already reached END: there is no next step")
        iteration = self.counters.get(node, 0) + 1
        limit = self.graph.max_iterations
        if iteration > limit:
            raise MaxIterationsError(node, limit)
        if self._start is not None:
            self._start(node, iteration, MappingProxyType(self.state))
        return node, iteration

    def _fail(self, node: str, iteration: int, t0: float, exc: GraphError) -> None:
        if self._end is not None:
            self._end(node, iteration, MappingProxyType(self.state), None, (perf_counter() - t0) * 1000, exc)

    def _finish(self, node: str, iteration: int, t0: float, updates: Mapping[str, Any],
                new_state: dict[str, Any]) -> RouteDecision:
        if self._end is not None:
            self._end(node, iteration, MappingProxyType(new_state), updates, (perf_counter() - t0) * 1000, None)
        # The node completed: its effects stand even if no route can be chosen (a RouteError leaves
        # the walker at route_from, to route again; the node is not run again).
        self.state = new_state
        self.counters[node] = iteration
        self.visits.append(Visit(node, iteration))
        self.node, self.route_from = None, node
        decision = self.graph.route(node, new_state)
        if self._decide is not None:
            self._decide(decision)
        self.decisions.append(decision)
        self.node, self.route_from = decision.to_node, None
        return decision

    def step(self) -> RouteDecision:
        """Run the next node, route, and return the decision taken (an async node runs via asyncio.run)."""
        node, iteration = self._begin()
        t0 = perf_counter()
        try:
            updates, new_state = self.graph.execute_node(node, self.state, iteration=iteration)
        except GraphError as exc:
            self._fail(node, iteration, t0, exc)
            raise
        return self._finish(node, iteration, t0, updates, new_state)

    async def astep(self) -> RouteDecision:
        """Like :meth:`step`, awaiting an async node."""
        node, iteration = self._begin()
        t0 = perf_counter()
        try:
            updates, new_state = await self.graph.aexecute_node(node, self.state, iteration=iteration)
        except GraphError as exc:
            self._fail(node, iteration, t0, exc)
            raise
        return self._finish(node, iteration, t0, updates, new_state)

    def run(self) -> RunResult:
        """Step until END; return :meth:`result`."""
        step = self.step
        while self.node is not None:
            step()
        return self.result()

    async def arun(self) -> RunResult:
        """Await steps until END; return :meth:`result`."""
        while self.node is not None:
            await self.astep()
        return self.result()
