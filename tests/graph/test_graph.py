"""wfkit.graph: the pure workflow graph engine, walked in memory."""

from __future__ import annotations

import asyncio
import json
import pickle
from types import MappingProxyType

import pytest

from wfkit.errors import (
    GraphError,
    GraphValidationError,
    MaxIterationsError,
    NodeError,
    NoRouteError,
    WfkitError,
)
from wfkit.graph import (
    END,
    Predicate,
    RouteDecision,
    Snapshot,
    StateGraph,
    Visit,
    Walker,
    predicate,
)


def inc(state):
    return {"count": state.get("count", 0) + 1}


def nothing(state):
    return None


def below_three(state):
    return state["count"] < 3


def always(state):
    return True


def loop_graph(**kwargs) -> StateGraph:
    """inc -> inc while count < 3, then END."""
    return (StateGraph("loop", **kwargs)
            .add_node("inc", inc)
            .add_edge("inc", "inc", when=below_three)
            .add_edge("inc", END)
            .set_entry_point("inc"))


class Recorder:
    """An observer that writes down every event."""

    def __init__(self):
        self.events = []

    def on_stage_start(self, node, iteration, state):
        self.events.append(("start", node, iteration, dict(state)))

    def on_stage_end(self, node, iteration, state, updates, duration_ms, error):
        assert duration_ms >= 0
        self.events.append(("end", node, iteration, dict(state), updates, type(error).__name__ if error else None))

    def on_decision(self, decision):
        self.events.append(("decision", decision.from_node, decision.to_node, decision.predicate_name))


# -- purity ------------------------------------------------------------------------------------------


# -- routing -----------------------------------------------------------------------------------------


def test_chain_runs_in_order_and_merges_updates():
    def a(state):
        return {"a": 1}

    def b(state):
        return {"b": state["a"] + 1}

    g = (StateGraph("chain").add_node("a", a).add_node("b", b).add_node("c", nothing)
         .add_edge("a", "b").add_edge("b", "c").set_finish_point("c").set_entry_point("a"))
    result = g.run({"seed": 0})
    assert result.state == {"seed": 0, "a": 1, "b": 2}
    assert result.visits == [Visit("a", 1), Visit("b", 1), Visit("c", 1)]
    assert [(d.from_node, d.to_node) for d in result.decisions] == [("a", "b"), ("b", "c"), ("c", None)]
    assert all(d.predicate_name is None and d.predicate_result is True and d.reason == "unconditional edge"
               for d in result.decisions)


def test_edges_are_tried_in_added_order_and_first_match_wins():
    def start(state):
        return None

    g = (StateGraph().add_node("start", start).add_node("x", nothing).add_node("y", nothing)
         .add_edge("start", "x", when=always).add_edge("start", "y", when=always, name="also_true")
         .set_finish_point("x").set_finish_point("y").set_entry_point("start"))
    # both predicates hold: the one added first is taken
    result = g.run({})
    assert [v.node for v in result.visits] == ["start", "x"]
    assert result.decisions[0] == RouteDecision("start", "x", "always", True, "always held")


def test_predicate_names_and_reasons_in_decisions():
    @predicate
    def is_big(state):
        return state["n"] > 10

    @predicate("is_medium")
    def medium(state):
        return state["n"] > 5

    g = (StateGraph().add_node("check", nothing).add_node("big", nothing).add_node("medium", nothing)
         .add_node("small", nothing)
         .add_edge("check", "big", when=is_big)
         .add_edge("check", "medium", when=medium)
         .add_edge("check", "small", when=lambda s: s["n"] > 0, name="is_positive")
         .add_edge("check", END)
         .set_finish_point("big").set_finish_point("medium").set_finish_point("small")
         .set_entry_point("check"))
    decision = lambda n: g.run({"n": n}).decisions[0]  # noqa: E731
    assert decision(20) == RouteDecision("check", "big", "is_big", True, "is_big held")
    assert decision(7) == RouteDecision("check", "medium", "is_medium", True, "is_medium held (is_big did not hold)")
    assert decision(1) == RouteDecision("check", "small", "is_positive", True,
                                        "is_positive held (is_big, is_medium did not hold)")
    assert decision(0) == RouteDecision("check", None, None, True,
                                        "unconditional edge (is_big, is_medium, is_positive did not hold)")
    assert decision(0).to_dict() == {"from_node": "check", "to_node": None, "predicate_name": None,
                                     "predicate_result": True,
                                     "reason": "unconditional edge (is_big, is_medium, is_positive did not hold)"}
    assert g.route("check", {"n": 20}) == decision(20)  # route() alone, on a plain dict


