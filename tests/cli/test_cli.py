"""The ``wfkit`` command: what it prints (in process, through Click's runner), and its exit codes
and one-line errors (as a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import pytest
from conftest import WFKIT

from factories import T0, add, add_history, make_run
from wfkit.store import migrations
from wfkit.store.models import RunStatus

HEAD = migrations.head()


def assert_one_line_error(out: Any, code: int, text: str) -> None:
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    assert text in out.stderr
    [line] = out.stderr.strip().splitlines()  # one line, whatever the error: Click's usage errors too
    assert line.startswith("Error: ")


@pytest.fixture
def history(engine):
    """23 runs over two workflows; the newest has three stages and two decisions."""
    runs = [
        make_run(workflow_name="alpha" if i % 2 else "beta",
                 status=[RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED][i % 3],
                 created_at=T0 + timedelta(minutes=i), params={"i": i})
        for i in range(23)
    ]
    runs[-1].status = RunStatus.COMPLETED
    runs[-1].started_at = runs[-1].created_at
    runs[-1].completed_at = runs[-1].created_at + timedelta(milliseconds=1500)
    runs[-1].result = {"answer": 42}
    add(engine, *runs)
    add_history(engine, runs[-1], ["load", "score", "save"])
    return runs


# --------------------------------------------------------------------------- runs list


def test_list_pages_by_cursor_and_prints_the_next_command(wfkit_cli, db_url, history):
    """Each page ends with the command that lists the next one (on stderr); run as printed, it
    continues where the page ended, with the same filters."""
    import shlex

    out = wfkit_cli.run("runs", "list", "--workflow", "alpha", "--page-size", "4", "--total", "none", url=db_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "page 1"  # no total asked for
    seen = [line.split()[0] for line in out.stdout.splitlines()[1:-1]]
    for _ in range(5):
        if "next page: " not in out.stderr:
            break
        command = shlex.split(out.stderr.split("next page: ", 1)[1].strip())
        assert command[:1] == ["wfkit"] and "--after" in command and "--page" not in command
        out = wfkit_cli.run(*command[1:], url=db_url)
        assert out.returncode == 0, out.stderr
        seen += [line.split()[0] for line in out.stdout.splitlines()[1:-1]]
    assert out.stdout.splitlines()[-1] == "3 runs after the cursor"  # 11 alpha runs: 4 + 4 + 3
    assert seen == [str(r.id) for r in sorted(history, key=lambda r: r.created_at, reverse=True)
                    if r.workflow_name == "alpha"]
    doc = json.loads(wfkit_cli.invoke("runs", "list", "--page-size", "20", "--json", url=db_url).stdout)
    assert doc["next_cursor"] and doc["total_kind"] == "exact" and doc["total"] == 23
    rest = json.loads(wfkit_cli.invoke("runs", "list", "--page-size", "20", "--json", "--after", doc["next_cursor"],
                                       url=db_url).stdout)
    assert len(rest["data"]) == 3 and rest["next_cursor"] is None and rest["page"] is None


def test_list_since_until_and_bad_cursors(wfkit_cli, db_url, history):
    out = wfkit_cli.invoke("runs", "list", "--since", (T0 + timedelta(minutes=20)).isoformat(), url=db_url)
    assert out.stdout.splitlines()[-1] == "page 1 of 1 (3 runs)"
    out = wfkit_cli.invoke("runs", "list", "--since", "2026-01-01T12:05:00Z", "--until", "2026-01-01T12:07:00Z",
                           url=db_url)
    assert out.stdout.splitlines()[-1] == "page 1 of 1 (2 runs)"
    out = wfkit_cli.run("runs", "list", "--since", "7d", "--page-size", "1", url=db_url)
    assert "No runs match these filters." in out.stdout  # 2026-01-01 is long past
    assert_one_line_error(wfkit_cli.run("runs", "list", "--since", "soon", url=db_url), 2,
                          "invalid since 'soon': expected an ISO 8601 date or time")
    assert_one_line_error(wfkit_cli.run("runs", "list", "--after", "bm90IGEgY3Vyc29y", url=db_url), 2,
                          "invalid cursor 'bm90IGEgY3Vyc29y': it is not a cursor this listing gave")
    first = json.loads(wfkit_cli.invoke("runs", "list", "--page-size", "2", "--json", url=db_url).stdout)
    assert_one_line_error(wfkit_cli.run("runs", "list", "--status", "failed", "--after", first["next_cursor"],
                                        url=db_url), 2, "it was made for other filters")
    assert_one_line_error(wfkit_cli.run("runs", "list", "--page", "2", "--after", first["next_cursor"], url=db_url), 2,
                          "give a page number or a cursor, not both")
    assert_one_line_error(wfkit_cli.run("runs", "list", "--total", "some", url=db_url), 2, "'some' is not one of")


def test_list_human(wfkit_cli, db_url, history):
    out = wfkit_cli.invoke("runs", "list", "--page-size", "5", url=db_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"]
    assert lines[1].startswith(str(history[-1].id)) and "1.50s" in lines[1]
    assert len(lines) == 7 and lines[-1] == "page 1 of 5 (23 runs)"
    # columns are aligned: every row has its status at the same offset as the header
    at = lines[0].index("STATUS")
    assert all(line[at:].split()[0] in ("completed", "failed", "cancelled") for line in lines[1:6])


def test_list_json(wfkit_cli, db_url, history):
    out = wfkit_cli.invoke("runs", "list", "--json", "--page", "2", "--page-size", "10", url=db_url)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["total"], doc["page"], doc["page_size"], doc["total_pages"]) == (23, 2, 10, 3)
    assert [r["id"] for r in doc["data"]] == [str(r.id) for r in reversed(history)][10:20]
    summary = {"id", "workflow_name", "status", "error_message", "started_at", "completed_at", "created_at",
               "updated_at", "cancel_requested_at", "cancel_reason", "owner", "attempt", "lease_epoch",
               "lease_expires_at", "current_stage_id", "current_node", "current_iteration",
               "current_stage_started_at", "idempotency_key", "lease_expired"}
    assert set(doc["data"][0]) == summary  # a listing leaves params and result out...
    full = json.loads(wfkit_cli.invoke("runs", "list", "--json", "--full", "--page-size", "1", url=db_url).stdout)
    assert set(full["data"][0]) == summary | {"params", "result"}  # ...unless asked
    assert full["data"][0]["params"] == {"i": 22}


def test_list_filters_and_sort(wfkit_cli, db_url, history):
    out = wfkit_cli.invoke("runs", "list", "--json", "--workflow", "alpha", "--status", "failed,cancelled",
                "--sort", "created_at", url=db_url)
    doc = json.loads(out.stdout)
    want = [str(r.id) for r in history if r.workflow_name == "alpha" and r.status in ("failed", "cancelled")]
    assert [r["id"] for r in doc["data"]] == want and doc["total"] == len(want)
    repeated = wfkit_cli.invoke("runs", "list", "--json", "--workflow", "alpha", "--status", "failed", "--status",
                     "cancelled", "--sort", "created_at", url=db_url)
    assert json.loads(repeated.stdout) == doc


def test_list_empty_states(wfkit_cli, db_url):
    out = wfkit_cli.invoke("runs", "list", url=db_url)
    assert out.stdout == "No runs yet.\npage 1 of 1 (0 runs)\n"
    out = wfkit_cli.invoke("runs", "list", "--status", "failed", url=db_url)
    assert out.stdout.startswith("No runs match these filters.")
    doc = json.loads(wfkit_cli.invoke("runs", "list", "--json", url=db_url).stdout)
    assert doc == {"data": [], "total": 0, "page": 1, "page_size": 20, "total_pages": 1, "total_kind": "exact",
                   "next_cursor": None}


def test_list_takes_several_workflows_a_sort_in_any_case_and_says_when_a_size_was_limited(wfkit_cli, db_url,
                                                                                           history):
    both = json.loads(wfkit_cli.invoke("runs", "list", "--json", "--workflow", "alpha", "--workflow", "beta",
                                       url=db_url).stdout)
    assert both["total"] == 23
    assert json.loads(wfkit_cli.invoke("runs", "list", "--json", "--workflow", "alpha,nope", url=db_url).stdout)[
        "total"] == 11
    upper = json.loads(wfkit_cli.invoke("runs", "list", "--json", "--sort", "-CREATED_AT", url=db_url).stdout)
    assert upper == json.loads(wfkit_cli.invoke("runs", "list", "--json", "--sort", "-created_at", url=db_url).stdout)
    # several sort fields, repeated or comma-separated alike; the first decides first
    ids = [[r["id"] for r in json.loads(wfkit_cli.invoke("runs", "list", "--json", "--page-size", "30", *args,
                                                         url=db_url).stdout)["data"]]
           for args in (["--sort", "workflow_name", "--sort", "created_at"], ["--sort", "workflow_name,created_at"])]
    assert ids[0] == ids[1]
    expected = sorted(history, key=lambda r: (r.workflow_name, r.created_at))
    assert ids[0] == [str(r.id) for r in expected]
    out = wfkit_cli.invoke("runs", "list", "--json", "--page-size", "500", url=db_url)
    assert json.loads(out.stdout)["page_size"] == 100 and "Note: page size limited to 100" in out.stderr


def test_show_cuts_a_huge_value_at_a_terminal_only(wfkit_cli, engine):
    from wfkit.cli.browse import SHOW_AT_TERMINAL

    run = make_run(result={"text": "z" * 50_000})
    add(engine, run)
    url = engine.url.render_as_string(hide_password=False)
    whole = wfkit_cli.invoke("runs", "show", str(run.id), url=url).stdout  # not a terminal: whole
    assert "z" * 50_000 in whole
    code, text = _at_a_terminal(wfkit_cli, url, "runs", "show", str(run.id))
    assert code == 0
    assert "more characters: --full prints them" in text and "z" * 50_000 not in text
    assert len(text) < SHOW_AT_TERMINAL + 2000


def test_page_past_the_end(wfkit_cli, db_url, history):
    out = wfkit_cli.invoke("runs", "list", "--page", "9", url=db_url)
    assert out.returncode == 0 and out.stdout == "page 9 of 2 (23 runs): past the last page\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "done"], "unknown status 'done': allowed values are pending, running"),
        (["--sort", "created_at; drop table runs"], "invalid sort field 'created_at; drop table runs': allowed fields are"),
        (["--sort", "params"], "unknown sort field 'params'"),
        (["--page", "0"], "page must be a whole number of at least 1, got '0'"),
        (["--page-size", "x"], "page_size must be a whole number, got 'x'"),
    ],
)
def test_list_bad_input(wfkit_cli, db_url, history, args, message):
    assert_one_line_error(wfkit_cli.run("runs", "list", *args, url=db_url), 2, message)
    assert json.loads(wfkit_cli.invoke("runs", "list", "--json", url=db_url).stdout)["total"] == 23  # nothing changed


def test_bad_pagination_setting(wfkit_cli, db_url):
    out = wfkit_cli.run("runs", "list", url=db_url, env={"WFKIT_MAX_PAGE_SIZE": "lots"})
    assert_one_line_error(out, 2, "WFKIT_MAX_PAGE_SIZE must be a whole number, got 'lots'")


def test_page_size_setting_from_environment(wfkit_cli, db_url, history):
    doc = json.loads(wfkit_cli.invoke("runs", "list", "--json", url=db_url, env={"WFKIT_DEFAULT_PAGE_SIZE": "4"}).stdout)
    assert doc["page_size"] == 4 and len(doc["data"]) == 4 and doc["total_pages"] == 6


# --------------------------------------------------------------------------- one run


def test_show(wfkit_cli, db_url, history):
    run = history[-1]
    out = wfkit_cli.invoke("runs", "show", str(run.id), url=db_url)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(None, 1) for line in out.stdout.splitlines())
    assert fields["id"] == str(run.id) and fields["workflow"] == "beta" and fields["status"] == "completed"
    assert fields["result"] == '{"answer": 42}' and fields["duration"] == "1.50s"
    doc = json.loads(wfkit_cli.invoke("runs", "show", str(run.id), "--json", url=db_url).stdout)
    assert doc["id"] == str(run.id) and doc["params"] == {"i": 22} and doc["created_at"].startswith("2026-01-01T12:22:00")


def test_stages_and_decisions(wfkit_cli, db_url, history):
    rid = str(history[-1].id)
    out = wfkit_cli.invoke("runs", "stages", rid, url=db_url)
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "ITER", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["load", "score", "save"]
    doc = json.loads(wfkit_cli.invoke("runs", "stages", rid, "--json", url=db_url).stdout)
    assert [s["node_name"] for s in doc] == ["load", "score", "save"] and doc[0]["output_snapshot"] == {"i": 1}
    out = wfkit_cli.invoke("runs", "decisions", rid, url=db_url)
    lines = out.stdout.splitlines()
    assert lines[1].split()[:4] == ["load", "score", "p0", "true"]
    doc = json.loads(wfkit_cli.invoke("runs", "decisions", rid, "--json", url=db_url).stdout)
    assert [(d["from_node"], d["to_node"]) for d in doc] == [("load", "score"), ("score", "save")]


def test_run_without_history(wfkit_cli, db_url, history):
    rid = str(history[0].id)
    assert wfkit_cli.invoke("runs", "stages", rid, url=db_url).stdout == "This run has no stages yet.\n"
    assert json.loads(wfkit_cli.invoke("runs", "decisions", rid, "--json", url=db_url).stdout) == []


@pytest.mark.parametrize("command", ["show", "stages", "decisions"])
def test_unknown_and_malformed_ids(wfkit_cli, db_url, command):
    missing = str(uuid.uuid4())
    assert_one_line_error(wfkit_cli.run("runs", command, missing, url=db_url), 1, f"no run with id {missing}")
    assert_one_line_error(wfkit_cli.run("runs", command, "not-a-uuid", "--json", url=db_url), 2, "invalid run id 'not-a-uuid'")


# --------------------------------------------------------------------------- database selection and migration


def test_database_url_flag_before_or_after_the_command(wfkit_cli, db_url, history, tmp_path):
    other = f"sqlite:///{tmp_path}/elsewhere.db"  # not migrated: an error if it were used
    for args in (["--database-url", db_url, "runs", "list", "--json"], ["runs", "list", "--json", "--database-url", db_url]):
        out = wfkit_cli.invoke(*args, url=other)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["total"] == 23


def test_not_migrated(wfkit_cli, new_database):
    url = new_database()
    for args in (["runs", "list"], ["runs", "show", str(uuid.uuid4())]):
        assert_one_line_error(wfkit_cli.run(*args, url=url), 1, "run `wfkit db upgrade`")


def test_db_commands(wfkit_cli, new_database):
    url = new_database()
    out = wfkit_cli.invoke("db", "current", url=url)
    assert out.returncode == 0 and "not migrated (run `wfkit db upgrade`)" in out.stdout
    out = wfkit_cli.invoke("db", "upgrade", url=url)
    assert out.returncode == 0, out.stderr
    assert f"from base to {HEAD}" in out.stdout
    assert f"already at revision {HEAD}" in wfkit_cli.invoke("db", "upgrade", url=url).stdout
    doc = json.loads(wfkit_cli.invoke("db", "current", "--json", url=url).stdout)
    assert doc["current"] == doc["head"] == HEAD and doc["up_to_date"] is True
    assert "matches wfkit's models" in wfkit_cli.invoke("db", "check", url=url).stdout
    assert json.loads(wfkit_cli.invoke("runs", "list", "--json", url=url).stdout)["total"] == 0
    assert_one_line_error(wfkit_cli.run("db", "upgrade", "nope", url=url), 2, "unknown revision 'nope'")
    out = wfkit_cli.run("db", "downgrade", "base", url=url)  # not a terminal, no --yes: refused, nothing dropped
    assert_one_line_error(out, 2, "to base removes every wfkit table, and all the run history in them: confirm with "
                                  "`wfkit db downgrade --yes base`")
    assert json.loads(wfkit_cli.invoke("db", "current", "--json", url=url).stdout)["current"] == HEAD
    out = wfkit_cli.invoke("db", "downgrade", "base", "--yes", url=url)
    assert out.returncode == 0 and f"from {HEAD} to base" in out.stdout
    assert_one_line_error(wfkit_cli.run("runs", "list", url=url), 1, "wfkit db upgrade")
    # the hints of `db current` and `db check` keep a --database-url given
    given = ("--database-url", url)
    assert f"(run `wfkit --database-url {url} db upgrade`)" in wfkit_cli.invoke(*given, "db", "current").stdout
    assert f"(run `wfkit --database-url {url} db upgrade`)" in wfkit_cli.invoke(*given, "db", "check").stderr
    wfkit_cli.invoke(*given, "db", "upgrade", "0002")
    assert f"run `wfkit --database-url {url} db upgrade`)" in wfkit_cli.invoke(*given, "db", "current").stdout


def test_a_downgrade_that_removes_data_asks_however_it_is_spelled(wfkit_cli, new_database):
    url = new_database()
    assert wfkit_cli.invoke("db", "upgrade", url=url).returncode == 0
    for spelled in ("-9", "base"):  # both end at base
        out = wfkit_cli.run("db", "downgrade", "--", spelled, url=url)
        again = "-- -9" if spelled == "-9" else "base"
        assert_one_line_error(out, 2, "to base removes every wfkit table, and all the run history in them: confirm "
                                      f"with `wfkit db downgrade --yes {again}`")
        assert json.loads(wfkit_cli.invoke("db", "current", "--json", url=url).stdout)["current"] == HEAD
    assert wfkit_cli.run("db", "downgrade", "--", "-7", url=url).returncode == 0  # drops empty columns: no question
    assert wfkit_cli.invoke("db", "upgrade", url=url).returncode == 0
    from wfkit.store.db import create_engine

    engine = create_engine(url)
    try:
        add(engine, make_run(cancel_reason="by the test"))
    finally:
        engine.dispose()
    assert wfkit_cli.run("db", "downgrade", "--", "-6", url=url).returncode == 0  # to 0003: no data lost
    out = wfkit_cli.run("db", "downgrade", "--", "-1", url=url)
    assert_one_line_error(out, 2, "removes column runs.cancel_reason, which holds 1 value: confirm with "
                                  "`wfkit db downgrade --yes -- -1`")
    out = wfkit_cli.run("db", "downgrade", "--", "-2", url=url)  # from 0001 after this: -1 reaches base
    assert_one_line_error(out, 2, "confirm with `wfkit db downgrade --yes -- -2`")
    # the command it suggests works as written (with the database it was given)
    out = wfkit_cli.run("--database-url", url, "db", "downgrade", "--", "-2")
    again = out.stderr.split("confirm with `")[1].split("`")[0].split()
    assert again[:3] == ["wfkit", "--database-url", url] and again[3:] == ["db", "downgrade", "--yes", "--", "-2"]
    assert wfkit_cli.run(*again[1:]).returncode == 0
    assert json.loads(wfkit_cli.invoke("db", "current", "--json", url=url).stdout)["current"] == "0001"
    assert_one_line_error(wfkit_cli.run("db", "downgrade", "--", "-1", url=url), 2, "to base removes every wfkit table")
    out = wfkit_cli.run("--database-url", url, "db", "downgrade", "0002")  # from 0001: the wrong way, and what to run
    assert_one_line_error(out, 2, f"that is an upgrade (`wfkit --database-url {url} db upgrade`)")
    assert_one_line_error(wfkit_cli.run("db", "upgrade", "+9", url=url), 2, "there is no revision +9 from it")


def test_db_history_and_path(wfkit_cli, tmp_path):
    doc = json.loads(wfkit_cli.invoke("db", "history", "--json").stdout)
    assert doc[0]["revision"] == "0001" and doc[-1]["revision"] == HEAD and doc[-1]["is_head"] is True
    out = wfkit_cli.invoke("db", "path", env={"XDG_DATA_HOME": str(tmp_path)})
    assert out.stdout.strip() == f"sqlite:///{tmp_path}/wfkit/wfkit.db"
    out = wfkit_cli.invoke("db", "path", url="postgresql://me:secret@db.example/wf")
    assert out.stdout.strip() == "postgresql://me:***@db.example/wf"  # as written, the password masked
    out = wfkit_cli.invoke("db", "path", url="postgresql://me@db.example/wf?password=secret&sslmode=require")
    assert out.stdout.strip() == "postgresql://me@db.example/wf?password=***&sslmode=require"


def test_a_database_that_cannot_be_created_where_it_is_named_says_so(wfkit_cli, tmp_path):
    """Not the circular hint to run `db upgrade`, which could not create it there either."""
    for command in (("runs", "list"), ("runs", "show", "123e4567-e89b-12d3-a456-426614174000")):
        out = wfkit_cli.run("--database-url", "sqlite:////proc/nope/x.db", *command)
        assert_one_line_error(out, 2, "there is no database at /proc/nope/x.db, and none can be created there")
        assert "db upgrade" not in out.stderr


def test_bad_data_directory_is_one_line_naming_it_and_the_setting(wfkit_cli, tmp_path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    for data_home, command in [("/proc/nope", ("db", "upgrade")), ("/proc/nope", ("runs", "list")),
                               (str(not_a_dir), ("db", "upgrade")), (str(not_a_dir), ("runs", "list"))]:
        out = wfkit_cli.run(*command, env={"XDG_DATA_HOME": data_home})
        assert_one_line_error(out, 2, f"cannot use the data directory {data_home}/wfkit for the default database")
        assert "set XDG_DATA_HOME to a directory wfkit may write" in out.stderr


def test_in_memory_and_empty_database_urls_are_refused(wfkit_cli):
    for url in ("sqlite:///:memory:", "sqlite://", "sqlite:///file::memory:?uri=true",
                "sqlite:///file:x?mode=memory&uri=true"):
        out = wfkit_cli.run("db", "upgrade", "--database-url", url)
        assert_one_line_error(out, 2, f"{url!r} is an in-memory SQLite database, which lives only as long as one command")
        out = wfkit_cli.run("runs", "list", env={"WFKIT_DATABASE_URL": url})
        assert_one_line_error(out, 2, "is an in-memory SQLite database")
    assert_one_line_error(wfkit_cli.run("--database-url", "", "runs", "list"), 2, "'--database-url': is empty")


def test_database_messages_say_what_is_wrong(wfkit_cli, tmp_path):
    out = wfkit_cli.run("db", "upgrade", "--database-url", "sqlite:////proc/wfkit-test.db")
    assert_one_line_error(out, 2, "there is no database at /proc/wfkit-test.db, and none can be created there")
    assert "wfkit db upgrade" not in out.stderr  # no advice that leads back here
    out = wfkit_cli.run("db", "upgrade", "--database-url", f"sqlite:///{tmp_path}")
    assert_one_line_error(out, 2, f"the SQLite database {tmp_path} is a directory: name a file in it")


def test_bad_database_url(wfkit_cli):
    assert_one_line_error(wfkit_cli.run("runs", "list", url="mysql://x@y/z"), 2, "unsupported database 'mysql'")
    assert_one_line_error(wfkit_cli.run("runs", "list", "--database-url", "::"), 2, "invalid database URL '::'")
    out = wfkit_cli.run("runs", "list", "--database-url", "postgresql://me:secret@db:port/x")  # a bad port
    assert_one_line_error(out, 2, "invalid database URL 'postgresql://me:***@db:port/x'")
    assert "secret" not in out.stderr


def test_unreachable_database(wfkit_cli):
    out = wfkit_cli.run("runs", "list", url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert_one_line_error(out, 1, "cannot use the database at postgresql://nobody@127.0.0.1:1/none")


# --------------------------------------------------------------------------- start-up cost


def test_help_and_import_do_not_load_sqlalchemy(wfkit_cli):
    code = (
        "import sys, wfkit\n"
        "from wfkit.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('sqlalchemy' in sys.modules, 'sqlmodel' in sys.modules, 'alembic' in sys.modules)"
    )
    out = wfkit_cli.python("-c", code)
    assert out.stdout.strip().splitlines()[-1] == "False False False"
    assert "runs" in out.stdout and "db" in out.stdout


def test_version(wfkit_cli):
    out = wfkit_cli.invoke("--version")
    assert out.returncode == 0 and out.stdout.startswith("wfkit, version ")


def test_db_check_names_each_difference(wfkit_cli, new_database):
    url = new_database()
    out = wfkit_cli.run("db", "check", url=url)
    assert out.returncode == 1 and "not migrated (run `wfkit db upgrade`)" in out.stderr
    wfkit_cli.invoke("db", "upgrade", url=url)
    from wfkit.store.db import create_engine

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_decisions_run_id_created_at")
    engine.dispose()
    out = wfkit_cli.run("db", "check", url=url)
    assert out.returncode == 1 and out.stderr.splitlines()[-1].strip() == "add_index ix_decisions_run_id_created_at on decisions"


def test_list_workflows_command_does_not_load_sqlalchemy(wfkit_cli):
    code = (
        "import sys\nfrom wfkit.cli import cli\n"
        "try:\n    cli(['list-workflows'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('sqlalchemy', 'sqlmodel', 'alembic', 'pydantic') if m in sys.modules])\n"
        "print('CLI', sorted(m for m in sys.modules if m.startswith('wfkit.cli.')), 'wfkit.graph.state_graph' in sys.modules)"
    )
    out = wfkit_cli.python("-c", code)
    assert out.returncode == 0, out.stderr
    heavy, modules = out.stdout.strip().splitlines()[-2:]
    assert heavy == "HEAVY []"
    # the other commands' modules stay unloaded, and so does the graph engine (the samples import only END)
    assert modules == "CLI ['wfkit.cli.common', 'wfkit.cli.workflows'] False"
    assert "review-loop" in out.stdout  # with the samples plugin installed, as make test does


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "No such command 'nosuch'. (see 'wfkit --help')"),
        (["runs", "show"], "Missing argument 'RUN_ID'. (see 'wfkit runs show --help')"),
        (["runs", "list", "--bogus"], "--bogus"),
    ],
)
def test_click_usage_errors_are_one_line_too(wfkit_cli, args, message):
    assert_one_line_error(wfkit_cli.run(*args), 2, message)


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under ``group``, groups included, with its words after ``wfkit``."""
    import click

    found = []
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


