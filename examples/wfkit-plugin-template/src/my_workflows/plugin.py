"""The plugin module named by the entry point in pyproject.toml."""

import wfkit
from wfkit.graph import END


def hello(graph, runtime, params):
    """Greet someone, loudly if asked."""

    def greet(state):
        return {"text": f"Hello, {state['name']}!"}

    def shout(state):
        return {"text": state["text"].upper()}

    def wants_shouting(state):
        return bool(state.get("loud"))

    graph.add_node("greet", greet)
    graph.add_node("shout", shout)
    graph.set_entry_point("greet")
    graph.add_edge("greet", "shout", when=wants_shouting)  # conditional edges carry a named predicate
    graph.add_edge("greet", END)
    graph.add_edge("shout", END)
    return {"name": params.get("name", "world"), "loud": params.get("loud", False)}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("hello", hello)  # the description is the factory's first docstring line