def test_predicate_forms():
    def score_ok(state):
        return state["score"] > 1

    assert predicate(score_ok) == Predicate("score_ok", score_ok)
    assert predicate()(score_ok) == Predicate("score_ok", score_ok)
    assert predicate("good")(score_ok).name == "good"
    assert predicate(name="good")(score_ok).name == "good"
    assert predicate(score_ok)({"score": 2}) is True
    g = StateGraph().add_edge("a", "b", when=Predicate("p", score_ok), name="renamed")
    assert g.edges[0].predicate.name == "renamed"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"when": lambda s: True}, "a lambda predicate needs a name"),
        ({"when": 3}, "when= must be a function of the state, got int"),
        ({"name": "orphan"}, "name='orphan' labels a predicate, but when= is missing"),
        ({"when": always, "name": ""}, "predicate name must be a non-empty string, got ''"),
        ({"when": always, "name": "x" * 201}, "longer than 200 characters"),
    ],
)
def test_bad_predicates_are_rejected_at_add_edge(kwargs, message):
    with pytest.raises(GraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StateGraph().add_edge("a", "b", **kwargs)


def test_async_predicate_is_rejected():
    async def later(state):
        return True

    with pytest.raises(GraphError, match="predicate 'later' is async"):
        StateGraph().add_edge("a", "b", when=later)


def test_no_edge_holds_is_a_clear_error():
    def never(state):
        return False

    g = (StateGraph().add_node("a", nothing).add_node("b", nothing)
         .add_edge("a", "b", when=never).add_edge("a", END, when=below_three)
         .set_finish_point("b").set_entry_point("a"))
    with pytest.raises(NoRouteError) as info:
        g.run({"count": 5})
    err = info.value
    assert isinstance(err, GraphError)
    assert (err.node, err.tried) == ("a", ["never", "below_three"])
    assert str(err) == ("no edge from node 'a' holds; predicates tried: never, below_three; "
                        "add an unconditional edge last as the fallback")


def test_predicate_that_raises_is_a_graph_error():
    def broken(state):
        return state["missing"]

    g = StateGraph().add_node("a", nothing).add_edge("a", END, when=broken).set_entry_point("a")
    with pytest.raises(GraphError, match=r"predicate 'broken' on edge 'a' -> END when broken raised KeyError") as info:
        g.run({})
    assert isinstance(info.value.__cause__, KeyError)


# -- cycles ------------------------------------------------------------------------------------------


def test_cycle_runs_until_its_predicate_fails():
    result = loop_graph().run({"count": 0})
    assert result.state == {"count": 3}
    assert result.visits == [Visit("inc", 1), Visit("inc", 2), Visit("inc", 3)]
    assert [d.to_node for d in result.decisions] == ["inc", "inc", None]
    assert result.decisions[-1].reason == "unconditional edge (below_three did not hold)"


def test_max_iterations_allows_exactly_the_limit():
    assert len(loop_graph(max_iterations=3).run({"count": 0}).visits) == 3
    with pytest.raises(MaxIterationsError) as info:
        loop_graph(max_iterations=2).run({"count": 0})
    assert (info.value.node, info.value.limit) == ("inc", 2)
    assert str(info.value).startswith("node 'inc' would run more than max_iterations=2 times in one run")


def test_runaway_loop_stops_at_default_limit():
    def forever(state):
        return True

    g = StateGraph().add_node("spin", inc).add_edge("spin", "spin", when=forever).add_edge("spin", END)
    g.set_entry_point("spin")
    walker = g.walker({})
    with pytest.raises(MaxIterationsError, match="max_iterations=100"):
        walker.run()
    assert walker.counters == {"spin": 100}
    assert walker.state == {"count": 100}


# -- state -------------------------------------------------------------------------------------------


def test_nodes_get_a_read_only_view_and_the_input_is_untouched():
    seen = []

    def look(state):
        seen.append(state)
        return {"looked": True}

    def mutate(state):
        state["hacked"] = True

    original = {"count": 0, "nested": [1]}
    g = StateGraph().add_node("look", look).add_node("inc", inc).set_entry_point("look")
    g.add_edge("look", "inc").set_finish_point("inc")
    result = g.run(original)
    assert isinstance(seen[0], MappingProxyType)
    assert original == {"count": 0, "nested": [1]}
    assert result.state == {"count": 1, "nested": [1], "looked": True}
    assert result.state is not original

    bad = StateGraph().add_node("mutate", mutate).set_entry_point("mutate").set_finish_point("mutate")
    with pytest.raises(NodeError) as info:
        bad.run(original)
    assert isinstance(info.value.__cause__, TypeError)
    assert original == {"count": 0, "nested": [1]}


def test_each_step_makes_a_new_state_dict():
    g = loop_graph()
    walker = g.walker({"count": 0})
    states = [walker.state]
    while not walker.done:
        walker.step()
        states.append(walker.state)
    assert [s["count"] for s in states] == [0, 1, 2, 3]
    assert len({id(s) for s in states}) == 4


def test_state_must_be_a_mapping():
    with pytest.raises(GraphError, match="state must be a mapping, got list"):
        loop_graph().run([1])


# -- async -------------------------------------------------------------------------------------------


async def slow_inc(state):
    await asyncio.sleep(0)
    return {"count": state.get("count", 0) + 1}


def mixed_graph() -> StateGraph:
    return (StateGraph().add_node("a", slow_inc).add_node("b", inc).add_node("c", slow_inc)
            .add_edge("a", "b").add_edge("b", "c").set_finish_point("c").set_entry_point("a"))


def test_async_nodes_in_run_and_arun():
    g = mixed_graph()
    assert g.has_async_nodes
    assert g.run({}).state == {"count": 3}
    result = asyncio.run(g.arun({}))
    assert result.state == {"count": 3}
    assert [v.node for v in result.visits] == ["a", "b", "c"]


def test_callable_objects_and_partials_are_async_when_their_call_is():
    import functools

    class AsyncStep:
        async def __call__(self, state):
            return {"count": state.get("count", 0) + 1}

    class SyncStep:
        def __call__(self, state):
            return {"count": state.get("count", 0) + 1}

    async def add(state, n):
        return {"count": state.get("count", 0) + n}

    g = (StateGraph().add_node("a", AsyncStep()).add_node("b", SyncStep()).add_node("c", functools.partial(add, n=10))
         .add_edge("a", "b").add_edge("b", "c").set_finish_point("c").set_entry_point("a"))
    assert [g.nodes[n].is_async for n in "abc"] == [True, False, True]
    assert asyncio.run(g.arun({})).state == {"count": 12}


def test_execute_node_sync_and_async():
    g = mixed_graph()
    assert g.execute_node("a", {"count": 1}) == ({"count": 2}, {"count": 2})
    assert g.execute_node("b", {"count": 1, "x": 0}) == ({"count": 2}, {"count": 2, "x": 0})
    assert asyncio.run(g.aexecute_node("a", {})) == ({"count": 1}, {"count": 1})
    assert asyncio.run(g.aexecute_node("b", {})) == ({"count": 1}, {"count": 1})
    with pytest.raises(GraphError, match="unknown node 'zz'"):
        g.execute_node("zz", {})


def test_sync_run_inside_an_event_loop_asks_for_arun():
    async def main():
        with pytest.raises(GraphError, match=r"await graph\.arun"):
            mixed_graph().run({})
        return (await mixed_graph().arun({})).state

    assert asyncio.run(main()) == {"count": 3}


def test_async_node_error_is_wrapped():
    async def boom(state):
        raise ValueError("late")

    g = StateGraph().add_node("boom", boom).set_entry_point("boom").set_finish_point("boom")
    with pytest.raises(NodeError, match=r"^node 'boom' \(iteration 1\) failed: ValueError: late$"):
        asyncio.run(g.arun({}))
    with pytest.raises(NodeError, match="ValueError: late"):
        g.run({})


# -- node errors -------------------------------------------------------------------------------------


def test_node_error_wraps_the_original():
    def flaky(state):
        if state["count"] >= 1:
            raise ValueError("score must be positive")
        return {"count": state["count"] + 1}

    def again(state):
        return True

    g = StateGraph().add_node("flaky", flaky).add_edge("flaky", "flaky", when=again).set_entry_point("flaky")
    g.add_edge("flaky", END)
    with pytest.raises(NodeError) as info:
        g.run({"count": 0})
    err = info.value
    assert str(err) == "node 'flaky' (iteration 2) failed: ValueError: score must be positive"
    assert (err.node, err.iteration) == ("flaky", 2)
    assert isinstance(err.__cause__, ValueError)
    assert isinstance(err, GraphError) and isinstance(err, WfkitError)


@pytest.mark.parametrize(("value", "type_name"), [([("a", 1)], "list"), (3, "int"), ("x", "str")])
def test_node_returning_a_non_mapping_is_a_node_error(value, type_name):
    g = StateGraph().add_node("bad", lambda s: value).set_entry_point("bad").set_finish_point("bad")
    with pytest.raises(NodeError) as info:
        g.run({})
    assert str(info.value) == f"node 'bad' (iteration 1) returned {type_name}, expected a mapping of updates or None"


def test_sync_node_returning_a_coroutine_is_a_node_error():
    g = StateGraph().add_node("sneaky", lambda s: slow_inc(s)).set_entry_point("sneaky").set_finish_point("sneaky")
    with pytest.raises(NodeError, match="returned a coroutine: define the node with async def"):
        g.run({})


def test_errors_survive_pickling():
    for err in (GraphValidationError(["a", "b"], "g"), MaxIterationsError("n", 3), NoRouteError("n", ["p"]),
                NodeError("n", 2, "failed: ValueError: x")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.__dict__ == err.__dict__


# -- validation --------------------------------------------------------------------------------------


def test_valid_graph_has_no_problems():
    g = loop_graph()
    assert g.problems() == []
    assert g.validate() is g


def test_every_problem_is_reported_at_once():
    g = (StateGraph("messy", max_iterations=0)
         .add_node("a", inc)
         .add_node("a", inc)                 # duplicate
         .add_node("", inc)                  # bad name
         .add_node(7, inc)                   # bad name
         .add_node("__secret", inc)          # reserved
         .add_node(END, inc)                 # reserved
         .add_node("island", inc)            # unreachable
         .add_node("stuck", 3)               # not callable; no way out
         .add_node("spin", inc)              # reached only by an edge never taken
         .add_edge("a", "stuck", when=always)
         .add_edge("a", "ghost", when=always)      # unknown target; same predicate name twice
         .add_edge("a", END)
         .add_edge("a", "spin")                    # after an unconditional edge
         .add_edge("spin", "spin")
         .add_edge("nowhere", "a")                 # unknown source
         .add_edge(END, "a")                       # leaves END
         .add_edge("island", END)
         .add_edge("__secret", END)
         .set_entry_point("a"))
    assert g.problems() == [
        "max_iterations must be an integer >= 1, got 0",
        "node name must be a non-empty string, got ''",
        "node name must be a non-empty string, got 7",
        "node 'stuck': fn is not callable (got int)",
        "duplicate node name 'a' (added 2 times)",
        "node name '__secret' is reserved: names starting with '__' belong to wfkit",
        "node name '__end__' is reserved: it is END, the finish marker",
        "edge 'a' -> 'ghost' when always goes to unknown node 'ghost'",
        "edge 'nowhere' -> 'a' comes from unknown node 'nowhere'",
        "edge '__end__' -> 'a' leaves END: nothing runs after END",
        "node 'a' has two edges with predicate 'always' ('a' -> 'stuck' when always and 'a' -> 'ghost' "
        "when always): give them distinct names",
        "edge 'a' -> 'spin' can never be taken: the unconditional edge 'a' -> END comes before it",
        "node 'stuck' has no way out: add an edge from it or set_finish_point('stuck')",
        "node '__secret' cannot be reached from entry point 'a'",
        "node '__end__' cannot be reached from entry point 'a'",
        "node 'island' cannot be reached from entry point 'a'",
        "node 'spin' cannot be reached from entry point 'a'",  # only by the edge that is never taken
    ]
    with pytest.raises(GraphValidationError) as info:
        g.validate()
    assert info.value.problems == g.problems()
    assert str(info.value).startswith("graph 'messy' is invalid (17 problems): max_iterations must be")
    assert "\n" not in str(info.value)
    with pytest.raises(GraphValidationError):
        g.run({})


@pytest.mark.parametrize(
    ("graph", "problems"),
    [
        (StateGraph(), ["graph has no nodes: add_node(name, fn)", "no entry point: call set_entry_point(name)"]),
        (StateGraph().add_node("a", inc).set_finish_point("a"), ["no entry point: call set_entry_point(name)"]),
        (StateGraph().add_node("a", inc).set_finish_point("a").set_entry_point("b"),
         ["entry point 'b' is not a node"]),
        (StateGraph().add_node("a", inc).add_node("b", inc).add_edge("a", "b").add_edge("b", "a")
         .set_entry_point("a"),
         ["node 'a' has no path to END: the walk could never finish from it",
          "node 'b' has no path to END: the walk could never finish from it"]),
        (StateGraph("").add_node("a", inc).set_finish_point("a").set_entry_point("a"),
         ["graph name must be a non-empty string or None, got ''"]),
        (StateGraph(max_iterations=True).add_node("a", inc).set_finish_point("a").set_entry_point("a"),
         ["max_iterations must be an integer >= 1, got True"]),
        (StateGraph().add_node("x" * 201, inc), ["node name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... "
                                                 "is longer than 200 characters",
                                                 "graph has no nodes: add_node(name, fn)",
                                                 "no entry point: call set_entry_point(name)"]),
    ],
)
def test_single_problems(graph, problems):
    assert graph.problems() == problems
    with pytest.raises(GraphValidationError) as info:
        graph.validate()
    assert info.value.problems == problems


def test_validation_follows_changes():
    g = StateGraph().add_node("a", inc).set_entry_point("a")
    with pytest.raises(GraphValidationError, match="node 'a' has no way out"):
        g.validate()
    g.set_finish_point("a")
    assert g.validate() is g
    g.add_edge("a", "b")
    with pytest.raises(GraphValidationError, match="unknown node 'b'"):
        g.run({})


# -- descriptions ------------------------------------------------------------------------------------


def score_ok(state):
    return state.get("score", 0) > 1


def describe_graph() -> StateGraph:
    async def publish(state):
        return None

    return (StateGraph("demo", max_iterations=5)
            .add_node("fetch-data", inc, description="Fetch the data")
            .add_node("score.v2", nothing)
            .add_node("publish", publish)
            .add_edge("fetch-data", "score.v2")
            .add_edge("score.v2", "publish", when=score_ok)
            .add_edge("score.v2", "fetch-data")
            .set_finish_point("publish")
            .set_entry_point("fetch-data"))


def test_to_mermaid():
    assert describe_graph().to_mermaid() == (
        "flowchart TD\n"
        '    __start__(["START"]) --> n_fetch_data\n'
        '    n_fetch_data["fetch-data"]\n'
        '    n_score_v2["score.v2"]\n'
        '    n_publish["publish"]\n'
        '    __end__(["END"])\n'
        "    n_fetch_data --> n_score_v2\n"
        '    n_score_v2 -->|"score_ok"| n_publish\n'
        "    n_score_v2 --> n_fetch_data\n"
        "    n_publish --> __end__\n"
    )


def test_to_mermaid_keeps_ids_distinct_and_escapes_labels():
    g = (StateGraph().add_node("a-b", nothing).add_node("a.b", nothing).add_node('say "hi"|', nothing)
         .add_edge("a-b", "a.b", when=always, name="x|y").set_entry_point("a-b"))
    assert g.to_mermaid() == (
        "flowchart TD\n"
        '    __start__(["START"]) --> n_a_b\n'
        '    n_a_b["a-b"]\n'
        '    n_a_b_2["a.b"]\n'
        '    n_say__hi__["say #quot;hi#quot;#124;"]\n'
        '    n_a_b -->|"x#124;y"| n_a_b_2\n'
    )


@pytest.mark.parametrize("graph", [describe_graph(), StateGraph().add_node("a", nothing).add_edge("a", END)])
def test_mermaid_ids_and_link_numbers_name_each_part_of_the_chart(graph):
    """What a viewer needs to style a run's path: each node's id, and each edge's linkStyle number."""
    from wfkit.graph.mermaid import link_number, node_ids, to_mermaid

    links = [line.strip() for line in to_mermaid(graph).splitlines() if "-->" in line]
    ids = node_ids(graph)
    assert sorted(ids) == sorted(graph.nodes)
    assert len(links) == len(graph.edges) + (graph.entry_point is not None)
    for i, edge in enumerate(graph.edges):
        link = links[link_number(graph, i)]
        assert link.startswith(ids[edge.from_node] + " ")
        assert link.endswith(" " + (ids[edge.to_node] if edge.to_node else "__end__"))


def test_to_dict():
    data = describe_graph().to_dict()
    assert data == {
        "name": "demo",
        "entry_point": "fetch-data",
        "max_iterations": 5,
        "result_key": None,
        "nodes": [
            {"name": "fetch-data", "description": "Fetch the data", "is_async": False},
            {"name": "score.v2", "description": None, "is_async": False},
            {"name": "publish", "description": None, "is_async": True},
        ],
        "edges": [
            {"from_node": "fetch-data", "to_node": "score.v2", "predicate": None},
            {"from_node": "score.v2", "to_node": "publish", "predicate": "score_ok"},
            {"from_node": "score.v2", "to_node": "fetch-data", "predicate": None},
            {"from_node": "publish", "to_node": None, "predicate": None},
        ],
    }
    assert json.loads(json.dumps(data)) == data


def test_read_accessors():
    g = describe_graph()
    assert list(g.nodes) == ["fetch-data", "score.v2", "publish"]
    assert g.nodes["publish"].is_async
    assert [e.to_node for e in g.edges_from("score.v2")] == ["publish", "fetch-data"]
    assert g.entry_point == "fetch-data" and g.max_iterations == 5
    with pytest.raises(TypeError):
        g.nodes["x"] = None


# -- the walker --------------------------------------------------------------------------------------


def review_graph() -> StateGraph:
    """draft -> review -> (draft again while score < 3) -> publish."""

    def draft(state):
        return {"score": state.get("score", 0) + 1, "log": [*state.get("log", []), "draft"]}

    def review(state):
        return {"log": [*state["log"], "review"]}

    def good(state):
        return state["score"] >= 3

    return (StateGraph("review").add_node("draft", draft).add_node("review", review).add_node("publish", nothing)
            .add_edge("draft", "review").add_edge("review", "publish", when=good).add_edge("review", "draft")
            .set_finish_point("publish").set_entry_point("draft"))


@pytest.mark.parametrize("stop_after", range(8))
def test_resume_from_a_snapshot_matches_an_uninterrupted_run(stop_after):
    g = review_graph()
    full = g.run({})
    assert len(full.visits) == 7

    first = g.walker({})
    for _ in range(stop_after):
        first.step()
    # through JSON, as a persisted checkpoint would go
    saved = json.loads(json.dumps(first.snapshot().to_dict()))

    resumed = Walker.from_snapshot(g, saved)
    result = resumed.run()
    assert result.state == full.state
    assert first.visits + resumed.visits == full.visits
    assert first.decisions + resumed.decisions == full.decisions
    assert resumed.counters == {"draft": 3, "review": 3, "publish": 1}


def test_resumed_counters_keep_counting_toward_the_limit():
    g = loop_graph(max_iterations=3)
    walker = Walker.from_snapshot(g, Snapshot({"count": 1}, "inc", {"inc": 2}))
    walker.step()
    assert walker.visits == [Visit("inc", 3)]
    assert not walker.done
    with pytest.raises(MaxIterationsError):
        walker.step()


def test_snapshot_of_a_finished_walk_resumes_as_done():
    g = loop_graph()
    walker = g.walker({"count": 0})
    walker.run()
    again = Walker.from_snapshot(g, walker.snapshot())
    assert again.done and again.run().state == {"count": 3} and again.visits == []
    with pytest.raises(GraphError, match="already reached END"):
        again.step()


def test_bad_snapshot_is_rejected():
    g = loop_graph()
    with pytest.raises(GraphError, match=r"^cannot resume the walk: next node 'gone' is not a node; counter 'old'=1 "):
        Walker.from_snapshot(g, {"state": {}, "next_node": "gone", "counters": {"old": 1}})
    with pytest.raises(GraphError, match=r"counter 'inc'=-1"):
        Walker(g, {}, counters={"inc": -1})


def test_a_failed_step_leaves_the_walker_as_it_was():
    def fragile(state):
        if state.get("fail"):
            raise RuntimeError("disk full")
        return {"ok": True}

    g = StateGraph().add_node("fragile", fragile).set_entry_point("fragile").set_finish_point("fragile")
    walker = g.walker({"fail": True})
    before = walker.snapshot()
    with pytest.raises(NodeError):
        walker.step()
    assert walker.snapshot() == before and walker.visits == [] and walker.decisions == []
    retry = Walker.from_snapshot(g, Snapshot({"fail": False}, before.next_node, before.counters))
    assert retry.run().state == {"fail": False, "ok": True}


def test_step_returns_the_decision_and_astep_works():
    g = mixed_graph()
    walker = g.walker({})
    assert walker.step() == RouteDecision("a", "b", None, True, "unconditional edge")

    async def rest():
        while not walker.done:
            await walker.astep()
        return walker.result()

    result = asyncio.run(rest())
    assert result.state == {"count": 3}
    assert result.to_dict()["visits"] == [{"node": "a", "iteration": 1}, {"node": "b", "iteration": 1},
                                          {"node": "c", "iteration": 1}]


# -- observers ---------------------------------------------------------------------------------------


def test_observer_receives_events_in_order():
    rec = Recorder()
    result = loop_graph().run({"count": 1}, observer=rec)
    assert result.state == {"count": 3}
    assert rec.events == [
        ("start", "inc", 1, {"count": 1}),
        ("end", "inc", 1, {"count": 2}, {"count": 2}, None),
        ("decision", "inc", "inc", "below_three"),
        ("start", "inc", 2, {"count": 2}),
        ("end", "inc", 2, {"count": 3}, {"count": 3}, None),
        ("decision", "inc", None, None),
    ]


def test_observer_hears_about_failures_and_async_runs():
    async def boom(state):
        raise ValueError("no")

    g = (StateGraph().add_node("ok", inc).add_node("boom", boom).add_edge("ok", "boom")
         .set_finish_point("boom").set_entry_point("ok"))
    rec = Recorder()
    with pytest.raises(NodeError):
        asyncio.run(g.arun({}, observer=rec))
    assert rec.events == [
        ("start", "ok", 1, {}),
        ("end", "ok", 1, {"count": 1}, {"count": 1}, None),
        ("decision", "ok", "boom", None),
        ("start", "boom", 1, {"count": 1}),
        ("end", "boom", 1, {"count": 1}, None, "NodeError"),
    ]


def test_observer_may_implement_only_some_methods():
    class Decisions:
        def __init__(self):
            self.seen = []

        def on_decision(self, decision):
            self.seen.append(decision.to_node)

    obs = Decisions()
    loop_graph().run({"count": 0}, observer=obs)
    assert obs.seen == ["inc", "inc", None]


def test_a_route_that_fails_keeps_the_nodes_work_and_can_be_chosen_again():
    open_gate = {"value": False}
    graph = (StateGraph().add_node("a", inc).add_node("b", inc).set_entry_point("a")
             .add_edge("a", "b", when=lambda s: open_gate["value"], name="gate").add_edge("b", END))
    walker = graph.walker({})
    with pytest.raises(NoRouteError):
        walker.step()
    assert (walker.state, walker.counters, walker.route_from, walker.node, walker.done) == ({"count": 1}, {"a": 1}, "a",
                                                                                            None, False)
    snapshot = walker.snapshot()
    assert snapshot.route_from == "a" and Snapshot.from_dict(snapshot.to_dict()) == snapshot
    with pytest.raises(GraphError, match="the route from node 'a' is still to be chosen: call reroute"):
        walker.step()
    resumed = Walker.from_snapshot(graph, snapshot)
    with pytest.raises(NoRouteError):
        resumed.reroute()  # still closed: nothing moved
    assert resumed.route_from == "a" and resumed.counters == {"a": 1}
    open_gate["value"] = True
    assert resumed.reroute().to_node == "b" and resumed.route_from is None
    resumed.run()
    assert resumed.state == {"count": 2} and resumed.done
    with pytest.raises(GraphError, match="cannot resume the walk: route_from 'nope'"):
        Walker(graph, {}, node=None, route_from="nope")


def test_mermaid_labels_keep_every_character_of_a_name():
    """Quotes, bars, brackets, '&' (mermaid decodes entities) and line breaks (a line starting '%%'
    would be a directive) come out as entity codes, which mermaid draws as the characters."""
    from wfkit.graph.mermaid import label_text

    assert label_text('a&amp;b "x" |y| <z>') == "a#38;amp;b #quot;x#quot; #124;y#124; #lt;z#gt;"
    assert label_text("one\n%%{init: {}}%%\r\ntwo #1") == "one#10;%%{init: {}}%%#13;#10;two #35;1"