def test_every_command_has_an_example_and_a_whole_summary(wfkit_cli):
    from wfkit.cli import cli

    commands = [((), cli), *_commands(cli)]
    assert len(commands) == 27  # a new command is listed here, and gets an example
    for words, command in commands:
        assert "\n    Example: wfkit " in command.help or "\n    Example: WFKIT_" in command.help, words
    for group in ([], ["runs"], ["db"]):
        # a plain terminal's width, as a user meets it; Click cuts a summary that does not fit with "..."
        out = wfkit_cli.run(*group, "--help", env={"COLUMNS": "80"})
        listing = out.stdout.split("Commands:\n")[1]
        assert listing.strip() and "..." not in listing, listing


def test_runs_help_names_each_of_its_commands(wfkit_cli):
    out = wfkit_cli.invoke("runs", "--help")
    description = out.stdout.split("Options:")[0]
    for name in ("list", "show", "stages", "decisions", "watch", "cancel", "resume", "delete", "prune"):
        assert f"\n  {name} " in description, name


def test_graph_takes_json_like_every_command(wfkit_cli):
    as_json = wfkit_cli.invoke("graph", "review-loop", "--json")
    assert as_json.returncode == 0
    assert as_json.stdout == wfkit_cli.invoke("graph", "review-loop", "--format", "json").stdout
    assert json.loads(as_json.stdout)["entry_point"] == "draft"
    assert wfkit_cli.invoke("graph", "review-loop", "--format", "JSON").stdout == as_json.stdout
    assert wfkit_cli.invoke("graph", "review-loop").stdout.startswith("flowchart TD\n")
    assert_one_line_error(wfkit_cli.run("graph", "review-loop", "--json", "--format", "mermaid"), 2,
                          "--json and --format mermaid ask for two formats: give one")


