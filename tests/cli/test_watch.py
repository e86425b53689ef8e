"""``wfkit runs watch`` (and ``runs show --follow``) as real processes: a run executing in one
process, followed live by another through the database and through a real server's event stream,
on SQLite and PostgreSQL. The workflow is ``steps`` (tests/plugin_packages/steps): s1 -> s2 -> s3 ->
s4, which pauses inside s2 until a file exists, so that the watcher is seen following it live."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest
from servers import serve  # noqa: F401 (fixture)

from factories import wait_for
from wfkit.store.repository import Repository


@pytest.fixture
def cli(steps_cli):
    return steps_cli


class Lines:
    """A process's stdout, a line at a time, as it prints them."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc, self.lines, self.seen = proc, queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, text: str, seconds: float = 30) -> list[str]:
        """Lines up to the first that holds ``text`` (all lines seen so far)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{text!r} never printed; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"ended before printing {text!r}: {self.seen} {self.proc.stderr.read()}")
            self.seen.append(line)
            if text in line:
                return self.seen

    def rest(self, seconds: float = 30) -> tuple[int, list[str], str]:
        """Exit code, every line printed, and stderr, once the process ends."""
        code = self.proc.wait(seconds)
        while (line := self.lines.get(timeout=seconds)) is not None:
            self.seen.append(line)
        return code, self.seen, self.proc.stderr.read()  # type: ignore[union-attr]


def _start(cli: Any, *args: str) -> subprocess.Popen[str]:
    from conftest import WFKIT

    return subprocess.Popen([WFKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli.environ())


def _paused_run(cli: Any, tmp_path: Any) -> tuple[subprocess.Popen[str], Any, str]:
    """``wfkit run steps`` paused inside s2 (until the returned file exists), and the run's id."""
    until = tmp_path / f"release-{uuid.uuid4().hex}"
    runner = _start(cli, "run", "steps", "-p", "pause_in=s2", "-p", f"pause_until={until}", "-p", "pause_seconds=60")
    wait_for(tmp_path / "markers" / "s2-in", runner)
    run_id = Repository(cli.env["WFKIT_DATABASE_URL"]).resolve_run_id("latest")
    return runner, until, str(run_id)


def test_watch_follows_a_run_live_from_another_process_then_exits_with_its_outcome(cli, tmp_path):
    runner, until, run_id = _paused_run(cli, tmp_path)
    watcher = Lines(_start(cli, "runs", "watch", run_id[:8]))  # a short id (the only run)
    seen = watcher.until("> s2 (iteration 1)")
    assert seen[0] == f"run {run_id} (steps): running"
    assert seen[1:] == ["  > s1 (iteration 1)", seen[2], "    s1 -> s2 [unconditional]", "  > s2 (iteration 1)"]
    assert seen[2].startswith("  + s1 (iteration 1) completed in ")
    time.sleep(0.5)
    assert watcher.proc.poll() is None  # the run is paused: the watcher waits with it
    until.touch()
    code, lines, err = watcher.rest()
    run_out = runner.communicate(timeout=30)[0].splitlines()
    assert code == 0 and runner.returncode == 0, err
    # stage by stage, the lines `wfkit run` printed as it executed the run
    assert lines[1:-2] == [line for line in run_out if line.startswith("  ")]
    assert lines[-2].startswith(f"run {run_id} completed in ") and lines[-2].endswith(" (4 stages)")
    assert json.loads(lines[-1].removeprefix("result: ")) == {"count": 4, "log": ["s1:0", "s2:1", "s3:2", "s4:3"]}
    assert err == ""


def test_a_run_that_ended_prints_its_history_and_exits_at_once_1_if_it_failed(cli):
    out = cli.run("run", "steps", "-p", "fail_in=s3")
    assert out.returncode == 1
    started = time.monotonic()
    watched = cli.run("runs", "watch", "latest", "--interval", "30")
    assert time.monotonic() - started < 25  # not one poll: the run had ended
    assert watched.returncode == 1, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[1:-1] == [line for line in out.stdout.splitlines() if line.startswith("  ")]
    assert lines[-1].endswith("(3 stages): node 's3' (iteration 1) failed: RuntimeError: s3 could not reach its "
                              "service") and " failed after " in lines[-1]
    assert "Resume it with: wfkit runs resume " in watched.stderr
    # runs show --follow is the same command
    follow = cli.run("runs", "show", "latest", "--follow")
    assert (follow.returncode, follow.stdout) == (1, watched.stdout)


def test_a_run_cancelled_while_watched_ends_the_watch_with_1(cli, tmp_path):
    runner, until, run_id = _paused_run(cli, tmp_path)
    watcher = Lines(_start(cli, "runs", "watch", "latest", "--interval", "0.1"))
    watcher.until("> s2 (iteration 1)")
    assert cli.run("runs", "cancel", run_id).returncode == 0
    until.touch()
    code, lines, err = watcher.rest()
    runner.communicate(timeout=30)
    assert code == 1 and lines[-1].startswith(f"run {run_id} cancelled after ") and "(2 stages): cancel requested" \
        in lines[-1], lines
    assert f"Resume it with: wfkit runs resume {run_id}" in err


