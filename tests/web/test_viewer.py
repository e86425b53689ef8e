"""The run viewer in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``) against a real ``wfkit serve`` with sample history, on SQLite and
PostgreSQL. Every page fails its test on a console error, an uncaught exception, or a request to
any host but the server.

Chromium comes from ``WFKIT_TEST_CHROMIUM`` (default ``/usr/bin/chromium``; ``.ci/run`` installs
it with apt-get). Missing, these tests are skipped on a developer's machine and fail in CI (``CI``
set), as the PostgreSQL tests do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import WfkitCli
from servers import Server, start_server

CHROMIUM_ENV = "WFKIT_TEST_CHROMIUM"
#: Where the tests write the run page's screenshots (light and dark); one is committed in docs/.
SCREENSHOTS_ENV = "WFKIT_TEST_SCREENSHOTS"


def _chromium() -> str:
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        message = (f"no Chromium at {path}: install Debian's chromium (apt-get install chromium) or point "
                   f"{CHROMIUM_ENV} at one")
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the browser tests)")
        # A developer's machine without Chromium can still run everything else (as without PostgreSQL);
        # CI, above, cannot.
        pytest.skip(message)
    return path


# Playwright's synchronous API runs an event loop in this thread while it is open: the browser tests
# run together in one test process (`make test` distributes by these groups), and the browser is
# closed with this module, so that no other test finds a loop running (asyncio.run would refuse).
pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def viewer(backend: str, databases: Any, installed_plugins: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on a database with sample history: 24 runs of the samples, a failed run, a run
    that looped (review-loop), so that the list has two pages of 20."""
    from wfkit.store import migrations
    from wfkit.store.seed import seed_history

    url = databases.new(backend)
    migrations.upgrade(url)
    markers = tmp_path_factory.mktemp("markers")
    cli = WfkitCli({"PYTHONPATH": str(installed_plugins["steps"]), "WFKIT_LOAD_PLUGINS": "steps,samples",
                    "WFKIT_TEST_MARKERS": str(markers)})
    seed_history(url, 20)  # synthetic history, of workflows not installed here
    for args in (("branching", "-p", "priority=express"), ("branching",), ("review-loop",),
                 ("steps", "-p", "fail_in=s3")):
        out = cli.run("run", *args, "--json", url=url)
        assert out.returncode in (0, 1), out.stderr
    assert cli.run("run", "rounds", "-p", "rounds=60", url=url).returncode == 0  # 120 stages, 120 decisions
    assert cli.run("run", "rounds", "-p", "rounds=1100", "--durability", "async", url=url).returncode == 0  # 2,200
    out = cli.run("run", "steps", "-p", "fail_in=s2", "--json", url=url)  # fails once, then resumed
    resumed = cli.run("runs", "resume", json.loads(out.stdout)["id"], url=url)
    assert resumed.returncode == 0, resumed.stderr
    server = start_server(url, installed_plugins, markers)
    server.db_url = url  # type: ignore[attr-defined]
    yield server
    server.stop()


class Page:
    """A browser page that records what must not happen: console errors, uncaught exceptions,
    requests to other hosts."""

    def __init__(self, browser: Any, server: Server, **options: Any):
        self.server = server
        self.page = browser.new_page(**options)
        self.errors: list[str] = []
        self.foreign: list[str] = []
        host = urlparse(server.url).netloc
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("request", lambda req: None if req.url.startswith("data:") or urlparse(req.url).netloc == host
                     else self.foreign.append(req.url))

    def goto(self, path: str) -> Any:
        return self.page.goto(self.server.url + path)

    def check(self) -> None:
        assert self.errors == [], self.errors
        assert self.foreign == [], self.foreign


@pytest.fixture
def page(browser: Any, viewer: Server) -> Iterator[Page]:
    tab = Page(browser, viewer)
    yield tab
    tab.check()
    tab.page.close()