def test_a_bare_group_shows_its_help(wfkit_cli):
    out = wfkit_cli.run("runs")
    assert out.returncode == 2 and "Commands:" in out.stdout + out.stderr and "Error" not in out.stderr


def test_a_param_the_model_declares_as_text_is_taken_as_text(wfkit_cli):
    """text-pipeline's `text` is a str: -p text=null, NaN or [1,2] is that text, not JSON."""
    for raw in ("null", "NaN", "[1,2]", "42"):
        out = wfkit_cli.invoke("graph", "text-pipeline", "--format", "json", "-p", f"text={raw}")
        assert out.returncode == 0, (raw, out.stderr)
    out = wfkit_cli.run("graph", "review-loop", "-p", "threshold=NaN")  # a float param: NaN is no JSON
    assert_one_line_error(out, 2, "threshold: NaN is not a JSON value wfkit can store")
    out = wfkit_cli.run("graph", "review-loop", "-p", "max_rounds=" + "9" * 5000)
    assert_one_line_error(out, 2, "max_rounds: a number of 5,000 digits is longer than a number may be")
    assert len(out.stderr) < 300  # the 5000 digits are not echoed


def test_params_json_from_a_file_or_standard_input(wfkit_cli, tmp_path):
    path = tmp_path / "params.json"
    path.write_text('{"priority": "express"}')
    out = wfkit_cli.run("graph", "branching", "--format", "json", "--params-json", f"@{path}")
    assert out.returncode == 0 and '"express"' in out.stdout
    out = wfkit_cli.run("graph", "branching", "--format", "json", "--params-json", "-", input='{"priority": "express"}')
    assert out.returncode == 0 and '"express"' in out.stdout
    assert_one_line_error(wfkit_cli.run("graph", "branching", "--params-json", f"@{tmp_path}/missing.json"), 2,
                          "cannot read")
    deep = "[" * 2000 + "]" * 2000
    assert_one_line_error(wfkit_cli.run("graph", "branching", "--params-json", '{"a": ' + deep + "}"), 2,
                          "nests too deeply to read")
    # -p: too deep to parse, or deeper than wfkit stores, is an error (never quietly taken as text) ...
    assert_one_line_error(wfkit_cli.run("graph", "branching", "-p", "a=" + deep), 2, "a: nests too deeply to read")
    assert_one_line_error(wfkit_cli.run("graph", "branching", "-p", "a=" + "[" * 200 + "]" * 200), 2,
                          "invalid params for workflow 'branching': it nests deeper than 100 levels (at ['a'][0]")
    # ... unless the param is text
    assert wfkit_cli.invoke("graph", "text-pipeline", "-p", "text=" + deep).returncode == 0
    # a value JSON reads but wfkit cannot store is named by where it is
    for args, where in ((["--params-json", '{"a": 1, "x": NaN}'], "x: NaN"),
                        (["--params-json", '{"a": {"b": [1, Infinity]}}'], "a.b[1]: Infinity"),
                        (["-p", "x=[1, -Infinity]"], "x[1]: -Infinity"),
                        (["--params-json", '{"n": ' + "9" * 5000 + "}"], "n: a number of 5,000 digits")):
        assert_one_line_error(wfkit_cli.run("graph", "branching", *args), 2, where)


