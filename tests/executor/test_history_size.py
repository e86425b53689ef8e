"""A run's history stays small, and its state reads back as it was written.

- A stage stores its input as a reference to the stage before it, and of its node's updates only
  those whose values changed (``output_unchanged`` names the others): a node that returns the whole
  state costs the history what it changed, not the whole state, at every step. ``get_stages``,
  the event history and the API still give whole inputs and outputs.
- A value JSON would read back as something else (a tuple, a key that is not a string) is refused,
  naming the key: a resumed run sees the state an uninterrupted one sees.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from wfkit.errors import InvalidParamsError, StateNotSerializableError
from wfkit.executor import Executor
from wfkit.executor.history import RunHistory
from wfkit.registry import Registry
from wfkit.store.models import RunStatus
from wfkit.store.repository import Repository

BLOB = "0123456789abcdef" * 1250  # 20 KB


def _loop(update: Any, steps: int = 200) -> Any:
    def factory(graph, runtime, params):
        graph.add_node("tick", update)
        graph.set_entry_point("tick")
        graph.add_edge("tick", "tick", when=lambda s: s["n"] < steps, name="more")
        graph.set_finish_point("tick")
        graph.set_max_iterations(steps + 1)
        return {"n": 0, "blob": BLOB, "items": []}

    return factory


def _stored_bytes(engine: sa.Engine, run_id: Any) -> int:
    """The bytes of the run's stage snapshots and checkpoint as JSON text."""
    rid = run_id.hex if engine.dialect.name == "sqlite" else run_id
    cast = "" if engine.dialect.name == "sqlite" else "::text"
    with engine.connect() as conn:
        stages = conn.execute(sa.text(
            f"SELECT COALESCE(SUM(LENGTH(input_snapshot{cast})), 0) + COALESCE(SUM(LENGTH(output_snapshot{cast})), 0) "
            f"+ COALESCE(SUM(LENGTH(output_unchanged{cast})), 0) FROM stages WHERE run_id = :r"), {"r": rid}).scalar()
        checkpoint = conn.execute(sa.text(f"SELECT LENGTH(state_data{cast}) FROM checkpoints WHERE run_id = :r"),
                                  {"r": rid}).scalar()
    return int(stages) + int(checkpoint or 0)


def test_a_node_that_returns_the_whole_state_stores_only_what_it_changed(engine):
    reg = Registry()
    reg.register("whole", _loop(lambda s: {**s, "n": s["n"] + 1}))
    reg.register("small", _loop(lambda s: {"n": s["n"] + 1}))
    executor = Executor(engine, registry=reg)
    whole, small = executor.execute("whole"), executor.execute("small")
    assert whole.status is small.status is RunStatus.COMPLETED
    assert whole.result == small.result == {"n": 200, "blob": BLOB, "items": []}
    # 200 steps over a 20 KB state: the state is stored once (the first stage's input), not 400 times
    for run in (whole, small):
        assert _stored_bytes(engine, run.id) < 2 * len(BLOB), run.workflow_name

    stages = Repository(engine).get_stages(whole.id)
    assert len(stages) == 200
    for i, stage in enumerate(stages):
        state = {"n": i, "blob": BLOB, "items": []}
        assert stage.input_snapshot == state
        assert stage.output_snapshot == {**state, "n": i + 1}  # whole, as the node returned it
        assert list(stage.output_snapshot) == ["n", "blob", "items"]  # and in its order
        assert stage.output_unchanged == ["blob", "items"]
    assert all(s.output_unchanged is None for s in Repository(engine).get_stages(small.id))

    history = RunHistory(Repository(engine), whole.id)  # what the event streams replay
    ends = [e.event for e in history.read() if e.name == "stage.complete"]
    assert [dict(e.output_snapshot) for e in ends[:2]] == [{"n": 1, "blob": BLOB, "items": []},
                                                           {"n": 2, "blob": BLOB, "items": []}]


