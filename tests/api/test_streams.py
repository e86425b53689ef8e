"""The API's server-sent event streams: ``execute`` and ``.../events`` against the stored history,
resumed with ``Last-Event-ID``, served by another process than the one executing the run."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import pytest
from servers import api, events, free_port, parse_events, serve  # noqa: F401 (fixtures)

from wfkit.store.repository import Repository

SAMPLES = [("text-pipeline", {"text": "to be or not to be"}), ("review-loop", {"max_rounds": 3}),
           ("branching", {"priority": "express"}), ("branching", {"priority": "standard", "items": 2})]


def expected(url: str, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The events a run's stored history makes, in order: (event name, the fields that must match)."""
    repo = Repository(url)
    try:
        run, stages, decisions = repo.find_run(run_id), repo.get_stages(run_id), repo.get_decisions(run_id)
    finally:
        repo.close()
    out: list[tuple[Any, str, dict[str, Any]]] = []
    for stage in stages:
        out.append(((stage.created_at, 1), "stage.start", {"node": stage.node_name, "iteration": stage.iteration,
                                                            "input_snapshot": stage.input_snapshot}))
        out.append(((stage.created_at, 2), "stage.complete" if stage.status.value == "completed" else "error",
                    {"node": stage.node_name, "output_snapshot": stage.output_snapshot}
                    if stage.status.value == "completed" else {"node": stage.node_name}))
    for decision in decisions:
        out.append(((decision.created_at, 0), "decision", {
            "from_node": decision.from_node, "to_node": decision.to_node, "predicate_name": decision.predicate_name,
            "predicate_result": decision.predicate_result, "reason": decision.reason}))
    out.sort(key=lambda item: item[0])
    end = {"kind": f"run_{run.status.value}"}
    if run.status.value == "completed":
        end["result"] = run.result
    return [(name, fields) for _, name, fields in out] + [("complete", end)]


def matches(got: list[dict[str, Any]], want: list[tuple[str, dict[str, Any]]], run_id: str) -> None:
    assert [e["event"] for e in got] == [name for name, _ in want]
    for event, (name, fields) in zip(got, want):
        assert event["data"]["run_id"] == run_id
        assert {k: event["data"].get(k) for k in fields} == fields, (name, event)
    ids = [e["id"] for e in got]
    assert len(set(ids)) == len(ids) and all(ids)


@pytest.mark.parametrize(("name", "params"), SAMPLES)
def test_the_execute_stream_is_the_stored_history(api, name, params):
    response, got = events(api.client, "POST", f"/workflows/{name}/execute", json={"params": params})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    run_id = response.headers["x-run-id"]
    matches(got, expected(api.db_url, run_id), run_id)
    # replayed later, from the database, the stream is the same, ids and all
    _, again = events(api.client, "GET", f"/workflows/runs/{run_id}/events")
    assert again == got


def test_a_failed_stage_streams_an_error_with_its_traceback(api):
    response, got = events(api.client, "POST", "/workflows/steps/execute", json={"params": {"fail_in": "s3"}})
    run_id = response.headers["x-run-id"]
    matches(got, expected(api.db_url, run_id), run_id)
    error = next(e for e in got if e["event"] == "error")
    assert error["data"]["node"] == "s3" and "could not reach its service" in error["data"]["error"]
    assert "RuntimeError" in error["data"]["traceback"]
    assert got[-1]["data"]["kind"] == "run_failed"


def test_every_cut_resumes_with_last_event_id_with_no_gap_or_duplicate(api):
    response, whole = events(api.client, "POST", "/workflows/review-loop/execute", json={"params": {}})
    run_id = response.headers["x-run-id"]
    for k, event in enumerate(whole):
        _, rest = events(api.client, "GET", f"/workflows/runs/{run_id}/events",
                         headers={"Last-Event-ID": event["id"]})
        assert rest == whole[k + 1:], k
    # after the run's end: 204, which tells a browser's EventSource to stop reconnecting
    after_end = api.client.get(f"/workflows/runs/{run_id}/events", headers={"Last-Event-ID": whole[-1]["id"]})
    assert after_end.status_code == 204 and after_end.content == b""
    # an id the stream never gave: everything again (the client starts over, ids and all)
    _, again = events(api.client, "GET", f"/workflows/runs/{run_id}/events", headers={"Last-Event-ID": "nope"})
    assert again == whole


