"""Prints while it is imported and while its hook runs, and registers a workflow."""

import wfkit

print("hello from the prints plugin, at import")


def flow(graph, runtime, params):
    """A workflow from a plugin that prints."""
    graph.add_node("a", lambda s: None).set_entry_point("a").set_finish_point("a")
    return {}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    print("hello from the prints plugin, in its hook")
    registry.register("printed", flow)
    # its params model is imported only when the workflow is first built, long after loading
    registry.register("printed-model", flow, params="wfkit_test_hostile.prints_model:Params")
