import wfkit


def flow(graph, runtime, params):
    graph.add_node("a", lambda s: {"by": "a"})
    graph.set_entry_point("a")
    graph.set_finish_point("a")
    return {}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("shared-name", flow, "from dup-a")
