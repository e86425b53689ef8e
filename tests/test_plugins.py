"""Plugin discovery through really installed distributions (pip-installed wheels on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import signal
import time

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
    assert names["dup-b-own"] == "dup-b"  # a duplicate skips only that workflow, not the plugin
    warnings = [line for line in out.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warnings) == 4 and "Traceback" not in out.stderr
    stderr = out.stderr
    assert "plugin 'broken_import' (wfkit-test-broken-import 1.2.3) was skipped: failed to import wfkit_test_broken_import.plugin: ModuleNotFoundError: No module named 'wfkit_this_module_does_not_exist'" in stderr
    assert "plugin 'raising' (wfkit-test-raising-hook 1.2.3) was skipped: hook wfkit_register_workflows raised RuntimeError: the plugin's configuration is missing" in stderr
    assert ("plugin 'dup-b' (wfkit-test-dup-b 1.2.3) could not register workflow 'shared-name' (plugin 'dup-a' "
            "registered it first, and keeps it)") in stderr
    assert "plugin 'typo' (wfkit-test-typo 1.2.3) was skipped: implements unknown hook(s) wfkit_register_workflow; known hooks: wfkit_observers, wfkit_register_workflows" in stderr


def test_plugins_command(installed):
    doc = json.loads(installed(FIXTURES).run("plugins", "--json").stdout)
    by_name = {p["name"]: p for p in doc["plugins"]}
    good = by_name["good"]
    assert good == {
        "name": "good", "distribution": "wfkit-test-good", "version": "1.2.3", "module": "wfkit_test_good.plugin",
        "hooks": ["wfkit_register_workflows"], "workflows": ["good-count", "good-greet"], "loaded": True, "error": None,
        "skipped": [],
    }
    assert by_name["raising"]["loaded"] is False and "RuntimeError" in by_name["raising"]["error"]
    assert by_name["dup-b"]["loaded"] is True and by_name["dup-b"]["workflows"] == ["dup-b-own"]
    assert by_name["dup-b"]["skipped"] == ["workflow 'shared-name' (plugin 'dup-a' registered it first, and keeps it)"]
    text = installed(FIXTURES).run("plugins").stdout
    assert "good: loaded" in text and "broken_import: FAILED" in text and "wfkit-test-good 1.2.3" in text
    assert "  skipped       workflow 'shared-name' (plugin 'dup-a' registered it first, and keeps it)" in text


def test_load_plugins_selection(installed):
    # empty: none load
    out = installed(["good"], select="").run("list-workflows")
    assert out.returncode == 0 and out.stdout.startswith(
        "No workflows are registered: plugin loading is turned off (WFKIT_LOAD_PLUGINS is set, and empty); "
        "installed plugins: good, samples. Unset WFKIT_LOAD_PLUGINS to load them all, or name the ones to load.")
    # an unknown workflow says the same, not to install what is installed
    for command in (["run", "good-greet"], ["graph", "good-greet"]):
        out = installed(["good"], select="").run(*command)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert out.stderr.strip() == ("Error: no workflow named 'good-greet'; plugin loading is turned off "
                                      "(WFKIT_LOAD_PLUGINS is set, and empty); installed plugins: good, samples. Unset "
                                      "WFKIT_LOAD_PLUGINS to load them all, or name the ones to load")
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


def test_a_hostile_plugin_cannot_take_a_command_down(installed):
    """Plugins that hang (importing, or in a hook), exit, raise KeyboardInterrupt, or print: each is
    left out or contained, reported on stderr, and stdout holds only the command's output."""
    cli = installed(["hostile", "good"]).using(WFKIT_PLUGIN_TIMEOUT="1")
    started = time.monotonic()
    out = cli.run("list-workflows", "--json", timeout=60)
    assert time.monotonic() - started < 20  # bounded by the time limit, not by the plugins
    assert out.returncode == 0, out.stderr
    names = {w["name"]: w["plugin"] for w in json.loads(out.stdout)}  # stdout is the JSON, nothing else
    assert names["printed"] == "prints" and names["good-greet"] == "good"
    assert "hang-half" not in names  # registered before its hook hung: taken back
    stderr = out.stderr
    assert "hello from the prints plugin, at import" in stderr and "hello from the prints plugin, in its hook" in stderr
    assert "plugin 'hang-import' (wfkit-test-hostile 1.2.3) was skipped: did not finish loading within 1 s " \
           "(WFKIT_PLUGIN_TIMEOUT)" in stderr
    assert "plugin 'hang-hook' (wfkit-test-hostile 1.2.3) was skipped: did not finish loading within 1 s" in stderr
    assert "plugin 'exits' (wfkit-test-hostile 1.2.3) was skipped: failed to import wfkit_test_hostile.exits: " \
           "called sys.exit(3)" in stderr
    assert "plugin 'interrupts' (wfkit-test-hostile 1.2.3) was skipped:" in stderr and "KeyboardInterrupt" in stderr
    assert "Traceback" not in stderr


def test_a_plugin_whose_observers_hook_hangs_does_not_stop_a_run(installed, db_url):
    cli = installed(["hostile"], select="prints,hang-observers").using(WFKIT_PLUGIN_TIMEOUT="1",
                                                                       WFKIT_DATABASE_URL=db_url)
    out = cli.run("run", "printed", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "completed"
    assert "wfkit_observers() did not return within 1 s" in out.stderr
    [line] = [line for line in out.stderr.splitlines() if "hang-observers" in line or "TimeoutError" in line]
    assert "its observers are skipped" in line and "raised, or returned neither" not in line  # one plain line


@pytest.mark.parametrize("command", [["graph", "printed-model", "--json"], ["run", "printed-model", "--json"]])
def test_a_params_model_imported_after_loading_prints_to_stderr_too(installed, db_url, command):
    out = installed(["hostile"], select="prints").using(WFKIT_DATABASE_URL=db_url).run(*command, timeout=60)
    assert out.returncode == 0, out.stderr
    json.loads(out.stdout)  # the JSON document, nothing else
    assert "hello from the prints plugin's params model, at import" in out.stderr


def test_ctrl_c_still_stops_a_command_while_a_plugin_hangs(installed):
    proc = installed(["hostile"], select="hang-import").using(WFKIT_PLUGIN_TIMEOUT="60").start("list-workflows")
    time.sleep(1.5)  # it is waiting for the hanging plugin
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 1 and "Aborted!" in stderr and "Traceback" not in stderr


def test_a_bad_plugin_timeout_is_one_line(installed):
    out = installed(["good"]).using(WFKIT_PLUGIN_TIMEOUT="soon").run("list-workflows")
    assert out.returncode == 2 and out.stderr.strip() == (
        "Error: WFKIT_PLUGIN_TIMEOUT must be a number of seconds above 0, got 'soon'")
