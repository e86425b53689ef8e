"""SqlRecorder: writes a run's history (run, stages, decisions, checkpoint) as it happens, fenced by
the run's lease.

This is the executor's hot path, so it talks to the database driver directly
(sqlite3 or psycopg) with a handful of fixed SQL statements, storing values in
exactly the form the SQLModel tables define (:mod:`wfkit.store.codec` is that
form; the repository reads the rows back through it, and the tests check both
against what the ORM stores and loads).

**One commit per step boundary.** What a step produced (its stage row, written
once when the stage ends; its decision; the checkpoint) is buffered, then
committed in ONE transaction with the run's own row: either the next stage
becomes the run's current stage (``current_*`` columns, which is how a running
stage is seen) or the run ends. The run is created with its first stage
current. A process killed at any instant therefore leaves history and
checkpoint in agreement, and the stage that was running when it died is
visible on the run's row.

**Fencing.** A process executes a run only while it holds the run's lease: it
claimed the run (one compare-and-set statement, :meth:`SqlRecorder.claim`),
which raised the run's ``lease_epoch``. Every write of an executing run is made
only if the run's epoch is still the one its process claimed: on SQLite the
fenced UPDATE of the run comes first in the step's transaction, and a miss rolls
the transaction back; on PostgreSQL a step is one statement whose parts are
data-modifying CTEs that each read ``FROM`` the fenced UPDATE (PostgreSQL runs
every such CTE to completion whether or not the main query reads it, so a check
of the UPDATE alone would still let a stale process write). A miss raises
:class:`~wfkit.errors.LeaseLostError`, naming who holds the run now.

**Durability** (``durability=``): ``"sync"`` (the default) commits to disk
before a step is reported done: SQLite ``synchronous=FULL`` in WAL mode,
PostgreSQL ``synchronous_commit`` as the server is configured (on, by default).
A committed step survives a killed process, a crash of the database server and
of the operating system. ``"async"`` (SQLite ``synchronous=NORMAL``, PostgreSQL
``synchronous_commit=off``) survives a killed process; a crash of the database
server or the machine may lose the last fraction of a second of steps (never
half a step), whose nodes then run again on resume.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, LeaseLostError, WfkitError
from wfkit.ids import new_id
from wfkit.jsontext import dumps
from wfkit.store.codec import codec_for
from wfkit.store.db import is_driver_error, translate_errors
from wfkit.store.models import RunStatus, StageStatus, utcnow

#: What ``durability=`` takes (see the module's docstring).
DURABILITY_MODES = ("sync", "async")

_RUN_COLUMNS = ("id, workflow_name, status, params, result, error_message, started_at, completed_at, created_at, "
                "updated_at, cancel_requested_at, cancel_reason, owner, attempt, lease_epoch, lease_expires_at, "
                "current_stage_id, current_node, current_iteration, current_stage_started_at, idempotency_key")
# A new run, held by its creator (epoch 1): running with its first stage current, or pending. With an
# idempotency key another run already has, nothing is written (and no row returned).
_INSERT_RUN = (
    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, {{j}}, NULL, NULL, ?, NULL, ?, ?, NULL, NULL, ?, ?, 1, "
    "{lease}, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
# A run submitted to the workers: pending, held by nobody (no owner, no lease) until a worker claims it.
_INSERT_SUBMITTED = (
    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, 'pending', {{j}}, NULL, NULL, NULL, NULL, ?, ?, NULL, NULL, "
    "NULL, 0, 1, NULL, NULL, NULL, NULL, NULL, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)
# Its checkpoint from the start (updated at every step after: no upsert, no conflict to check).
_INSERT_CHECKPOINT = ("INSERT INTO checkpoints (run_id, state_data, checkpoint_node, created_at, updated_at) "
                      "VALUES (?, {j}, NULL, ?, ?)")
_CLEAR_STAGE = "current_stage_id = NULL, current_node = NULL, current_iteration = NULL, current_stage_started_at = NULL"
# The claim: one compare-and-set, by the database's clock. A failed or cancelled run (a resume), a
# pending one nobody holds, or (taking over) a running one whose lease expired. The epoch grows by
# one: whoever held the run before writes nothing more. The current stage is left as it was, and
# returned: the stage a process that is gone left running. A cancel asked of a run taken over stands
# (it stops before its first node); a resume clears the one it ended with.
_CLAIMABLE = ("(status IN ('failed', 'cancelled') OR (status = 'pending' AND (lease_expires_at IS NULL OR "
              "lease_expires_at < {now})))")
_TAKEOVER = ("(status IN ('failed', 'cancelled') OR (status IN ('pending', 'running') AND (lease_expires_at IS NULL "
             "OR lease_expires_at < {now})))")
# What a worker claims for a job: a submitted run still waiting (no lease, or its lease expired), or
# one whose worker stopped holding it (re-dispatched by the workers' recovery).
_SUBMITTED = "(status IN ('pending', 'running') AND (lease_expires_at IS NULL OR lease_expires_at < {now}))"
_CLAIM = (
    "UPDATE runs SET status = 'running', owner = ?, lease_epoch = lease_epoch + 1, attempt = attempt + 1, "
    "lease_expires_at = {lease}, started_at = COALESCE(started_at, ?), updated_at = ?, completed_at = NULL, "
    "error_message = NULL, cancel_requested_at = CASE WHEN status = 'running' THEN cancel_requested_at END, "
    "cancel_reason = CASE WHEN status = 'running' THEN cancel_reason END WHERE id = ? AND %s "
    "RETURNING lease_epoch, attempt, current_stage_id, current_node, current_iteration, current_stage_started_at"
)
# A pending run its creator now starts (fenced: a cancel of a pending run raises its epoch).
_START_PENDING = (
    "UPDATE runs SET status = 'running', attempt = attempt + 1, started_at = COALESCE(started_at, ?), "
    "updated_at = ?, lease_expires_at = {lease} WHERE id = ? AND lease_epoch = ? AND status = 'pending' "
    "RETURNING cancel_requested_at, cancel_reason"
)
# The gate of every step: the run's row, only while it has this process's epoch. The next stage becomes
# current unless a cancel was requested (then none is: the run is about to end cancelled).
_OPEN_STAGE = (
    "UPDATE runs SET updated_at = ?, lease_expires_at = {lease}, "
    "current_stage_id = CASE WHEN cancel_requested_at IS NULL THEN ? END, "
    "current_node = CASE WHEN cancel_requested_at IS NULL THEN ? END, "
    "current_iteration = CASE WHEN cancel_requested_at IS NULL THEN ? END, "
    "current_stage_started_at = CASE WHEN cancel_requested_at IS NULL THEN ? END "
    "WHERE id = ? AND lease_epoch = ? RETURNING cancel_requested_at, cancel_reason"
)
# The run's end, fenced; the lease is released. A cancel reason given here is kept only if no request
# gave one first; the run's cancel request, made by anyone before the end, is returned.
_FINISH_RUN = (
    "UPDATE runs SET status = ?, result = {j}, error_message = ?, completed_at = ?, updated_at = ?, "
    f"cancel_reason = COALESCE(cancel_reason, ?), lease_expires_at = NULL, {_CLEAR_STAGE} "
    "WHERE id = ? AND lease_epoch = ? RETURNING cancel_requested_at, cancel_reason"
)
# A stopping worker's run, back to the queue: pending, held by nobody, unless a cancel was asked of it.
# The epoch grows: a renewal of the lease the worker held, late, matches nothing.
_HAND_BACK = (
    "UPDATE runs SET status = 'pending', owner = NULL, lease_expires_at = NULL, lease_epoch = lease_epoch + 1, "
    f"updated_at = ?, {_CLEAR_STAGE} "
    "WHERE id = ? AND lease_epoch = ? AND status = 'running' AND cancel_requested_at IS NULL RETURNING id"
)
# A resume submitted to the workers: a failed or cancelled run, pending again, held by nobody; or a
# submitted run still pending and held by nobody (its job is enqueued again).
_RESUBMIT = (
    "UPDATE runs SET status = 'pending', owner = NULL, lease_expires_at = NULL, completed_at = NULL, "
    "error_message = NULL, cancel_requested_at = NULL, cancel_reason = NULL, updated_at = ? "
    "WHERE id = ? AND (status IN ('failed', 'cancelled') OR (status = 'pending' AND owner IS NULL)) RETURNING id"
)
_RENEW = "UPDATE runs SET lease_expires_at = {lease} WHERE status IN ('pending', 'running')"
_REQUEST_CANCEL = (
    "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?), "
    "cancel_reason = COALESCE(cancel_reason, ?), updated_at = ? WHERE id = ? AND status = 'running'"
)
# Ending a run from outside the process that holds it: the epoch grows, so that the holder (if it
# is alive after all) writes nothing more and stops.
_CANCEL_PENDING = (
    "UPDATE runs SET status = 'cancelled', lease_epoch = lease_epoch + 1, lease_expires_at = NULL, "
    "cancel_reason = ?, completed_at = ?, updated_at = ? WHERE id = ? AND status = 'pending'"
)
_FORCE_CANCEL = (
    "UPDATE runs SET status = 'cancelled', lease_epoch = lease_epoch + 1, lease_expires_at = NULL, "
    f"cancel_requested_at = COALESCE(cancel_requested_at, ?), cancel_reason = ?, completed_at = ?, updated_at = ?, "
    f"{_CLEAR_STAGE} WHERE id = ? AND status = 'running'"
)
# The stage a run's holder left running, recorded as failed (from the run's row, before it is cleared).
# Its input is the state the checkpoint names when the checkpoint is where that stage began (the
# checkpoint's next node, with its visit count one short); a stage with no such checkpoint keeps none.
_INTERRUPT_CURRENT = (
    "INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, input_from, output_snapshot, "
    "duration_ms, error_message, error_traceback, created_at, attempt) SELECT current_stage_id, id, current_node, "
    "current_iteration, 'failed', NULL, (SELECT json_extract(state_data, '$.stage') FROM checkpoints c "
    "WHERE c.run_id = runs.id AND json_extract(state_data, '$.next_node') = runs.current_node AND "
    "COALESCE(json_extract(state_data, '$.counters.\"' || runs.current_node || '\"'), 0) + 1 = runs.current_iteration), "
    "NULL, NULL, ?, NULL, current_stage_started_at, attempt FROM runs WHERE id = ? AND status = 'running' "
    "AND current_stage_id IS NOT NULL"
)
_DELETE_RUN = "DELETE FROM runs WHERE id = ? AND status <> 'running'"
_DELETE_RUN_ANY = "DELETE FROM runs WHERE id = ?"
_HOLDER = "SELECT status, owner, attempt, lease_epoch, lease_expires_at, cancel_reason FROM runs WHERE id = ?"
_EXPIRED = (
    "SELECT id FROM runs WHERE ((status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < {now})) "
    "OR (status = 'pending' AND lease_expires_at < {now}))"
)
# Buffered writes (gated by the step's fenced UPDATE of the run).
_INSERT_STAGE = (
    "INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, input_from, output_snapshot, "
    "duration_ms, error_message, error_traceback, created_at, attempt, output_unchanged) "
    "VALUES (?, ?, ?, ?, ?, {j}, ?, {j}, ?, ?, ?, ?, ?, {j})"
)
_INSERT_DECISION = (
    "INSERT INTO decisions (id, run_id, from_node, to_node, predicate_name, predicate_result, reason, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_CHECKPOINT = ("UPDATE checkpoints SET state_data = {j}, checkpoint_node = ?, updated_at = ? "
                      "WHERE checkpoints.run_id = ?")
_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, state_data, checkpoint_node, created_at, updated_at) VALUES (?, {j}, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET state_data = excluded.state_data, "
    "checkpoint_node = excluded.checkpoint_node, updated_at = excluded.updated_at"
)
# Stages left 'started' by a wfkit from before stage rows were written once (a run being taken over).
_INTERRUPT_STARTED = "UPDATE stages SET status = 'failed', error_message = ? WHERE run_id = ? AND status = 'started'"


class Claim(NamedTuple):
    """A run this process now holds: its fencing number and attempt, and the stage the previous
    holder left running (None: none), as ``(stage_id, node, iteration, started_at)``."""

    epoch: int
    attempt: int
    left_running: tuple[uuid.UUID, str, int, datetime | None] | None


class Finished(NamedTuple):
    """A run's end as written: when, and its cancel request (made by anyone, before the end) and the
    reason stored for it, if any."""

    completed_at: datetime
    cancel_requested_at: datetime | None
    cancel_reason: str | None


class OpenStage(NamedTuple):
    """The stage that becomes a run's current one: its id, node, iteration, start time, and the
    run's attempt that executes it."""

    id: uuid.UUID
    node: str
    iteration: int
    started_at: datetime
    attempt: int | None = None


