"""A well-behaved plugin: two workflows, one with a params model given by import path."""

import wfkit


def greet(graph, runtime, params):
    """Greet someone by name."""
    graph.add_node("hello", lambda state: {"text": f"hello {state['who']}"})
    graph.set_entry_point("hello")
    graph.set_finish_point("hello")
    return {"who": params.who}


def count(graph, runtime, params):
    def step(state):
        return {"n": state["n"] + 1}

    def below_limit(state):
        return state["n"] < params["limit"] if "limit" in params else state["n"] < 3

    graph.add_node("step", step)
    graph.set_entry_point("step")
    graph.add_edge("step", "step", when=below_limit)
    graph.set_finish_point("step")
    return {"n": 0}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("good-greet", greet, params="wfkit_test_good.params:GreetParams")
    registry.register("good-count", count, "Count to a limit")
