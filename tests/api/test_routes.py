"""Every route of the HTTP API on SQLite and PostgreSQL, through a real ``wfkit serve`` process."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from servers import MISSING, Server, api, cli, cli_error, finished, problem  # noqa: F401 (fixtures)


# --------------------------------------------------------------------------- workflows


def test_workflows_are_those_the_command_line_lists(api, cli):
    response = api.client.get("/workflows")
    assert response.status_code == 200
    assert response.json() == json.loads(cli.run("list-workflows", "--json").stdout)
    assert {w["name"] for w in response.json()} == {"branching", "review-loop", "rounds", "steps",
                                                        "text-pipeline", "unbuildable"}


def test_a_workflow_with_its_params_schema_and_graph(api, cli):
    review = api.client.get("/workflows/review-loop").json()
    assert review["name"] == "review-loop" and review["plugin"] == "samples"
    assert review["params_schema"]["properties"]["max_rounds"]["maximum"] == 50
    assert api.client.get("/workflows/steps").json()["params_schema"] is None  # it declares no model
    graph = api.client.get("/workflows/review-loop/graph").json()
    assert graph["graph"] == json.loads(cli.run("graph", "review-loop", "--json").stdout)
    assert graph["mermaid"].rstrip("\n") == cli.run("graph", "review-loop").stdout.rstrip("\n")
    express = api.client.get("/workflows/branching/graph", params={"params": '{"priority": "express"}'})
    assert express.status_code == 200
    detail = problem(api.client.get("/workflows/branching/graph", params={"params": "[1]"}), 400)["detail"]
    assert detail == "params must be one JSON object, got list"


def test_an_unknown_workflow_is_404_everywhere(api, cli):
    message = cli_error(cli.run("graph", "nosuch"))
    for method, path in (("GET", "/workflows/nosuch"), ("GET", "/workflows/nosuch/graph"),
                         ("POST", "/workflows/nosuch/runs"), ("POST", "/workflows/nosuch/execute")):
        body = problem(api.client.request(method, path, json={"params": {}}), 404)
        assert body["detail"] == message and body["error"] == "WorkflowNotFoundError", (method, path)


# --------------------------------------------------------------------------- runs in the background


def test_a_run_in_the_background(api):
    response = api.client.post("/workflows/text-pipeline/runs", json={"params": {"text": "b a b"}})
    assert response.status_code == 202
    run = response.json()
    assert response.headers["location"] == f"/workflows/runs/{run['id']}"
    assert run["workflow_name"] == "text-pipeline" and run["status"] in ("pending", "running", "completed")
    done = finished(api, run["id"])
    assert done["status"] == "completed" and done["result"]["counts"] == {"a": 1, "b": 2}
    stages = api.client.get(f"/workflows/runs/{run['id']}/stages").json()
    assert [s["node_name"] for s in stages] == ["normalize", "tokenize", "count", "summarize"]
    assert stages[1]["input_snapshot"] == {"text": "b a b"}  # whole snapshots, as the repository gives
    decisions = api.client.get(f"/workflows/runs/{run['id']}/decisions").json()
    assert [(d["from_node"], d["to_node"]) for d in decisions] == [
        ("normalize", "tokenize"), ("tokenize", "count"), ("count", "summarize"), ("summarize", None)]
    assert api.client.get(f"/workflows/runs/{run['id']}").json() == done


def test_bad_params_are_400_with_the_command_lines_message(api, cli):
    body = problem(api.client.post("/workflows/review-loop/runs", json={"params": {"max_rounds": 99}}), 400)
    assert body["error"] == "InvalidParamsError"
    assert body["detail"] == cli_error(cli.run("run", "review-loop", "-p", "max_rounds=99"))
    body = problem(api.client.post("/workflows/review-loop/execute", json={"params": {"nope": 1}}), 400)
    assert "nope" in body["detail"]
    # not JSON, or params that are not an object: the request's own validation, in the same shape
    problem(api.client.post("/workflows/steps/runs", content=b"{", headers={"content-type": "application/json"}), 400)
    assert "params" in problem(api.client.post("/workflows/steps/runs", json={"params": [1]}), 400)["detail"]


def test_an_idempotency_key_makes_a_retry_return_the_same_run(api):
    key = f"order-{uuid.uuid4()}"
    first = api.client.post("/workflows/text-pipeline/runs", json={"params": {"text": "x"}},
                            headers={"Idempotency-Key": key})
    again = api.client.post("/workflows/text-pipeline/runs", json={"params": {"text": "x"}},
                            headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"] and first.json()["idempotency_key"] == key
    body = problem(api.client.post("/workflows/text-pipeline/runs", json={"params": {"text": "y"}},
                                   headers={"Idempotency-Key": key}), 409)
    assert body["error"] == "ConflictError" and first.json()["id"] in body["detail"]
    listed = api.client.get("/workflows/runs", params={"page_size": 100, "workflow_name": "text-pipeline"}).json()
    assert sum(run.get("idempotency_key") == key for run in listed["data"]) == 1  # one run was made
    finished(api, first.json()["id"])
    # a key sent as UTF-8 is stored as the text it is (HTTP hands headers over as Latin-1)
    key = f"commande-é-{uuid.uuid4()}"
    accented = api.client.post("/workflows/text-pipeline/runs", json={}, headers={"Idempotency-Key": key.encode()})
    assert accented.status_code == 202 and accented.json()["idempotency_key"] == key
    finished(api, accented.json()["id"])
    too_long = api.client.post("/workflows/text-pipeline/runs", headers={"Idempotency-Key": "k" * 201})
    assert "idempotency key must be text of 1 to 200 characters" in problem(too_long, 400)["detail"]


def test_long_poll_waits_for_the_end_or_the_time(api):
    until = api.markers / f"release-{uuid.uuid4().hex}"
    # (a node pauses once per server: the markers are the server's; the other test pauses in s2)
    run = api.client.post("/workflows/steps/runs", json={"params": {"pause_in": "s3", "pause_until": str(until),
                                                                    "pause_seconds": 60}}).json()
    started = time.monotonic()
    still = api.client.get(f"/workflows/runs/{run['id']}", params={"wait": 0.5})
    assert still.status_code == 200 and still.json()["status"] == "running"
    assert time.monotonic() - started >= 0.5
    until.touch()
    assert finished(api, run["id"])["status"] == "completed"
    detail = problem(api.client.get(f"/workflows/runs/{run['id']}", params={"wait": -1}), 400)["detail"]
    assert detail.startswith("wait: ")
    for value in ("nan", "inf"):
        detail = problem(api.client.get(f"/workflows/runs/{run['id']}", params={"wait": value}), 400)["detail"]
        assert detail == "wait: Input should be a finite number"


# --------------------------------------------------------------------------- listing


def test_listing_pages_filters_links_and_fields(api, cli):
    ids = [api.client.post("/workflows/branching/runs", json={"params": {"items": i}}).json()["id"]
           for i in range(1, 6)]
    for run_id in ids:
        finished(api, run_id)
    page = api.client.get("/workflows/runs", params={"workflow_name": "branching", "page_size": 2, "page": 2})
    assert page.status_code == 200
    body = page.json()
    assert (body["page"], body["page_size"]) == (2, 2) and body["total"] >= 5
    assert body["total_pages"] == -(-body["total"] // 2)
    assert all("params" not in run and "result" not in run for run in body["data"])  # a summary, as the CLI's
    links = {part.split('rel="')[1].rstrip('"'): part.split(">")[0].lstrip("<")
             for part in page.headers["link"].split(", ")}
    assert set(links) == {"first", "prev", "next", "last"}
    assert "page=1" in links["first"] and "page=1" in links["prev"] and "workflow_name=branching" in links["next"]
    assert f"cursor={body['next_cursor']}" in links["next"] and "page=" not in links["next"]  # next: by cursor
    nxt = api.client.get(links["next"])
    by_number = api.client.get("/workflows/runs", params={"workflow_name": "branching", "page_size": 2, "page": 3})
    assert [r["id"] for r in nxt.json()["data"]] == [r["id"] for r in by_number.json()["data"]]
    assert nxt.json()["page"] is None and nxt.json()["total"] == body["total"]
    assert not {r["id"] for r in nxt.json()["data"]} & {r["id"] for r in body["data"]}
    assert 'rel="prev"' not in nxt.headers["link"]  # no number for a page by cursor: first and next only
    full = api.client.get("/workflows/runs", params={"workflow_name": "branching", "fields": "full"}).json()
    assert all("params" in run and "result" in run for run in full["data"])
    # the same as the command line's listing, filters repeated or comma-separated
    as_cli = json.loads(cli.invoke("runs", "list", "--workflow", "branching", "--status", "completed,failed",
                                "--json").stdout)
    for status in (["completed", "failed"], ["completed,failed"]):
        got = api.client.get("/workflows/runs", params={"workflow_name": "branching", "status": status}).json()
        assert [r["id"] for r in got["data"]] == [r["id"] for r in as_cli["data"]]
        assert got["total"] == as_cli["total"]
    oldest = api.client.get("/workflows/runs", params={"workflow_name": "branching", "sort": "created_at"}).json()
    assert [r["id"] for r in oldest["data"]][:5] == ids


def test_a_bad_query_is_400_with_the_command_lines_message(api, cli):
    for query, args in (({"page": "0"}, ("--page", "0")), ({"status": "done"}, ("--status", "done")),
                        ({"sort": "colour"}, ("--sort", "colour")), ({"page_size": "x"}, ("--page-size", "x")),
                        ({"sort": "id; drop table runs"}, ("--sort", "id; drop table runs"))):
        body = problem(api.client.get("/workflows/runs", params=query), 400)
        message = cli_error(cli.invoke("runs", "list", *args))
        assert body["detail"] == message
    assert "fields" in problem(api.client.get("/workflows/runs", params={"fields": "all"}), 400)["detail"]


# --------------------------------------------------------------------------- one run


def test_a_malformed_or_unknown_run_id(api, cli):
    for suffix in ("", "/stages", "/decisions", "/events"):
        body = problem(api.client.get(f"/workflows/runs/nope{suffix}"), 400)
        assert body["detail"] == cli_error(cli.invoke("runs", "show", "nope"))
        body = problem(api.client.get(f"/workflows/runs/{MISSING}{suffix}"), 404)
        assert body["detail"] == cli_error(cli.invoke("runs", "show", MISSING)) and body["error"] == "NotFoundError"
    for method, suffix in (("DELETE", ""), ("POST", "/cancel"), ("POST", "/resume")):
        problem(api.client.request(method, f"/workflows/runs/{MISSING}{suffix}"), 404)
        problem(api.client.request(method, f"/workflows/runs/nope{suffix}"), 400)


def test_cancel_resume_and_delete(api, cli):
    until = api.markers / f"release-{uuid.uuid4().hex}"
    run = api.client.post("/workflows/steps/runs", json={"params": {"pause_in": "s2", "pause_until": str(until),
                                                                    "pause_seconds": 60}}).json()
    deadline = time.monotonic() + 30
    while api.client.get(f"/workflows/runs/{run['id']}").json()["current_node"] != "s2":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # a running run may not be deleted or resumed: the command line's messages
    body = problem(api.client.delete(f"/workflows/runs/{run['id']}"), 400)
    assert body["detail"] == cli_error(cli.invoke("runs", "delete", run["id"]))
    problem(api.client.post(f"/workflows/runs/{run['id']}/resume"), 400)
    cancelled = api.client.post(f"/workflows/runs/{run['id']}/cancel")
    assert cancelled.status_code == 204 and cancelled.content == b""
    until.touch()
    done = finished(api, run["id"])
    assert done["status"] == "cancelled" and "HTTP API" in done["cancel_reason"]
    body = problem(api.client.post(f"/workflows/runs/{run['id']}/cancel"), 400)  # not allowed from cancelled
    assert body["detail"] == cli_error(cli.invoke("runs", "cancel", run["id"])) and body["error"] == "InvalidStatusError"
    resumed = api.client.post(f"/workflows/runs/{run['id']}/resume")
    assert resumed.status_code == 200
    # answered as it stands: running, or already completed (nothing pauses it any more)
    assert resumed.json()["id"] == run["id"] and resumed.json()["status"] in ("running", "completed")
    assert resumed.json()["attempt"] == 2
    done = finished(api, run["id"])
    assert done["status"] == "completed" and done["result"]["log"] == ["s1:0", "s2:1", "s3:2", "s4:3"]
    assert api.client.delete(f"/workflows/runs/{run['id']}").status_code == 204
    problem(api.client.get(f"/workflows/runs/{run['id']}"), 404)


def test_health(api):
    from wfkit.store import migrations

    response = api.client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok", "revision": migrations.head()}


def test_listing_by_cursor_totals_and_creation_times(api):
    ids = [api.client.post("/workflows/branching/runs", json={"params": {"items": i}}).json()["id"]
           for i in range(1, 4)]
    for run_id in ids:
        finished(api, run_id)
    first = api.client.get("/workflows/runs", params={"workflow_name": "branching", "page_size": 1, "total": "none",
                                                      "since": "1h"})
    body = first.json()
    assert (body["total"], body["total_kind"], body["total_pages"], body["page"]) == (None, "none", None, 1)
    walked, url = [r["id"] for r in body["data"]], None
    while 'rel="next"' in first.headers.get("link", ""):
        url = [p.split(">")[0].lstrip("<") for p in first.headers["link"].split(", ") if 'rel="next"' in p][0]
        assert "since=20" in url  # the time "1h" stood for, not "1h" again: a cursor fits only its own filters
        first = api.client.get(url)
        assert first.status_code == 200, first.text
        walked += [r["id"] for r in first.json()["data"]]
    assert len(walked) == len(set(walked)) and [i for i in walked if i in ids] == ids[::-1]  # (others: earlier tests')
    total = api.client.get("/workflows/runs", params={"workflow_name": "branching"}).json()["total"]
    assert len(walked) == total
    assert api.client.get("/workflows/runs", params={"workflow_name": "branching", "until": "1h"}).json()["total"] == 0
    for query, detail in (({"cursor": "bm9wZQ"}, "invalid cursor 'bm9wZQ': it is not a cursor this listing gave"),
                          ({"since": "tomorrow"}, "invalid since 'tomorrow'"),
                          ({"total": "many"}, "unknown total 'many'"),
                          ({"cursor": body["next_cursor"] or "x", "status": "failed"}, "invalid cursor")):
        assert detail in problem(api.client.get("/workflows/runs", params=query), 400)["detail"]


# --------------------------------------------------------------------------- retention


def test_prune_deletes_old_finished_runs_in_batches_and_says_how_many(api, cli):
    from datetime import timedelta

    import sqlalchemy as sa

    from factories import add, add_history, make_run
    from wfkit.store.db import create_engine
    from wfkit.store.models import RunStatus, utcnow

    def aged(days: float, status: RunStatus, workflow: str) -> Any:
        created = utcnow() - timedelta(days=days)
        ended = created + timedelta(minutes=1) if status.value in ("completed", "failed", "cancelled") else None
        return make_run(workflow_name=workflow, status=status, created_at=created, completed_at=ended,
                        updated_at=ended or created)

    runs = {(wf, status, days): aged(days, status, wf)
            for wf in ("prune-a", "prune-b") for status in RunStatus for days in (40, 5)}
    engine = create_engine(api.db_url)  # type: ignore[attr-defined]
    try:
        add(engine, *runs.values())
        for run in runs.values():
            add_history(engine, run, ["a", "b"])
    finally:
        engine.dispose()

    def left(workflow: str) -> set[str]:
        listing = api.client.get("/workflows/runs", params={"workflow_name": workflow, "page_size": 100}).json()
        return {r["id"] for r in listing["data"]}

    both = {"workflow_name": ["prune-a", "prune-b"]}
    dry = api.client.delete("/workflows/runs", params={"older_than": "30d", "dry_run": "true", **both})
    assert dry.status_code == 200 and dry.headers["content-type"] == "application/json"
    body = dry.json()
    assert (body["deleted"], body["dry_run"], body["batches"]) == (6, True, 0)
    assert body["statuses"] == ["completed", "failed", "cancelled"] and body["workflow_names"] == ["prune-a", "prune-b"]
    # the command line's dry run says the same
    as_cli = json.loads(cli.invoke("runs", "prune", "--older-than", "30d", "--dry-run", "--workflow", "prune-a",
                                   "--workflow", "prune-b", "--json").stdout)
    assert {k: v for k, v in as_cli.items() if k not in ("cutoff", "seconds")} == {
        k: v for k, v in body.items() if k not in ("cutoff", "seconds")}
    assert len(left("prune-a")) == len(left("prune-b")) == 10  # nothing deleted

    some = api.client.delete("/workflows/runs", params={"older_than": "720h", "status": "failed,cancelled",
                                                        "workflow_name": "prune-a"}).json()
    assert (some["deleted"], some["dry_run"], some["statuses"]) == (2, False, ["failed", "cancelled"])
    assert left("prune-a") == {str(r.id) for (wf, status, days), r in runs.items() if wf == "prune-a"} - {
        str(runs["prune-a", RunStatus.FAILED, 40].id), str(runs["prune-a", RunStatus.CANCELLED, 40].id)}
    rest = api.client.delete("/workflows/runs", params={"older_than": "4w", **both}).json()
    assert rest["deleted"] == 4 and rest["batches"] == 1
    for wf in ("prune-a", "prune-b"):  # the pending, running and recent runs are left, with their stages
        kept = {str(r.id) for (w, status, days), r in runs.items()
                if w == wf and (days == 5 or status.value in ("pending", "running"))}
        assert left(wf) == kept
        for run_id in kept:
            assert len(api.client.get(f"/workflows/runs/{run_id}/stages").json()) == 2
    engine = create_engine(api.db_url)  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:  # the stages of the runs deleted went with them
            assert conn.execute(sa.text("SELECT count(*) FROM stages s LEFT JOIN runs r ON r.id = s.run_id "
                                        "WHERE r.id IS NULL")).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_bad_prune_is_400_with_the_libraries_message_and_deletes_nothing(api, cli):
    before = api.client.get("/workflows/runs").json()["total"]
    assert "older_than: Field required" in problem(api.client.delete("/workflows/runs"), 400)["detail"]
    for query, args in (({"older_than": "30"}, ("--older-than", "30")),
                        ({"older_than": "0s"}, ("--older-than", "0s")),
                        ({"older_than": "30d", "status": "running"}, ("--older-than", "30d", "--status", "running")),
                        ({"older_than": "30d", "status": ["completed", "pending"]},
                         ("--older-than", "30d", "--status", "completed", "--status", "pending")),
                        ({"older_than": "30d", "status": "done"}, ("--older-than", "30d", "--status", "done"))):
        body = problem(api.client.delete("/workflows/runs", params=query), 400)
        message = cli_error(cli.invoke("runs", "prune", *args))
        # the same words; the command line names its option (and its help), the API its parameter
        message = message.removeprefix("Invalid value for '--older-than': ").removesuffix(
            " (see 'wfkit runs prune --help')")
        assert body["detail"].removeprefix("older_than ") == message
    assert problem(api.client.delete("/workflows/runs", params={"older_than": "30d", "status": "running"}),
                   400)["error"] == "InvalidStatusError"
    assert problem(api.client.delete("/workflows/runs", params={"older_than": "30d", "dry_run": "maybe"}),
                   400)["error"] == "RequestValidationError"
    assert api.client.get("/workflows/runs").json()["total"] == before
