"""Workflow ``steps``: s1 -> s2 -> s3 -> s4, each adding to ``count`` and ``log``.

Param ``fail_in`` (a node) makes that node fail the first time it runs.
Params ``pause_in`` (a node) and ``pause_after`` (a node) make the run pause
for ``pause_seconds``, once, inside that node or just after its step was
committed (in an observer, while the next node is the run's current stage). Before pausing it creates
the file ``<WFKIT_TEST_MARKERS>/<run id or node>-<where>`` so the test knows
when to strike. A pause happens only if its marker does not exist yet, so a
resumed run does not pause again. Pausing never changes the state.
Param ``async_nodes`` (true) makes the nodes ``async def`` (a pause inside one awaits).
Param ``pause_until`` (a file) ends a pause inside a node as soon as that file exists.
Param ``nap`` (seconds) makes every node sleep that long, every time it runs.
Param ``keys_to`` (a file) makes every node append a JSON line of what the runtime says of its
execution: node, iteration, idempotency key, fencing token.
"""

import json

import asyncio
import os
import time
from pathlib import Path

import wfkit

NODES = ("s1", "s2", "s3", "s4")


def _first_time(name: str) -> bool:
    marker = Path(os.environ["WFKIT_TEST_MARKERS"]) / name
    if marker.exists():
        return False
    marker.touch()
    return True


def _pause(name: str, seconds: float, until: str | None = None) -> None:
    """Pause once: ``seconds``, or until the file ``until`` exists (at most ``seconds``)."""
    if _first_time(name):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and os.path.exists(until)):
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))


def steps(graph, runtime, params):
    """Four steps in a line, pausable for tests."""
    pause_in, seconds = params.get("pause_in"), float(params.get("pause_seconds", 30))
    until = params.get("pause_until")
    fail_in, nap, keys_to = params.get("fail_in"), float(params.get("nap", 0)), params.get("keys_to")

    def make(node):
        def work(state):
            if keys_to:
                with open(keys_to, "a") as out:
                    out.write(json.dumps({"node": node, "key": runtime.idempotency_key,
                                          "token": runtime.fencing_token}) + "\n")
            if nap:
                time.sleep(nap)
            if node == fail_in and _first_time(f"{node}-failed"):  # fails once: "the author fixed it"
                raise RuntimeError(f"{node} could not reach its service")
            return {"count": state["count"] + 1, "log": [*state["log"], f"{node}:{state['count']}"]}

        def step(state):
            if node == pause_in:
                _pause(f"{node}-in", seconds, until)
            return work(state)

        async def async_step(state):
            if node == pause_in and _first_time(f"{node}-in"):
                await asyncio.sleep(seconds)
            return work(state)

        return async_step if params.get("async_nodes") else step

    for node in NODES:
        graph.add_node(node, make(node))
    graph.set_entry_point("s1")
    for a, b in zip(NODES, NODES[1:]):
        graph.add_edge(a, b)
    graph.set_finish_point("s4")
    return {"count": 0, "log": []}


class PauseAfter:
    """Pauses just after a stage completed, when the run's params ask for it."""

    def __init__(self):
        self.params = {}

    def on_event(self, event):
        from wfkit.events import RunStarted, StageCompleted

        if isinstance(event, RunStarted):
            self.params[event.run_id] = event.params
        elif isinstance(event, StageCompleted):
            params = self.params.get(event.run_id, {})
            if params.get("pause_after") == event.node:
                _pause(f"{event.node}-after", float(params.get("pause_seconds", 30)))


def unbuildable(graph, runtime, params):
    """A factory that cannot build its graph."""
    raise RuntimeError("the settings file is missing")


def rounds(graph, runtime, params):
    """``work`` then ``check``, ``rounds`` times: a run with many stages and decisions."""
    from wfkit.graph import END

    count = int(params.get("rounds", 3))
    graph.add_node("work", lambda s: {"i": s["i"] + 1})
    graph.add_node("check", lambda s: {"checked": s["i"]})
    graph.set_entry_point("work")
    graph.add_edge("work", "check")
    graph.add_edge("check", "work", when=lambda s: s["i"] < count, name="more_rounds")
    graph.add_edge("check", END)
    return {"i": 0}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("steps", steps)
    registry.register("unbuildable", unbuildable)
    registry.register("rounds", rounds, max_iterations=10_000)


@wfkit.hookimpl
def wfkit_observers():
    return [PauseAfter()]
