"""`wfkit run` and `wfkit runs cancel/resume/delete` as real processes: progress, exit codes,
Ctrl-C, cancel from another process, and crash safety under SIGKILL. On SQLite and PostgreSQL.

The workflow is ``steps`` from the fixture plugin tests/plugin_packages/steps: s1 -> s2 -> s3 -> s4,
which pauses where a test asks (inside a node, or just after one) and drops a marker file first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import sqlalchemy as sa

from factories import only_run, saved_checkpoint, wait_for
from wfkit.formatting import mask_password
from wfkit.store.models import Checkpoint, RunStatus, StageStatus, utcnow
from wfkit.store.repository import Repository

FINAL = {"count": 4, "log": ["s1:0", "s2:1", "s3:2", "s4:3"]}


@pytest.fixture
def cli(steps_cli):
    """``wfkit`` with the fixture plugin ``steps`` installed, on the test's database."""
    return steps_cli


def test_run_prints_progress_and_the_result(cli):
    out = cli.run("run", "steps")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith("started: steps")
    assert "  > s1 (iteration 1)" in lines and "    s1 -> s2 [unconditional]" in lines
    assert any(line.startswith("  + s4 (iteration 1) completed in ") for line in lines)
    assert lines[-2] == "status: completed"
    assert json.loads(lines[-1].removeprefix("result: ")) == FINAL