def test_hostile_listing_input_is_one_line_and_exit_2(wfkit_cli, db_url):
    out = wfkit_cli.run("runs", "list", url=db_url, env={"WFKIT_DEFAULT_PAGE_SIZE": "100000000000000000000"})
    assert_one_line_error(out, 2, "WFKIT_DEFAULT_PAGE_SIZE must be")
    out = wfkit_cli.run("runs", "list", "--page", str(2**70), url=db_url)
    assert_one_line_error(out, 2, "is too large")
    out = wfkit_cli.run("runs", "show", "x" * 100_000, url=db_url)
    assert_one_line_error(out, 2, "invalid run id 'xxxx")
    assert "(100,000 characters)" in out.stderr and len(out.stderr) < 400
    # no bad value is echoed whole
    for args, problem in ((["runs", "list", "--status", "x" * 100_000], "unknown status 'xxx"),
                          (["runs", "list", "--sort", "x" * 100_000], "sort field 'xxx"),
                          (["runs", "list", "--sort", "y" * 100], "unknown sort field 'yyy"),
                          (["graph", "z" * 100_000], "no workflow named 'zzz")):
        out = wfkit_cli.run(*args, url=db_url)
        assert out.returncode in (1, 2) and problem in out.stderr and len(out.stderr) < 600, (args, out.stderr[:300])
    out = wfkit_cli.run("run", "text-pipeline", "-p", "x=" + "9" * 5000, url=db_url)
    assert_one_line_error(out, 2, "x: a number of 5,000 digits is longer than a number may be (4,300 digits)")
    assert "sys.set_int_max_str_digits" not in out.stderr


