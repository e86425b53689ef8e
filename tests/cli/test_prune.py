"""``wfkit runs prune``: the real command line in subprocesses, on both engines."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from factories import add, add_history, count, make_run
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, utcnow
from wfkit.store.repository import Repository

FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def _run(days_ago: float, status: RunStatus, workflow: str = "alpha"):
    created = utcnow() - timedelta(days=days_ago)
    ended = created + timedelta(minutes=1) if status in FINISHED else None
    return make_run(workflow_name=workflow, status=status, created_at=created, completed_at=ended,
                    updated_at=ended or created)


@pytest.fixture
def aged(engine):
    """Of each status, in workflows alpha and beta: a run 40 days old and one 5 days old; each with
    a history."""
    runs = {(wf, status, days): _run(days, status, wf)
            for wf in ("alpha", "beta") for status in RunStatus for days in (40, 5)}
    add(engine, *runs.values())
    for run in runs.values():
        add_history(engine, run, ["a", "b"])
    return runs


def _left(engine) -> set:
    return {run.id for run in Repository(engine).list_runs(page_size=100).data}


def assert_one_line_error(out, text: str) -> None:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == ""
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: ") and text in line, line


def test_prune_deletes_old_finished_runs_with_their_history(wfkit_cli, db_url, engine, aged):
    out = wfkit_cli.run("runs", "prune", "--older-than", "30d", url=db_url)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"deleted 6 completed, failed, cancelled runs that ended before "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, in 1 batch \(\d+\.\d s\)\n", out.stdout), out.stdout
    assert re.fullmatch(r"deleted 6 runs so far \(1 batch, \d+\.\d s\)\n", out.stderr), out.stderr
    gone = {run.id for (_, status, days), run in aged.items() if days == 40 and status in FINISHED}
    assert _left(engine) == {run.id for run in aged.values()} - gone
    assert (count(engine, Run), count(engine, Stage), count(engine, Decision), count(engine, Checkpoint)) == (
        14, 28, 14, 14)


def test_dry_run_as_json_deletes_nothing(wfkit_cli, db_url, engine, aged):
    out = wfkit_cli.run("runs", "prune", "--older-than", "30d", "--dry-run", "--json", url=db_url)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["deleted"] == 6 and doc["dry_run"] is True and doc["batches"] == 0
    assert doc["statuses"] == ["completed", "failed", "cancelled"] and doc["workflow_names"] == []
    assert doc["cutoff"].endswith("Z") and out.stderr == ""
    assert count(engine, Run) == 20 and count(engine, Stage) == 40
    text = wfkit_cli.run("runs", "prune", "--older-than", "30d", "--dry-run", url=db_url)
    assert text.stdout.startswith("would delete 6 completed, failed, cancelled runs that ended before ")
    assert text.stdout.endswith(" (dry run: nothing deleted)\n")


def test_filters_repeat_or_comma_separate(wfkit_cli, db_url, engine, aged):
    out = wfkit_cli.run("runs", "prune", "--older-than", "720h", "--status", "failed", "--status", "cancelled",
                        "--workflow", "beta,gamma", "--json", url=db_url)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["deleted"], doc["statuses"], doc["workflow_names"]) == (2, ["failed", "cancelled"], ["beta", "gamma"])
    gone = {aged["beta", RunStatus.FAILED, 40].id, aged["beta", RunStatus.CANCELLED, 40].id}
    assert _left(engine) == {run.id for run in aged.values()} - gone
    text = wfkit_cli.run("runs", "prune", "--older-than", "30d", "--status", "completed", "--workflow", "alpha",
                         url=db_url)
    assert text.stdout.startswith("deleted 1 completed runs of alpha that ended before ")


def test_batches_print_progress_to_stderr(wfkit_cli, db_url, engine, aged):
    out = wfkit_cli.run("runs", "prune", "--older-than", "2w", "--batch-size", "4", url=db_url)
    assert out.returncode == 0, out.stderr
    assert ", in 2 batches (" in out.stdout and out.stdout.startswith("deleted 6 ")
    assert out.stderr.startswith("deleted 4 runs so far (1 batch, ")  # the first at once, then once a second
    assert count(engine, Run) == 14


@pytest.mark.parametrize("args, message", [
    ((), "Missing option '--older-than'"),
    (("--older-than", "30"), "Invalid value for '--older-than': '30' is not a duration: give a whole number and "
                             "a unit: 45s, 90m, 12h, 30d or 2w"),
    (("--older-than", "0d"), "Invalid value for '--older-than': '0d' must be more than zero"),
    (("--older-than", "3 months"), "'3 months' is not a duration"),
    (("--older-than", "30d", "--status", "running"), "runs that have not ended are never pruned: status running is "
                                                     "not allowed; give any of completed, failed, cancelled"),
    (("--older-than", "30d", "--status", "completed,pending"), "status pending is not allowed"),
    (("--older-than", "30d", "--status", "done"), "unknown status 'done': allowed values are"),
    (("--older-than", "30d", "--status", ""), "Invalid value for '--status': is empty"),
    (("--older-than", "30d", "--batch-size", "0"), "Invalid value for '--batch-size'"),
])
def test_bad_input_is_one_line_exit_2_and_deletes_nothing(wfkit_cli, db_url, engine, aged, args, message):
    out = wfkit_cli.run("runs", "prune", *args, url=db_url)
    assert_one_line_error(out, message)
    assert count(engine, Run) == 20 and count(engine, Stage) == 40
