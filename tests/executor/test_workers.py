"""Workers on many machines: real ``wfkit worker`` processes sharing one PostgreSQL database, killed,
stopped, signalled; short leases and recovery intervals so that takeovers happen within seconds.

The fixture plugin ``steps`` (s1 -> s2 -> s3 -> s4) gives slow nodes (``nap``), pauses inside a node
(``pause_in``), async nodes, and a log of every node execution (``keys_to``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from wfkit.store import queue
from wfkit.store.workers import list_workers
from wfkit.store.repository import Repository

from workerpool import FINAL, LEASE, Workers, workers  # noqa: F401 (fixtures)


def _executions(path: Path) -> list[str]:
    """The nodes a run executed (each time one began its work), from its ``keys_to`` file."""
    if not path.exists():
        return []
    return [json.loads(line)["node"] for line in path.read_text().splitlines() if line.strip()]


def _completed(workers: Workers, run_id: str) -> list[tuple[str, int]]:
    return [(s.node_name, s.iteration) for s in workers.repo.get_stages(run_id) if s.status.value == "completed"]


UNINTERRUPTED = {"count": 4, "log": ["s1:0", "s2:1", "s3:2", "s4:3"]}


def test_runs_submitted_to_three_workers_all_complete_spread_over_them(workers):
    procs = [workers.start(f"w{i}") for i in range(3)]
    workers.wait(lambda: len(list_workers(workers.repo.engine, silent_seconds=60)) == 3)
    run_ids = [workers.submit(nap=0.05) for _ in range(12)]
    runs = workers.ended(*run_ids, seconds=60)
    assert {run.status.value for run in runs} == {"completed"}
    assert all(run.result == UNINTERRUPTED for run in runs)
    holders = Counter(run.owner.split(" on ")[0] for run in runs)
    assert len(holders) > 1, holders
    # the same result as the run executed here
    here = workers.cli.run("run", "steps", "--json", url=workers.url)
    assert json.loads(here.stdout)["result"] == UNINTERRUPTED
    for proc in procs:
        out, _err = workers.stop(proc)
        assert proc.returncode == 0 and "stopped" in out


def test_a_worker_killed_mid_node_has_its_run_completed_by_another(workers, tmp_path):
    rng = random.Random(os.environ.get("PYTEST_XDIST_WORKER", "") + str(time.time_ns()))
    for round_ in range(3):  # random kill times, bounded
        keys = tmp_path / f"keys-{round_}"
        run_id = workers.submit(nap=0.3, keys_to=str(keys))
        first = workers.start(f"doomed{round_}")
        strike = rng.randint(1, 3)  # after this many nodes began, plus a random part of the next nap
        workers.wait(lambda: len(_executions(keys)) >= strike)
        time.sleep(rng.uniform(0, 0.3))
        first.kill()
        first.communicate(timeout=30)
        killed_at = time.monotonic()
        second = workers.start(f"heir{round_}")
        (run,) = workers.ended(run_id)
        took = time.monotonic() - killed_at
        workers.stop(second)
        assert run.status.value == "completed" and run.result == UNINTERRUPTED, run
        assert run.owner.startswith(f"heir{round_} on ") and run.attempt == 2
        completed = _completed(workers, run_id)
        assert sorted(completed) == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]  # none twice
        # the stage the killed worker left is the first attempt's; what the heir ran, the second's
        stages = workers.repo.get_stages(run_id)
        assert {s.attempt for s in stages if s.status.value == "failed"} <= {1}
        assert stages[-1].attempt == 2 and {s.attempt for s in stages} <= {1, 2}
        ran = Counter(_executions(keys))
        assert max(ran.values()) <= 2 and sum(ran.values()) <= 5, ran  # only the interrupted node again
        assert took < 30
    # the dead workers' registrations and the jobs they left 'doing' are cleaned up once they have been
    # silent long enough (five minutes by default; none here)
    left = [w.name for w in list_workers(workers.repo.engine, silent_seconds=60)]
    assert sorted(left) == ["doomed0", "doomed1", "doomed2"]
    done = queue.recover(workers.repo.engine, max_attempts=5, dead_seconds=0)
    assert done is not None and done.jobs_closed == 3 and done.redispatched == done.given_up == []
    assert list_workers(workers.repo.engine, silent_seconds=60) == []
    with workers.repo.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT status::text FROM procrastinate_jobs").scalars().all() == ["failed"] * 3


def test_one_worker_recovers_at_a_time(pg_url):
    from wfkit.store.db import create_engine

    engine = create_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (queue._RECOVERY_KEY,))
            assert queue.recover(engine, max_attempts=5, dead_seconds=300) is None  # another holds it
        assert queue.recover(engine, max_attempts=5, dead_seconds=300) == queue.Recovery()
    finally:
        engine.dispose()


def test_a_stopped_worker_past_its_lease_writes_nothing_and_serves_on(workers, tmp_path):
    keys = tmp_path / "keys"
    release = tmp_path / "release"
    run_id = workers.submit(pause_in="s2", pause_seconds=30, pause_until=str(release), keys_to=str(keys))
    stale = workers.start("stale")
    workers.wait(lambda: (workers.markers / "s2-in").exists())
    stale.send_signal(signal.SIGSTOP)
    try:
        other = workers.start("other")
        (run,) = workers.ended(run_id)
        assert run.status.value == "completed" and run.owner.startswith("other on ")
        workers.stop(other)
    finally:
        release.touch()  # the stale worker's node would end now
        stale.send_signal(signal.SIGCONT)
    before = [(s.id, s.status.value) for s in workers.repo.get_stages(run_id)]
    # the stale worker finishes its node, its write is fenced off: nothing changes
    workers.wait(lambda: _executions(keys).count("s2") == 2)
    time.sleep(1.5)
    assert [(s.id, s.status.value) for s in workers.repo.get_stages(run_id)] == before
    assert workers.run(run_id).result == UNINTERRUPTED
    # and it goes on serving other jobs
    next_id = workers.submit()
    (done,) = workers.ended(next_id)
    assert done.status.value == "completed" and done.owner.startswith("stale on ")
    out, _err = workers.stop(stale)
    assert f"run {run_id} was taken over by another process" in out, out


def test_a_queued_run_is_cancelled_with_its_job(workers):
    run_id = workers.submit()
    assert queue.jobs_of(workers.url, run_id) == [(queue.EXECUTE_TASK, "wfkit", "todo")]
    out = workers.wfkit("runs", "cancel", run_id)
    assert out.returncode == 0, out.stderr
    assert workers.run(run_id).status.value == "cancelled"
    assert queue.jobs_of(workers.url, run_id) == [(queue.EXECUTE_TASK, "wfkit", "cancelled")]


@pytest.mark.parametrize("async_nodes", [False, True], ids=["sync node", "async node"])
def test_a_running_run_is_cancelled_wherever_it_runs(workers, async_nodes):
    proc = workers.start("w")
    run_id = workers.submit(pause_in="s2", pause_seconds=20, async_nodes=async_nodes,
                            **({} if async_nodes else {"pause_until": str(workers.markers / "go")}))
    workers.wait(lambda: (workers.markers / "s2-in").exists())
    out = workers.wfkit("runs", "cancel", run_id)
    assert out.returncode == 0, out.stderr
    if not async_nodes:
        # a sync node cannot be interrupted: it finishes (here: at once), and the run stops before s3
        (workers.markers / "go").touch()
    (run,) = workers.ended(run_id, seconds=10)  # an async node is cancelled, well before its 20 s pause
    assert run.status.value == "cancelled"
    assert run.cancel_reason.startswith("cancel requested with `wfkit runs cancel` by")
    stages = {(s.node_name, s.status.value) for s in workers.repo.get_stages(run_id)}
    assert ("s3", "completed") not in stages
    assert ("s2", "failed" if async_nodes else "completed") in stages
    # its job ended with it (a job that succeeded is deleted): none waits, none is held
    assert not [job for job in queue.jobs_of(workers.url, run_id) if job[2] in ("todo", "doing")]
    workers.stop(proc)


def test_sigterm_hands_the_run_in_flight_to_another_worker(workers, tmp_path):
    keys = tmp_path / "keys"
    out = workers.wfkit("submit", "steps", "--queue", "special", "--params-json",
                        json.dumps({"nap": 0.4, "keys_to": str(keys)}))
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip()
    with workers.repo.engine.begin() as conn:  # as if the recovery had handed it on twice already
        conn.exec_driver_sql("UPDATE procrastinate_jobs SET args = args || '{\"recoveries\": 2}'")
    first = workers.start("first")
    workers.wait(lambda: "s2" in _executions(keys))
    out, _err = workers.stop(first)
    assert first.returncode == 0
    assert f"handed run {run_id} back to the queue" in out, out
    run = workers.run(run_id)
    assert run.status.value == "pending" and run.owner is None
    # its new job: in the queue it came from, with the recoveries it had (a hand-back is not one)
    assert queue.jobs_of(workers.url, run_id)[-1] == (queue.EXECUTE_TASK, "special", "todo")
    with workers.repo.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT args->>'recoveries' FROM procrastinate_jobs WHERE status = 'todo'"
                                    ).scalar_one() == "2"
    done = _completed(workers, run_id)
    assert done and done[-1] == ("s2", 1)  # the node in flight finished first
    second = workers.start("second")
    (run,) = workers.ended(run_id)
    workers.stop(second)
    assert run.status.value == "completed" and run.result == UNINTERRUPTED
    assert sorted(_completed(workers, run_id)) == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]
    assert Counter(_executions(keys)) == {"s1": 1, "s2": 1, "s3": 1, "s4": 1}


def test_a_second_signal_exits_at_once_and_the_run_is_recovered(workers):
    run_id = workers.submit(pause_in="s2", pause_seconds=30, pause_until=str(workers.markers / "go"))
    first = workers.start("first")
    workers.wait(lambda: (workers.markers / "s2-in").exists())
    first.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    first.send_signal(signal.SIGTERM)
    out, _err = first.communicate(timeout=10)
    assert first.returncode == 1 and "exits now" in out
    assert workers.run(run_id).status.value == "running"
    (workers.markers / "go").touch()
    second = workers.start("second")
    (run,) = workers.ended(run_id)
    workers.stop(second)
    assert run.status.value == "completed" and run.attempt == 2


def test_a_run_whose_attempts_are_used_up_fails_saying_so(workers):
    run_id = workers.submit(pause_in="s2", pause_seconds=30)
    first = workers.start("first", WFKIT_MAX_ATTEMPTS="1")
    workers.wait(lambda: (workers.markers / "s2-in").exists())
    first.kill()
    first.communicate(timeout=30)
    second = workers.start("second", WFKIT_MAX_ATTEMPTS="1")
    (run,) = workers.ended(run_id)
    out, _err = workers.stop(second)
    assert run.status.value == "failed"
    assert run.error_message.startswith("gave up after 1 attempts: the worker executing it stopped each time "
                                        "(WFKIT_MAX_ATTEMPTS=1)")
    assert f"run {run_id} failed: its attempts are used up" in out
    (stage,) = [s for s in workers.repo.get_stages(run_id) if s.node_name == "s2"]
    assert stage.status.value == "failed" and "interrupted" in stage.error_message


def test_a_resume_submitted_to_the_workers(workers):
    proc = workers.start("w")
    run_id = workers.submit(fail_in="s3")
    (run,) = workers.ended(run_id)
    assert run.status.value == "failed"
    out = workers.wfkit("runs", "resume", run_id, "--submit")
    assert out.returncode == 0 and out.stdout.strip() == run_id, out.stderr
    (run,) = workers.wait(lambda: (r := workers.run(run_id)).status.value == "completed" and [r])
    workers.stop(proc)
    assert run.result == UNINTERRUPTED and run.attempt == 2
    assert sorted(_completed(workers, run_id)) == [("s1", 1), ("s2", 1), ("s3", 1), ("s4", 1)]
    again = workers.wfkit("runs", "resume", run_id, "--submit")
    assert again.returncode != 0 and "completed" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_workers_lists_the_live_workers_and_runs_list_who_holds_a_run(workers):
    proc = workers.start("lister", "--json-logs", "--concurrency", "2")
    run_id = workers.submit(pause_in="s2", pause_seconds=20, pause_until=str(workers.markers / "go"))
    workers.wait(lambda: (workers.markers / "s2-in").exists())
    (listed,) = json.loads(workers.wfkit("workers", "--json").stdout)
    assert listed["name"] == "lister" and listed["pid"] == proc.pid and listed["alive"] is True
    assert listed["runs"] == 1 and listed["concurrency"] == 2 and listed["queues"] == []
    assert workers.run(run_id).owner == listed["id"]
    table = workers.wfkit("workers").stdout
    assert table.splitlines()[0].split() == ["NAME", "HOST", "PID", "STATE", "LAST", "HEARTBEAT", "RUNS", "QUEUES"]
    assert "lister" in table and "live" in table
    listing = workers.wfkit("runs", "list").stdout
    assert "HELD BY" in listing and listed["id"] in listing
    (workers.markers / "go").touch()
    workers.ended(run_id)
    out, _err = workers.stop(proc)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["worker_started", "run_started", "run_ended", "worker_stopping",
                                            "worker_stopped"]
    assert events[2]["run_id"] == run_id and events[2]["status"] == "completed"
    assert all(e["worker"] == listed["id"] for e in events)
    assert json.loads(workers.wfkit("workers", "--json").stdout) == []


def test_workers_on_sqlite_refuses_in_one_line(sqlite_url, wfkit_cli):
    out = wfkit_cli.run("workers", url=sqlite_url)
    assert out.returncode == 2 and out.stderr.startswith("Error: workers need PostgreSQL")
    out = wfkit_cli.run("runs", "resume", "01a23d92-9c6a-7181-94ba-71bb8d8f2e02", "--submit", url=sqlite_url)
    assert out.returncode == 2 and out.stderr.startswith("Error: workers need PostgreSQL"), out.stderr



def test_a_worker_without_the_workflow_fails_the_run_saying_so(workers):
    run_id = workers.submit()
    bare = workers.start("bare", PYTHONPATH="", WFKIT_LOAD_PLUGINS="samples")  # the steps plugin is not here
    (run,) = workers.ended(run_id)
    out, _err = workers.stop(bare)
    assert run.status.value == "failed" and run.owner.startswith("bare on ")
    assert "no workflow" in run.error_message.lower() and "install its plugin on every worker" in run.error_message
    assert f"run {run_id} not executed: " in out
    assert queue.jobs_of(workers.url, run_id) == [(queue.EXECUTE_TASK, "wfkit", "failed")]
