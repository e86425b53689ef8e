"""The sample workflows (plugins/wfkit-samples), installed in the test environment, walked in memory."""

from __future__ import annotations

import pytest

from wfkit.errors import InvalidParamsError
from wfkit.plugins import load_plugins
from wfkit.registry import Registry


@pytest.fixture(scope="module")
def registry():
    reg = Registry()
    report = load_plugins(reg, environ={"WFKIT_LOAD_PLUGINS": "samples"})
    assert [p.name for p in report.plugins if p.loaded] == ["samples"]
    return reg


def walk(registry, name, **params):
    graph, state = registry.get(name).build(params)
    return graph.run(state)


def test_the_samples_are_registered(registry):
    assert [(w.name, w.plugin) for w in registry.list()] == [
        ("branching", "samples"), ("review-loop", "samples"), ("text-pipeline", "samples")
    ]
    assert all(w.description for w in registry.list())


def test_text_pipeline_is_a_chain(registry):
    result = walk(registry, "text-pipeline", text="B a b. A b!")
    assert [v.node for v in result.visits] == ["normalize", "tokenize", "count", "summarize"]
    assert result.state["counts"] == {"a": 2, "b": 2, "b!": 1}
    assert result.state["summary"] == "5 words; most frequent: a (2), b (2), b! (1)"
    assert all(d.predicate_name is None for d in result.decisions)


def test_review_loop_revises_until_the_score_passes(registry):
    result = walk(registry, "review-loop", threshold=0.75)
    assert [v.node for v in result.visits] == ["draft", "review", "revise", "review", "revise", "review", "publish"]
    assert [(v.node, v.iteration) for v in result.visits if v.node == "review"] == [("review", 1), ("review", 2), ("review", 3)]
    assert [(d.from_node, d.to_node, d.predicate_name) for d in result.decisions if d.from_node == "review"] == [
        ("review", "revise", "rounds_left"), ("review", "revise", "rounds_left"), ("review", "publish", "score_ok")
    ]
    assert result.state["published"] is True and result.state["result"]["score"] == 0.75


def test_review_loop_is_bounded(registry):
    result = walk(registry, "review-loop", threshold=1.0, max_rounds=2)
    assert [v.node for v in result.visits][-1] == "give_up" and result.state["round"] == 2
    assert result.state["published"] is False


def test_branching_routes_on_params(registry):
    express = walk(registry, "branching", priority="express", items=2)
    assert [v.node for v in express.visits] == ["receive", "express", "ship"]
    assert express.decisions[0].predicate_name == "is_express"
    standard = walk(registry, "branching")
    assert [v.node for v in standard.visits] == ["receive", "batch", "ship"]
    assert standard.state["log"][-1] == "shipped; eta 24h"


def test_samples_are_deterministic(registry):
    for name in ("text-pipeline", "review-loop", "branching"):
        assert walk(registry, name).to_dict() == walk(registry, name).to_dict()


def test_sample_params_are_checked(registry):
    with pytest.raises(InvalidParamsError, match="priority: Input should be 'express' or 'standard'"):
        registry.get("branching").build({"priority": "overnight"})
    with pytest.raises(InvalidParamsError, match="colour: Extra inputs are not permitted"):
        registry.get("text-pipeline").build({"colour": "red"})


def test_examples_run():
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "examples" / "use_registry.py")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "countdown: Count down to zero. [(local)]" in out.stdout and "final state: {'n': 0}" in out.stdout
