"""assert_path and assert_decisions on runs really executed and stored, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wfkit.errors import ConfigurationError, InvalidQueryError, NotFoundError
from wfkit.executor import Executor
from wfkit.graph import END
from wfkit.registry import Registry
from wfkit.store.repository import Repository
from wfkit.testing import ThrowawayDatabase, assert_decisions, assert_path


def triage(graph, runtime, params):
    """Classify a message; escalate the urgent ones; answer; fail when asked to."""

    def classify(state):
        return {"urgent": "down" in state["text"]}

    def escalate(state):
        return {"escalated": True}

    def answer(state):
        if state["text"] == "crash":
            raise RuntimeError("the answering service is unreachable")
        return {"answer": "on it" if state.get("escalated") else "thanks"}

    def is_urgent(state):
        return state["urgent"]

    graph.add_node("classify", classify).add_node("escalate", escalate).add_node("answer", answer)
    graph.set_entry_point("classify")
    graph.add_edge("classify", "escalate", when=is_urgent)
    graph.add_edge("classify", "answer")
    graph.add_edge("escalate", "answer")
    graph.add_edge("answer", END)
    return {"text": params["text"]}


def loop(graph, runtime, params):
    """work, check, until three rounds are done: a node on the path more than once."""
    graph.add_node("work", lambda s: {"i": s["i"] + 1}).add_node("check", lambda s: {})
    graph.set_entry_point("work")
    graph.add_edge("work", "check")
    graph.add_edge("check", "work", when=lambda s: s["i"] < 3, name="more_rounds")
    graph.add_edge("check", END)
    return {"i": 0}


@pytest.fixture
def executor(db_url: str) -> Iterator[Executor]:
    registry = Registry()
    registry.register("triage", triage)
    registry.register("loop", loop)
    with Executor(db_url, registry=registry) as executor:
        yield executor


def test_the_path_taken_passes_and_its_stages_are_returned(executor):
    urgent = executor.execute("triage", {"text": "the server is down"})
    stages = assert_path(urgent, ["classify", "escalate", "answer"], database=executor)
    assert [(s.node_name, s.status) for s in stages] == [("classify", "completed"), ("escalate", "completed"),
                                                         ("answer", "completed")]
    calm = executor.execute("triage", {"text": "nice work"})
    assert_path(calm, ("classify", "answer"), database=executor)
    looped = executor.execute("loop")
    assert_path(looped, ["work", "check"] * 3, database=executor)


def test_a_run_is_found_by_its_id_in_any_database_named(executor, db_url):
    run = executor.execute("triage", {"text": "the server is down"})
    path = ["classify", "escalate", "answer"]
    assert_path(str(run.id), path, database=db_url)
    assert_path(run.id, path, database=executor.engine)
    with Repository(db_url) as repository:
        assert_path(run, path, database=repository)
        assert_decisions(str(run.id), [("classify", "escalate"), ("escalate", "answer"), ("answer", END)],
                         database=repository)
    with ThrowawayDatabase(db_url, "any", "any") as database:  # the current database: no database= needed
        assert_path(run, path)
        assert_decisions(run, [("classify", "escalate"), ("escalate", "answer"), ("answer", None)])


def test_another_path_fails_saying_where_the_paths_part(executor):
    run = executor.execute("triage", {"text": "the server is down"})
    with pytest.raises(AssertionError) as caught:
        assert_path(run, ["classify", "answer"], database=executor)
    assert str(caught.value) == (
        f"run {run.id} of 'triage' (completed) took another path:\n"
        "  expected: classify -> answer\n"
        "  actual:   classify -> escalate -> answer\n"
        "  they part at step 2: expected 'answer', the run executed 'escalate'"
    )
    with pytest.raises(AssertionError) as caught:
        assert_path(run, ["classify", "escalate", "answer", "answer"], database=executor)
    assert str(caught.value).splitlines()[-1] == "  they part at step 4: expected 'answer', but the run executed no more nodes"
    with pytest.raises(AssertionError) as caught:
        assert_path(run, ["classify", "escalate"], database=executor)
    assert str(caught.value).splitlines()[-1] == "  they part at step 3: the expected path ends, but the run went on to 'answer'"
    with pytest.raises(AssertionError) as caught:
        assert_path(run, [], database=executor)
    assert "  expected: (no nodes)\n" in str(caught.value)


def test_a_failed_run_shows_its_failed_stage_and_error(executor):
    run = executor.execute("triage", {"text": "crash"})
    assert run.status == "failed"
    assert_path(run, ["classify", "answer"], database=executor)  # a failed stage was executed: it counts
    with pytest.raises(AssertionError) as caught:
        assert_path(run, ["classify", "escalate", "answer"], database=executor)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"run {run.id} of 'triage' (failed) took another path:"
    assert lines[2] == "  actual:   classify -> answer [failed]"
    assert lines[-1].startswith("  the run failed: ") and "the answering service is unreachable" in lines[-1]


def test_the_decisions_made_pass_compared_on_the_fields_given(executor):
    run = executor.execute("triage", {"text": "the server is down"})
    decisions = assert_decisions(run, [("classify", "escalate"), ("escalate", "answer"), ("answer", END)],
                                 database=executor)
    assert [d.predicate_name for d in decisions] == ["is_urgent", None, None]
    assert_decisions(run, [("classify", "escalate", "is_urgent", True), ("escalate", "answer", None),
                           ("answer", END, None, True)], database=executor)
    calm = executor.execute("triage", {"text": "nice work"})
    assert_decisions(calm, [("classify", "answer", None), ("answer", END)], database=executor)
    looped = executor.execute("loop")
    assert_decisions(looped, [("work", "check"), ("check", "work", "more_rounds", True)] * 2
                     + [("work", "check"), ("check", END, None)], database=executor)


def test_other_decisions_fail_listing_both_sides(executor):
    run = executor.execute("triage", {"text": "nice work"})
    with pytest.raises(AssertionError) as caught:
        assert_decisions(run, [("classify", "escalate", "is_urgent", True), ("escalate", "answer")],
                         database=executor)
    assert str(caught.value) == (
        f"run {run.id} of 'triage' (completed) made other decisions:\n"
        "  expected:\n"
        "    1. classify -> escalate (when is_urgent: True)\n"
        "    2. escalate -> answer\n"
        "  actual:\n"
        "    1. classify -> answer  (unconditional edge (is_urgent did not hold))\n"
        "    2. answer -> END  (unconditional edge)\n"
        "  they part at decision 1: expected classify -> escalate (when is_urgent: True), "
        "the run decided classify -> answer (no predicate)"
    )
    with pytest.raises(AssertionError) as caught:
        assert_decisions(run, [("classify", "answer")], database=executor)
    assert str(caught.value).splitlines()[-1] == \
        "  they part at decision 2: the expected decisions end, but the run went on: answer -> END"
    with pytest.raises(AssertionError) as caught:
        assert_decisions(run, [("classify", "answer"), ("answer", END), ("answer", END)], database=executor)
    assert str(caught.value).splitlines()[-1] == \
        "  they part at decision 3: expected answer -> END, but the run made no more decisions"


def test_bad_input_is_one_clear_error(executor, db_url):
    run = executor.execute("triage", {"text": "nice work"})
    with pytest.raises(ConfigurationError, match=r"^assert_path expects the path as a list of node names, got 'classify'$"):
        assert_path(run, "classify", database=executor)
    with pytest.raises(ConfigurationError, match=r"^assert_decisions: \('classify',\) is not a decision: expected"):
        assert_decisions(run, [("classify",)], database=executor)
    with pytest.raises(ConfigurationError, match=r"is not a decision"):
        assert_decisions(run, [("classify", "answer", None, "yes")], database=executor)
    with pytest.raises(ConfigurationError, match=r"^assert_path cannot tell which database holds the run: use the "
                                                 r"wfkit_database fixture"):
        assert_path(run, ["classify", "answer"])
    with pytest.raises(ConfigurationError, match=r"^assert_path: database= must be an Executor, .* got int$"):
        assert_path(run, ["classify", "answer"], database=42)
    with pytest.raises(InvalidQueryError, match=r"^invalid run id 'nope'"):
        assert_path("nope", ["classify"], database=executor)
    missing = "123e4567-e89b-12d3-a456-426614174000"
    with pytest.raises(NotFoundError, match=rf"{missing}.* in Repository\(.*\): if the run is in another database, "
                                            r"name it with assert_decisions\(\.\.\., database=\.\.\.\)$"):
        assert_decisions(missing, [], database=db_url)