def test_filters_no_database_can_compare_are_bad_input(db_url):
    from wfkit.errors import InvalidQueryError
    from wfkit.store.query import RunFilters
    from wfkit.store.repository import Repository

    for keywords in ({"status": 3}, {"workflow_name": 3}, {"status": [3]}, {"workflow_name": {"a": 1}}):
        with pytest.raises(InvalidQueryError, match=r"filter must be a (run status|workflow name) or a list of them"):
            Repository(db_url).list_runs(**keywords)  # a type mistake is a wfkit error (HTTP 400), not a TypeError
    for bad, problem in (("a\x00b", "contains a NUL character"), ("a\ud800", "is not valid text")):
        with pytest.raises(InvalidQueryError, match=problem):
            Repository(db_url).list_runs(workflow_name=bad)
        with pytest.raises(InvalidQueryError, match=problem):
            RunFilters.from_query({"workflow_name": bad})
    # each name is a bound parameter, which databases cap: too many is bad input, not a database error
    from wfkit.store.query import MAX_FILTER_VALUES

    repository = Repository(db_url)
    assert repository.list_runs(workflow_name=[f"w{i}" for i in range(MAX_FILTER_VALUES)]).total == 0
    for names in ([f"w{i}" for i in range(70_000)], ",".join(f"w{i}" for i in range(MAX_FILTER_VALUES + 1))):
        with pytest.raises(InvalidQueryError, match=f"more than {MAX_FILTER_VALUES} workflow names in one filter"):
            repository.list_runs(workflow_name=names)
    assert repository.list_runs(workflow_name=["same"] * 70_000).total == 0  # duplicates count once


