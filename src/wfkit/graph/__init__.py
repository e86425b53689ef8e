"""wfkit's pure workflow graph engine: nodes, edges, named predicates, validation, walks, mermaid.

It imports only the standard library and :mod:`wfkit.errors`: no database. Persistence reaches a
walk only through the observer protocol (:class:`WalkObserver`) and snapshots (:class:`Snapshot`).

State is a JSON-serializable ``dict``. A node is a function (plain or ``async def``) that receives a
read-only view of the state (``types.MappingProxyType``) and returns a mapping of updates or None; the
engine merges them into a *new* dict, ``{**state, **updates}``. Only the top level is read-only:
nodes and predicates must not mutate nested values (lists, dicts) either, since states share them.

After a node, the edges leaving it are tried in the order they were added; the first whose predicate
holds (an unconditional edge always holds) is taken, and the choice is recorded as a
:class:`RouteDecision`. Cycles are allowed; ``max_iterations`` caps the visits of any one node::

    from wfkit.graph import END, StateGraph

    def draft(state):
        return {"score": state.get("score", 0) + 40}

    def good_enough(state):
        return state["score"] >= 80

    graph = (StateGraph("essay")
             .add_node("draft", draft)
             .add_edge("draft", END, when=good_enough)
             .add_edge("draft", "draft")          # otherwise, draft again
             .set_entry_point("draft"))
    result = graph.run({})
    result.state          # {'score': 80}
    result.visits         # [Visit(node='draft', iteration=1), Visit(node='draft', iteration=2)]

An executor drives the same walk one step at a time with a :class:`Walker`, which it can snapshot
after every node and rebuild from that snapshot later (:meth:`Walker.from_snapshot`).
"""

from typing import TYPE_CHECKING, Any

from wfkit.graph.parts import (
    END,
    MAX_NAME_LENGTH,
    Edge,
    Node,
    Predicate,
    RouteDecision,
    RunResult,
    Snapshot,
    State,
    Visit,
    WalkObserver,
    predicate,
)

if TYPE_CHECKING:
    from wfkit.graph.state_graph import StateGraph
    from wfkit.graph.walker import Walker

__all__ = [
    "END", "MAX_NAME_LENGTH", "Edge", "Node", "WalkObserver", "Predicate", "RouteDecision", "RunResult",
    "Snapshot", "State", "StateGraph", "Visit", "Walker", "predicate",
]


def __getattr__(name: str) -> Any:
    # StateGraph and Walker load on first use: a plugin module that only needs END (as most do
    # at import time) does not pay for them when `wfkit list-workflows` imports it.
    if name == "StateGraph":
        from wfkit.graph.state_graph import StateGraph

        return StateGraph
    if name == "Walker":
        from wfkit.graph.walker import Walker

        return Walker
    raise AttributeError(f"module 'wfkit.graph' has no attribute {name!r}")
