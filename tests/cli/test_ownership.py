"""Run ownership through real processes, on SQLite and PostgreSQL: at most one process executes a
run at any instant, whatever crashes, stalls or races (short leases: 1-2 s).

The workflow is ``steps`` from the fixture plugin tests/plugin_packages/steps (s1 -> s2 -> s3 -> s4).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from factories import only_run, saved_checkpoint, wait_for
from wfkit.store.models import RunStatus, StageStatus, utcnow
from wfkit.store.repository import Repository

FINAL = {"count": 4, "log": ["s1:0", "s2:1", "s3:2", "s4:3"]}
LEASE = "1"


@pytest.fixture
def cli(steps_cli):
    """``wfkit`` with the fixture plugin ``steps``, on the test's database, with short leases."""
    return steps_cli.using(WFKIT_LEASE_SECONDS=LEASE)


def wait_until_expired(db_url, run_id) -> None:
    run = Repository(db_url).find_run(run_id)
    if run.lease_expires_at is not None:
        time.sleep(max(0.0, (run.lease_expires_at - utcnow()).total_seconds()) + 0.3)


def completed_steps(db_url, run_id) -> list[tuple[str, int]]:
    stages = Repository(db_url).get_stages(run_id)
    return [(s.node_name, s.iteration) for s in stages if s.status is StageStatus.COMPLETED]


def test_a_live_run_cannot_be_taken_over(cli, db_url, tmp_path):
    """A forced resume from a second process while the first executes (its heartbeat renewing a
    1 s lease through a node that lasts several leases) is refused, naming the holder; the first
    completes alone."""
    release = tmp_path / "release"
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=60", "-p", f"pause_until={release}")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    run = only_run(db_url)
    for _ in range(3):  # across several leases: the heartbeat keeps it
        out = cli.run("runs", "resume", str(run.id), "--force")
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"held by {run.owner} (attempt 1) until " in out.stderr and "its lease is live" in out.stderr
        shown = json.loads(cli.run("runs", "show", str(run.id), "--json").stdout)
        assert (shown["owner"], shown["attempt"], shown["lease_expired"]) == (run.owner, 1, False)
        assert shown["lease_expires_at"] is not None and shown["current_node"] == "s2"
        time.sleep(0.7)
    release.touch()
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert completed_steps(db_url, run.id) == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]  # no stage twice
    assert only_run(db_url).attempt == 1


@pytest.mark.parametrize("take_over", ["resume", "recover"])
def test_a_stalled_process_is_taken_over_and_then_fenced_off(cli, db_url, tmp_path, take_over):
    """The first process freezes (SIGSTOP) inside s2 past its lease; a second takes the run over and
    completes it. Thawed (SIGCONT), the first writes nothing: its next write is fenced off, it says
    so in one line and exits 1. The history and checkpoint are exactly the second process's."""
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=2")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    proc.send_signal(signal.SIGSTOP)
    try:
        run = only_run(db_url)
        wait_until_expired(db_url, run.id)
        shown = json.loads(cli.run("runs", "show", str(run.id), "--json").stdout)
        assert shown["status"] == "running" and shown["lease_expired"] is True
        out = cli.run("runs", "show", str(run.id))
        assert "expired at " in out.stdout and "no process holds it" in out.stdout
        args = ["runs", "resume", str(run.id), "--force", "--json"] if take_over == "resume" else \
            ["runs", "recover", "--json"]
        out = cli.run(*args)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        taken = doc if take_over == "resume" else doc[0]["run"]
        assert taken["status"] == "completed" and taken["result"] == FINAL and taken["attempt"] == 2
        history = (Repository(db_url).get_stages(run.id), Repository(db_url).get_decisions(run.id),
                   saved_checkpoint(db_url, run.id))
    finally:
        proc.send_signal(signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in stderr
    taker = Repository(db_url).find_run(run.id).owner
    assert stderr.strip().splitlines()[-1] == (
        f"Error: run {run.id} was taken over by {taker} at attempt 2 (it is completed now); this process stopped")
    after = (Repository(db_url).get_stages(run.id), Repository(db_url).get_decisions(run.id),
             saved_checkpoint(db_url, run.id))
    assert after == history  # not one row from the stale process
    stages = after[0]
    assert [(s.node_name, s.status.value) for s in stages] == [
        ("s1", "completed"), ("s2", "failed"), ("s2", "completed"), ("s3", "completed"), ("s4", "completed")]
    assert [(d.from_node, d.to_node) for d in after[1]] == [("s1", "s2"), ("s2", "s3"), ("s3", "s4"), ("s4", None)]
    run = only_run(db_url)
    assert run.result == FINAL and run.status is RunStatus.COMPLETED and run.lease_epoch == 2


def test_a_process_taken_over_while_the_run_goes_on_names_the_new_holder(cli, db_url, tmp_path):
    """As above, but the thawed process meets the run still executing elsewhere: it names who."""
    marker = tmp_path / "markers" / "s2-in"
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=2")
    wait_for(marker, proc)
    proc.send_signal(signal.SIGSTOP)
    try:
        run = only_run(db_url)
        wait_until_expired(db_url, run.id)
        marker.unlink()  # the new holder pauses in s2 too
        second = cli.start("runs", "resume", str(run.id), "--force", "--json")
        wait_for(marker, second)
    finally:
        proc.send_signal(signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=30)
    holder = Repository(db_url).find_run(run.id).owner
    assert proc.returncode == 1 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"Error: run {run.id} was taken over by {holder} at attempt 2; this process stopped")
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert json.loads(out)["result"] == FINAL