def _runs(server: Server, **query: Any) -> list[dict[str, Any]]:
    return server.client.get("/workflows/runs", params={"page_size": 100, **query}).json()["data"]


def test_the_run_list_filters_sorts_and_pages_through_the_url(page, viewer):
    answer = page.goto("/")
    assert answer.status == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    rows = page.page.locator("table.runs tbody tr")
    assert rows.count() == 20
    newest = _runs(viewer)[0]
    first = rows.nth(0)
    assert first.locator("a.id").get_attribute("href") == f"/runs/{newest['id']}"
    assert newest["workflow_name"] in first.inner_text() and newest["status"] in first.inner_text()
    assert page.page.locator("nav.pages").inner_text().count("page 1 of 2") == 1
    # filter: failed runs only, through the form, and the URL says so
    page.page.select_option("select[name=status]", "failed")
    page.page.click("form.filters button[type=submit]")
    page.page.wait_for_url(re.compile(r"status=failed"))
    failed = {run["id"] for run in _runs(viewer, status="failed")}
    shown = {a.get_attribute("href").removeprefix("/runs/") for a in page.page.locator("a.id").all()}
    assert shown == failed and failed
    assert all(s == "failed" for s in page.page.locator("table.runs .status").all_inner_texts())
    # back to every run, page 2
    page.goto("/")
    page.page.click("a[rel=next]")
    page.page.wait_for_url(re.compile(r"page=2"))
    assert page.page.locator("table.runs tbody tr").count() == len(_runs(viewer)) - 20
    # sort by workflow, ascending then descending
    page.goto("/?sort=workflow_name")
    names = page.page.locator("table.runs tbody td:nth-child(2)").all_inner_texts()
    assert names == sorted(names)
    assert parse_qs(urlparse(page.page.url).query)["sort"] == ["workflow_name"]
    # creation times: the form's fields, in the URL; the listing is the API's
    fifth = _runs(viewer)[4]["created_at"]  # newest first: since the fifth newest, five runs
    page.goto("/")
    page.page.fill("input[name=since]", fifth)
    page.page.click("form.filters button[type=submit]")
    page.page.wait_for_url(re.compile(r".*since=.*"))
    assert len(_runs(viewer, since=fifth)) == 5
    assert page.page.locator("input[name=since]").input_value() == fifth
    assert page.page.locator("table.runs tbody tr").count() == 5
    page.goto("/?until=2000-01-01")
    assert "No run matches these filters." in page.page.locator(".empty").inner_text()
    # a bad filter gets the same message as the API and the command line, as a page
    answer = page.goto("/?since=whenever")
    assert answer.status == 400 and "invalid since 'whenever'" in page.page.locator(".error-message").inner_text()
    answer = page.goto("/?status=bogus")
    assert answer.status == 400 and "unknown status 'bogus'" in page.page.locator(".error-message").inner_text()
    page.errors.clear()  # the browser logs the 400 itself


def test_an_empty_database_says_what_to_do(browser, databases, installed_plugins, tmp_path, backend):
    from wfkit.store import migrations

    url = databases.new(backend)
    migrations.upgrade(url)
    server = start_server(url, installed_plugins, tmp_path)
    try:
        tab = Page(browser, server)
        tab.goto("/")
        text = tab.page.locator(".empty").inner_text()
        assert "No runs yet" in text and "wfkit run " in text
        tab.check()
    finally:
        server.stop()


