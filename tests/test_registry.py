from __future__ import annotations

import logging
import threading

import pytest

from wfkit.errors import (
    DuplicateWorkflowError,
    InvalidParamsError,
    RegistrationError,
    ServiceNotFoundError,
    WorkflowNotFoundError,
)
from wfkit.registry import LOCAL, Registry, WorkflowInfo
from wfkit.runtime import Runtime


def one_node(graph, runtime, params):
    """A single node that copies a param into the state."""
    graph.add_node("only", lambda state: {"done": True})
    graph.set_entry_point("only")
    graph.set_finish_point("only")
    return {"value": params.get("value")}


def test_register_get_list():
    reg = Registry()
    reg.register("b-flow", one_node)
    reg.register("a.flow_2", one_node, "Explicit description")
    assert reg.list() == [
        WorkflowInfo("a.flow_2", "Explicit description", LOCAL),
        WorkflowInfo("b-flow", "A single node that copies a param into the state.", LOCAL),
    ]
    assert reg.get("b-flow").factory is one_node
    assert "b-flow" in reg and len(reg) == 2
    assert reg.list()[0].to_dict() == {"name": "a.flow_2", "description": "Explicit description", "plugin": LOCAL}


def test_decorator_form():
    reg = Registry()

    @reg.register("decorated", description="Made with a decorator")
    def factory(graph, runtime, params):
        return {}

    assert reg.get("decorated").factory is factory
    assert reg.list()[0].description == "Made with a decorator"


@pytest.mark.parametrize("name", ["", "Upper", "has space", "-leading", "semi;colon", "ünï", "a/b", 42, None, "x" * 201])
def test_invalid_names_are_rejected(name):
    with pytest.raises(RegistrationError, match="invalid workflow name"):
        Registry().register(name, one_node)


def test_duplicate_names_name_both_sources():
    reg = Registry()
    reg.register("flow", one_node)

    def other(graph, runtime, params):
        return {}

    with pytest.raises(DuplicateWorkflowError) as info:
        reg.register("flow", other)
    message = str(info.value)
    assert "test_registry.one_node" in message and "test_registry.test_duplicate_names_name_both_sources.<locals>.other" in message
    assert "replace=True" in message
    assert reg.get("flow").factory is one_node  # never a silent replacement
    reg.register("flow", other, replace=True)
    assert reg.get("flow").factory is other


def test_plugin_scope_attributes_and_rolls_back():
    reg = Registry()
    reg.register("kept", one_node)
    with reg.plugin_scope("my-plugin"):
        reg.register("mine", one_node)
    assert reg.get("mine").plugin == "my-plugin"
    with pytest.raises(RuntimeError), reg.plugin_scope("bad-plugin"):
        reg.register("half", one_node)
        reg.register("kept", lambda g, r, p: {}, replace=True)
        raise RuntimeError("boom")
    assert "half" not in reg and reg.get("kept").factory is one_node
    assert reg.register("after", one_node).plugin == LOCAL


def test_not_found_suggests_close_matches():
    reg = Registry()
    for name in ("review-loop", "text-pipeline", "branching"):
        reg.register(name, one_node)
    with pytest.raises(WorkflowNotFoundError, match="no workflow named 'review-lop'; did you mean 'review-loop'\\?"):
        reg.get("review-lop")
    with pytest.raises(WorkflowNotFoundError, match="registered workflows: branching, review-loop, text-pipeline"):
        reg.get("zzz")
    with pytest.raises(WorkflowNotFoundError, match="no workflows are registered"):
        Registry().get("x")


def test_thread_safety_of_concurrent_register_and_list():
    reg = Registry()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(k: int) -> None:
        try:
            start.wait()
            for i in range(200):
                reg.register(f"w{k}-{i}", one_node)
                listed = reg.list()
                assert [w.name for w in listed] == sorted(w.name for w in listed)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(reg) == 1600


def test_concurrent_registration_of_one_name_has_exactly_one_winner():
    reg = Registry()
    outcomes: list[str] = []
    start = threading.Barrier(16)

    def attempt() -> None:
        start.wait()
        try:
            reg.register("contested", one_node)
            outcomes.append("won")
        except DuplicateWorkflowError:
            outcomes.append("lost")

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost"] * 15 + ["won"]


def test_bad_factories_and_params_models():
    with pytest.raises(RegistrationError, match="must be callable"):
        Registry().register("x", "not callable")
    with pytest.raises(RegistrationError, match="pydantic model class or its import path"):
        Registry().register("x", one_node, params=dict)


def test_params_model_validation():
    from pydantic import BaseModel, Field

    class Params(BaseModel):
        threshold: float = Field(0.5, ge=0, le=1)
        rounds: int = 3

    reg = Registry()
    reg.register("p", one_node, params=Params)
    wf = reg.get("p")
    assert wf.validate_params({"threshold": "0.7"}) == Params(threshold=0.7)
    with pytest.raises(InvalidParamsError) as info:
        wf.validate_params({"threshold": 2, "rounds": "many"})
    message = str(info.value)
    assert message.startswith("invalid params for workflow 'p': threshold: Input should be less than or equal to 1")
    assert "rounds: Input should be a valid integer" in message
    with pytest.raises(InvalidParamsError, match="must be a mapping"):
        wf.validate_params(["a"])