def test_a_forced_cancel_stops_a_live_process(cli, db_url, tmp_path):
    """`runs cancel --force` on a run whose holder is alive: the run ends cancelled at once, its epoch
    raised; the holder's next write is fenced off and it stops, saying so."""
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=1.5")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    run = only_run(db_url)
    out = cli.run("runs", "cancel", str(run.id), "--force")
    assert out.returncode == 0 and out.stdout.strip() == f"run {run.id} cancelled"
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in stderr
    assert re.fullmatch(rf"Error: run {run.id} was ended cancelled by another process \(forced with `wfkit runs "
                        r"cancel --force` by .*\); this process stopped", stderr.strip().splitlines()[-1])
    run = only_run(db_url)
    assert run.status is RunStatus.CANCELLED and run.lease_epoch == 2
    assert [(s.node_name, s.status.value) for s in Repository(db_url).get_stages(run.id)] == [
        ("s1", "completed"), ("s2", "failed")]
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL


def test_cancel_of_a_run_nobody_holds_says_so(cli, db_url, tmp_path):
    proc = cli.start("run", "steps", "-p", "pause_in=s2")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    proc.kill()
    proc.communicate(timeout=30)
    run = only_run(db_url)
    wait_until_expired(db_url, run.id)
    out = cli.run("runs", "cancel", str(run.id))
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].startswith(f"cancel requested, but no process holds run {run.id} "
                                                 "(its lease expired at ")
    assert out.stdout.splitlines()[1] == f"End it now with: wfkit runs cancel {run.id} --force"
    out = cli.run("runs", "recover", "--json")  # the recovery honours the request
    [recovered] = json.loads(out.stdout)
    assert recovered["status"] == "cancelled" and out.returncode == 1


def test_signals_release_the_lease(cli, db_url, tmp_path):
    """SIGTERM ends the run cancelled and releases its lease: another process resumes it at once."""
    proc = cli.start("run", "steps", "-p", "pause_in=s2")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    run = only_run(db_url)
    assert run.status is RunStatus.CANCELLED and run.lease_expires_at is None and run.lease_expired is None
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["attempt"] == 2


