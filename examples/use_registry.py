"""Use the workflow registry from Python: register a workflow in code, list, build and run it in memory.

    python examples/use_registry.py
"""

from wfkit import Registry, Runtime


def countdown(graph, runtime, params):
    """Count down to zero."""

    def tick(state):
        runtime.logger.debug("tick %s", state["n"])
        return {"n": state["n"] - 1}

    def above_zero(state):
        return state["n"] > 0

    graph.add_node("tick", tick)
    graph.set_entry_point("tick")
    graph.add_edge("tick", "tick", when=above_zero)
    graph.set_finish_point("tick")
    return {"n": int(params.get("start", 3))}


def main() -> None:
    registry = Registry()  # or wfkit.register(...) / wfkit.list_workflows() for the default one, with plugins
    registry.register("countdown", countdown)
    for info in registry.list():
        print(f"{info.name}: {info.description} [{info.plugin}]")

    graph, state = registry.get("countdown").build({"start": 3}, Runtime())
    result = graph.run(state)
    print("final state:", result.state)
    print("visits:", [(v.node, v.iteration) for v in result.visits])
    print("decisions:", [(d.from_node, d.to_node, d.predicate_name, d.predicate_result) for d in result.decisions])
    print(graph.to_mermaid())


if __name__ == "__main__":
    main()
