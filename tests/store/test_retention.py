"""Retention (``wfkit.prune_runs``): only finished runs that ended before the cutoff go, with their
stages, decisions and checkpoints (and, on PostgreSQL, their finished jobs), a batch at a time; on
both engines."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

import wfkit
from factories import add, add_history, count, make_run
from wfkit.errors import InvalidQueryError, InvalidStatusError
from wfkit.executor import RunControl
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, utcnow
from wfkit.store.repository import Repository
from wfkit.store.retention import PruneResult, parse_age, prune_runs

DAY = timedelta(days=1)


def _run(days_ago: float, status: RunStatus, *, ended_days_ago: float | None = None, workflow: str = "demo",
         completed: bool = True) -> Run:
    """A run created ``days_ago`` days ago; a finished one ended ``ended_days_ago`` days ago (default:
    a minute after it was created), with ``completed_at`` set unless ``completed`` is false (then only
    its ``updated_at`` says when it ended)."""
    created = utcnow() - days_ago * DAY
    ended = created + timedelta(minutes=1) if ended_days_ago is None else utcnow() - ended_days_ago * DAY
    finished = status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
    return make_run(workflow_name=workflow, status=status, created_at=created,
                    completed_at=ended if finished and completed else None,
                    updated_at=ended if finished else created)


def _ids(engine: sa.Engine) -> set:
    with engine.connect() as conn:
        return {Repository(engine).find_run(row[0]).id for row in conn.execute(sa.select(Run.id))}


def _all(engine: sa.Engine) -> dict[str, int]:
    return {model.__name__: count(engine, model) for model in (Run, Stage, Decision, Checkpoint)}


def test_only_finished_runs_that_ended_before_the_cutoff_go_with_their_history(engine):
    old = {status: _run(40, status) for status in RunStatus}
    recent = {status: _run(5, status) for status in RunStatus}
    add(engine, *old.values(), *recent.values())
    for run in (*old.values(), *recent.values()):
        add_history(engine, run, ["a", "b", "c"])
    before = _all(engine)

    result = prune_runs(engine, older_than="30d")

    gone = {old[s].id for s in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)}
    assert result.deleted == 3 and result.batches == 1 and not result.dry_run
    assert _ids(engine) == {r.id for r in (*old.values(), *recent.values())} - gone
    # pending and running runs are never deleted, however old
    assert {old[RunStatus.PENDING].id, old[RunStatus.RUNNING].id} <= _ids(engine)
    # each deleted run took its 3 stages, 2 decisions and checkpoint; the others kept theirs
    assert _all(engine) == {"Run": before["Run"] - 3, "Stage": before["Stage"] - 9,
                            "Decision": before["Decision"] - 6, "Checkpoint": before["Checkpoint"] - 3}
    repo = Repository(engine)
    for run in (*recent.values(), old[RunStatus.PENDING], old[RunStatus.RUNNING]):
        assert len(repo.get_stages(run.id)) == 3 and len(repo.get_decisions(run.id)) == 2
        assert repo.find_checkpoint(run.id).run_id == run.id
    assert result.statuses == ("completed", "failed", "cancelled") and result.workflow_names == ()
    assert utcnow() - 30 * DAY - timedelta(minutes=1) < result.cutoff < utcnow() - 30 * DAY
    # again: nothing left to delete
    assert prune_runs(engine, older_than="30d").deleted == 0


def test_a_run_counts_from_when_it_ended(engine):
    long_but_recent = _run(60, RunStatus.COMPLETED, ended_days_ago=10)  # created long ago, ended lately
    ended_long_ago = _run(60, RunStatus.FAILED, ended_days_ago=45)
    # cancelled while pending: no completed_at, its updated_at says when it ended
    no_completed_at_old = _run(50, RunStatus.CANCELLED, ended_days_ago=40, completed=False)
    no_completed_at_new = _run(50, RunStatus.CANCELLED, ended_days_ago=2, completed=False)
    add(engine, long_but_recent, ended_long_ago, no_completed_at_old, no_completed_at_new)

    assert prune_runs(engine, older_than=timedelta(days=30)).deleted == 2
    assert _ids(engine) == {long_but_recent.id, no_completed_at_new.id}


def test_the_age_in_each_unit(engine):
    runs = [_run(days, RunStatus.COMPLETED) for days in (20, 10, 3, 1.5, 0.5)]
    add(engine, *runs)
    assert prune_runs(engine, older_than="2w").deleted == 1  # 20 days
    assert prune_runs(engine, older_than="168h").deleted == 1  # 10 days
    assert prune_runs(engine, older_than="2000m").deleted == 2  # 3 and 1.5 days (2000 minutes: 1.39 days)
    assert prune_runs(engine, older_than=f"{6 * 3600}s").deleted == 1  # half a day
    assert _ids(engine) == set()


def test_filters_by_status_and_workflow(engine):
    runs = {(wf, status): _run(40, status, workflow=wf)
            for wf in ("alpha", "beta", "gamma") for status in (RunStatus.COMPLETED, RunStatus.FAILED,
                                                                   RunStatus.CANCELLED)}
    add(engine, *runs.values())

    failed = prune_runs(engine, older_than="30d", statuses=["failed"])
    assert failed.deleted == 3 and failed.statuses == ("failed",)
    some = prune_runs(engine, older_than="30d", statuses="completed, cancelled", workflow_names=["alpha", "beta"])
    assert some.deleted == 4 and some.workflow_names == ("alpha", "beta")
    assert _ids(engine) == {runs["gamma", RunStatus.COMPLETED].id, runs["gamma", RunStatus.CANCELLED].id}
    assert prune_runs(engine, older_than="30d", workflow_names="gamma,delta").deleted == 2


def test_a_dry_run_counts_and_deletes_nothing(engine):
    add(engine, *[_run(40 + i, RunStatus.COMPLETED) for i in range(7)], _run(40, RunStatus.RUNNING),
        _run(1, RunStatus.FAILED))
    before = _all(engine)
    dry = prune_runs(engine, older_than="30d", dry_run=True, batch_size=2)
    assert (dry.deleted, dry.dry_run, dry.batches) == (7, True, 0)
    assert dry.to_dict()["dry_run"] is True and dry.to_dict()["deleted"] == 7
    assert _all(engine) == before
    assert prune_runs(engine, older_than="30d", batch_size=2).deleted == 7


def test_batches_report_progress_oldest_first(engine):
    runs = [_run(100 - i, RunStatus.COMPLETED) for i in range(10)]
    add(engine, *runs)
    for run in runs:
        add_history(engine, run, ["a", "b"])
    seen: list[tuple[int, int, set]] = []
    result = prune_runs(engine, older_than="30d", batch_size=3,
                        progress=lambda so_far: seen.append((so_far.deleted, so_far.batches, _ids(engine))))
    assert [(d, b) for d, b, _ in seen] == [(3, 1), (6, 2), (9, 3), (10, 4)]
    # each batch committed on its own, the oldest runs first
    assert seen[0][2] == {r.id for r in runs[3:]} and seen[2][2] == {runs[9].id}
    assert result.deleted == 10 and result.batches == 4 and result.seconds > 0
    assert _all(engine) == {"Run": 0, "Stage": 0, "Decision": 0, "Checkpoint": 0}


def test_a_run_resumed_between_batches_is_kept(engine):
    runs = [_run(100 - i, RunStatus.FAILED) for i in range(6)]
    add(engine, *runs)
    add_history(engine, runs[4], ["a", "b"])
    late = runs[4].id

    def resume_one(_so_far: PruneResult) -> None:
        # what a claim does to a failed run it resumes: running again, no end, touched now
        with engine.begin() as conn:
            conn.execute(sa.update(Run).where(Run.id == late).values(
                status=RunStatus.RUNNING, completed_at=None, updated_at=utcnow()))

    result = prune_runs(engine, older_than="30d", batch_size=2, progress=resume_one)
    assert result.deleted == 5
    assert _ids(engine) == {late}
    assert len(Repository(engine).get_stages(late)) == 2


def test_a_run_that_ended_again_lately_is_kept(engine):
    """A run resumed and failed again since the prune began ended after its cutoff: it stays."""
    runs = [_run(100 - i, RunStatus.FAILED) for i in range(4)]
    add(engine, *runs)

    def fail_again(_so_far: PruneResult) -> None:
        with engine.begin() as conn:
            conn.execute(sa.update(Run).where(Run.id == runs[3].id).values(completed_at=utcnow(),
                                                                           updated_at=utcnow()))

    assert prune_runs(engine, older_than="30d", batch_size=2, progress=fail_again).deleted == 3
    assert _ids(engine) == {runs[3].id}


def test_cascades_through_an_engine_not_made_by_wfkit(db_url, engine):
    """SQLite cascades only with foreign keys on, which wfkit's engines turn on: a prune through a
    plain SQLAlchemy engine turns them on for its own connections."""
    run = _run(40, RunStatus.COMPLETED)
    add(engine, run)
    add_history(engine, run, ["a", "b", "c"])
    plain = sa.create_engine(sa.make_url(db_url).set(
        drivername="postgresql+psycopg" if db_url.startswith("postgresql") else "sqlite"))
    try:
        assert prune_runs(plain, older_than="30d").deleted == 1
    finally:
        plain.dispose()
    assert _all(engine) == {"Run": 0, "Stage": 0, "Decision": 0, "Checkpoint": 0}


def test_a_url_and_the_public_names(db_url, engine):
    add(engine, _run(40, RunStatus.COMPLETED), _run(40, RunStatus.CANCELLED))
    assert wfkit.prune_runs is prune_runs and wfkit.PruneResult is PruneResult
    with RunControl(db_url) as control:
        assert control.prune(older_than="30d", dry_run=True).deleted == 2
        assert control.prune(older_than="30d", statuses=["cancelled"]).deleted == 1
    assert wfkit.prune_runs(db_url, older_than="30d").deleted == 1


@pytest.mark.parametrize("older_than, message", [
    ("30", "older_than '30' is not a duration: give a whole number and a unit: 45s, 90m, 12h, 30d or 2w"),
    ("30y", "older_than '30y' is not a duration"),
    ("1.5d", "older_than '1.5d' is not a duration"),
    ("-3d", "older_than '-3d' is not a duration"),
    ("", "older_than '' is not a duration"),
    ("0d", "older_than '0d' must be more than zero"),
    (timedelta(0), "older_than '0:00:00' must be more than zero"),
    (timedelta(days=-1), "older_than '-1 day, 0:00:00' must be more than zero"),
    ("99999999999999999999w", "older_than '99999999999999999999w' is too long: at most 365000d"),
    (timedelta(days=365_001), "older_than '365001 days, 0:00:00' is too long: at most 365000d"),
    (30, "older_than must be a timedelta or text such as '30d', got 30 (int)"),
])
def test_bad_ages_are_refused_and_nothing_is_deleted(engine, older_than, message):
    add(engine, _run(40, RunStatus.COMPLETED))
    with pytest.raises(InvalidQueryError, match="^" + re.escape(message)):
        prune_runs(engine, older_than=older_than)
    assert count(engine, Run) == 1


@pytest.mark.parametrize("statuses", [["running"], "completed,pending", [RunStatus.RUNNING, "failed"]])
def test_pending_and_running_are_refused(engine, statuses):
    add(engine, _run(40, RunStatus.COMPLETED), _run(40, RunStatus.RUNNING), _run(40, RunStatus.PENDING))
    with pytest.raises(InvalidStatusError, match="runs that have not ended are never pruned: status "
                                                 "(pending|running) is not allowed; give any of completed, failed, "
                                                 "cancelled"):
        prune_runs(engine, older_than="30d", statuses=statuses)
    assert count(engine, Run) == 3


def test_other_bad_input_is_refused(engine):
    add(engine, _run(40, RunStatus.COMPLETED))
    with pytest.raises(InvalidQueryError, match="unknown status 'done': allowed values are"):
        prune_runs(engine, older_than="30d", statuses=["done"])
    for size in (0, -1, True, 1.5, 100_001):
        with pytest.raises(InvalidQueryError, match=r"batch_size must be a whole number from 1 to 100000"):
            prune_runs(engine, older_than="30d", batch_size=size)
    with pytest.raises(InvalidQueryError, match="contains a NUL character"):
        prune_runs(engine, older_than="30d", workflow_names=["a\x00b"])
    assert count(engine, Run) == 1


def test_parse_age():
    assert parse_age("30d") == timedelta(days=30) == parse_age(" 30 D ")
    assert parse_age("2w") == timedelta(weeks=2) and parse_age("45s") == timedelta(seconds=45)
    assert parse_age("90m") == timedelta(minutes=90) and parse_age("12h") == timedelta(hours=12)
    assert parse_age(timedelta(hours=3)) == timedelta(hours=3)


def test_the_finished_jobs_of_pruned_runs_go_with_them(pg_url):
    """On PostgreSQL with the workers' queue: a pruned run's finished jobs go; a job still waiting
    (of any run) and the jobs of runs kept stay."""
    from wfkit.store import queue
    from wfkit.store.db import create_engine

    engine = create_engine(pg_url)
    try:
        assert queue.has_queue(engine)
        old, kept = _run(40, RunStatus.COMPLETED), _run(1, RunStatus.COMPLETED)
        waiting = _run(40, RunStatus.CANCELLED)
        add(engine, old, kept, waiting)
        raw = engine.raw_connection()
        try:
            driver = raw.driver_connection
            for run in (old, kept, waiting):
                queue.enqueuer(run.id, "q1")(driver)
            driver.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE args->>'run_id' <> %s",
                           (str(waiting.id),))
            driver.commit()
        finally:
            raw.close()
        result = prune_runs(engine, older_than="30d")
        assert result.deleted == 2 and result.jobs_deleted == 1
        assert [status for _, _, status in queue.jobs_of(engine, old.id)] == []
        assert [status for _, _, status in queue.jobs_of(engine, kept.id)] == ["succeeded"]
        assert [status for _, _, status in queue.jobs_of(engine, waiting.id)] == ["todo"]
    finally:
        engine.dispose()