def test_a_resume_raced_by_another_resume_runs_once(cli, db_url, installed_plugins, tmp_path):
    """Two processes resume the same failed runs at the same instants (a barrier on the clock), many
    times: for each run exactly one executes, the other is refused, naming the holder."""
    runs = []
    for _ in range(10):
        for marker in (tmp_path / "markers").iterdir():  # s2 fails the first time it runs, in each run
            marker.unlink()
        out = cli.run("run", "steps", "-p", "fail_in=s2", "--json")
        runs.append(json.loads(out.stdout)["id"])
        assert json.loads(out.stdout)["status"] == "failed"
    script = (
        "import json, sys, time\n"
        "from wfkit.executor import Executor\n"
        "from wfkit.errors import WfkitError\n"
        "ids, start = json.loads(sys.argv[1]), float(sys.argv[2])\n"
        "executor = Executor(lease_seconds=1)\n"
        "for i, rid in enumerate(ids):\n"
        "    time.sleep(max(0.0, start + i * 0.3 - time.time()))\n"
        "    try:\n"
        "        print(json.dumps([rid, executor.resume(rid).status.value]), flush=True)\n"
        "    except WfkitError as err:\n"
        "        print(json.dumps([rid, str(err)]), flush=True)\n"
    )
    start = time.time() + 3
    env = cli.environ()
    procs = [subprocess.Popen([sys.executable, "-c", script, json.dumps(runs), str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(dict(json.loads(line) for line in out.splitlines()))
    for rid in runs:
        outcomes = [results[0][rid], results[1][rid]]
        assert outcomes.count("completed") == 1, outcomes  # one executed it, the other was refused:
        refused = next(o for o in outcomes if o != "completed")  # held by the other, or already completed
        assert "held by" in refused or "is completed now" in refused or "cannot go from completed" in refused, \
            outcomes
        assert completed_steps(db_url, rid) == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]  # executed once
        assert Repository(db_url).find_run(rid).attempt == 2


def test_sigkill_at_random_instants_then_recover(cli, db_url, tmp_path, request):
    """Kill -9 `wfkit run` at random instants (starting, creating the run, inside a node, between
    steps, ending); then one `recover` finishes every run left running: no completed (node,
    iteration) twice, and every final state is an uninterrupted run's. (More kills per engine:
    bench/crash_recovery.py.)"""
    kills = int(os.environ.get("WFKIT_TEST_KILLS", "8"))
    rng = random.Random(request.node.name)
    for _ in range(kills):
        proc = cli.start("run", "steps", "-p", "nap=0.05")
        time.sleep(rng.uniform(0.2, 1.2))
        proc.kill()
        proc.communicate(timeout=30)
    if Repository(db_url).list_runs(page_size=1).total == 0:
        # A loaded machine starts a process slower than the kills come: one more, killed once its
        # run exists, so that there is a run to recover.
        proc = cli.start("run", "steps", "-p", "nap=0.05")
        deadline = time.monotonic() + 30
        while Repository(db_url).list_runs(page_size=1, total="none").data == [] and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.kill()
        proc.communicate(timeout=30)
    time.sleep(float(LEASE) + 0.3)
    out = cli.run("runs", "recover", "--json", "--concurrency", "2")
    assert out.returncode == 0, (out.stdout, out.stderr)
    page = Repository(db_url).list_runs(page_size=100)
    assert page.total >= 1
    for run in page.data:
        assert run.status is RunStatus.COMPLETED and run.result == FINAL, run
        assert completed_steps(db_url, run.id) == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]
        assert len(Repository(db_url).get_decisions(run.id)) == 4


def test_durability_on_the_command_line(cli, db_url):
    out = cli.run("run", "steps", "--durability", "async", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL
    out = cli.run("run", "steps", "--durability", "fast")
    assert out.returncode == 2 and "'fast' is not one of 'sync', 'async'" in out.stderr
    out = cli.run("run", "steps", env={"WFKIT_DURABILITY": "fast"})
    assert out.returncode == 2 and out.stderr.strip() == (
        "Error: WFKIT_DURABILITY='fast': expected sync (the default) or async")
    out = cli.run("run", "steps", env={"WFKIT_LEASE_SECONDS": "-1"})
    assert out.returncode == 2 and "WFKIT_LEASE_SECONDS must be a number of seconds from 0.5" in out.stderr



def test_a_stop_signal_stops_a_recovery_in_flight(cli, db_url, tmp_path):
    """`runs recover --concurrency 2` executes two runs in threads; SIGTERM reaches the main thread:
    both runs stop before their next node, cancelled and resumable, and the command says so."""
    markers = tmp_path / "markers"
    dead = []
    for node in ("s2", "s3"):
        proc = cli.start("run", "steps", "-p", f"pause_in={node}", "-p", "pause_seconds=2")
        wait_for(markers / f"{node}-in", proc)
        proc.kill()
        proc.communicate(timeout=30)
    dead = [run.id for run in Repository(db_url).list_runs().data]
    for run_id in dead:
        wait_until_expired(db_url, run_id)
    for marker in markers.iterdir():  # the recovered runs pause in their nodes again
        marker.unlink()
    proc = cli.start("runs", "recover", "--concurrency", "2")
    wait_for(markers / "s2-in", proc)
    wait_for(markers / "s3-in", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 143, stderr
    assert "Interrupted (SIGTERM): the runs being recovered stopped before their next node" in stderr
    for run_id in dead:
        run = Repository(db_url).find_run(run_id)
        assert run.status is RunStatus.CANCELLED and run.cancel_reason == "terminated by SIGTERM", run
        assert run.lease_expires_at is None  # released: resumable at once
