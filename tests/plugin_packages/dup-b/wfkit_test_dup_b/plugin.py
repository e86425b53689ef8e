import wfkit


def flow(graph, runtime, params):
    graph.add_node("b", lambda s: {"by": "b"})
    graph.set_entry_point("b")
    graph.set_finish_point("b")
    return {}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("dup-b-own", flow, "dup-b's own workflow")
    registry.register("shared-name", flow, "from dup-b")