def what_became(run_id: uuid.UUID, holder: tuple[Any, ...] | None, epoch: int | None = None) -> str:
    """What happened to a run this process held with ``epoch``, from its :meth:`SqlRecorder.holder`
    row: taken over (another claim raised its epoch; named with who and at which attempt, and how
    the run stands now if it ended since), ended by a forced cancel, or deleted."""
    if holder is None:
        return f"run {run_id} was deleted by another process"
    status, owner, attempt, now_epoch, _expires, reason = holder
    if status == "cancelled" and (epoch is None or now_epoch == epoch + 1) and reason:
        return f"run {run_id} was ended cancelled by another process ({reason})"
    if status in ("running", "pending") or epoch is None or now_epoch > epoch:
        ended = "" if status in ("running", "pending") else f" (it is {status} now)"
        return f"run {run_id} was taken over by {owner or 'another process'} at attempt {attempt}{ended}"
    return f"run {run_id} was ended {status} by another process"


def check_durability(value: str) -> str:
    """``value`` if it is a durability mode, else a :class:`ConfigurationError` naming them."""
    if value not in DURABILITY_MODES:
        raise ConfigurationError(f"unknown durability {value!r}: expected one of {', '.join(DURABILITY_MODES)}")
    return value


class SqlRecorder:
    """A run's history writer on one database connection (use as a context manager).

    ``durability``: ``"sync"`` or ``"async"`` (see the module's docstring). ``lease_seconds``: how
    long each claim, step and renewal holds the run for.
    """

    def __init__(self, engine: Engine, *, durability: str = "sync", lease_seconds: float = 30.0, pool: Any = None):
        self.engine = engine
        self._pool = pool  # a pool of the engine's connections to take this one from (default: the engine's)
        self.durability = check_durability(durability)
        self.lease_seconds = float(lease_seconds)
        self.codec = codec_for(engine.dialect.name)
        self._sql, self._ctes = _statements_for(engine.dialect.name)
        self._conn: Any = None
        self._cursor: Any = None
        self._restore: tuple[str, Any] = ("", None)  # the driver setting to put back on close
        self._pending: list[tuple[str, tuple[Any, ...]]] = []

    # -- connection

    def __enter__(self) -> SqlRecorder:
        with _WriteGuard(self):  # the pool hands out the driver's own connect errors
            self._conn = self.engine.raw_connection() if self._pool is None else self._pool.connect()
        self._cursor = self._conn.cursor()
        driver = self._conn.driver_connection
        info = self._conn.info  # kept with the pooled connection: each setting is sent once per connection
        if self.codec.sqlite:
            # The statements of a step must share a transaction: sqlite3 opens one before the first
            # write unless the engine was made with AUTOCOMMIT (isolation_level None).
            self._restore = ("isolation_level", driver.isolation_level)
            if driver.isolation_level is None:
                driver.isolation_level = "DEFERRED"
            if info.get("wfkit_durability") != self.durability:
                with _WriteGuard(self):
                    self._cursor.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'sync' else 'NORMAL'}")
                info["wfkit_durability"] = self.durability
        else:
            # Every write is one statement (see _gated), so the connection runs in autocommit:
            # a step boundary is one round trip.
            self._restore = ("autocommit", driver.autocommit)
            with _WriteGuard(self):
                if driver.info.transaction_status:  # not idle: left in a transaction
                    self._conn.rollback()
                driver.autocommit = True
                if info.get("wfkit_durability", "sync") != self.durability:
                    # sync: whatever the server (or the connection's options) configure; async: off
                    self._cursor.execute("SET synchronous_commit TO off" if self.durability == "async"
                                         else "RESET synchronous_commit")
                    info["wfkit_durability"] = self.durability
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            if self.codec.sqlite:
                self._conn.rollback()  # anything not committed was not meant to be
            setattr(self._conn.driver_connection, *self._restore)  # back to the pool as it came
        except Exception:
            pass
        self._conn.close()
        self._conn = self._cursor = None

    def durability_settings(self) -> dict[str, str]:
        """The settings this connection commits with, as the database reports them (for tests and
        ``wfkit db``-style diagnostics)."""
        cur = self._cursor
        if self.codec.sqlite:
            synchronous = cur.execute("PRAGMA synchronous").fetchone()[0]
            journal = cur.execute("PRAGMA journal_mode").fetchone()[0]
            return {"journal_mode": str(journal).lower(),
                    "synchronous": {0: "off", 1: "normal", 2: "full", 3: "extra"}.get(synchronous, str(synchronous))}
        out = {}
        for name in ("synchronous_commit", "fsync"):
            cur.execute(f"SHOW {name}")
            out[name] = cur.fetchone()[0]
        return out

    def _run(self, name: str, params: tuple[Any, ...]) -> Any:
        self._cursor.execute(self._sql[name], params)
        return self._cursor

    def _one(self, name: str, params: tuple[Any, ...], *, returning: bool = False) -> Any:
        """One statement in a transaction of its own: its first row if ``returning``, else its row count."""
        with _WriteGuard(self):
            cur = self._run(name, params)
            out = cur.fetchone() if returning else cur.rowcount  # sqlite3 cannot commit with a row unread
            if self.codec.sqlite:
                self._conn.commit()
            return out

    def _gated(self, gate: tuple[str, tuple[Any, ...]], run_id: uuid.UUID, epoch: int | None, *,
               missing_ok: bool = False) -> Any:
        """The buffered writes and ``gate`` (a fenced UPDATE of the run, RETURNING a row) in one
        transaction, the writes only if the gate found the run; return the gate's row, or raise
        :class:`LeaseLostError` (nothing written) if it did not.

        SQLite: the gate, then the writes, then COMMIT (a miss: ROLLBACK). PostgreSQL: ONE statement,
        ``WITH r AS (gate), w0 AS (INSERT ... SELECT ... FROM r), ... SELECT * FROM r``, in
        autocommit: atomic, one round trip, and every part gated on ``r``.
        """
        writes = self._pending
        self._pending = []
        with _WriteGuard(self):
            if self.codec.sqlite:
                row = self._run(*gate).fetchone()
                if row is not None:
                    for name, params in writes:
                        self._run(name, params)
                    self._conn.commit()
            else:
                params: list[Any] = list(gate[1])
                for _, part in writes:
                    params.extend(part)
                self._cursor.execute(self._with(gate[0], writes), params)
                row = self._cursor.fetchone()
            if row is None:
                if self.codec.sqlite:
                    self._conn.rollback()
                if missing_ok:
                    return None
                raise self._lease_lost(run_id, epoch)
        return row

    def _with(self, gate: str, writes: list[tuple[str, tuple[Any, ...]]]) -> str:
        """``WITH r AS (gate), w0 AS (...), ... SELECT * FROM r`` (PostgreSQL; built once per shape)."""
        shape = (gate, *(name for name, _ in writes))
        text = self._ctes.get(shape)
        if text is None:
            parts = [f"r AS ({self._sql[gate]})"]
            parts += [f"w{i} AS ({self._sql['gated_' + name]})" for i, (name, _) in enumerate(writes)]
            text = self._ctes[shape] = "WITH " + ", ".join(parts) + " SELECT * FROM r"
        return text

    def _lease_lost(self, run_id: uuid.UUID, epoch: int | None) -> LeaseLostError:
        """The error for a write fenced off: who holds the run now, or what happened to it."""
        try:
            holder = self.holder(run_id)
        except Exception:  # the database that refused the write may not answer this either
            return LeaseLostError(f"run {run_id} is no longer held by this process; this process stopped")
        return LeaseLostError(f"{what_became(run_id, holder, epoch)}; this process stopped")

    def holder(self, run_id: uuid.UUID) -> tuple[Any, ...] | None:
        """``(status, owner, attempt, lease_epoch, lease_expires_at, cancel_reason)`` of a run, or None."""
        with _WriteGuard(self):
            row = self._run("holder", (self.codec.id(run_id),)).fetchone()
            if self.codec.sqlite:
                self._conn.rollback()
        if row is None:
            return None
        return (*row[:4], None if row[4] is None else self.codec.time_in(row[4]), row[5])

    # -- creating and claiming runs

    def create_run(self, run_id: uuid.UUID, workflow_name: str, params: Mapping[str, Any], *, owner: str,
                   stage: OpenStage | None, checkpoint_json: str,
                   idempotency_key: str | None = None) -> datetime | None:
        """Record a new run held by ``owner`` (epoch 1), with its first checkpoint (the start, as
        ``checkpoint_json``); return its ``created_at``. With ``stage``, the run is created running
        (its first attempt) with that stage current: nobody could have seen it pending, nobody knows
        its id yet; without, pending (:meth:`start_pending` starts it). One transaction. None, and
        nothing written, if another run has ``idempotency_key``."""
        now = utcnow()
        c = self.codec
        t, rid = c.time(now), c.id(run_id)
        if stage is None:
            values = (rid, workflow_name, RunStatus.PENDING.value, dumps(params), None, t, t, owner, 0,
                      self.lease_seconds, None, None, None, None, idempotency_key)
        else:
            values = (rid, workflow_name, RunStatus.RUNNING.value, dumps(params), t, t, t, owner, 1,
                      self.lease_seconds, c.id(stage.id), stage.node, stage.iteration, c.time(stage.started_at),
                      idempotency_key)
        self._pending.append(("insert_checkpoint", (rid, checkpoint_json, t, t)))
        row = self._gated(("insert_run", values), run_id, None, missing_ok=idempotency_key is not None)
        return None if row is None else now

    def submit_run(self, run_id: uuid.UUID, workflow_name: str, params: Mapping[str, Any], *, checkpoint_json: str,
                   idempotency_key: str | None, enqueue: Callable[[Any], None]) -> datetime | None:
        """Record a new run for the workers (PostgreSQL): pending, held by nobody until a worker
        claims it, with its first checkpoint; and, in the same transaction on the same connection,
        ``enqueue(driver_connection)`` (its job): the run and its job are committed together or not
        at all. None, with nothing written and nothing enqueued, if another run has
        ``idempotency_key``."""
        now = utcnow()
        c = self.codec
        t, rid = c.time(now), c.id(run_id)
        self._pending.append(("insert_checkpoint", (rid, checkpoint_json, t, t)))
        row = self._gated_with_job(("insert_submitted", (rid, workflow_name, dumps(params), t, t, idempotency_key)),
                                   enqueue)
        return None if row is None else now

    def hand_back(self, run_id: uuid.UUID, epoch: int, enqueue: Callable[[Any], None]) -> bool:
        """What is buffered, the run made pending again and held by nobody, and (``enqueue``) a new job
        for it, in one transaction fenced by ``epoch``: a worker that stops gives its run back to the
        queue, and another continues it from the checkpoint at once. False, with nothing written
        and the buffer kept, if the run is no longer this process's to hand back (its lease was
        lost) or a cancel was asked of it (the caller ends it cancelled instead)."""
        t = self.codec.time(utcnow())
        writes = list(self._pending)
        row = self._gated_with_job(("hand_back", (t, self.codec.id(run_id), epoch)), enqueue)
        if row is None:
            self._pending = writes
        return row is not None

    def resubmit(self, run_id: uuid.UUID, enqueue: Callable[[Any], None]) -> bool:
        """A failed or cancelled run made pending again for the workers (a resume submitted to them),
        or a pending one nobody holds given its job again, in one transaction; False (nothing
        written) if it is none of these any more."""
        t = self.codec.time(utcnow())
        return self._gated_with_job(("resubmit", (t, self.codec.id(run_id))), enqueue) is not None

    def _gated_with_job(self, gate: tuple[str, tuple[Any, ...]], enqueue: Callable[[Any], None]) -> Any:
        """The buffered writes gated by ``gate`` (as :meth:`_gated`), then ``enqueue(driver_connection)``
        if the gate returned a row, in one transaction (PostgreSQL): the gate's row, or None with
        nothing written (the buffer is dropped either way)."""
        if self.codec.sqlite:
            raise ConfigurationError("runs are submitted to workers on PostgreSQL only")
        writes = self._pending
        self._pending = []
        params: list[Any] = list(gate[1])
        for _, part in writes:
            params.extend(part)
        driver = self._conn.driver_connection
        with _WriteGuard(self), driver.transaction():
            self._cursor.execute(self._with(gate[0], writes), params)
            row = self._cursor.fetchone()
            if row is not None:
                enqueue(driver)
        return row

    def in_transaction(self, work: Callable[[Any], None]) -> None:
        """``work(driver connection)`` in a transaction of its own (PostgreSQL)."""
        driver = self._conn.driver_connection
        with _WriteGuard(self), driver.transaction():
            work(driver)

    def with_jobs(self, name: str, params: tuple[Any, ...], jobs: Callable[[Any], None] | None) -> int:
        """Statement ``name`` (its row count) and, on PostgreSQL if it changed a row, ``jobs(driver
        connection)`` in the same transaction (the queue's side of a cancel)."""
        if jobs is None or self.codec.sqlite:
            return self._one(name, params)
        driver = self._conn.driver_connection
        with _WriteGuard(self), driver.transaction():
            count = self._run(name, params).rowcount
            if count:
                jobs(driver)
        return count

    def start_pending(self, run_id: uuid.UUID, epoch: int) -> datetime:
        """Start a pending run this process created (its first attempt); return when. Raises
        :class:`LeaseLostError` if it is no longer pending with this epoch (it was cancelled)."""
        now = utcnow()
        t = self.codec.time(now)
        self._gated(("start_pending", (t, t, self.lease_seconds, self.codec.id(run_id), epoch)), run_id, epoch)
        return now

    def claim(self, run_id: uuid.UUID, owner: str, *, take_over: bool = False,
              submitted: bool = False) -> Claim | None:
        """Claim a run for ``owner`` in one compare-and-set statement (by the database's clock): a
        failed or cancelled run, a pending one whose lease expired or that has none, and with
        ``take_over`` a running one whose lease expired; with ``submitted``, only a pending one (a
        worker's job: a run cancelled or ended meanwhile is not started). None if the run was not
        claimable."""
        now = self.codec.time(utcnow())
        row = self._one("claim_submitted" if submitted else "take_over" if take_over else "claim",
                        (owner, self.lease_seconds, now, now, self.codec.id(run_id)), returning=True)
        if row is None:
            return None
        left = None
        if row[2] is not None:
            stage_id = row[2] if isinstance(row[2], uuid.UUID) else uuid.UUID(row[2])
            left = (stage_id, row[3], row[4], None if row[5] is None else self.codec.time_in(row[5]))
        return Claim(row[0], row[1], left)

    def renew(self, run_id: uuid.UUID, epoch: int) -> bool:
        """Extend the lease of a pending or running run this process holds; False if it no longer does."""
        return run_id in self.renew_many([(run_id, epoch)])

    def renew_many(self, held: Iterable[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        """Extend the leases of the pending or running runs held with these ``(run id, epoch)``, in one
        statement; return the ids of those still held (the others were taken over, or ended)."""
        pairs = list(held)
        if not pairs:
            return set()
        ph = "?" if self.codec.sqlite else "%s"
        sql = self._sql["renew"] + " AND (id, lease_epoch) IN (VALUES " + ", ".join([f"({ph}, {ph})"] * len(pairs)) + \
            ") RETURNING id"
        params: list[Any] = [self.lease_seconds]
        for run_id, epoch in pairs:
            params += [self.codec.id(run_id), epoch]
        with _WriteGuard(self):
            rows = self._cursor.execute(sql, params).fetchall()
            if self.codec.sqlite:
                self._conn.commit()
        return {row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(row[0]) for row in rows}

    def expired(self, workflow_names: Iterable[str] = ()) -> list[uuid.UUID]:
        """The runs no process holds any more (by the database's clock): running ones whose lease
        expired (or that never had one), and pending ones whose creator's lease expired before it
        started them. Oldest first."""
        names = list(workflow_names)
        sql = self._sql["expired"]
        if names:
            sql += " AND workflow_name IN (" + ", ".join(["?" if self.codec.sqlite else "%s"] * len(names)) + ")"
        with _WriteGuard(self):
            self._cursor.execute(sql + " ORDER BY created_at, id", names)
            rows = self._cursor.fetchall()
            if self.codec.sqlite:
                self._conn.rollback()
        return [row[0] if isinstance(row[0], uuid.UUID) else uuid.UUID(row[0]) for row in rows]

    # -- the step boundary (every write gated by the run's epoch)

    def stage_ended(self, run_id: uuid.UUID, stage: OpenStage, status: StageStatus, *,
                    input: tuple[str | None, uuid.UUID | None] = (None, None), output_json: str | None = None,
                    duration_ms: float | None = None, error: str | None = None, traceback: str | None = None) -> None:
        """Buffer a stage's row, written once now that it ended (completed, or failed with its one-line
        error and the formatted traceback, if any). Its ``input``: ``(JSON text, None)``, or ``(None,
        the id of the stage whose end state it started from)``."""
        c = self.codec
        self._pending.append(("insert_stage", (
            c.id(stage.id), c.id(run_id), stage.node, stage.iteration, status.value, input[0],
            None if input[1] is None else c.id(input[1]), output_json, duration_ms, error, traceback,
            c.time(stage.started_at), stage.attempt, None)))

    def step_done(self, run_id: uuid.UUID,
                  stage: tuple[OpenStage, tuple[str | None, uuid.UUID | None], str, float, list[str] | None] | None,
                  decision: tuple[str, str | None, str | None, bool, str],
                  checkpoint: tuple[str, str] | None, *, upsert: bool = False) -> None:
        """Buffer a completed step as one piece: the stage's row ``(stage, input: (JSON text, None) or
        (None, the stage it started from), output_json: the node's updates as JSON text (but those
        stored already as they are), duration_ms, unchanged: the keys of the updates left out of
        output_json, or None)`` (None for a route chosen again, with no node run), its decision
        ``(from_node, to_node, predicate_name, predicate_result, reason)``, and the checkpoint
        ``(node just completed, state_data as JSON text)`` if one is due (its format is the
        executor's business: :mod:`wfkit.executor.checkpoints`). The run's checkpoint row exists
        (made with the run) unless ``upsert``.

        The three join the buffer in one operation, so that an interrupt (Ctrl-C, a signal) can never
        leave a completion buffered without its checkpoint: committed later with the run's end, that
        half step would make a resume run the node again."""
        c = self.codec
        now, rid = c.time(utcnow()), c.id(run_id)
        from_node, to_node, predicate_name, predicate_result, reason = decision
        writes = []
        if stage is not None:
            opened, (input_json, input_from), output_json, duration_ms, unchanged = stage
            writes.append(("insert_stage", (c.id(opened.id), rid, opened.node, opened.iteration,
                                            StageStatus.COMPLETED.value, input_json,
                                            None if input_from is None else c.id(input_from), output_json,
                                            duration_ms, None, None, c.time(opened.started_at), opened.attempt,
                                            None if unchanged is None else dumps(unchanged))))
        writes.append(("insert_decision", (c.id(new_id()), rid, from_node, to_node, predicate_name,
                                           c.flag(predicate_result), reason, now)))
        if checkpoint is not None:
            writes.append(("upsert_checkpoint", (rid, checkpoint[1], checkpoint[0], now, now)) if upsert
                          else ("update_checkpoint", (checkpoint[1], checkpoint[0], now, rid)))
        self._pending += writes  # one operation: see above

    def checkpoint(self, run_id: uuid.UUID, node: str, state_data: str, *, upsert: bool = False) -> None:
        """Buffer the run's checkpoint alone (``node`` just completed; ``state_data`` as JSON text)."""
        c = self.codec
        now, rid = c.time(utcnow()), c.id(run_id)
        self._pending.append(("upsert_checkpoint", (rid, state_data, node, now, now)) if upsert
                             else ("update_checkpoint", (state_data, node, now, rid)))

    def interrupt_started(self, run_id: uuid.UUID, message: str) -> None:
        """Buffer: the stages a wfkit from before stage rows were written once left ``started``
        (their process is gone) are marked failed with ``message``."""
        self._pending.append(("interrupt_started", (message, self.codec.id(run_id))))

    def interrupt_started_now(self, run_id: uuid.UUID, message: str) -> int:
        """:meth:`interrupt_started`, written at once, unfenced (for a run about to be resumed); how many."""
        return self._one("interrupt_started", (message, self.codec.id(run_id)))

    @property
    def buffered(self) -> int:
        """How many writes wait for the next step's transaction (a failed write drops them)."""
        return len(self._pending)

    def discard(self) -> None:
        """Drop what is buffered (a step that is not to be written)."""
        self._pending.clear()

    def open_stage(self, run_id: uuid.UUID, epoch: int, stage: OpenStage) -> tuple[datetime | None, str | None]:
        """Commit what is buffered with ``stage`` as the run's current stage, extending the lease: one
        transaction, fenced by ``epoch``. Returns the run's cancel request and its reason: when it
        has one, no stage was made current (the run is to end cancelled)."""
        c = self.codec
        t = c.time(utcnow())
        row = self._gated(("open_stage", (t, self.lease_seconds, c.id(stage.id), stage.node, stage.iteration,
                                          c.time(stage.started_at), c.id(run_id), epoch)), run_id, epoch)
        return (None if row[0] is None else c.time_in(row[0])), row[1]

    def finish_run(self, run_id: uuid.UUID, epoch: int, status: RunStatus, *, error: str | None = None,
                   result_json: str | None = None, cancel_reason: str | None = None) -> Finished:
        """Buffered writes plus the run's end (its status, result as JSON text or error), releasing
        its lease: one transaction, fenced by ``epoch``. Returns when, with the run's cancel request
        and its reason if it has one (``cancel_reason`` is stored unless a request stored one first)."""
        now = utcnow()
        c = self.codec
        t = c.time(now)
        row = self._gated(("finish_run", (status.value, result_json, error, t, t, cancel_reason, c.id(run_id),
                                          epoch)), run_id, epoch)
        return Finished(now, None if row[0] is None else c.time_in(row[0]), row[1])

    # -- control from outside the executing process

    def request_cancel(self, run_id: uuid.UUID, reason: str, jobs: Callable[[Any], None] | None = None) -> bool:
        """Record a cancel request for a running run, and why (its holder stops before the next node);
        a run asked before keeps the first request and its reason. ``jobs``: the queue's side, in
        the same transaction (see :meth:`with_jobs`)."""
        now = self.codec.time(utcnow())
        return self.with_jobs("request_cancel", (now, reason, now, self.codec.id(run_id)), jobs) == 1

    def cancel_pending(self, run_id: uuid.UUID, reason: str, jobs: Callable[[Any], None] | None = None) -> bool:
        """End a pending run cancelled, raising its epoch (its creator does not start it then);
        ``jobs``: its queued job cancelled in the same transaction."""
        now = self.codec.time(utcnow())
        return self.with_jobs("cancel_pending", (reason, now, now, self.codec.id(run_id)), jobs) == 1

    def force_cancel(self, run_id: uuid.UUID, stage_message: str, reason: str) -> bool:
        """End a running run cancelled now, whoever holds it, with ``reason``, raising its epoch (a
        holder still alive writes nothing more, and stops); the stage it was executing is recorded
        as failed with ``stage_message``. One transaction. False if it was not running."""
        c = self.codec
        now, rid = c.time(utcnow()), c.id(run_id)
        with _WriteGuard(self):
            if c.sqlite:
                self._cursor.execute("BEGIN IMMEDIATE")  # read the current stage and end the run as one
                self._run("interrupt_current", (stage_message, rid))
                self._run("interrupt_started", (stage_message, rid))
                changed = self._run("force_cancel", (now, reason, now, now, rid)).rowcount
                self._conn.commit()
                return changed == 1
            self._cursor.execute(self._sql["force_cancel_pg"], (rid, stage_message, stage_message, now, reason, now,
                                                                now))
            return self._cursor.fetchone()[0] == 1

    def delete_run(self, run_id: uuid.UUID, *, force: bool = False) -> bool:
        """Delete a run unless it is running (or even then, with ``force``: its holder, if alive, writes
        nothing more); its stages, decisions and checkpoint go with it (ON DELETE CASCADE). False if
        nothing was deleted."""
        return self._one("delete_run_any" if force else "delete_run", (self.codec.id(run_id),)) == 1


# PostgreSQL's forced end of a run held by another process, in one statement: the row locked first
# (FOR UPDATE waits for a step being committed, and then reads what it wrote), the stage it names
# recorded failed, the run ended as ``{end}`` says (its parameters follow the stage's two messages).
_END_HELD_PG = (
    "WITH o AS (SELECT id, current_stage_id, current_node, current_iteration, current_stage_started_at, attempt FROM runs "
    "WHERE id = ? AND status = 'running'{also} FOR UPDATE), "
    "s AS (INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, input_from, "
    "output_snapshot, duration_ms, error_message, error_traceback, created_at, attempt) SELECT o.current_stage_id, o.id, "
    "o.current_node, o.current_iteration, 'failed', NULL, (SELECT (c.state_data->>'stage')::uuid FROM checkpoints c "
    "WHERE c.run_id = o.id AND c.state_data->>'next_node' = o.current_node AND "
    "COALESCE((c.state_data->'counters'->>o.current_node)::int, 0) + 1 = o.current_iteration), NULL, NULL, ?, NULL, "
    "o.current_stage_started_at, o.attempt FROM o WHERE o.current_stage_id IS NOT NULL ON CONFLICT (id) DO NOTHING), "
    "l AS (UPDATE stages SET status = 'failed', error_message = ? FROM o WHERE stages.run_id = o.id "
    "AND stages.status = 'started'), "
    "r AS (UPDATE runs SET lease_epoch = runs.lease_epoch + 1, lease_expires_at = NULL, {end}, "
    f"{_CLEAR_STAGE} FROM o WHERE runs.id = o.id RETURNING runs.id) SELECT count(*) FROM r"
)
_FORCE_CANCEL_PG = _END_HELD_PG.format(also="", end=(
    "status = 'cancelled', cancel_requested_at = COALESCE(runs.cancel_requested_at, ?), cancel_reason = ?, "
    "completed_at = ?, updated_at = ?"))
# The workers' recovery giving up on a run whose lease expired once too often: it fails.
_GIVE_UP_PG = _END_HELD_PG.format(also=" AND lease_expires_at < now()", end=(
    "status = 'failed', error_message = ?, completed_at = ?, updated_at = ?"))

def give_up_statement() -> str:
    """PostgreSQL's statement that fails a running run whose lease expired, its current stage recorded
    failed as a forced cancel records it; parameters: the run's id, the stage's message (twice), the
    run's error, and the time (twice). For the workers' recovery, in its own transaction."""
    return _statements_for("postgresql")[0]["give_up_pg"]


_STATEMENTS = {
    "insert_run": _INSERT_RUN,
    "insert_submitted": _INSERT_SUBMITTED,
    "claim": _CLAIM % _CLAIMABLE,
    "take_over": _CLAIM % _TAKEOVER,
    "claim_submitted": _CLAIM % _SUBMITTED,
    "start_pending": _START_PENDING,
    "hand_back": _HAND_BACK,
    "resubmit": _RESUBMIT,
    "open_stage": _OPEN_STAGE,
    "finish_run": _FINISH_RUN,
    "renew": _RENEW,
    "request_cancel": _REQUEST_CANCEL,
    "cancel_pending": _CANCEL_PENDING,
    "force_cancel": _FORCE_CANCEL,
    "force_cancel_pg": _FORCE_CANCEL_PG,
    "give_up_pg": _GIVE_UP_PG,
    "interrupt_current": _INTERRUPT_CURRENT,
    "delete_run": _DELETE_RUN,
    "delete_run_any": _DELETE_RUN_ANY,
    "holder": _HOLDER,
    "expired": _EXPIRED,
    "insert_stage": _INSERT_STAGE,
    "insert_decision": _INSERT_DECISION,
    "upsert_checkpoint": _UPSERT_CHECKPOINT,
    "update_checkpoint": _UPDATE_CHECKPOINT,
    "insert_checkpoint": _INSERT_CHECKPOINT,
    "interrupt_started": _INTERRUPT_STARTED,
}
#: The statements a step buffers: each also has a gated form (PostgreSQL), reading FROM the gate ``r``.
_BUFFERED = ("insert_stage", "insert_decision", "upsert_checkpoint", "update_checkpoint", "insert_checkpoint",
             "interrupt_started")
_VALUES = re.compile(r"VALUES \((.*?)\)(?= ON CONFLICT|$)")


def gated(text: str) -> str:
    """A buffered write in its gated form: it writes only if the CTE ``r`` (the fenced UPDATE of the
    run) returned a row. ``INSERT ... VALUES (...)`` becomes ``INSERT ... SELECT ... FROM r``, and
    ``UPDATE ... WHERE`` becomes ``UPDATE ... FROM r WHERE``."""
    if text.startswith("INSERT"):
        out, count = _VALUES.subn(lambda m: f"SELECT {m.group(1)} FROM r", text, count=1)
    else:
        out, count = text.replace(" WHERE ", " FROM r WHERE ", 1), text.count(" WHERE ")
    assert count == 1, text
    return out


@functools.cache
def _statements_for(dialect_name: str) -> tuple[dict[str, str], dict[tuple[Any, ...], str]]:
    """The statements in a dialect's form, and its cache of ``WITH`` statements (shared by recorders:
    both are made once per process, not once per run)."""
    codec = codec_for(dialect_name)
    sql = {name: codec.sql(text) for name, text in _STATEMENTS.items()}
    if not codec.sqlite:
        sql.update({f"gated_{name}": codec.sql(gated(_STATEMENTS[name])) for name in _BUFFERED})
    return sql, {}


class _WriteGuard:
    """Anything that interrupts a write (a driver error, Ctrl-C, a signal, a cancelled task): roll back
    and drop the buffer, so that no part of the interrupted transaction is committed later with
    another write; a driver error becomes a wfkit error saying what failed. (A small class rather
    than a generator context manager: it wraps every write.)"""

    __slots__ = ("recorder",)

    def __init__(self, recorder: SqlRecorder):
        self.recorder = recorder

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, err: Any, tb: Any) -> bool:
        if err is None:
            return False
        recorder = self.recorder
        if recorder._conn is not None:
            try:
                recorder._conn.rollback()
            except Exception:
                pass
        recorder._pending.clear()
        if isinstance(err, Exception) and not isinstance(err, WfkitError) and (
                is_driver_error(err) or isinstance(err, sa_exc.TimeoutError)):
            with translate_errors(recorder.engine):  # not migrated, unreachable, refused, pool full: say which
                raise err
        return False


