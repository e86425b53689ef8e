"""``wfkit serve`` as an operator meets it: tokens, shutdown with runs in flight, a database that is
down or not migrated; and the router as a service mounts it (FastAPI's TestClient, in process)."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from typing import Any

import httpx

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient
from servers import WFKIT, cli_error, events, finished, problem, serve  # noqa: F401 (fixtures)

from conftest import WfkitCli
from wfkit.registry import Registry
from wfkit.store.repository import Repository


def test_binding_beyond_this_machine_needs_a_token(wfkit_cli, db_url):
    out = wfkit_cli.run("serve", "--host", "0.0.0.0", "--port", "0", url=db_url)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    message = cli_error(out)
    assert message.startswith("--host 0.0.0.0 lets other machines reach this server: give a token")
    assert "--token" in message and "WFKIT_API_TOKEN" in message
    out = wfkit_cli.run("serve", "--host", "0.0.0.0", "--port", "0", url=db_url, env={"WFKIT_API_TOKEN": " "})
    assert out.returncode == 2  # a blank token is none


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_token_is_asked_for_and_accepted(serve, db_url, how):
    secret = uuid.uuid4().hex
    server = (serve(db_url, "--host", "0.0.0.0", "--token", secret) if how == "option"
              else serve(db_url, "--host", "0.0.0.0", env={"WFKIT_API_TOKEN": secret}))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": secret}):
        body = problem(server.client.get("/workflows/runs", headers=headers), 401)
        assert "Authorization: Bearer" in body["detail"]
    refused = server.client.post("/workflows/steps/runs", json={})
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    problem(server.client.delete("/workflows/runs", params={"older_than": "1s"}), 401)  # a prune too
    assert Repository(db_url).list_runs().total == 0  # nothing ran
    good = {"Authorization": f"Bearer {secret}"}
    assert server.client.get("/workflows/runs", headers=good).status_code == 200
    # the scheme's name is case-insensitive (RFC 9110); the token is not
    assert server.client.get("/workflows/runs", headers={"Authorization": f"bearer {secret}"}).status_code == 200
    problem(server.client.get("/workflows/runs", headers={"Authorization": f"Bearer {secret.upper()}"}), 401)
    assert server.client.post("/workflows/steps/runs", json={}, headers=good).status_code == 202
    assert server.client.get("/health").status_code == 200  # for load balancers: no secret in it


def test_shutdown_stops_a_background_run_cancelled_and_resumable(serve, steps_cli, db_url):
    server = serve(db_url)
    run = server.client.post("/workflows/steps/runs", json={"params": {"nap": 1}}).json()
    _wait_for_node(server, run["id"], "s2")
    code, err = server.stop(signal.SIGTERM, timeout=30)
    assert code == -15 and "Application shutdown complete" in err, err
    stopped = Repository(db_url).find_run(run["id"])
    # before its next node: s2 ended, nothing was forced
    assert stopped.status.value == "cancelled" and stopped.cancel_reason == "the server executing it stopped"
    stages = Repository(db_url).get_stages(run["id"])
    assert [(s.node_name, s.status.value) for s in stages] == [("s1", "completed"), ("s2", "completed")]
    out = steps_cli.run("runs", "resume", run["id"], "--json")
    assert out.returncode == 0, out.stderr
    assert '"status": "completed"' in out.stdout


def test_shutdown_forces_a_node_that_does_not_return(serve, steps_cli, db_url, tmp_path):
    """A node that holds on past the stop timeout: the server ends anyway; the run is cancelled and
    its node runs again on resume."""
    server = serve(db_url, "--stop-timeout", "1")
    run = server.client.post("/workflows/steps/runs", json={"params": {"pause_in": "s2", "pause_seconds": 120,
                                                                       "pause_until": str(tmp_path / "never")}}).json()
    _wait_for_node(server, run["id"], "s2")
    started = time.monotonic()
    code, err = server.stop(signal.SIGINT, timeout=60)
    assert "Application shutdown complete" in err, err
    assert time.monotonic() - started < 60  # not the node's two minutes
    stopped = Repository(db_url).find_run(run["id"])
    assert stopped.status.value == "cancelled" and "still executing" in stopped.cancel_reason
    out = steps_cli.run("runs", "resume", run["id"], "--json")
    assert out.returncode == 0 and '"s2:1"' in out.stdout, out.stderr


def test_shutdown_ends_open_streams_and_long_polls_once_the_runs_have_stopped(serve, db_url):
    """A client following a run the server executes gets its `complete` (cancelled) when the server
    stops, and a long-poll its answer: neither holds the server up until uvicorn cuts them."""
    server = serve(db_url)
    run = server.client.post("/workflows/steps/runs", json={"params": {"nap": 1}}).json()
    _wait_for_node(server, run["id"], "s1")
    got: dict[str, Any] = {}

    def follow() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            got["events"] = events(client, "GET", f"/workflows/runs/{run['id']}/events")[1]

    def long_poll() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            got["poll"] = client.get(f"/workflows/runs/{run['id']}", params={"wait": 120})

    readers = [threading.Thread(target=follow), threading.Thread(target=long_poll)]
    for reader in readers:
        reader.start()
    _wait_for_node(server, run["id"], "s2")
    code, err = server.stop(signal.SIGTERM, timeout=60)
    for reader in readers:
        reader.join(30)
        assert not reader.is_alive()
    assert code == -15 and "Application shutdown complete" in err, err
    assert "timeout graceful shutdown exceeded" not in err  # the connections ended of themselves
    assert got["events"][-1]["event"] == "complete", got["events"]
    assert got["events"][-1]["data"]["kind"] == "run_cancelled"
    assert got["events"][-1]["data"]["reason"] == "the server executing it stopped"
    assert got["poll"].status_code == 200 and got["poll"].json()["status"] == "cancelled"


def test_with_a_grace_period_a_background_run_finishes(serve, db_url):
    server = serve(db_url, "--grace", "30")
    run = server.client.post("/workflows/steps/runs", json={"params": {"nap": 0.3}}).json()
    _wait_for_node(server, run["id"], "s1")
    code, err = server.stop(signal.SIGTERM, timeout=60)
    assert code == -15, err
    assert Repository(db_url).find_run(run["id"]).status.value == "completed"


def _wait_for_node(server, run_id: str, node: str) -> None:
    deadline = time.monotonic() + 30
    while server.client.get(f"/workflows/runs/{run_id}").json()["current_node"] != node:
        assert time.monotonic() < deadline, f"run never reached {node}"
        time.sleep(0.02)


def test_a_database_that_is_down_or_not_migrated_is_503(serve, databases, new_database, wfkit_cli):
    url = new_database()
    server = serve(url)  # created, never migrated
    body = problem(server.client.get("/health"), 503)
    assert "wfkit db upgrade" in body["detail"]
    assert problem(server.client.get("/workflows/runs"), 503)["detail"] == cli_error(
        wfkit_cli.invoke("runs", "list", url=url))
    wfkit_cli.invoke("db", "upgrade", "0004", url=url)
    assert "revision 0004" in problem(server.client.get("/health"), 503)["detail"]
    wfkit_cli.invoke("db", "upgrade", url=url)
    assert server.client.get("/health").status_code == 200


def test_a_postgresql_server_that_cannot_be_reached_is_503(serve):
    server = serve("postgresql://postgres@127.0.0.1:1/wfkit")
    body = problem(server.client.get("/workflows/runs"), 503)
    assert body["error"] == "DatabaseError" and "127.0.0.1:1" in body["detail"]
    problem(server.client.get("/health"), 503)


# --------------------------------------------------------------------------- in process (TestClient)


def _registry() -> Registry:
    registry = Registry()
    registry.register("one", lambda g, rt, p: (g.add_node("a", lambda s: {"n": 1}), g.set_entry_point("a"),
                                                g.set_finish_point("a"), {})[-1], description="one node")
    return registry


def test_a_service_mounts_the_router_behind_its_own_authentication(db_url):
    from wfkit.api import create_router, install_errors

    def team_only(x_team: str | None = Header(default=None)) -> None:
        if x_team != "ops":
            raise HTTPException(403, "ops only")

    app = FastAPI()
    install_errors(app)
    app.include_router(create_router(db_url, _registry(), dependencies=[Depends(team_only)]), prefix="/wf")
    with TestClient(app) as client:
        assert problem(client.get("/wf/workflows"), 403)["detail"] == "ops only"
        listed = client.get("/wf/workflows", headers={"X-Team": "ops"})
        assert listed.status_code == 200 and [w["name"] for w in listed.json()] == ["one"]
        started = client.post("/wf/workflows/one/runs", json={}, headers={"X-Team": "ops"})
        assert started.status_code == 202 and started.headers["location"] == f"/wf/workflows/runs/{started.json()['id']}"
        done = client.get(started.headers["location"], params={"wait": 30}, headers={"X-Team": "ops"}).json()
        assert done["status"] == "completed" and done["result"] == {"n": 1}


def test_an_unexpected_error_is_500_with_nothing_of_its_internals(db_url, caplog):
    from wfkit.api import create_app

    app = create_app(db_url, _registry())

    @app.get("/boom")
    def boom() -> None:
        raise KeyError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR, "wfkit.api"):
        body = problem(client.get("/boom"), 500)
        assert "secret" not in body["detail"] and body["error"] == "InternalError"
        assert "secret internals" in caplog.text  # the server's log has it, with its traceback
        assert problem(client.get("/nowhere"), 404)["detail"] == "Not Found"
        assert problem(client.delete("/workflows"), 405)


def test_a_full_server_answers_503_at_once_and_an_idempotent_retry_its_run(db_url):
    """Each background run holds a connection: with a pool of 2 (one for requests), a second run is
    refused at once, not after a pool timeout; a retry of the first is answered all the same."""
    from wfkit.api import create_app
    from wfkit.store.db import create_engine

    release = threading.Event()
    registry = Registry()
    registry.register("held", lambda g, rt, p: (g.add_node("a", lambda s: {"n": release.wait(30)}),
                                                 g.set_entry_point("a"), g.set_finish_point("a"), {})[-1])
    engine = create_engine(db_url, pool_size=2, max_overflow=0)
    try:
        with TestClient(create_app(engine, registry), raise_server_exceptions=False) as client:
            first = client.post("/workflows/held/runs", json={}, headers={"Idempotency-Key": "first"})
            assert first.status_code == 202
            started = time.monotonic()
            body = problem(client.post("/workflows/held/runs", json={}), 503)
            assert time.monotonic() - started < 10  # at once: not the pool's 30 s timeout
            assert body["error"] == "ServerBusyError" and "executes 1 runs already" in body["detail"]
            problem(client.post("/workflows/held/execute", json={}), 503)
            again = client.post("/workflows/held/runs", json={}, headers={"Idempotency-Key": "first"})
            assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
            assert client.get("/workflows/runs").json()["total"] == 1  # nothing else was made
            release.set()
            assert client.get(f"/workflows/runs/{first.json()['id']}", params={"wait": 30}).json()["status"] == \
                "completed"
            deadline = time.monotonic() + 30
            while (second := client.post("/workflows/held/runs", json={})).status_code == 503:
                assert time.monotonic() < deadline  # the slot comes back once the run's thread is done
                time.sleep(0.05)
            assert second.status_code == 202
    finally:
        release.set()
        engine.dispose()


def test_a_factory_that_fails_on_its_params_is_400_with_its_message(db_url):
    from factories import picky_registry
    from wfkit.api import create_app

    with TestClient(create_app(db_url, picky_registry()), raise_server_exceptions=False) as client:
        for response in (client.post("/workflows/picky/runs", json={"params": {"bad": True}}),
                         client.post("/workflows/picky/execute", json={"params": {"bad": True}}),
                         client.get("/workflows/picky/graph", params={"params": '{"bad": true}'})):
            body = problem(response, 400)
            assert body["error"] == "WorkflowBuildError"
            assert body["detail"] == "the factory of workflow 'picky' raised ValueError: bad must be false"
        assert client.get("/workflows/runs").json()["total"] == 0


def test_the_database_work_of_requests_is_limited_to_the_pool(db_url):
    from wfkit.api.service import MAX_THREADS, Service

    service = Service(db_url, _registry())
    try:
        pool = service.executor.engine.pool
        assert 1 <= service.limiter.total_tokens <= min(MAX_THREADS, pool.size() + pool._max_overflow)
    finally:
        service.close()


def test_the_api_needs_its_extra_and_says_how_to_install_it(wfkit_cli):
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from wfkit.api import create_app\n"
            "try:\n    create_app()\nexcept Exception as err:\n    print(type(err).__name__, err)")
    out = wfkit_cli.python("-c", code.replace("sys.modules['fastapi'] = None", "import importlib.util as u; "
                                              "u.find_spec = lambda name, *a: None"))
    assert out.stdout.strip() == ("ConfigurationError the HTTP API needs FastAPI and uvicorn, which are not installed: "
                                  "pip install 'wfkit[api]'"), out.stderr


def test_importing_the_api_package_stays_light(wfkit_cli):
    out = wfkit_cli.python("-c", "import sys, wfkit.api; print(sorted(m for m in ('fastapi', 'sqlalchemy', "
                                 "'pydantic') if m in sys.modules))")
    assert out.stdout.strip() == "[]", out.stderr
