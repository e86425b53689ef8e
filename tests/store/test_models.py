from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from factories import add, add_history, count, make_run
from wfkit.errors import InvalidStatusError
from wfkit.store.models import (
    RUN_TRANSITIONS,
    Checkpoint,
    Decision,
    Run,
    RunStatus,
    Stage,
    StageStatus,
    can_transition,
    check_transition,
    parse_run_status,
)

UTC = timezone.utc

ALLOWED = {
    ("pending", "running"),
    ("pending", "cancelled"),
    ("running", "completed"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("failed", "running"),
    ("cancelled", "running"),
    ("running", "pending"),  # a stopping worker hands its run back to the queue
    ("failed", "pending"),  # a resume submitted to the workers
    ("cancelled", "pending"),
}


def test_status_enums_are_lowercase_strings():
    assert [s.value for s in RunStatus] == ["pending", "running", "completed", "failed", "cancelled"]
    assert [s.value for s in StageStatus] == ["started", "completed", "failed"]
    assert RunStatus.FAILED == "failed" and isinstance(RunStatus.FAILED, str)
    assert str(RunStatus.CANCELLED) == "cancelled"


@pytest.mark.parametrize(("current", "new"), list(itertools.product([s.value for s in RunStatus], repeat=2)))
def test_every_transition_follows_the_table(current, new):
    allowed = (current, new) in ALLOWED
    assert can_transition(current, new) is allowed
    assert (RunStatus(new) in RUN_TRANSITIONS[RunStatus(current)]) is allowed
    if allowed:
        assert check_transition(RunStatus(current), new) is RunStatus(new)
    else:
        with pytest.raises(InvalidStatusError, match=f"from {current} to {new}"):
            check_transition(current, new)


def test_completed_is_final_and_says_so():
    with pytest.raises(InvalidStatusError, match="cannot go from completed to .*: completed is final"):
        check_transition("completed", "running")


def test_unknown_status_names_the_allowed_ones():
    with pytest.raises(InvalidStatusError, match="unknown run status 'done': expected one of pending, running"):
        parse_run_status("done")
    assert parse_run_status(" FAILED ") is RunStatus.FAILED


def test_to_dict_uses_snake_case_in_declared_order():
    run = make_run(workflow_name="w", params={"a": 1})
    data = run.to_dict()
    assert list(data) == [
        "id", "workflow_name", "status", "params", "result", "error_message",
        "started_at", "completed_at", "created_at", "updated_at", "cancel_requested_at", "cancel_reason",
        "owner", "attempt", "lease_epoch", "lease_expires_at", "current_stage_id", "current_node",
        "current_iteration", "current_stage_started_at", "idempotency_key", "lease_expired",
    ]
    assert data["status"] == "pending" and data["lease_expired"] is False  # pending, with no lease: not claimed yet
    assert uuid.UUID(data["id"]) == run.id
    assert datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")) == run.created_at


# --------------------------------------------------------------------------- on both engines


def test_times_read_back_timezone_aware_utc(engine):
    plus_two = timezone(timedelta(hours=2))
    started = datetime(2026, 3, 1, 14, 30, 15, 123456, tzinfo=plus_two)  # 12:30:15 UTC
    naive = datetime(2026, 3, 1, 12, 0, 0)  # taken as UTC
    run = make_run(started_at=started, created_at=naive, updated_at=naive)
    add(engine, run)
    with Session(engine) as session:
        back = session.get(Run, run.id)
        for value in (back.started_at, back.created_at, back.updated_at):
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
        assert back.started_at == started
        assert back.started_at.hour == 12 and back.started_at.microsecond == 123456
        assert back.created_at == naive.replace(tzinfo=UTC)
        assert back.completed_at is None


def test_json_round_trip_and_enum_columns(engine):
    params = {"text": "naïve ☃", "nested": {"list": [1, 2.5, None, True]}, "empty": {}}
    run = make_run(params=params, result=[1, "two"], status=RunStatus.FAILED, error_message="boom")
    add(engine, run)
    with Session(engine) as session:
        back = session.get(Run, run.id)
        assert back.params == params
        assert back.result == [1, "two"]
        assert back.status is RunStatus.FAILED
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT status FROM runs")).scalar_one()
    assert stored == "failed"  # the lower-case value, not the enum's name


def test_jsonb_on_postgresql_json_on_sqlite(engine):
    columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("runs")}
    type_name = type(columns["params"]).__name__
    assert type_name == ("JSONB" if engine.dialect.name == "postgresql" else "JSON")


def test_deleting_a_run_cascades_to_its_history(engine):
    keep, gone = make_run(), make_run()
    add(engine, keep, gone)
    add_history(engine, keep, ["a", "b"])
    add_history(engine, gone, ["a", "b", "c"])
    assert (count(engine, Stage), count(engine, Decision), count(engine, Checkpoint)) == (5, 3, 2)
    with engine.begin() as conn:
        conn.execute(sa.delete(Run).where(Run.id == gone.id))
    assert (count(engine, Run), count(engine, Stage), count(engine, Decision), count(engine, Checkpoint)) == (1, 2, 1, 1)


def test_a_stage_needs_an_existing_run(engine):
    with pytest.raises(sa.exc.IntegrityError):
        add(engine, Stage(run_id=uuid.uuid4(), node_name="x", status=StageStatus.STARTED))
