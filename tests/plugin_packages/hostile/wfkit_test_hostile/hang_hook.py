"""Registers one workflow, then hangs in its hook."""

import time

import wfkit


def flow(graph, runtime, params):
    graph.add_node("a", lambda s: None).set_entry_point("a").set_finish_point("a")
    return {}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("hang-half", flow)
    time.sleep(3600)