def test_params_model_by_import_path():
    reg = Registry()
    reg.register("lazy", one_node, params="wfkit_samples.params:ReviewParams")
    assert reg.get("lazy").validate_params({}).max_rounds == 5
    reg.register("missing", one_node, params="no_such_module_xyz:Model")
    with pytest.raises(RegistrationError, match="cannot be imported"):
        reg.get("missing").validate_params({})


def test_runtime_services():
    log = logging.getLogger("test.runtime")
    rt = Runtime({"db": "the-db", "mailer": "the-mailer"}, logger=log)
    assert rt.service("db") == "the-db" and rt["mailer"] == "the-mailer" and rt.logger is log
    assert rt.service("cache", None) is None and sorted(rt) == ["db", "mailer"]
    with pytest.raises(ServiceNotFoundError) as info:
        rt.service("cache")
    assert str(info.value) == "no service named 'cache' in the runtime; available services: db, mailer"
    with pytest.raises(KeyError):
        rt["cache"]
    more = rt.with_services(cache="c")
    assert more["cache"] == "c" and "cache" not in rt and more.logger is log
    assert "available services: none" in str(pytest.raises(ServiceNotFoundError, Runtime().service, "x").value)
    assert Runtime().logger.name == "wfkit.workflow"


def test_build_gives_a_validated_graph_and_the_initial_state():
    reg = Registry()
    reg.register("one", one_node)
    graph, state = reg.get("one").build({"value": 7})
    assert state == {"value": 7} and graph.name == "one" and list(graph.nodes) == ["only"]
    assert graph.run(state).state == {"value": 7, "done": True}


def test_build_reports_factory_failures_in_one_line():
    from wfkit.errors import GraphValidationError, WorkflowBuildError

    reg = Registry()

    def raising(graph, runtime, params):
        raise KeyError("missing")

    def no_state(graph, runtime, params):
        one_node(graph, runtime, params)
        return ["not", "a", "mapping"]

    def broken_graph(graph, runtime, params):
        graph.add_node("a", lambda s: None)
        graph.add_edge("a", "nowhere")
        return {}

    def needs_service(graph, runtime, params):
        runtime.service("mailer")

    reg.register("raising", raising)
    reg.register("no-state", no_state)
    reg.register("broken-graph", broken_graph)
    reg.register("needs-service", needs_service)
    with pytest.raises(WorkflowBuildError, match="the factory of workflow 'raising' raised KeyError: 'missing'"):
        reg.get("raising").build()
    with pytest.raises(WorkflowBuildError, match="returned list: it must return the initial state, a mapping"):
        reg.get("no-state").build()
    with pytest.raises(GraphValidationError, match="nowhere"):
        reg.get("broken-graph").build()
    with pytest.raises(ServiceNotFoundError, match="no service named 'mailer'"):
        reg.get("needs-service").build()


def test_params_model_paths_that_are_not_models():
    reg = Registry()
    reg.register("not-a-model", one_node, params="os:path")
    with pytest.raises(RegistrationError, match="'os:path' of workflow 'not-a-model' is not a pydantic model class"):
        reg.get("not-a-model").validate_params({})


def test_the_default_registry_is_not_reentrant_while_plugins_load():
    from wfkit import plugins

    plugins._loading.active = True
    report = plugins._default_report
    plugins._default_report = None
    try:
        with pytest.raises(RegistrationError, match="while plugins were loading"):
            plugins.default_registry()
    finally:
        plugins._loading.active = False
        plugins._default_report = report


def test_max_iterations_can_be_raised_by_the_registration_or_the_factory():
    from wfkit.errors import MaxIterationsError

    def looping(limit_in_factory=None):
        def factory(graph, runtime, params):
            if limit_in_factory:
                graph.set_max_iterations(limit_in_factory)
            graph.add_node("again", lambda s: {"n": s["n"] + 1}).set_entry_point("again")
            graph.add_edge("again", "again", when=lambda s: s["n"] < 150, name="more").set_finish_point("again")
            return {"n": 0}
        return factory

    reg = Registry()
    reg.register("default", looping())
    reg.register("raised", looping(), max_iterations=200)
    reg.register("by-factory", looping(limit_in_factory=300))
    graph, state = reg.get("default").build()
    with pytest.raises(MaxIterationsError, match=r"registry.register\(\.\.\., max_iterations=N\), or "
                                                  r"graph.set_max_iterations\(N\) in the factory"):
        graph.run(state)
    assert graph.max_iterations == 100
    for name, limit in [("raised", 200), ("by-factory", 300)]:
        graph, state = reg.get(name).build()
        assert graph.max_iterations == limit and graph.run(state).state == {"n": 150}
    for bad in (0, -1, True, 2.5, "10"):
        with pytest.raises(RegistrationError, match="max_iterations of workflow 'x' must be a whole number"):
            reg.register("x", looping(), max_iterations=bad)