def test_list_to_run_to_graph_with_the_path_taken(page, viewer):
    run = _runs(viewer, workflow_name="branching", status="completed")[0]
    page.goto("/?workflow_name=branching")
    page.page.click(f"a[href='/runs/{run['id']}']")
    page.page.wait_for_url(f"**/runs/{run['id']}")
    body = page.page.locator("main")
    assert run["id"] in body.locator("h1").inner_text()
    decisions = viewer.client.get(f"/workflows/runs/{run['id']}/decisions").json()
    table = page.page.locator("table.decisions tbody tr")
    assert table.count() == len(decisions)
    for row, decision in zip(table.all(), decisions):
        cells = row.locator("td").all_inner_texts()
        assert cells[1] == decision["from_node"] and cells[2] == (decision["to_node"] or "END")
        if decision["predicate_name"]:
            assert cells[3] == decision["predicate_name"]
            assert cells[4] == str(decision["predicate_result"]).lower()
    stages = viewer.client.get(f"/workflows/runs/{run['id']}/stages").json()
    lanes = page.page.locator(".timeline .lane .lane-name").all_inner_texts()
    assert lanes == list(dict.fromkeys(s["node_name"] for s in stages))
    # the graph is drawn (mermaid, vendored), the visited nodes with their visit counts
    page.page.wait_for_selector("pre.mermaid svg")
    svg = page.page.locator("pre.mermaid svg").text_content()
    for stage in stages:
        assert f"{stage['node_name']} ×1" in svg
    assert "is_express" in svg  # the conditional edge, labelled with its predicate


def test_a_failed_run_shows_its_error_traceback_and_changes(page, viewer):
    (run,) = _runs(viewer, workflow_name="steps", status="failed")
    page.goto(f"/runs/{run['id']}")
    assert "failed" in page.page.locator("#run-status").inner_text()
    assert run["error_message"] in page.page.locator(".failure .error-message").inner_text()
    page.page.locator(".failure details summary").click()
    assert "Traceback (most recent call last)" in page.page.locator(".failure details pre").inner_text()
    # what each stage changed in the state, computed on the server
    first = page.page.locator("li.stage").nth(0)
    assert "s1" in first.locator(".stage-head").inner_text()
    assert page.page.locator("li.stage .changes tr.change-added, li.stage .changes tr.change-changed").count() >= 1
    assert page.page.locator("button[data-action=resume]").count() == 1
    assert page.page.locator("button[data-action=cancel]").count() == 0


def test_a_resumed_run_s_timeline_tells_its_attempts_apart(page, viewer):
    (run,) = [r for r in _runs(viewer, workflow_name="steps", status="completed") if r["attempt"] == 2]
    page.goto(f"/runs/{run['id']}")
    assert page.page.locator(".timeline .attempt").all_inner_texts() == ["Attempt 1", "Attempt 2"]
    lanes = page.page.locator(".timeline .lane .lane-name").all_inner_texts()
    assert lanes == ["s1", "s2", "s2", "s3", "s4"]  # s2 failed in the first attempt, ran again in the second
    assert page.page.locator(".timeline .bar-failed").count() == 1


def test_a_big_run_s_stages_and_decisions_come_a_page_at_a_time(page, viewer):
    (run,) = [r for r in _runs(viewer, workflow_name="rounds", fields="full") if r["result"]["i"] == 60]
    page.goto(f"/runs/{run['id']}")
    assert page.page.locator("li.stage").count() == 50 and page.page.locator("table.decisions tbody tr").count() == 100
    assert "stages 1–50 of 120" in page.page.locator("nav[aria-label='Pages of stages']").inner_text()
    assert "decisions 1–100 of 120" in page.page.locator("nav[aria-label='Pages of decisions']").inner_text()
    page.page.click("nav[aria-label='Pages of stages'] >> text=Next stages")
    page.page.wait_for_url(re.compile(r"stages_page=2"))
    assert page.page.locator("ol.stages").get_attribute("start") == "51"
    page.page.click("nav[aria-label='Pages of decisions'] >> text=Next decisions")
    page.page.wait_for_url(re.compile(r"decisions_page=2"))
    query = parse_qs(urlparse(page.page.url).query)
    assert query == {"decisions_page": ["2"], "stages_page": ["2"]}  # the other section's page is kept
    assert page.page.locator("table.decisions tbody tr").count() == 20
    assert page.page.locator("table.decisions tbody tr td").first.inner_text() == "101"
    # the timeline: one lane per node, every execution a bar (120 stages: none merged)
    assert page.page.locator(".timeline .lane").count() == 2 and page.page.locator(".timeline .bar").count() == 120


