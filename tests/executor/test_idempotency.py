"""Idempotency keys: a retried start returns the run the first one made, however the retries race."""

from __future__ import annotations

import threading

import pytest

from wfkit.errors import ConfigurationError, ConflictError
from wfkit.executor import Executor
from wfkit.registry import Registry
from wfkit.store.repository import Repository


def _registry() -> Registry:
    registry = Registry()
    registry.register("one", lambda g, rt, p: (g.add_node("a", lambda s: {"n": s["n"] + 1}), g.set_entry_point("a"),
                                                g.set_finish_point("a"), {"n": p.get("n", 0)})[-1])
    return registry


def test_retries_racing_with_one_key_make_one_run(engine):
    with Executor(engine, registry=_registry()) as executor:
        barrier, ids = threading.Barrier(6), []

        def start() -> None:
            barrier.wait()
            ids.append(executor.start("one", {"n": 1}, idempotency_key="order-7"))

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(ids) == 6 and len(set(ids)) == 1
        run = executor.wait(ids[0], timeout=30)
    assert run.result == {"n": 2} and run.idempotency_key == "order-7"
    repo = Repository(engine)
    assert repo.list_runs().total == 1 and repo.find_run_by_idempotency_key("order-7").id == run.id
    assert len(repo.get_stages(run.id)) == 1  # executed once


def test_a_key_given_again_with_other_params_is_a_conflict(engine):
    with Executor(engine, registry=_registry()) as executor:
        first = executor.start("one", {"n": 1}, idempotency_key="k")
        executor.wait(first, timeout=30)
        with pytest.raises(ConflictError, match=f"idempotency key 'k' was used for run {first} of workflow 'one' "
                                                "with other params: use a new key"):
            executor.start("one", {"n": 2}, idempotency_key="k")
        assert executor.start("one", {"n": 1}, idempotency_key="k") == first  # after it ended too
        other = executor.start("one", {"n": 1})  # no key: a new run each time
        executor.wait(other, timeout=30)
    assert other != first and Repository(engine).list_runs().total == 2


@pytest.mark.parametrize("key", ["", "   ", "x" * 201, "a\x00b", 7])
def test_a_bad_key_is_refused_naming_it(engine, key):
    with Executor(engine, registry=_registry()) as executor, pytest.raises(
            ConfigurationError, match="an idempotency key must be text of 1 to 200 characters"):
        executor.start("one", idempotency_key=key)
    assert Repository(engine).list_runs().total == 0


def test_a_retry_is_answered_without_building_the_workflow_again(engine):
    builds = []
    registry = Registry()
    registry.register("counted", lambda g, rt, p: (builds.append(1), g.add_node("a", lambda s: {"n": 1}),
                                                    g.set_entry_point("a"), g.set_finish_point("a"), {})[-1])
    with Executor(engine, registry=registry) as executor:
        assert executor.started_with("k", "counted") is None  # no run with it yet
        first = executor.start("counted", idempotency_key="k")
        executor.wait(first, timeout=30)
        assert len(builds) == 1
        assert executor.started_with("k", "counted").id == first
        assert executor.start("counted", idempotency_key="k") == first
        assert len(builds) == 1  # the params were checked; the factory was not called again
        with pytest.raises(ConflictError, match="idempotency key 'k' was used for run"):
            executor.started_with("k", "counted", {"x": 1})
