"""wfkit's tables and types, defined once with SQLModel.

- ``Run``: one execution of a workflow.
- ``Stage``: one execution of one node within a run (input and output snapshots).
- ``Decision``: one routing choice made after a node (which edge, which predicate).
- ``Checkpoint``: the latest resumable state of a run (one row per run).

The enums ``RunStatus`` and ``StageStatus`` are ``str`` enums stored as their
lower-case values. ``RUN_TRANSITIONS`` is the one place that says which run
status changes are allowed; :func:`check_transition` enforces it.

JSON columns are JSONB on PostgreSQL and JSON on SQLite. Times are
timezone-aware UTC on both engines, including values read back from SQLite.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Field, SQLModel

from wfkit.errors import InvalidStatusError
from wfkit.formatting import shown

UTC = timezone.utc


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamp with time zone``. SQLite has no time zones,
    so values are converted to UTC and stored without an offset, in a fixed
    format that sorts correctly as text; on the way out they get UTC attached.
    A naive datetime handed in is taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        else:
            value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: PostgreSQL's fill factor for the tables whose rows are updated at every step (percent).
RUNS_FILLFACTOR = 80

#: JSON on SQLite (and elsewhere), JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class RunStatus(str, enum.Enum):
    """Where a run is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


class StageStatus(str, enum.Enum):
    """Where one node execution is."""

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


#: The allowed run status changes: from a status, the statuses it may move to.
#: Failed and cancelled runs may go back to running: that is a resume.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    # back to pending: a worker that stops hands its runs back to the queue
    RunStatus.RUNNING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PENDING}),
    RunStatus.COMPLETED: frozenset(),
    # to pending: a resume submitted to the workers (`wfkit runs resume ID --submit`)
    RunStatus.FAILED: frozenset({RunStatus.RUNNING, RunStatus.PENDING}),
    RunStatus.CANCELLED: frozenset({RunStatus.RUNNING, RunStatus.PENDING}),
}


def parse_run_status(value: RunStatus | str) -> RunStatus:
    """``value`` as a :class:`RunStatus`, or :class:`InvalidStatusError` naming the allowed ones."""
    if isinstance(value, RunStatus):
        return value
    try:
        return RunStatus(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(s.value for s in RunStatus)
        raise InvalidStatusError(f"unknown run status {shown(value)}: expected one of {allowed}") from None


def can_transition(current: RunStatus | str, new: RunStatus | str) -> bool:
    """Whether a run may move from ``current`` to ``new``."""
    return parse_run_status(new) in RUN_TRANSITIONS[parse_run_status(current)]


def check_transition(current: RunStatus | str, new: RunStatus | str) -> RunStatus:
    """Return ``new`` as a :class:`RunStatus` if a run may move there from ``current``.

    Raises :class:`InvalidStatusError` naming both statuses and what is allowed.
    """
    cur, nxt = parse_run_status(current), parse_run_status(new)
    allowed = RUN_TRANSITIONS[cur]
    if nxt not in allowed:
        if not allowed:
            raise InvalidStatusError(f"a run cannot go from {cur.value} to {nxt.value}: {cur.value} is final")
        options = ", ".join(sorted(s.value for s in allowed))
        raise InvalidStatusError(
            f"a run cannot go from {cur.value} to {nxt.value}; from {cur.value} it may go to {options}"
        )
    return nxt


class _Record(SQLModel):
    """Shared behaviour of the tables: a JSON form with fields in declared order."""

    def to_dict(self, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """The snake_case JSON form, fields in declared order (but those in ``exclude``): UUIDs as
        text, times as ISO 8601 UTC (``...Z``), statuses as their values, JSON values as they are.
        (Built by hand rather than by pydantic, whose depth limit would make one deeply nested
        value break every listing that holds its run.)"""
        names, converted = _json_plan(type(self))
        values = self.__dict__
        out = {name: values.get(name) for name in names}
        for name in exclude:
            out.pop(name, None)
        for name, convert in converted:
            value = out.get(name)
            if value is not None:
                out[name] = convert(value)
        return out


_PLANS: dict[type, tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]] = {}


def _json_plan(cls: type[SQLModel]) -> tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """The fields of ``cls``, and those whose values need converting for JSON with how, chosen once
    from their types: a listing turns thousands of rows into JSON, and checking every value weighs."""
    plan = _PLANS.get(cls)
    if plan is None:
        converters = [(name, _converter(field.annotation)) for name, field in cls.model_fields.items()]
        plan = (tuple(name for name, _ in converters),
                tuple((name, convert) for name, convert in converters if convert is not None))
        _PLANS[cls] = plan
    return plan


def _converter(annotation: Any) -> Any:
    import typing

    kinds = {a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)}
    if kinds <= {str, int, float, bool}:
        return None
    if len(kinds) == 1:
        (kind,) = kinds
        if kind is uuid.UUID:
            return str
        # A loader that skips validation may leave text where a type is declared: those stay as they are.
        if kind is datetime:
            return lambda value: value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else value
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return lambda value: value.value if isinstance(value, enum.Enum) else value
    return _json_value  # a JSON value (Any): as it is, but for what _json_value converts


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _status_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    # Stored as the lower-case value in a VARCHAR (no native PostgreSQL enum, no
    # CHECK constraint): adding a status later is then a code change, not a migration.
    return sa.Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda cls: [member.value for member in cls],
        validate_strings=True,
    )


