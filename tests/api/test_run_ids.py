"""Short run ids and ``latest`` through the HTTP API and the viewer, against a real server on each
engine: every route that takes a run id resolves them as the command line does, with the same
messages; the viewer redirects them to the run's own page."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from servers import MISSING, Server, api, cli, cli_error, finished, problem  # noqa: F401 (fixtures)

from factories import T0, add, make_run
from wfkit.store.db import create_engine
from wfkit.store.models import RunStatus


@pytest.fixture
def pair(api: Server):
    """Two finished runs whose ids share their first 12 digits (random ones: the module's server
    keeps its database between tests), and the 12 digits."""
    prefix = uuid.uuid4().hex[:12]
    runs = [make_run(id=uuid.UUID(prefix + tail + "0" * 16), workflow_name="steps", status=RunStatus.COMPLETED,
                     created_at=T0 + timedelta(minutes=i), result={"n": i})
            for i, tail in enumerate(("4aaa", "4bbb"))]
    engine = create_engine(api.db_url)  # type: ignore[attr-defined]
    try:
        add(engine, *runs)
    finally:
        engine.dispose()
    return runs, prefix


def test_every_run_route_takes_an_unambiguous_prefix(api, pair):
    (first, second), prefix = pair
    short = str(first.id)[:16]  # 12 digits, a dash, and two more: only the first run's id starts so
    assert api.client.get(f"/workflows/runs/{short}").json()["id"] == str(first.id)
    assert api.client.get(f"/workflows/runs/{short.replace('-', '').upper()}").json()["id"] == str(first.id)
    assert api.client.get(f"/workflows/runs/{short}/stages").json() == []
    assert api.client.get(f"/workflows/runs/{short}/decisions").json() == []
    stream = api.client.get(f"/workflows/runs/{short}/events")
    assert stream.status_code == 200 and "event: complete" in stream.text and str(first.id) in stream.text
    assert api.client.get(f"/workflows/runs/{prefix}4bb", params={"wait": 1}).json()["id"] == str(second.id)
    # the writes act on the run the prefix names, and on no other
    body = problem(api.client.post(f"/workflows/runs/{short}/cancel"), 400)  # completed: final
    assert body["error"] == "InvalidStatusError" and "completed is final" in body["detail"]
    assert api.client.delete(f"/workflows/runs/{short}").status_code == 204
    problem(api.client.get(f"/workflows/runs/{first.id}"), 404)
    assert api.client.get(f"/workflows/runs/{second.id}").json()["status"] == "completed"


def test_an_ambiguous_prefix_is_409_listing_the_candidates_as_the_command_line_does(api, cli, pair):
    (first, second), prefix = pair
    for method, suffix in (("GET", ""), ("GET", "/stages"), ("GET", "/decisions"), ("GET", "/events"),
                           ("DELETE", ""), ("POST", "/cancel"), ("POST", "/resume")):
        body = problem(api.client.request(method, f"/workflows/runs/{prefix}{suffix}"), 409)
        assert body["error"] == "AmbiguousRunIdError"
        assert f"{second.id} (steps, completed" in body["detail"] and f"{first.id} (steps" in body["detail"]
    out = cli.run("runs", "show", prefix)
    assert out.returncode == 2 and cli_error(out) == body["detail"]
    # nothing was touched
    for run in (first, second):
        assert api.client.get(f"/workflows/runs/{run.id}").json()["status"] == "completed"


def test_a_prefix_no_run_has_is_404_and_a_bad_one_400_with_the_command_lines_messages(api, cli):
    missing = "abcdef0123"
    for suffix in ("", "/stages", "/events"):
        body = problem(api.client.get(f"/workflows/runs/{missing}{suffix}"), 404)
        assert body["detail"] == cli_error(cli.run("runs", "show", missing)) == \
            "no run with an id starting 'abcdef0123'"
        body = problem(api.client.get(f"/workflows/runs/abc{suffix}"), 400)
        assert body["detail"] == cli_error(cli.run("runs", "show", "abc"))
        assert "too short: give a UUID, at least 6 of its first hex digits, or latest" in body["detail"]


def test_latest_is_the_newest_run_wherever_a_run_id_is_taken(api, cli):
    created = api.client.post("/workflows/steps/runs", json={"params": {}}).json()
    done = finished(api, "latest")  # ?wait= on latest: the run it named when asked, followed to its end
    assert done["id"] == created["id"] and done["status"] == "completed"
    stages = api.client.get("/workflows/runs/latest/stages").json()
    assert [s["node_name"] for s in stages] == ["s1", "s2", "s3", "s4"]
    assert cli.run("runs", "show", "latest", "--json").stdout == cli.run("runs", "show", created["id"],
                                                                         "--json").stdout


def test_the_document_describes_short_ids(api):
    doc = api.client.get("/openapi.json").json()
    [param] = doc["paths"]["/workflows/runs/{run_id}"]["get"]["parameters"][:1]
    assert param["name"] == "run_id" and "latest" in param["description"]
    import re

    pattern = re.compile(param["schema"]["pattern"])
    for valid in ("latest", "0194a3", "0194A3B27C1E", "0194a3b2-7c", "0194a3b2-7c1e-7", MISSING,
                  MISSING.replace("-", "")):
        assert pattern.match(valid), valid
    for invalid in ("0194a", "0194a3b2-", "nope", "Latest!", MISSING + "0", MISSING.replace("-", "") + "0"):
        assert not pattern.match(invalid), invalid
    for path, operations in doc["paths"].items():
        if "{run_id}" in path:
            for operation in operations.values():
                assert "409" in operation["responses"], (path, operation["summary"])


def test_the_viewer_redirects_a_short_id_or_latest_to_the_run_s_own_page(api, pair):
    (first, second), prefix = pair
    for given, target in ((str(first.id)[:16], first.id), (f"{prefix}4BBB", second.id),
                          (first.id.hex, first.id)):
        response = api.client.get(f"/runs/{given}", params={"part": "details"}, follow_redirects=False)
        assert response.status_code == 302, given
        assert response.headers["location"].endswith(f"/runs/{target}?part=details")
    newest = api.client.get("/workflows/runs", params={"page_size": 1}).json()["data"][0]["id"]
    response = api.client.get("/runs/latest", follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"].endswith(f"/runs/{newest}")
    assert api.client.get(f"/runs/{first.id}", follow_redirects=False).status_code == 200
    ambiguous = api.client.get(f"/runs/{prefix}", follow_redirects=False)
    assert ambiguous.status_code == 409 and "is ambiguous" in ambiguous.text and str(second.id) in ambiguous.text
    assert api.client.get("/runs/abcdef0123", follow_redirects=False).status_code == 404
    assert api.client.get("/runs/nope", follow_redirects=False).status_code == 400