def test_a_live_stream_cut_and_resumed_while_the_run_executes(api):
    until = api.markers / f"release-{uuid.uuid4().hex}"
    run = api.client.post("/workflows/steps/runs", json={"params": {"pause_in": "s3", "pause_until": str(until),
                                                                    "pause_seconds": 60}}).json()
    # the first events arrive while the run is paused in s3: live, not replayed after the end
    _, first = events(api.client, "GET", f"/workflows/runs/{run['id']}/events", stop_after=4)
    assert [e["event"] for e in first] == ["stage.start", "stage.complete", "decision", "stage.start"]
    assert api.client.get(f"/workflows/runs/{run['id']}").json()["status"] == "running"
    resumed: list[dict[str, Any]] = []

    def follow() -> None:
        _, found = events(api.client, "GET", f"/workflows/runs/{run['id']}/events",
                          headers={"Last-Event-ID": first[-1]["id"]})
        resumed.extend(found)

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.3)
    until.touch()
    reader.join(30)
    assert not reader.is_alive()
    _, whole = events(api.client, "GET", f"/workflows/runs/{run['id']}/events")
    assert first + resumed == whole and whole[-1]["event"] == "complete"
    matches(whole, expected(api.db_url, run["id"]), run["id"])


def test_a_run_started_through_one_server_streams_live_through_another(pg_url, serve):
    one, other = serve(pg_url), serve(pg_url)
    until = one.markers / f"release-{uuid.uuid4().hex}"
    run = one.client.post("/workflows/steps/runs", json={"params": {"pause_in": "s2", "pause_until": str(until),
                                                                    "pause_seconds": 60, "nap": 0.05}}).json()
    got: list[dict[str, Any]] = []
    seen_running = threading.Event()

    def follow() -> None:
        with other.client.stream("GET", f"/workflows/runs/{run['id']}/events") as response:
            for event in _live(response):
                got.append(event)
                if len(got) == 4:  # s2 started, in the other process, which still holds it
                    seen_running.set()

    reader = threading.Thread(target=follow)
    reader.start()
    assert seen_running.wait(30)
    assert other.client.get(f"/workflows/runs/{run['id']}").json()["status"] == "running"
    until.touch()
    reader.join(30)
    assert not reader.is_alive()
    assert got[-1]["event"] == "complete" and got[-1]["data"]["kind"] == "run_completed"
    _, replayed = events(one.client, "GET", f"/workflows/runs/{run['id']}/events")
    assert got == replayed
    matches(got, expected(pg_url, run["id"]), run["id"])


def _live(response: httpx.Response) -> Any:
    """The events of a stream as they arrive."""
    lines: list[str] = []
    for line in response.iter_lines():
        lines.append(line)
        if line == "":
            for event in parse_events(iter(lines)):
                if "event" in event:
                    yield event
            lines = []


def test_an_idle_stream_sends_keep_alive_pings(sqlite_url, monkeypatch):
    """While a run's node works, the stream says nothing but a ping comment now and then (FastAPI's,
    here every 0.2 s instead of 15), which keeps proxies from closing it."""
    import fastapi.routing
    import uvicorn

    from wfkit.api import create_app
    from wfkit.registry import Registry

    release = threading.Event()
    registry = Registry()
    registry.register("slow", lambda g, rt, p: (g.add_node("wait", lambda s: release.wait(30) and {}),
                                                 g.set_entry_point("wait"), g.set_finish_point("wait"), {})[-1])
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(sqlite_url, registry), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 30
            while not server.started:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with client.stream("POST", "/workflows/slow/execute", json={}) as response:
                lines = response.iter_lines()
                seen = []
                for line in lines:
                    seen.append(line)
                    if seen.count(": ping") >= 2:
                        break
                release.set()
                rest = list(lines)
            found = parse_events(iter(seen + rest))
            assert [e.get("event") for e in found if "event" in e] == ["stage.start", "stage.complete", "decision",
                                                                       "complete"]
    finally:
        release.set()
        server.should_exit = True
        thread.join(30)