def _created_at() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Run(_Record, table=True):
    """One execution of a workflow."""

    __tablename__ = "runs"
    __table_args__ = (
        # Listings sort newest first with ``id`` as the tie-breaker; each filter
        # the listing offers has a composite index ending in (created_at, id), so
        # a filtered page is an index range scan (read backwards for DESC) with
        # no sort step and its COUNT reads only the index. The composites also
        # serve plain lookups by their leading column(s).
        sa.Index("ix_runs_created_at", "created_at", "id"),
        sa.Index("ix_runs_status_created_at", "status", "created_at", "id"),
        sa.Index("ix_runs_workflow_name_created_at", "workflow_name", "created_at", "id"),
        sa.Index("ix_runs_workflow_name_status_created_at", "workflow_name", "status", "created_at", "id"),
        sa.Index("ix_runs_idempotency_key", "idempotency_key", unique=True),
        # A running run's row is rewritten at every step: room on its page keeps each new version
        # there (a HOT update, which writes no index entry).
        {"postgresql_with": {"fillfactor": RUNS_FILLFACTOR}},
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    workflow_name: str = Field(max_length=200, nullable=False)
    status: RunStatus = Field(default=RunStatus.PENDING, sa_type=_status_type(RunStatus), nullable=False)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    result: Any | None = Field(default=None, sa_type=JSONType, nullable=True)
    error_message: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = _created_at()
    updated_at: datetime = _created_at()
    #: set by ``wfkit runs cancel`` (any process); the executing process stops before its next node
    cancel_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    #: why the run was (or is to be) cancelled: Ctrl-C, a signal, who asked and from where, forced
    cancel_reason: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    # -- the lease: which process executes the run (see wfkit.executor.lease)
    #: who holds (or last held) the run: ``host pid N (random id)``
    owner: str | None = Field(default=None, max_length=200, nullable=True)
    #: how many times the run was claimed: its first execution is attempt 1, each resume or takeover adds one
    attempt: int = Field(default=0, nullable=False)
    #: the fencing number: grows by one at every claim (and a forced cancel); a process writes only
    #: while the run's epoch is still the one it claimed
    lease_epoch: int = Field(default=0, nullable=False)
    #: until when the owner holds the run, by the database's clock (None once the run ended)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    # -- the stage being executed (its row in ``stages`` is written once, when it ends)
    current_stage_id: uuid.UUID | None = Field(default=None, nullable=True)
    current_node: str | None = Field(default=None, max_length=200, nullable=True)
    current_iteration: int | None = Field(default=None, nullable=True)
    current_stage_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    #: the key a client created the run with, so that a retried request gets the same run (unique)
    idempotency_key: str | None = Field(default=None, max_length=200, nullable=True)

    @property
    def duration_ms(self) -> float | None:
        """Milliseconds from start to completion, or None if it has not both started and ended."""
        if self.started_at is None or self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds() * 1000.0

    @property
    def lease_expired(self) -> bool | None:
        """For a pending or running run: whether no process holds it any more (its lease expired by
        this machine's clock, or it never had one); None for a run that ended. Claims compare with
        the database's clock; this is for showing."""
        if self.status not in (RunStatus.PENDING, RunStatus.RUNNING):
            return None
        if self.lease_expires_at is None:
            return self.status is RunStatus.RUNNING  # a pending run without a lease waits for a claim
        return self.lease_expires_at <= utcnow()

    def to_dict(self, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
        """As :meth:`_Record.to_dict`, with the derived ``lease_expired`` after the lease's fields."""
        out = super().to_dict(exclude=exclude)
        if "lease_expired" not in set(exclude):
            out["lease_expired"] = self.lease_expired
        return out


def _run_fk() -> Any:
    return Field(
        sa_column=sa.Column(
            "run_id", sa.Uuid(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        )
    )


class Stage(_Record, table=True):
    """One execution of one node of a run: its input, output, duration and outcome."""

    __tablename__ = "stages"
    __table_args__ = (
        # get_stages: WHERE run_id = ? ORDER BY created_at, id
        sa.Index("ix_stages_run_id_created_at", "run_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    run_id: uuid.UUID = _run_fk()
    node_name: str = Field(max_length=200, nullable=False)
    iteration: int = Field(default=1, nullable=False)
    status: StageStatus = Field(default=StageStatus.STARTED, sa_type=_status_type(StageStatus), nullable=False)
    #: the state the node started from (the repository fills it in when the row stores it as ``input_from``)
    input_snapshot: Any | None = Field(default=None, sa_type=JSONType, nullable=True)
    #: the stage whose end state this one started from (its input with its output merged in), when the
    #: row does not store its input itself: a step's input is then not written a second time
    input_from: uuid.UUID | None = Field(default=None, nullable=True)
    #: the node's updates (the repository fills in those named in ``output_unchanged``)
    output_snapshot: Any | None = Field(default=None, sa_type=JSONType, nullable=True)
    duration_ms: float | None = Field(default=None, nullable=True)
    #: one line: what failed (the node's exception, or why the stage was ended)
    error_message: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    #: the formatted traceback of the exception that failed the stage, if there was one
    error_traceback: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    created_at: datetime = _created_at()
    #: the run's attempt that executed it (1 for its first execution; a resume or a takeover is the
    #: next); None for stages written before migration 0008
    attempt: int | None = Field(default=None, nullable=True)
    #: the keys of the node's updates whose values the state held already, as they were: the row's
    #: ``output_snapshot`` leaves them out (a node that returns the whole state writes only what it
    #: changed), and the repository fills them in from the stage's input; None: there were none
    output_unchanged: list[str] | None = Field(default=None, sa_type=JSONType, nullable=True)


class Decision(_Record, table=True):
    """One routing choice: which edge left ``from_node`` and why."""

    __tablename__ = "decisions"
    __table_args__ = (
        # get_decisions: WHERE run_id = ? ORDER BY created_at, id
        sa.Index("ix_decisions_run_id_created_at", "run_id", "created_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    run_id: uuid.UUID = _run_fk()
    from_node: str = Field(max_length=200, nullable=False)
    to_node: str | None = Field(default=None, max_length=200, nullable=True)
    predicate_name: str | None = Field(default=None, max_length=200, nullable=True)
    predicate_result: bool = Field(default=True, nullable=False)
    reason: str | None = Field(default=None, sa_type=sa.Text, nullable=True)
    created_at: datetime = _created_at()


class Checkpoint(_Record, table=True):
    """The latest resumable state of a run: one row per run."""

    __tablename__ = "checkpoints"
    __table_args__ = ({"postgresql_with": {"fillfactor": RUNS_FILLFACTOR}},)  # rewritten at every step too

    run_id: uuid.UUID = Field(
        sa_column=sa.Column(
            "run_id", sa.Uuid(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
        )
    )
    state_data: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    checkpoint_node: str | None = Field(default=None, max_length=200, nullable=True)
    created_at: datetime = _created_at()
    updated_at: datetime = _created_at()


class Worker(_Record, table=True):
    """A ``wfkit worker`` process (PostgreSQL): who it is and when it was last heard from. Its row is
    written when it starts, its heartbeat refreshed while it runs, and deleted when it stops; the
    row of a worker that died stays until the workers' recovery prunes it. The runs it holds are
    the runs whose ``owner`` is its ``id``."""

    __tablename__ = "workers"

    #: the owner its runs are held by (``NAME on host pid N (random id)``)
    id: str = Field(primary_key=True, max_length=200)
    name: str = Field(max_length=200, nullable=False)
    host: str = Field(max_length=255, nullable=False)
    pid: int = Field(nullable=False)
    #: the queues it takes runs from (empty: every queue)
    queues: list[str] = Field(default_factory=list, sa_type=JSONType, nullable=False)
    concurrency: int = Field(default=1, nullable=False)
    started_at: datetime = _created_at()
    #: when it last said it is alive, by the database's clock
    last_heartbeat: datetime = _created_at()
    #: its lease: it is alive while heard from within this many seconds (None: written before 0007)
    lease_seconds: float | None = Field(default=None, nullable=True)


#: The tables, in the order they are created.
TABLES = (Run, Stage, Decision, Checkpoint, Worker)
metadata = SQLModel.metadata
