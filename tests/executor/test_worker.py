"""``wfkit worker``: real worker processes executing runs submitted to the queue (PostgreSQL)."""

from __future__ import annotations

import signal
import subprocess
import time

from conftest import WFKIT, WfkitCli
from wfkit.store.repository import Repository


def _ended(url: str, run_ids: list[str], seconds: float = 60) -> list[object]:
    repo = Repository(url)
    try:
        deadline = time.monotonic() + seconds
        while True:
            runs = [repo.find_run(run_id) for run_id in run_ids]
            if all(run.status.value in ("completed", "failed", "cancelled") for run in runs):
                return runs
            assert time.monotonic() < deadline, [run.status.value for run in runs]
            time.sleep(0.1)
    finally:
        repo.close()


def _worker(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([WFKIT, "worker", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=WfkitCli().environ(url))


def test_a_worker_executes_submitted_runs_as_they_would_run_here(pg_url, wfkit_cli):
    submitted = []
    for text in ("one two two", "a b"):
        out = wfkit_cli.run("submit", "text-pipeline", "-p", f"text={text}", url=pg_url)
        assert out.returncode == 0, out.stderr
        submitted.append(out.stdout.strip())
    other_queue = wfkit_cli.run("submit", "text-pipeline", "-p", "text=x", "--queue", "elsewhere", url=pg_url)
    worker = _worker(pg_url, "--queue", "wfkit", "--concurrency", "2", "--name", "w1")
    try:
        runs = _ended(pg_url, submitted)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=60)
    assert [run.status.value for run in runs] == ["completed", "completed"]
    for run_id in submitted:
        assert f"started run {run_id} of text-pipeline" in out and f"ended run {run_id}: completed" in out, out
    # the same result as a run executed here
    here = wfkit_cli.run("run", "text-pipeline", "-p", "text=one two two", "--json", url=pg_url)
    import json

    assert runs[0].result == json.loads(here.stdout)["result"]
    # a queue the worker does not serve is left waiting
    assert Repository(pg_url).find_run(other_queue.stdout.strip()).status.value == "pending"


def test_a_run_cancelled_before_a_worker_takes_it_is_not_started(pg_url, wfkit_cli):
    run_id = wfkit_cli.run("submit", "text-pipeline", "-p", "text=x", url=pg_url).stdout.strip()
    assert wfkit_cli.run("runs", "cancel", run_id, url=pg_url).returncode == 0
    done = wfkit_cli.run("submit", "text-pipeline", "-p", "text=y", url=pg_url).stdout.strip()
    worker = _worker(pg_url)
    try:
        _ended(pg_url, [done])
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _err = worker.communicate(timeout=60)
    run = Repository(pg_url).find_run(run_id)
    assert run.status.value == "cancelled" and run.attempt == 0 and run_id not in out


def test_a_worker_refuses_sqlite_in_one_line(sqlite_url, wfkit_cli):
    out = wfkit_cli.run("worker", url=sqlite_url)
    assert out.returncode == 2 and out.stderr.startswith("Error: workers need PostgreSQL")
    assert len(out.stderr.strip().splitlines()) == 1
