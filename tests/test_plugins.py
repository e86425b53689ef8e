"""Plugin discovery through really installed distributions (pip-installed wheels on PYTHONPATH)."""

from __future__ import annotations

import json
import os

import pytest

FIXTURES = ("good", "broken-import", "raising-hook", "dup-a", "dup-b", "typo")


@pytest.fixture
def installed(wfkit_cli, installed_plugins):
    """``installed(plugins, select=None)``: ``wfkit`` with these fixture plugins installed (and
    ``WFKIT_LOAD_PLUGINS=select``, if given)."""

    def with_plugins(plugins, select=None):
        env = {"PYTHONPATH": os.pathsep.join(str(installed_plugins[p]) for p in plugins)}
        if select is not None:
            env["WFKIT_LOAD_PLUGINS"] = select
        return wfkit_cli.using(**env)

    return with_plugins


def test_good_plugin_is_discovered(installed):
    out = installed(["good"], select="good").run("list-workflows")
    assert out.returncode == 0 and out.stderr == ""
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DESCRIPTION", "PLUGIN"]
    assert lines[1].split()[0] == "good-count" and lines[1].split()[-1] == "good"
    assert lines[2].startswith("good-greet") and "Greet someone by name." in lines[2]
    doc = json.loads(installed(["good"], select="good").run("list-workflows", "--json").stdout)
    assert doc == [
        {"name": "good-count", "description": "Count to a limit", "plugin": "good"},
        {"name": "good-greet", "description": "Greet someone by name.", "plugin": "good"},
    ]


def test_broken_plugins_are_skipped_and_reported(installed):
    out = installed(FIXTURES).run("list-workflows", "--json")
    assert out.returncode == 0, out.stderr
    names = {w["name"]: w["plugin"] for w in json.loads(out.stdout)}
    assert names["good-greet"] == "good" and names["shared-name"] == "dup-a"
    assert "raising-half" not in names  # registered before the hook raised: undone
    assert "dup-b-own" not in names  # dup-b failed as a whole
    warnings = [line for line in out.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 4 and "Traceback" not in out.stderr
    stderr = out.stderr
    assert "plugin 'broken_import' (wfkit-test-broken-import 1.2.3) was skipped: failed to import wfkit_test_broken_import.plugin: ModuleNotFoundError: No module named 'wfkit_this_module_does_not_exist'" in stderr
    assert "plugin 'raising' (wfkit-test-raising-hook 1.2.3) was skipped: hook wfkit_register_workflows raised RuntimeError: the plugin's configuration is missing" in stderr
    assert "plugin 'dup-b' (wfkit-test-dup-b 1.2.3) was skipped: hook wfkit_register_workflows raised DuplicateWorkflowError: workflow 'shared-name' is already registered by plugin 'dup-a'; plugin 'dup-b' cannot register it again" in stderr
    assert "plugin 'typo' (wfkit-test-typo 1.2.3) was skipped: implements unknown hook(s) wfkit_register_workflow; known hooks: wfkit_observers, wfkit_register_workflows" in stderr


def test_plugins_command(installed):
    doc = json.loads(installed(FIXTURES).run("plugins", "--json").stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    good = by_name["good"]
    assert good == {
        "name": "good", "distribution": "wfkit-test-good", "version": "1.2.3", "module": "wfkit_test_good.plugin",
        "hooks": ["wfkit_register_workflows"], "workflows": ["good-count", "good-greet"], "loaded": True, "error": None,
    }
    assert by_name["raising"]["loaded"] is False and "RuntimeError" in by_name["raising"]["error"]
    assert by_name["dup-b"]["workflows"] == []
    text = installed(FIXTURES).run("plugins").stdout
    assert "good: loaded" in text and "broken_import: FAILED" in text and "wfkit-test-good 1.2.3" in text


def test_load_plugins_selection(installed):
    # empty: none load
    out = installed(["good"], select="").run("list-workflows")
    assert out.returncode == 0 and out.stdout.startswith("No workflows are registered.")
    assert "pip install" in out.stdout and "wfkit_register_workflows" in out.stdout
    # by distribution name, and unknown names are reported
    out = installed(["good", "broken-import"], select="wfkit-test-good, nope").run("list-workflows", "--json")
    assert [w["name"] for w in json.loads(out.stdout)] == ["good-count", "good-greet"]
    assert out.stderr.strip() == "Warning: WFKIT_LOAD_PLUGINS names 'nope', but no installed plugin has that name"
    doc = json.loads(installed(["good", "broken-import"], select="good").run("plugins", "--json").stdout)
    broken = next(p for p in doc["plugins"] if p["name"] == "broken_import")
    assert broken["loaded"] is False and broken["error"] is None  # not selected, so never imported


def test_graph_command(installed):
    out = installed(["good"], select="good").run("graph", "good-greet", "--format", "json", "-p", "who=Ann")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["entry_point"] == "hello" and [n["name"] for n in doc["nodes"]] == ["hello"]
    out = installed(["good"], select="good").run("graph", "good-count")
    assert out.returncode == 0 and out.stdout.startswith("flowchart") and "below_limit" in out.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["graph", "good-gret"], 1, "no workflow named 'good-gret'; did you mean 'good-greet'"),
        (["graph", "good-greet", "-p", "who="], 2, "invalid params for workflow 'good-greet': who: String should have at least 1 character"),
        (["graph", "good-greet", "-p", "nokey"], 2, "expected key=value, got 'nokey'"),
        (["graph", "good-greet", "--params-json", "{bad"], 2, "not valid JSON"),
        (["graph", "good-greet", "--params-json", "[1]"], 2, "must be a JSON object, got list"),
    ],
)
def test_graph_command_errors(installed, args, code, message):
    out = installed(["good"], select="good").run(*args)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert message in out.stderr and "Traceback" not in out.stderr


def test_listing_stays_light_and_loads_once_across_threads(installed):
    code = (
        "import sys, threading\n"
        "import wfkit\n"
        "from wfkit.plugins import plugin_report\n"
        "results = []\n"
        "threads = [threading.Thread(target=lambda: results.append([w.name for w in wfkit.list_workflows()])) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "assert all(r == results[0] for r in results), results\n"
        "report = plugin_report()\n"
        "print(sorted(p.name for p in report.plugins if p.loaded), [p.error for p in report.plugins if p.name == 'good'])\n"
        "print([m for m in ('sqlalchemy', 'sqlmodel', 'alembic', 'pydantic') if m in sys.modules])\n"
    )
    out = installed(FIXTURES).python("-c", code)
    assert out.returncode == 0, out.stderr
    loaded, heavy = out.stdout.splitlines()
    assert "'good'" in loaded and "[None]" in loaded  # the good plugin's hook ran once (a second run would fail)
    assert heavy == "[]"


def test_hookimpl_from_the_top_level_package_is_pluggys_marker():
    import pluggy

    import wfkit

    assert isinstance(wfkit.hookimpl, pluggy.HookimplMarker) and wfkit.hookimpl.project_name == "wfkit"


def test_the_plugin_template_works_as_shipped(installed):
    out = installed(["template"], select="my-workflows").run("list-workflows", "--json")
    assert json.loads(out.stdout) == [
        {"name": "hello", "description": "Greet someone, loudly if asked.", "plugin": "my-workflows"}
    ]
    out = installed(["template"], select="my-workflows").run("graph", "hello")
    assert '-->|"wants_shouting"|' in out.stdout