def test_unchanged_means_stored_as_it_is(engine):
    """The comparison is with what was stored, as JSON: a list changed in place and returned is
    written, and 1, 1.0 and True (equal in Python) are told apart."""
    def mutate(s):
        s["items"].append(s["n"])  # in place, then returned: changed, though it is the same object
        n = s["n"] + 1
        return {**s, "n": n, "flag": [1, 1.0, True][n % 3] if n < 5 else True}

    reg = Registry()
    reg.register("mutating", _loop(mutate, steps=6))
    run = Executor(engine, registry=reg).execute("mutating")
    assert run.status is RunStatus.COMPLETED
    stages = Repository(engine).get_stages(run.id)
    outputs = [s.output_snapshot for s in stages]
    assert [o["items"] for o in outputs] == [list(range(i + 1)) for i in range(6)]
    flags = [o["flag"] for o in outputs]
    assert flags == [1.0, True, 1, 1.0, True, True]
    assert [type(f) for f in flags] == [float, bool, int, float, bool, bool]
    assert [s.output_unchanged for s in stages] == [["blob"], ["blob"], ["blob"], ["blob"], ["blob"],
                                                    ["blob", "flag"]]
    assert run.result["flag"] is True and run.result["items"] == [0, 1, 2, 3, 4, 5]


def test_values_json_would_change_are_refused_naming_the_key(engine):
    reg = Registry()

    def one_node(update, initial=None):
        return lambda graph, runtime, params: graph.add_node("n", update).set_entry_point("n").set_finish_point(
            "n") and dict(initial or {"ok": 1})

    reg.register("tuple-out", one_node(lambda s: {"pair": [1, (2, 3)]}))
    reg.register("int-keys-out", one_node(lambda s: {"scores": {"a": {7: "x"}}}))
    reg.register("tuple-in", one_node(lambda s: None, {"pair": (1, 2)}))
    reg.register("echo", one_node(lambda s: None))
    executor = Executor(engine, registry=reg)

    run = executor.execute("tuple-out")
    assert run.status is RunStatus.FAILED
    assert run.error_message == ("the output of node 'n' cannot be stored faithfully: key 'pair' holds a tuple "
                                 "(at ['pair'][1]), which JSON stores as a list (a resumed run would see a list): "
                                 "use a list")
    run = executor.execute("int-keys-out")
    assert run.status is RunStatus.FAILED
    assert run.error_message == ("the output of node 'n' cannot be stored faithfully: key 'scores' holds a mapping "
                                 "with a key of type int, 7 (at ['scores']['a']), which JSON stores as the string "
                                 "\"7\" (a resumed run would see a string): use string keys")
    with pytest.raises(StateNotSerializableError, match=r"the initial state of workflow 'tuple-in' cannot be stored "
                                                        r"faithfully: key 'pair' holds a tuple, which JSON"):
        executor.execute("tuple-in")
    with pytest.raises(InvalidParamsError, match=r"the params of workflow 'echo' cannot be stored faithfully: key "
                                                 r"'when' holds a tuple"):
        executor.execute("echo", {"when": (2026, 12)})
    with pytest.raises(InvalidParamsError, match=r"it has a key of type int, 3"):
        executor.execute("echo", {3: "x"})
    assert [r.workflow_name for r in executor.repository.list_runs().data] == ["int-keys-out", "tuple-out"]


def test_a_resumed_run_sees_the_state_an_uninterrupted_one_sees(engine):
    """Every value a node may store reads back as it was: the types each node sees, and the result,
    are the same whether the run was interrupted and resumed or not."""
    failing = {"left": 1}
    seen: dict[str, list[Any]] = {}

    def factory(graph, runtime, params):
        def make(s):
            return {"record": {"nested": [1, 2.0, "three", None, True, {"k": [1.5]}]}, "count": 1, "ratio": 2.0}

        def flaky(s):
            if params.get("fail") and failing["left"]:
                failing["left"] -= 1
                raise RuntimeError("flaky")
            return {"count": s["count"] + 1}

        def look(s):
            seen.setdefault(params["tag"], []).append(json.dumps({k: repr(v) for k, v in s.items()}, sort_keys=True))
            return {"types": sorted(f"{k}:{type(v).__name__}" for k, v in s.items())}

        graph.add_node("make", make).add_node("flaky", flaky).add_node("look", look)
        graph.set_entry_point("make").add_edge("make", "flaky").add_edge("flaky", "look").set_finish_point("look")
        return {"start": 0}

    reg = Registry()
    reg.register("typed", factory)
    executor = Executor(engine, registry=reg)
    straight = executor.execute("typed", {"tag": "straight"})
    broken = executor.execute("typed", {"tag": "resumed", "fail": True})
    assert broken.status is RunStatus.FAILED
    resumed = executor.resume(broken.id)
    assert straight.status is resumed.status is RunStatus.COMPLETED
    assert seen["straight"] == seen["resumed"]
    assert straight.result == resumed.result
    assert Repository(engine).find_run(resumed.id).result == resumed.result  # stored as returned
    assert Repository(engine).find_run(straight.id).result == straight.result
