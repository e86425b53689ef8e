"""The HTTP API with ``--dispatch workers``: runs and resumes handed to real ``wfkit worker``
processes (PostgreSQL)."""

from __future__ import annotations

import pytest

from servers import serve  # noqa: F401 (fixtures)
from wfkit.store import queue
from workerpool import LEASE, workers  # noqa: F401 (fixtures)

UNINTERRUPTED = {"count": 4, "log": ["s1:0", "s2:1", "s3:2", "s4:3"]}


def test_the_api_dispatches_to_the_workers_when_told(workers, serve, tmp_path):
    server = serve(workers.url, "--dispatch", "workers", env={"WFKIT_LEASE_SECONDS": LEASE})
    made = server.client.post("/workflows/steps/runs", json={"params": {"fail_in": "s3"}},
                              headers={"Idempotency-Key": "order-7"})
    assert made.status_code == 202, made.text
    run = made.json()
    assert run["status"] == "pending" and run["owner"] is None
    again = server.client.post("/workflows/steps/runs", json={"params": {"fail_in": "s3"}},
                               headers={"Idempotency-Key": "order-7"})
    assert again.json()["id"] == run["id"]
    assert queue.jobs_of(workers.url, run["id"]) == [(queue.EXECUTE_TASK, "wfkit", "todo")]
    proc = workers.start("api-worker")
    (failed,) = workers.ended(run["id"])
    assert failed.status.value == "failed" and failed.owner.startswith("api-worker on ")
    refused = server.client.post(f"/workflows/runs/{run['id']}/resume?force=true")
    assert refused.status_code == 400 and "resume without force" in refused.json()["detail"]
    resumed = server.client.post(f"/workflows/runs/{run['id']}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "pending", resumed.text
    (done,) = workers.wait(lambda: (r := workers.run(run["id"])).status.value == "completed" and [r])
    assert done.result == UNINTERRUPTED
    # `execute` streams a run a worker executes, from the database
    with server.client.stream("POST", "/workflows/steps/execute", json={"params": {}}) as stream:
        assert stream.status_code == 200
        text = "".join(stream.iter_text())
    assert text.count("event: stage.complete") == 4 and "event: complete" in text, text
    executed = stream.headers["X-Run-ID"]
    assert workers.run(executed).owner.startswith("api-worker on ")
    workers.stop(proc)
    code, err = server.stop()
    assert code == -15 and "Application shutdown complete" in err, err  # uvicorn's way after SIGTERM


def test_the_api_refuses_workers_dispatch_on_sqlite(sqlite_url):
    from wfkit.api import create_app
    from wfkit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="^workers need PostgreSQL"):
        create_app(sqlite_url, dispatch="workers")
    with pytest.raises(ConfigurationError, match="unknown dispatch 'threads': expected one of in-process, workers"):
        create_app(sqlite_url, dispatch="threads")