def test_a_run_too_big_for_one_page_shows_its_first_screen_then_its_details(page, viewer):
    (run,) = [r for r in _runs(viewer, workflow_name="rounds", fields="full") if r["result"]["i"] == 1100]
    answer = page.goto(f"/runs/{run['id']}")
    assert "id=\"details\"" in answer.text()  # the first answer: facts and timeline, the rest to follow
    assert "(2200 stages)" in page.page.locator("#timeline-h").inner_text()
    assert page.page.locator(".timeline .bar").count() <= 2 * 300  # executions merged, MAX_BARS a lane
    page.page.wait_for_selector("table.decisions")
    assert "decisions 1–100 of 2200" in page.page.locator("nav[aria-label='Pages of decisions']").inner_text()
    page.page.wait_for_selector("pre.mermaid svg")
    assert "work ×1100" in page.page.locator("pre.mermaid svg").text_content()


def test_the_workflows_page(page, viewer):
    page.goto("/catalog")
    names = page.page.locator("section.workflow h2").all_inner_texts()
    assert {"branching", "review-loop", "text-pipeline", "steps", "rounds"} <= set(names)
    page.page.wait_for_selector("#branching pre.mermaid svg")
    assert "is_express" in page.page.locator("#branching pre.mermaid svg").text_content()
    page.page.click("#branching a")
    page.page.wait_for_url(re.compile(r"workflow_name=branching"))


def test_a_slow_run_appears_live_and_is_cancelled_from_its_page(page, viewer, tmp_path):
    go = viewer.markers / f"go-{os.getpid()}"
    started = viewer.client.post("/workflows/steps/runs", json={"params": {
        "nap": 0.4, "pause_in": "s3", "pause_seconds": 30, "pause_until": str(go)}})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    page.goto(f"/runs/{run_id}")
    # stages appear without a reload: s1 and s2 complete, then s3 starts and pauses
    page.page.wait_for_function(
        "() => [...document.querySelectorAll('.timeline .lane-name')].map(e => e.textContent).includes('s3')",
        timeout=20000)
    assert page.page.locator("#run-status").get_attribute("data-status") == "running"
    page.page.on("dialog", lambda dialog: dialog.accept())
    page.page.click("button[data-action=cancel]")
    viewer_wait(lambda: viewer.client.get(f"/workflows/runs/{run_id}").json()["cancel_requested_at"])
    go.touch()  # the node in flight (a sync one) finishes, and the run stops before the next
    page.page.wait_for_selector("#run-status[data-status=cancelled]", timeout=20000)
    assert json.loads(viewer.client.get(f"/workflows/runs/{run_id}").text)["status"] == "cancelled"
    assert page.page.locator("button[data-action=resume]").count() == 1
    for scheme, shot in _screenshots(page, run_id, tmp_path).items():
        assert shot.stat().st_size > 10_000, scheme


def viewer_wait(what: Any, seconds: float = 20) -> Any:
    import time

    deadline = time.monotonic() + seconds
    while not (value := what()):
        assert time.monotonic() < deadline, f"gave up waiting after {seconds} s"
        time.sleep(0.05)
    return value


