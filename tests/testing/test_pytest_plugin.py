"""wfkit's pytest plugin, as a plugin author meets it: pytest started in a subprocess (so that the
installed ``pytest11`` entry point loads it) on small test files that use its fixtures, on SQLite
and on PostgreSQL; and the plugin template's own tests, run against the template installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import PLUGIN_TEMPLATE, _pg_admin_url

pytest_plugins = ["pytester"]

ENV = "WFKIT_TEST_POSTGRES_URL"
#: A server that cannot be there: nothing listens on port 1.
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"


@pytest.fixture
def on_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The environment an author's test run gets for ``backend``: ``WFKIT_TEST_POSTGRES_URL`` set to the
    server of wfkit's own tests, or unset. Returns the admin URL (None for SQLite)."""
    monkeypatch.delenv("WFKIT_LOAD_PLUGINS", raising=False)
    if backend == "postgresql":
        url = _pg_admin_url()
        monkeypatch.setenv(ENV, url)
        return url
    monkeypatch.delenv(ENV, raising=False)
    return None


def pg_databases(admin_url: str, names: list[str]) -> list[str]:
    """Which of ``names`` exist on the server."""
    engine = sa.create_engine(sa.make_url(admin_url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                                {"names": names})
            return sorted(row[0] for row in rows)
    finally:
        engine.dispose()


AUTHOR_TESTS = '''
import json, os
import pytest
from wfkit.graph import END
from wfkit.testing import assert_decisions, assert_path

pytestmark = pytest.mark.wfkit_plugins()  # no installed plugin: the tests register their workflow


def triage(graph, runtime, params):
    """Classify, escalate the urgent, answer."""
    graph.add_node("classify", lambda s: {"urgent": s["urgent"]})
    graph.add_node("escalate", lambda s: {"escalated": True})
    graph.add_node("answer", lambda s: {"answer": "on it" if s.get("escalated") else "thanks"})
    graph.set_entry_point("classify")
    graph.add_edge("classify", "escalate", when=lambda s: s["urgent"], name="is_urgent")
    graph.add_edge("classify", "answer")
    graph.add_edge("escalate", "answer")
    graph.add_edge("answer", END)
    return {"urgent": params.get("urgent", False)}


@pytest.fixture
def executor(wfkit_registry, wfkit_executor, wfkit_database, wfkit_database_factory):
    wfkit_registry.register("triage", triage)
    with open(os.environ["SEEN"], "a") as out:  # what the outer test checks once this run is over
        out.write(json.dumps({"backend": wfkit_database.backend, "name": wfkit_database.name,
                              "url": wfkit_database.url, "template": wfkit_database_factory.template}) + "\\n")
    return wfkit_executor


def test_an_urgent_message_is_escalated(executor, wfkit_database):
    run = executor.execute("triage", {"urgent": True})
    assert_path(run, ["classify", "escalate", "answer"])
    assert_decisions(run, [("classify", "escalate", "is_urgent", True), ("escalate", "answer"), ("answer", END)])
    assert wfkit_database.repository.find_run(run.id).result["answer"] == "on it"


def test_each_test_starts_with_an_empty_database(executor, wfkit_database):
    assert wfkit_database.repository.list_runs().total == 0
    assert_path(executor.execute("triage").id, ["classify", "answer"])


def test_a_wrong_path_fails(executor):
    run = executor.execute("triage", {"urgent": False})
    assert_path(run, ["classify", "escalate", "answer"])
'''


def test_the_fixtures_give_each_test_a_migrated_database_of_its_own(pytester, on_backend, backend, tmp_path):
    seen = tmp_path / "seen.jsonl"
    os.environ["SEEN"] = str(seen)  # monkeypatch-free: pytester's subprocess inherits os.environ
    try:
        pytester.makepyfile(test_author=AUTHOR_TESTS)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    finally:
        del os.environ["SEEN"]
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*def test_a_wrong_path_fails(executor):",
        '>*assert_path(run, [[]"classify", "escalate", "answer"[]])',
        "E*AssertionError: run * of 'triage' (completed) took another path:",
        "E*  expected: classify -> escalate -> answer",
        "E*  actual:   classify -> answer",
        "E*  they part at step 2: expected 'escalate', the run executed 'answer'",
    ])
    assert "wfkit/testing/asserts.py" not in result.stdout.str()  # the helper hides its own frames
    databases = [json.loads(line) for line in seen.read_text().splitlines()]
    assert len(databases) == 3 and len({d["name"] for d in databases}) == 3
    assert {d["backend"] for d in databases} == {backend}
    [template] = {d["template"] for d in databases}
    if backend == "postgresql":
        assert all(d["url"].startswith(on_backend.rsplit("/", 1)[0] + "/wfkit_test_") for d in databases)
        # Each test's database was dropped when it ended; the template, when the session did.
        assert pg_databases(on_backend, [template, *(d["name"] for d in databases)]) == []
    else:
        # A file in each test's own tmp_path (left there to look at), copied from the template.
        files = [Path(d["name"]) for d in databases]
        assert all(f.exists() and d["url"] == f"sqlite:///{f}" for f, d in zip(files, databases))
        assert len({f.parent for f in files}) == 3 and Path(template).exists()


