from __future__ import annotations

import uuid
from pathlib import Path

from factories import count
from wfkit.store import migrations
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, utcnow
from wfkit.store.query import RunFilters
from wfkit.store.repository import Repository
from wfkit.store.seed import WORKFLOW_NAMES, seed_history

ROOT = Path(__file__).resolve().parents[2]


def test_seed_history(engine):
    summary = seed_history(engine, 200, seed=7, batch_size=64)
    assert (summary.runs, summary.stages, summary.decisions, summary.checkpoints) == (
        count(engine, Run), count(engine, Stage), count(engine, Decision), count(engine, Checkpoint)
    )
    assert summary.runs == 200 and summary.stages == 5 * summary.checkpoints
    assert 15 <= summary.checkpoints <= 20  # one run in ten, except pending ones (never started)
    repo = Repository(engine)
    assert {r.workflow_name for r in repo.list_runs().data} <= set(WORKFLOW_NAMES)
    assert all(repo.list_runs(filters=RunFilters(status=status)).total > 0 for status in RunStatus)


def test_seed_is_deterministic(engine, new_database):
    other = new_database()
    migrations.upgrade(other)
    now = utcnow()
    seed_history(engine, 30, seed=3, now=now)
    seed_history(other, 30, seed=3, now=now)
    first = [r.to_dict() for r in Repository(engine).list_runs().data]
    second = [r.to_dict() for r in Repository(other).list_runs().data]
    assert first == second


def test_service_example_runs(wfkit_cli, db_url, engine):
    seed_history(engine, 50)
    out = wfkit_cli.python(str(ROOT / "examples" / "newest_run_with_stages.py"), url=db_url)
    assert out.returncode == 0, out.stderr
    run_id = uuid.UUID(out.stdout.strip())
    assert Repository(engine).get_stages(run_id)
    assert "failed runs; the newest:" in out.stderr


def test_seed_command_line(wfkit_cli, db_url):
    for _ in range(2):  # each time new runs (a new seed), so a second call adds to the first
        out = wfkit_cli.python("-m", "wfkit.store.seed", "--runs", "12", "--database-url", db_url)
        assert out.returncode == 0 and out.stdout.startswith("added 12 runs"), out.stderr
    assert Repository(db_url).list_runs().total == 24
    again = wfkit_cli.python("-m", "wfkit.store.seed", "--runs", "12", "--seed", "5", "--database-url", db_url)
    assert again.returncode == 0 and again.stdout.strip().endswith("(--seed 5)")


def test_seed_writes_only_into_a_database_it_is_given(wfkit_cli, db_url):
    """Not into the default database, nor the one WFKIT_DATABASE_URL names: its runs' workflows do not exist."""
    out = wfkit_cli.python("-m", "wfkit.store.seed", "--runs", "12", url=db_url)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: name the database to add synthetic runs to with --database-url URL")
    assert Repository(db_url).list_runs().total == 0
    out = wfkit_cli.python("-m", "wfkit.store.seed", "--runs", "many", "--database-url", db_url)
    assert out.returncode == 2 and out.stderr.strip() == (
        "Error: argument --runs: invalid int value: 'many' (see `python -m wfkit.store.seed --help`)")


def test_seed_command_line_on_a_database_that_is_not_migrated(wfkit_cli, tmp_path):
    missing = tmp_path / "none.db"
    out = wfkit_cli.python("-m", "wfkit.store.seed", "--database-url", f"sqlite:///{missing}")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == ("Error: the database is not migrated to the newest revision: run "
                                  f"`wfkit --database-url sqlite:///{missing} db upgrade` first")  # pasteable as is
    assert not missing.exists()
