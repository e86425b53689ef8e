"""The sample workflows (plugins/wfkit-samples), installed in the test environment, walked in memory."""

from __future__ import annotations

import pytest

from wfkit.errors import InvalidParamsError


def walk(samples, name, **params):
    graph, state = samples.get(name).build(params)
    return graph.run(state)


def test_the_samples_are_registered(samples):
    assert [(w.name, w.plugin) for w in samples.list()] == [
        ("branching", "samples"), ("review-loop", "samples"), ("text-pipeline", "samples")
    ]
    assert all(w.description for w in samples.list())


def test_text_pipeline_is_a_chain(samples):
    result = walk(samples, "text-pipeline", text="B a b. A b!")
    assert [v.node for v in result.visits] == ["normalize", "tokenize", "count", "summarize"]
    assert result.state["counts"] == {"a": 2, "b": 2, "b!": 1}
    assert result.state["summary"] == "5 words; most frequent: a (2), b (2), b! (1)"
    assert all(d.predicate_name is None for d in result.decisions)


def test_review_loop_revises_until_the_score_passes(samples):
    result = walk(samples, "review-loop", threshold=0.75)
    assert [v.node for v in result.visits] == ["draft", "review", "revise", "review", "revise", "review", "publish"]
    assert [(v.node, v.iteration) for v in result.visits if v.node == "review"] == [("review", 1), ("review", 2), ("review", 3)]
    assert [(d.from_node, d.to_node, d.predicate_name) for d in result.decisions if d.from_node == "review"] == [
        ("review", "revise", "rounds_left"), ("review", "revise", "rounds_left"), ("review", "publish", "score_ok")
    ]
    assert result.state["published"] is True and result.state["result"]["score"] == 0.75


def test_review_loop_is_bounded(samples):
    result = walk(samples, "review-loop", threshold=1.0, max_rounds=2)
    assert [v.node for v in result.visits][-1] == "give_up" and result.state["round"] == 2
    assert result.state["published"] is False


def test_branching_routes_on_params(samples):
    express = walk(samples, "branching", priority="express", items=2)
    assert [v.node for v in express.visits] == ["receive", "express", "ship"]
    assert express.decisions[0].predicate_name == "is_express"
    standard = walk(samples, "branching")
    assert [v.node for v in standard.visits] == ["receive", "batch", "ship"]
    assert standard.state["log"][-1] == "shipped; eta 24h"


def test_samples_are_deterministic(samples):
    for name in ("text-pipeline", "review-loop", "branching"):
        assert walk(samples, name).to_dict() == walk(samples, name).to_dict()


def test_sample_params_are_checked(samples):
    with pytest.raises(InvalidParamsError, match="priority: Input should be 'express' or 'standard'"):
        samples.get("branching").build({"priority": "overnight"})
    with pytest.raises(InvalidParamsError, match="colour: Extra inputs are not permitted"):
        samples.get("text-pipeline").build({"colour": "red"})


def test_examples_run(wfkit_cli):
    from pathlib import Path

    out = wfkit_cli.python(str(Path(__file__).parents[1] / "examples" / "use_registry.py"))
    assert out.returncode == 0, out.stderr
    assert "countdown: Count down to zero. [(local)]" in out.stdout and "final state: {'n': 0}" in out.stdout