def test_a_postgresql_server_that_cannot_be_reached_fails_the_tests(pytester, monkeypatch):
    monkeypatch.setenv(ENV, UNREACHABLE)
    pytester.makepyfile(test_author='''
        def test_one(wfkit_database):
            pass

        def test_two(wfkit_executor):
            pass
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        f"wfkit_database: {ENV} is set, but the PostgreSQL server at {UNREACHABLE} cannot be used: "
        f"OperationalError: *Connection refused* (unset {ENV} to test on SQLite)",
    ])
    assert "Traceback" not in result.stdout.str()


def test_the_registry_loads_the_installed_plugins_or_those_named(pytester, monkeypatch, installed_plugins, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("WFKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(installed_plugins["steps"]))
    monkeypatch.setenv("WFKIT_TEST_MARKERS", str(markers))
    pytester.makepyfile(test_author='''
        import pytest
        from wfkit.testing import assert_path

        def test_every_installed_plugin(wfkit_registry):
            assert {"steps", "rounds", "text-pipeline", "review-loop"} <= set(wfkit_registry.names())

        @pytest.mark.wfkit_plugins("steps")
        def test_only_the_plugin_named(wfkit_registry):
            assert wfkit_registry.names() == ["rounds", "steps", "unbuildable"]

        @pytest.mark.wfkit_plugins()
        def test_no_plugins(wfkit_registry):
            assert len(wfkit_registry) == 0

        @pytest.mark.wfkit_plugins("wfkit-test-steps")
        def test_the_executor_has_the_plugins_observers(wfkit_executor):
            # The steps plugin's observer pauses after the stage that pause_after names: it leaves a marker.
            run = wfkit_executor.execute("steps", {"pause_after": "s2", "pause_seconds": 0.01})
            assert_path(run, ["s1", "s2", "s3", "s4"])

        @pytest.mark.wfkit_plugins("no-such-plugin")
        def test_a_plugin_not_installed(wfkit_registry):
            pass

        @pytest.mark.wfkit_plugins("steps", 3)
        def test_not_a_name(wfkit_registry):
            pass
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=4, errors=2)
    assert (markers / "s2-after").exists()
    result.stdout.fnmatch_lines_random([
        "*test_a_plugin_not_installed*ERROR*",
        "wfkit_registry: @pytest.mark.wfkit_plugins names 'no-such-plugin', but no installed plugin has that name "
        "(installed: *samples*steps*)",
        "@pytest.mark.wfkit_plugins takes plugin names, such as wfkit_plugins('my-workflows'), got *",
    ])


def test_the_plugin_loads_no_sqlalchemy_nor_pydantic_when_pytest_starts(wfkit_cli, tmp_path):
    out = wfkit_cli.python("-c", (
        "import sys, wfkit.testing.plugin, wfkit.testing\n"
        "print([m for m in ('sqlalchemy', 'sqlmodel', 'alembic', 'pydantic', 'psycopg') if m in sys.modules])"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # and pytest finds it through its entry point, fixtures and all
    out = subprocess.run([sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    for name in ("wfkit_database", "wfkit_database_factory", "wfkit_registry", "wfkit_executor"):
        assert f"\n{name} " in out.stdout, out.stdout[-2000:]
    assert "wfkit_plugins" in subprocess.run([sys.executable, "-m", "pytest", "--markers"], cwd=tmp_path,
                                             capture_output=True, text=True, timeout=60).stdout


def test_the_plugin_templates_own_tests_pass_with_the_template_installed(on_backend, installed_plugins):
    """examples/wfkit-plugin-template/tests, run as its author runs them: pytest in the template's
    folder, the template installed (a wheel on PYTHONPATH), on this backend."""
    env = {**os.environ, "PYTHONPATH": str(installed_plugins["template"]), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q"],
                         cwd=PLUGIN_TEMPLATE, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "4 passed" in out.stdout
