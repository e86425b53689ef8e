"""Shell completion (Click's, through ``_WFKIT_COMPLETE``), asked of the real console script as a
shell asks it: workflow names, statuses and run ids (the newest runs' short ids, from the database
in use, on SQLite and PostgreSQL); never an error printed into the shell."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from factories import T0, add, make_run


def complete(cli, *words: str, shell: str = "bash", url: str | None = None, env: dict | None = None):
    """What the shell would get for ``wfkit WORDS`` (the last word being completed): the values, and
    for zsh their descriptions; asserting the process said nothing else."""
    line = " ".join(("wfkit", *words))
    out = cli.run(url=url, env={"_WFKIT_COMPLETE": f"{shell}_complete", "COMP_WORDS": line,
                                "COMP_CWORD": str(len(words)), **(env or {})})
    assert out.returncode == 0 and out.stderr == "", out
    if shell == "zsh":  # type, value, description: three lines per item
        lines = [line for line in out.stdout.splitlines() if line]
        return [(lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)]
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if line]


def test_the_scripts_to_source_name_the_variable(wfkit_cli):
    for shell, marker in (("bash", "_wfkit_completion"), ("zsh", "#compdef wfkit"), ("fish", "complete")):
        out = wfkit_cli.run(env={"_WFKIT_COMPLETE": f"{shell}_source"})
        assert out.returncode == 0 and marker in out.stdout and "_WFKIT_COMPLETE" in out.stdout, shell


def test_commands_workflow_names_and_statuses(wfkit_cli):
    cli = wfkit_cli.using(WFKIT_LOAD_PLUGINS="samples")
    assert complete(cli, "runs", "w") == ["watch"]
    assert complete(cli, "run", "te") == ["text-pipeline"]
    assert complete(cli, "graph", "") == sorted(complete(cli, "graph", "")) and "review-loop" in complete(
        cli, "graph", "")
    assert complete(cli, "runs", "list", "--workflow", "review-loop,bra") == ["review-loop,branching"]
    assert complete(cli, "runs", "list", "--status", "c") == ["completed", "cancelled"]
    assert complete(cli, "runs", "list", "--status", "failed,c") == ["failed,completed", "failed,cancelled"]
    assert complete(cli, "runs", "list", "--status", "completed,c") == ["completed,cancelled"]
    assert complete(cli, "runs", "list", "--status", "nope") == []
    described = dict(complete(cli, "run", "text", shell="zsh"))
    assert list(described) == ["text-pipeline"] and described["text-pipeline"] not in ("", "_")


@pytest.fixture
def runs(engine):
    """Three runs: two whose ids share their first 10 digits, and an older one apart."""
    made = [make_run(id=uuid.UUID(hex_id), workflow_name=name, created_at=T0 + timedelta(minutes=minutes))
            for hex_id, name, minutes in (("0194a3b27c1e7a3f8000000000000001", "alpha", 1),
                                          ("0194a3b27c2e7a3f8000000000000002", "beta", 2),
                                          ("9f00000000004000800000000000000a", "gamma", 0))]
    add(engine, *made)
    return made


def test_run_ids_are_the_newest_runs_short_ids_and_latest(wfkit_cli, db_url, runs):
    first, second, third = runs
    for command in (("runs", "show"), ("runs", "watch"), ("runs", "cancel"), ("runs", "delete"),
                    ("runs", "stages"), ("runs", "decisions"), ("runs", "resume")):
        assert complete(wfkit_cli, *command, "", url=db_url) == ["latest", "0194a3b2-7c2", "0194a3b2-7c1",
                                                                 "9f000000"], command
    assert complete(wfkit_cli, "runs", "show", "0194", url=db_url) == ["0194a3b2-7c2", "0194a3b2-7c1"]
    assert complete(wfkit_cli, "runs", "show", "0194a3b2-7c1", url=db_url) == ["0194a3b2-7c1"]
    assert complete(wfkit_cli, "runs", "show", "la", url=db_url) == ["latest"]
    # typed without dashes, or further than the short id: whole ids that start as typed
    assert complete(wfkit_cli, "runs", "show", "0194a3b27c1", url=db_url) == [first.id.hex]
    assert complete(wfkit_cli, "runs", "show", str(third.id)[:20], url=db_url) == [str(third.id)]
    assert complete(wfkit_cli, "runs", "show", "ffffff", url=db_url) == []
    # zsh shows what each one is
    described = dict(complete(wfkit_cli, "runs", "show", "9f", shell="zsh", url=db_url))
    assert described == {"9f000000": "gamma, pending, created 2026-01-01 12:00:00Z"}


def test_run_ids_come_from_the_database_given_on_the_line(wfkit_cli, db_url, runs, tmp_path):
    elsewhere = f"sqlite:///{tmp_path / 'none.db'}"
    got = complete(wfkit_cli, "--database-url", db_url, "runs", "show", "9", url=elsewhere)
    assert got == ["9f000000"]
    got = complete(wfkit_cli, "runs", "show", "--database-url", db_url, "9", url=elsewhere)
    assert got == ["9f000000"]


@pytest.mark.parametrize("url", ["sqlite:////nonexistent/folder/wfkit.db", "postgresql://nobody@127.0.0.1:9/x",
                                 "not a url"])
def test_a_database_that_cannot_answer_offers_nothing_and_prints_no_error(wfkit_cli, url):
    assert complete(wfkit_cli, "runs", "show", "", url=url) == ["latest"]
    assert complete(wfkit_cli, "runs", "show", "01", url=url) == []


def test_a_database_not_migrated_offers_nothing(wfkit_cli, new_database):
    assert complete(wfkit_cli, "runs", "show", "", url=new_database()) == ["latest"]