def test_ctrl_c_stops_watching_not_the_run(cli, tmp_path):
    runner, until, run_id = _paused_run(cli, tmp_path)
    watcher = Lines(_start(cli, "runs", "watch", run_id))
    watcher.until("> s2 (iteration 1)")
    watcher.proc.send_signal(signal.SIGINT)
    code, _lines, err = watcher.rest()
    assert code == 130 and err == f"Stopped watching run {run_id} (Ctrl-C); it goes on.\n"
    assert Repository(cli.env["WFKIT_DATABASE_URL"]).find_run(run_id).status.value == "running"
    until.touch()
    assert runner.wait(30) == 0


def test_json_lines_through_the_database_are_the_api_s_event_stream(cli, db_url, serve):
    out = cli.run("run", "steps")
    assert out.returncode == 0
    watched = cli.run("runs", "watch", "latest", "--json")
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [e["event"] for e in events][:4] == ["stage.start", "stage.complete", "decision", "stage.start"]
    assert events[-1]["event"] == "complete" and events[-1]["data"]["kind"] == "run_completed"
    server = serve(db_url)
    through_api = cli.run("runs", "watch", "latest", "--json", "--api", server.url)
    assert through_api.returncode == 0, through_api.stderr
    assert through_api.stdout == watched.stdout  # the same events, ids and data, whichever way
    from servers import events as sse

    _, streamed = sse(server.client, "GET", f"/workflows/runs/{events[0]['data']['run_id']}/events")
    assert [{k: e[k] for k in ("event", "id", "data")} for e in streamed] == events


def test_watch_through_a_server_follows_a_run_it_executes_live(cli, db_url, serve, tmp_path):
    server = serve(db_url, env={"WFKIT_API_TOKEN": "s3cret"})
    until = tmp_path / "markers" / f"release-{uuid.uuid4().hex}"
    run = server.client.post("/workflows/steps/runs", headers={"Authorization": "Bearer s3cret"}, json={
        "params": {"pause_in": "s2", "pause_until": str(until), "pause_seconds": 60}}).json()
    refused = cli.run("runs", "watch", run["id"][:13], "--api", server.url)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr == "Error: this server needs Authorization: Bearer <token> (its WFKIT_API_TOKEN)\n"
    watcher = Lines(_start(cli.using(WFKIT_API_TOKEN="s3cret"), "runs", "watch", run["id"][:13], "--api",
                           server.url + "/"))
    seen = watcher.until("> s2 (iteration 1)")
    assert seen[0] == f"run {run['id']} (steps): running"
    time.sleep(0.3)
    assert watcher.proc.poll() is None
    until.touch()
    code, lines, err = watcher.rest()
    assert code == 0, err
    # what the database says of the same run, now that it ended
    again = cli.run("runs", "watch", run["id"])
    assert lines[1:] == again.stdout.splitlines()[1:] and lines[-2].endswith("(4 stages)")


@pytest.mark.parametrize(("args", "code", "message"), [
    (["runs", "watch", "nope"], 2, "invalid run id 'nope': expected a UUID, at least 6 of its first hex digits"),
    (["runs", "watch", "abcdef12"], 1, "no run with an id starting 'abcdef12'"),
    (["runs", "watch", "latest"], 1, "no run yet: latest names the newest run"),
    (["runs", "watch", "latest", "--interval", "0"], 2, "Invalid value for '--interval'"),
    (["runs", "watch", "latest", "--api", "http://127.0.0.1:9", "--interval", "1"], 2,
     "--interval is how often the database is read"),
    (["runs", "watch", "latest", "--api", "127.0.0.1:8000"], 2, "--api '127.0.0.1:8000' is not an HTTP URL"),
    (["runs", "watch", "latest", "--api", "http://127.0.0.1:9"], 1, "cannot reach the wfkit API at http://127.0.0.1:9"),
    (["runs", "show", "latest", "--follow", "--traceback"], 2, "--follow prints the run's events as they happen"),
])
def test_bad_input_is_one_line(cli, args, code, message):
    out = cli.run(*args)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: ") and message in line, line


def test_a_run_deleted_while_watched_ends_the_watch_with_an_error(cli, tmp_path):
    runner, until, run_id = _paused_run(cli, tmp_path)
    watcher = Lines(_start(cli, "runs", "watch", run_id, "--interval", "0.1"))
    watcher.until("> s2 (iteration 1)")
    assert cli.run("runs", "delete", run_id, "--force").returncode == 0
    code, _lines, err = watcher.rest()
    assert code == 1 and err == f"Error: run {run_id} was deleted while it was being watched\n"
    until.touch()
    runner.communicate(timeout=30)