def _screenshots(page: Page, run_id: str, tmp_path: Path) -> dict[str, Path]:
    """The run page in light and dark (docs/viewer-run.png is one of them), written to
    ``$WFKIT_TEST_SCREENSHOTS`` or the test's temporary folder."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    shots = {}
    for scheme in ("light", "dark"):
        page.page.emulate_media(color_scheme=scheme)
        page.page.set_viewport_size({"width": 1200, "height": 1300})
        page.goto(f"/runs/{run_id}")
        page.page.wait_for_selector("pre.mermaid svg")
        shots[scheme] = folder / f"run-{scheme}.png"
        page.page.screenshot(path=str(shots[scheme]))
    return shots


def test_missing_and_malformed_runs_are_pages_with_the_right_status(page, viewer):
    answer = page.goto("/runs/123e4567-e89b-12d3-a456-426614174000")
    assert answer.status == 404 and "no run with id" in page.page.locator(".error-message").inner_text()
    answer = page.goto("/runs/not-a-run")
    assert answer.status == 400 and "not-a-run" in page.page.locator(".error-message").inner_text()
    page.errors.clear()  # the browser logs the 404 and the 400 themselves


def test_a_refused_action_says_why_and_the_page_shows_the_run_as_it_is(page, viewer):
    """A stale page offers Resume for a run resumed meanwhile elsewhere: the refusal is shown, stays
    shown through the refreshes, and the page is brought up to date."""
    failed = viewer.client.post("/workflows/steps/runs", json={"params": {"fail_in": "s4"}}).json()["id"]
    viewer_wait(lambda: viewer.client.get(f"/workflows/runs/{failed}").json()["status"] == "failed")
    page.goto(f"/runs/{failed}")
    assert page.page.locator("button[data-action=resume]").count() == 1
    assert viewer.client.post(f"/workflows/runs/{failed}/resume").status_code in (200, 202)
    viewer_wait(lambda: viewer.client.get(f"/workflows/runs/{failed}").json()["status"] == "completed")
    page.page.on("dialog", lambda dialog: dialog.accept())
    page.page.click("button[data-action=resume]")
    page.page.wait_for_selector("#run-status[data-status=completed]", timeout=20000)
    message = page.page.locator("#action-error")
    assert message.is_visible() and message.inner_text().startswith("Resume refused: ")
    assert "completed" in message.inner_text()
    assert page.page.locator("button[data-action=resume]").count() == 0
    page.errors[:] = [e for e in page.errors if "409" not in e and "400" not in e]  # the refusal, logged


def test_a_live_page_outlives_a_server_restart(browser, viewer, installed_plugins, tmp_path):
    """The server executing a run stops (the run ends cancelled) and comes back on the same
    address: the page, which could not refresh meanwhile, says so, then shows the run's end."""
    from servers import free_port

    port = free_port()
    markers = tmp_path / "markers"
    markers.mkdir()
    server = start_server(viewer.db_url, installed_plugins, markers, port=port)
    tab = Page(browser, server)
    try:
        run_id = server.client.post("/workflows/steps/runs", json={"params": {
            "nap": 0.2, "pause_in": "s2", "pause_seconds": 60}}).json()["id"]
        tab.goto(f"/runs/{run_id}")
        tab.page.wait_for_function(
            "() => [...document.querySelectorAll('.timeline .lane-name')].map(e => e.textContent).includes('s2')",
            timeout=20000)
        tab.page.locator("details").first.evaluate("d => d.open = true")  # the reader opened a section
        server.stop()  # SIGTERM: the run it executes ends cancelled
        tab.page.wait_for_selector("#live-note:not([hidden])", timeout=20000)
        assert "Live updates interrupted" in tab.page.locator("#live-note").inner_text()
        again = start_server(viewer.db_url, installed_plugins, markers, port=port)
        try:
            tab.page.wait_for_selector("#run-status[data-status=cancelled]", timeout=30000)
            assert tab.page.locator("#live-note").is_hidden()
            assert tab.page.locator("button[data-action=resume]").count() == 1
            assert tab.page.locator("details").first.evaluate("d => d.open")  # still open after the refreshes
        finally:
            again.stop()
        # The browser logs each refused connection while the server was away: those, and nothing else.
        tab.errors[:] = [e for e in tab.errors if "ERR_CONNECTION_REFUSED" not in e and "Failed to load" not in e]
        tab.check()
    finally:
        tab.page.close()