def test_run_json_keeps_stdout_clean(cli, db_url):
    out = cli.run("run", "steps", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "completed" and doc["result"] == FINAL and doc["workflow_name"] == "steps"
    assert "> s1 (iteration 1)" in out.stderr
    assert only_run(db_url).id.hex == doc["id"].replace("-", "")


def test_failure_then_resume_from_the_command_line(cli, db_url):
    out = cli.run("run", "steps", "-p", "fail_in=s3")
    assert out.returncode == 1
    assert "status: failed" in out.stdout and "error: node 's3' (iteration 1) failed: RuntimeError" in out.stdout
    run = only_run(db_url)
    assert f"Resume it with: wfkit runs resume {run.id}" in out.stderr
    # the node's traceback is kept, one command away; the error stays one line
    shown = cli.run("runs", "show", str(run.id), "--traceback")
    assert shown.returncode == 0 and "traceback of s3 (iteration 1):\nTraceback (most recent call last):" in shown.stdout
    assert shown.stdout.rstrip().endswith("RuntimeError: s3 could not reach its service")
    doc = json.loads(cli.run("runs", "show", str(run.id), "--traceback", "--json").stdout)
    assert doc["traceback"].endswith("RuntimeError: s3 could not reach its service") and "\n" not in doc["error_message"]
    verbose = cli.run("runs", "stages", str(run.id), "-v").stdout
    assert "s3 (iteration 1) failed:\nTraceback (most recent call last):" in verbose
    assert "Traceback" not in cli.run("runs", "stages", str(run.id)).stdout
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["result"] == FINAL
    stages = Repository(db_url).get_stages(run.id)
    assert [(s.node_name, s.status.value) for s in stages] == [
        ("s1", "completed"), ("s2", "completed"), ("s3", "failed"), ("s3", "completed"), ("s4", "completed")
    ]
    out = cli.run("runs", "resume", str(run.id))
    assert out.returncode == 2 and out.stderr.strip() == (
        "Error: a run cannot go from completed to running: completed is final"
    )


def test_a_workflow_that_cannot_build_is_one_line_and_creates_no_run(cli, db_url):
    out = cli.run("run", "unbuildable")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("Error: the factory of workflow 'unbuildable' raised RuntimeError: "
                                  "the settings file is missing")
    assert Repository(db_url).list_runs().total == 0  # and so no resume hint that could never succeed


def test_bad_input(cli):
    for args, code, message in [
        (["run", "stepz"], 1, "no workflow named 'stepz'; did you mean 'steps'?"),
        (["run", "steps", "--params-json", "[]"], 2, "must be a JSON object"),
        (["runs", "cancel", "nope"], 2, "invalid run id 'nope'"),
        (["runs", "resume", "00000000-0000-4000-8000-000000000000"], 1, "no run with id"),
        (["runs", "delete", "00000000-0000-4000-8000-000000000000"], 1, "no run with id"),
    ]:
        out = cli.run(*args)
        assert out.returncode == code, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr


def test_cancel_from_another_process_then_resume(cli, db_url, tmp_path):
    go = tmp_path / "go"  # s2 pauses until this exists (the cancel must reach it first, however slow the machine)
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=30", "-p", f"pause_until={go}")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    run = only_run(db_url)
    out = cli.run("runs", "cancel", str(run.id))
    assert out.returncode == 0 and out.stdout.splitlines() == [  # its holder is alive: it is named
        f"cancel requested: {run.owner} stops run {run.id} before its next node (a run in its last node completes).",
    ]
    go.touch()
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "status: cancelled" in stdout
    run = only_run(db_url)
    assert run.status is RunStatus.CANCELLED
    assert run.cancel_reason.startswith("cancel requested with `wfkit runs cancel` by ") and "(pid " in run.cancel_reason
    assert f"cancelled  {run.cancel_reason}" in cli.run("runs", "show", str(run.id)).stdout
    assert [s.node_name for s in Repository(db_url).get_stages(run.id)] == ["s1", "s2"]  # s3 never started
    out = cli.run("runs", "cancel", str(run.id))
    assert out.returncode == 2 and "cannot go from cancelled to cancelled" in out.stderr
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL
    assert [s.node_name for s in Repository(db_url).get_stages(run.id)] == ["s1", "s2", "s3", "s4"]


def test_ctrl_c_cancels_cleanly_and_says_how_to_resume(cli, db_url, tmp_path):
    """Ctrl-C inside node s2: s2 is cancelled (failed), and runs again on resume."""
    proc = cli.start("run", "steps", "-p", "pause_in=s2")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    time.sleep(0.2)  # s2 has been running for at least this long
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    run = only_run(db_url)
    assert proc.returncode == 1, stderr
    assert stderr.strip().splitlines()[-1] == (
        f"Run {run.id} cancelled (Ctrl-C). Resume it with: wfkit runs resume {run.id}"
    )
    assert "Traceback" not in stderr
    assert run.status is RunStatus.CANCELLED and run.cancel_reason == "interrupted by Ctrl-C (SIGINT)"
    stages = Repository(db_url).get_stages(run.id)
    assert [(s.node_name, s.status.value) for s in stages] == [("s1", "completed"), ("s2", "failed")]
    assert stages[1].duration_ms >= 150  # the time s2 ran until Ctrl-C, not a leftover of s1
    out = cli.run("runs", "resume", str(run.id))
    assert out.returncode == 0 and "status: completed" in out.stdout


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGHUP", 129)])
@pytest.mark.parametrize("nodes", ["plain", "async"])
def test_sigterm_and_sighup_end_the_run_cancelled_as_ctrl_c_does(cli, db_url, tmp_path, name, code, nodes):
    """Containers, systemd and Kubernetes stop with SIGTERM; a closed terminal sends SIGHUP."""
    extra = ["-p", "async_nodes=true"] if nodes == "async" else []
    proc = cli.start("run", "steps", "-p", "pause_in=s2", *extra)
    wait_for(tmp_path / "markers" / "s2-in", proc)
    proc.send_signal(getattr(signal, name))
    stdout, stderr = proc.communicate(timeout=30)
    run = only_run(db_url)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == f"Run {run.id} cancelled ({name}). Resume it with: wfkit runs resume {run.id}"
    assert "Traceback" not in stderr
    reason = {"SIGTERM": "terminated by SIGTERM", "SIGHUP": "hung up (SIGHUP)"}[name]
    assert run.status is RunStatus.CANCELLED and run.cancel_reason == reason
    stages = Repository(db_url).get_stages(run.id)
    assert [(s.node_name, s.status.value) for s in stages] == [("s1", "completed"), ("s2", "failed")]
    assert stages[1].error_message == f"cancelled: {reason}"
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL


def test_hints_keep_the_database_given_on_the_command_line(cli, db_url, tmp_path):
    """A printed next step reaches the same database: --database-url in it (password masked)."""
    elsewhere = cli.using(WFKIT_DATABASE_URL="sqlite:////nonexistent/never-used.db")
    out = elsewhere.run("--database-url", db_url, "run", "steps", "-p", "fail_in=s2")
    run = only_run(db_url)
    assert f"Resume it with: wfkit --database-url {mask_password(db_url)} runs resume {run.id}" in out.stderr
    missing = tmp_path / "missing.db"
    out = elsewhere.run("runs", "list", "--database-url", f"sqlite:///{missing}")
    assert f"run `wfkit --database-url sqlite:///{missing} db upgrade` to create it" in out.stderr
    secret = "postgresql://me:s3cret@127.0.0.1:1/none?connect_timeout=1"
    out = elsewhere.run("runs", "resume", str(run.id), "--database-url", secret)
    assert "s3cret" not in out.stderr


def test_a_closed_stdout_stops_the_printing_not_the_run(cli, db_url):
    """`wfkit run ... | head -1`: the run completes, nothing is printed about the broken pipe."""
    import subprocess

    from conftest import WFKIT

    script = f"{WFKIT} run steps -p pause_in=s1 -p pause_seconds=0.5 | head -1"  # head is gone before s2
    out = subprocess.run(["bash", "-c", f"set -o pipefail; {script}; echo exit=${{PIPESTATUS[0]}}"],
                         capture_output=True, text=True, env=cli.environ(), timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("run ") and lines[-1] == "exit=0", (out.stdout, out.stderr)
    assert out.stderr == ""
    assert only_run(db_url).status is RunStatus.COMPLETED


def test_a_terminated_database_connection_is_one_line_and_the_run_is_ended(wfkit_cli, pg_url, installed_plugins,
                                                                            tmp_path):
    """The server kills the run's connection mid-run: one line, no SQLAlchemy traceback, and the run
    ends failed (on a fresh connection), resumable. (PostgreSQL only: SQLite has no server process.)"""
    import sqlalchemy as sa

    db_url = pg_url
    (tmp_path / "markers").mkdir()
    cli = wfkit_cli.using(PYTHONPATH=str(installed_plugins["steps"]), WFKIT_DATABASE_URL=db_url,
                          WFKIT_LOAD_PLUGINS="steps", WFKIT_TEST_MARKERS=str(tmp_path / "markers"))
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=1")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    admin = sa.create_engine(sa.make_url(db_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = conn.exec_driver_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                          "WHERE datname = current_database() AND pid <> pg_backend_pid()").scalar()
    finally:
        admin.dispose()
    assert killed >= 1
    stdout, stderr = proc.communicate(timeout=30)
    run = only_run(db_url)
    assert proc.returncode == 1
    [line] = stderr.strip().splitlines()
    assert line.startswith("Error: ") and "Traceback" not in stderr and "Exception during reset" not in stderr
    assert run.status is RunStatus.FAILED and f"resume it with `wfkit runs resume {run.id}`" in line
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL
    stages = Repository(db_url).get_stages(run.id)
    assert [s.node_name for s in stages if s.status is StageStatus.COMPLETED] == ["s1", "s2", "s3", "s4"]


def test_ctrl_c_with_json_still_prints_the_run_on_stdout(cli, db_url, tmp_path):
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "--json")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    run = only_run(db_url)
    assert proc.returncode == 1, stderr
    doc = json.loads(stdout)  # one document, nothing else
    assert doc["id"] == str(run.id) and doc["status"] == "cancelled" == run.status.value
    assert stderr.strip().splitlines()[-1] == (
        f"Run {run.id} cancelled (Ctrl-C). Resume it with: wfkit runs resume {run.id}"
    )


def test_decisions_print_their_predicate_and_result_and_name_the_end_as_every_form_does(cli, db_url):
    samples = {"WFKIT_LOAD_PLUGINS": "samples"}
    out = cli.run("run", "branching", "-p", "priority=express", env=samples)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "    receive -> express [is_express=true]" in lines
    assert "    express -> ship [unconditional]" in lines and "    ship -> END [unconditional]" in lines
    # the end is END in the history's text and in the chart; in JSON it is null (no node has that name)
    run_id = str(only_run(db_url).id)
    assert cli.run("runs", "decisions", run_id).stdout.splitlines()[-1].split()[:2] == ["ship", "END"]
    assert json.loads(cli.run("runs", "decisions", run_id, "--json").stdout)[-1]["to_node"] is None
    chart = cli.run("graph", "branching", env=samples).stdout
    assert '    __end__(["END"])' in chart and "n_ship --> __end__" in chart and '"end"' not in chart
    graph = json.loads(cli.run("graph", "branching", "--json", env=samples).stdout)
    assert {"from_node": "ship", "to_node": None, "predicate": None} in graph["edges"]


def test_delete(cli, db_url):
    cli.run("run", "steps")
    run = only_run(db_url)
    out = cli.run("runs", "delete", str(run.id))
    assert out.returncode == 0 and out.stdout.strip() == f"deleted run {run.id}"
    assert Repository(db_url).list_runs().total == 0
    with Repository(db_url).engine.connect() as conn:  # the checkpoint went with the run
        assert conn.execute(sa.select(sa.func.count()).select_from(Checkpoint)).scalar() == 0


@pytest.mark.parametrize("where", ["in", "after"])
def test_sigkill_then_forced_resume(cli, db_url, tmp_path, where):
    """Kill -9 inside node s2, or just after s2's step was committed (s3 current). The run stays
    running, held by the dead process until its lease expires: a forced resume is refused until then,
    naming the holder; then it takes the run over and finishes it as an uninterrupted run would."""
    proc = cli.using(WFKIT_LEASE_SECONDS="2").start("run", "steps", "-p", f"pause_{where}=s2")
    wait_for(tmp_path / "markers" / f"s2-{where}", proc)
    proc.kill()
    proc.communicate(timeout=30)

    run = only_run(db_url)
    assert run.status is RunStatus.RUNNING  # left so by the dead process
    assert run.attempt == 1 and run.lease_epoch == 1 and run.owner.endswith(")") and " pid " in run.owner
    repo = Repository(db_url)
    stages = repo.get_stages(run.id)
    running = "s2" if where == "in" else "s3"
    done = ["s1"] if where == "in" else ["s1", "s2"]
    # the stage that was running is visible (on the run's row); every step before it was committed whole
    assert [(s.node_name, s.status) for s in stages] == [(n, StageStatus.COMPLETED) for n in done] + [
        (running, StageStatus.STARTED)]
    assert run.current_node == running and run.current_stage_id == stages[-1].id
    node, snapshot = saved_checkpoint(db_url, run.id)
    # history and checkpoint agree: the checkpoint is that of the last completed stage, no further
    assert node == done[-1] and snapshot.next_node == running
    assert snapshot.state == stages[-2].input_snapshot | stages[-2].output_snapshot
    assert [(d.from_node, d.to_node) for d in repo.get_decisions(run.id)] == [
        ("s1", "s2"), ("s2", "s3")][:len(done)]

    out = cli.run("runs", "resume", str(run.id))
    assert out.returncode == 2 and "--force" in out.stderr
    out = None
    if run.lease_expired is False:  # the dead process's lease is live: a forced resume is refused too
        out = cli.run("runs", "resume", str(run.id), "--force", "--json")
        if out.returncode == 0:  # only if the lease ran out while the command started (a loaded machine)
            assert utcnow() >= run.lease_expires_at, out.stdout
        else:
            assert out.returncode == 2 and f"held by {run.owner} (attempt 1) until " in out.stderr, out.stderr
            out = None
    if out is None:
        time.sleep(max(0.0, (run.lease_expires_at - utcnow()).total_seconds()) + 0.2)
        out = cli.run("runs", "resume", str(run.id), "--force", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["result"] == FINAL and doc["attempt"] == 2 and doc["lease_epoch"] == 2  # as if uninterrupted

    stages = repo.get_stages(run.id)
    completed = [s.node_name for s in stages if s.status is StageStatus.COMPLETED]
    assert completed == ["s1", "s2", "s3", "s4"]  # no completed stage twice
    interrupted = [s for s in stages if s.status is StageStatus.FAILED]
    assert [s.node_name for s in interrupted] == [running] and interrupted[0].error_message.startswith("interrupted")
    assert interrupted[0].input_snapshot == snapshot.state  # it keeps the input it had
    assert [(d.from_node, d.to_node) for d in repo.get_decisions(run.id)] == [
        ("s1", "s2"), ("s2", "s3"), ("s3", "s4"), ("s4", None)
    ]
    engine = sa.create_engine(sa.make_url(db_url).set(drivername="postgresql+psycopg")
                              if db_url.startswith("postgresql") else db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM checkpoints")).scalar() == 1
    finally:
        engine.dispose()


def test_run_against_a_missing_or_unreachable_database(cli, tmp_path):
    missing = tmp_path / "nothing.db"
    out = cli.run("run", "steps", url=f"sqlite:///{missing}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"there is no database at {missing}: run `wfkit db upgrade`" in out.stderr
    assert not missing.exists()  # running does not leave an empty database behind
    out = cli.run("run", "steps", url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("Error: cannot use the database at postgresql://nobody@127.0.0.1:1/none")


def test_ctrl_c_between_nodes_keeps_the_completed_node(cli, db_url, tmp_path):
    """Ctrl-C just after s2 completed (before that step was committed): s2 stays completed, with its
    decision and checkpoint, and resume goes on with s3 without running s2 again."""
    proc = cli.start("run", "steps", "-p", "pause_after=s2")
    wait_for(tmp_path / "markers" / "s2-after", proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    run = only_run(db_url)
    assert run.status is RunStatus.CANCELLED
    repo = Repository(db_url)
    assert [(s.node_name, s.status.value) for s in repo.get_stages(run.id)] == [("s1", "completed"), ("s2", "completed")]
    assert [(d.from_node, d.to_node) for d in repo.get_decisions(run.id)] == [("s1", "s2"), ("s2", "s3")]
    assert saved_checkpoint(db_url, run.id)[1].next_node == "s3"
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL
    assert [s.node_name for s in repo.get_stages(run.id)] == ["s1", "s2", "s3", "s4"]


def test_cancel_force_from_the_command_line(cli, db_url, tmp_path):
    proc = cli.start("run", "steps", "-p", "pause_in=s2", "-p", "pause_seconds=30")
    wait_for(tmp_path / "markers" / "s2-in", proc)
    proc.kill()  # the process is gone; the run says running
    proc.communicate(timeout=30)
    run = only_run(db_url)
    assert run.status is RunStatus.RUNNING
    out = cli.run("runs", "cancel", str(run.id), "--force", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "cancelled"
    out = cli.run("runs", "resume", str(run.id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["result"] == FINAL
