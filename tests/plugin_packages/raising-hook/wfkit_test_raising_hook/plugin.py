"""A plugin whose hook registers one workflow, then raises."""

import pluggy

hookimpl = pluggy.HookimplMarker("wfkit")  # plugins may use pluggy directly


def half(graph, runtime, params):
    graph.add_node("a", lambda s: None)
    graph.set_entry_point("a")
    graph.set_finish_point("a")
    return {}


@hookimpl
def wfkit_register_workflows(registry):
    registry.register("raising-half", half, "registered before the hook fails")
    raise RuntimeError("the plugin's configuration is missing")