def test_params_from_json_then_pairs_the_last_value_of_a_key_wins():
    from wfkit.cli.params import parse_params

    assert parse_params(["b=2", "c=x", "b=[3]"], '{"a": 1, "b": 1}') == {"a": 1, "b": [3], "c": "x"}


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal for stdin needs POSIX")
@pytest.mark.parametrize(("answer", "code", "current"), [("n", 1, HEAD), ("y", 0, None)])
def test_downgrade_to_base_asks_at_a_terminal(wfkit_cli, tmp_path, answer, code, current):
    import pty

    url = f"sqlite:///{tmp_path}/asked.db"
    assert wfkit_cli.invoke("db", "upgrade", url=url).returncode == 0
    master, slave = pty.openpty()
    try:
        os.write(master, f"{answer}\n".encode())
        out = wfkit_cli.run("db", "downgrade", "base", url=url, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert out.returncode == code, out.stderr
    assert "to base removes every wfkit table, and all the run history in them. Go on?" in out.stderr
    assert json.loads(wfkit_cli.invoke("db", "current", "--json", url=url).stdout)["current"] == current


# --------------------------------------------------------------------------- short run ids


def _at_a_terminal(wfkit_cli: Any, url: str, *args: str) -> tuple[int, str]:
    """A command's exit code and output with a pseudo-terminal as its stdout."""
    import pty

    master, slave = pty.openpty()
    try:
        out = subprocess.run([WFKIT, *args], stdout=slave, stderr=subprocess.PIPE, env=wfkit_cli.environ(url=url),
                             timeout=60)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    return out.returncode, shown.decode().replace("\r\n", "\n")


def test_runs_list_prints_short_ids_at_a_terminal_that_every_command_takes(wfkit_cli, engine):
    from wfkit.ids import new_id

    runs = [make_run(id=new_id(), created_at=T0 + timedelta(seconds=i), status=RunStatus.COMPLETED)
            for i in range(5)]  # made together: their ids share their first digits
    add(engine, *runs)
    url = engine.url.render_as_string(hide_password=False)
    code, text = _at_a_terminal(wfkit_cli, url, "runs", "list")
    assert code == 0
    shown = [line.split()[0] for line in text.splitlines()[1:-1]]
    assert len(shown) == 5 and all(8 <= len(s.replace("-", "")) < 32 for s in shown)
    for short, run in zip(shown, reversed(runs)):
        assert str(run.id).startswith(short)
        doc = json.loads(wfkit_cli.run("runs", "show", short, "--json", url=url).stdout)
        assert doc["id"] == str(run.id)
    # into a pipe, whole ids, as before
    piped = wfkit_cli.run("runs", "list", url=url).stdout.splitlines()
    assert [line.split()[0] for line in piped[1:-1]] == [str(r.id) for r in reversed(runs)]


def test_every_command_taking_a_run_id_takes_a_short_one_or_latest(wfkit_cli, db_url, history):
    newest = history[-1]
    short = str(newest.id)[:13]
    for command in ("show", "stages", "decisions"):
        by_short = wfkit_cli.run("runs", command, short, "--json", url=db_url)
        by_latest = wfkit_cli.run("runs", command, "latest", "--json", url=db_url)
        assert by_short.returncode == 0 and by_short.stdout == by_latest.stdout == \
            wfkit_cli.run("runs", command, str(newest.id), "--json", url=db_url).stdout
    out = wfkit_cli.run("runs", "cancel", short.upper(), url=db_url)
    assert_one_line_error(out, 2, "a run cannot go from completed to cancelled")
    out = wfkit_cli.run("runs", "delete", short.replace("-", ""), url=db_url)
    assert out.returncode == 0 and out.stdout == f"deleted run {newest.id}\n"
    assert_one_line_error(wfkit_cli.run("runs", "show", str(newest.id), url=db_url), 1, "no run with id")
    assert json.loads(wfkit_cli.run("runs", "show", "latest", "--json", url=db_url).stdout)["id"] == str(
        history[-2].id)
    assert_one_line_error(wfkit_cli.run("runs", "resume", "abcdef99", url=db_url), 1,
                          "no run with an id starting 'abcdef99'")
