"""SqlRecorder: writes a run's history (run, stages, decisions, checkpoint) as it happens.

This is the executor's hot path, so it talks to the database driver directly
(sqlite3 or psycopg) with a handful of fixed SQL statements, storing values in
exactly the form the SQLModel tables define (:mod:`wfkit.store.codec` is that
form; the repository reads the rows back through it, and the tests check both
against what the ORM stores and loads).

Writes are batched per step boundary: the completion of a stage, the decision
that follows it, the checkpoint and the run's ``updated_at`` (whose UPDATE
also reads the run's cancel request) are buffered, then committed in ONE
transaction together with the start of the next stage. A process killed at
any instant therefore leaves history and checkpoint in agreement, and the
stage that was running when it died is visible as ``started``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from wfkit.errors import DatabaseError, WfkitError
from wfkit.jsontext import dumps
from wfkit.store.codec import codec_for
from wfkit.store.db import ASYNC_COMMIT_ENGINES, is_driver_error, translate_errors
from wfkit.store.models import RunStatus, StageStatus, utcnow

_INSERT_RUN = (
    "INSERT INTO runs (id, workflow_name, status, params, result, error_message, started_at, completed_at, "
    "created_at, updated_at, cancel_requested_at, cancel_reason) "
    "VALUES (?, ?, ?, {j}, NULL, NULL, ?, NULL, ?, ?, NULL, NULL)"
)
_TOUCH_RUN = "UPDATE runs SET updated_at = ? WHERE id = ? RETURNING cancel_requested_at"
_START_RUN = (
    "UPDATE runs SET status = ?, started_at = COALESCE(started_at, ?), updated_at = ?, completed_at = NULL, "
    "error_message = NULL, cancel_requested_at = NULL, cancel_reason = NULL WHERE id = ? AND status = ?"
)
# RETURNING: the run's cancel request and its reason, if another process made one, belong in the
# Run returned; a reason given here is kept only if no request gave one first. The run may be in
# either of two statuses (a completion is recorded over a forced cancel: see finish_run).
_FINISH_RUN = (
    "UPDATE runs SET status = ?, result = {j}, error_message = ?, completed_at = ?, updated_at = ?, "
    "cancel_reason = COALESCE(cancel_reason, ?) WHERE id = ? AND status IN (?, ?) "
    "RETURNING cancel_requested_at, cancel_reason"
)
_REQUEST_CANCEL = (
    "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, ?), "
    "cancel_reason = COALESCE(cancel_reason, ?), updated_at = ? WHERE id = ? AND status = ?"
)
# A forced cancel: the run ends cancelled now, and its cancel request is recorded too, so that a
# process still executing it (if there is one after all) stops before its next node.
_FORCE_CANCEL = (
    "UPDATE runs SET status = ?, cancel_requested_at = COALESCE(cancel_requested_at, ?), cancel_reason = ?, "
    "completed_at = ?, updated_at = ? WHERE id = ? AND status = ?"
)
_DELETE_RUN = "DELETE FROM runs WHERE id = ? AND status <> ?"
_DELETE_RUN_ANY = "DELETE FROM runs WHERE id = ?"
_INSERT_STAGE = (
    "INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, output_snapshot, duration_ms, "
    "error_message, created_at) VALUES (?, ?, ?, ?, ?, {j}, NULL, NULL, NULL, ?)"
)
# PostgreSQL, in one statement: touch the run (reading its cancel request under the row lock), and
# start the stage only if the touch found no cancel request. Buffered writes go before, as CTEs.
_TOUCH_AND_START_STAGE = (
    "t AS (UPDATE runs SET updated_at = ? WHERE id = ? RETURNING cancel_requested_at), "
    "s AS (INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, output_snapshot, "
    "duration_ms, error_message, created_at) SELECT ?, ?, ?, ?, ?, {j}, NULL, NULL, NULL, ? FROM t "
    "WHERE t.cancel_requested_at IS NULL) SELECT cancel_requested_at FROM t"
)
_END_STAGE = (
    "UPDATE stages SET status = ?, output_snapshot = {j}, duration_ms = ?, error_message = ?, error_traceback = ? "
    "WHERE id = ?"
)
_INSERT_DECISION = (
    "INSERT INTO decisions (id, run_id, from_node, to_node, predicate_name, predicate_result, reason, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, state_data, checkpoint_node, created_at, updated_at) VALUES (?, {j}, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET state_data = excluded.state_data, "
    "checkpoint_node = excluded.checkpoint_node, updated_at = excluded.updated_at"
)
_INTERRUPT_STAGES = "UPDATE stages SET status = ?, error_message = ? WHERE run_id = ? AND status = ?"


class Finished(NamedTuple):
    """A run's end as written: when, and its cancel request (made by anyone, before the end) and the
    reason stored for it, if any."""

    completed_at: datetime
    cancel_requested_at: datetime | None
    cancel_reason: str | None


class SqlRecorder:
    """One run's history writer on one database connection (use as a context manager).

    Durability: on SQLite the connection runs in WAL mode with ``synchronous=NORMAL``; on
    PostgreSQL, with ``async_commit`` (the default), the session sets ``synchronous_commit=off``.
    Both survive a killed process and a crashed database server without losing a committed
    step; an operating-system crash or power loss may lose the last fraction of a second of
    steps (never half a step: the history and the checkpoint stay consistent, and the run
    resumes from the last step that survived). Pass ``async_commit=False`` to wait for every
    commit to reach the disk on PostgreSQL.
    """

    def __init__(self, engine: Engine, *, async_commit: bool = True):
        self.engine = engine
        self.async_commit = async_commit
        # engines made by wfkit.store.db.create_engine set it for the whole connection already
        self._set_async = async_commit and engine not in ASYNC_COMMIT_ENGINES
        self.codec = codec_for(engine.dialect.name)
        self._sql, self._ctes = _statements_for(engine.dialect.name)
        self._conn: Any = None
        self._cursor: Any = None
        self._restore: tuple[str, Any] = ("", None)  # the driver setting to put back on close
        self._pending: list[tuple[str, tuple[Any, ...]]] = []

    # -- connection

    def __enter__(self) -> SqlRecorder:
        with _WriteGuard(self):  # the pool hands out the driver's own connect errors
            self._conn = self.engine.raw_connection()
        self._cursor = self._conn.cursor()
        driver = self._conn.driver_connection
        if self.codec.sqlite:
            # The statements of a step must share a transaction: sqlite3 opens one before the first
            # write unless the engine was made with AUTOCOMMIT (isolation_level None).
            self._restore = ("isolation_level", driver.isolation_level)
            if driver.isolation_level is None:
                driver.isolation_level = "DEFERRED"
        else:
            # Every write is one statement (see _write), so the connection runs in autocommit:
            # a step boundary is one round trip.
            self._restore = ("autocommit", driver.autocommit)
            with _WriteGuard(self):
                if driver.info.transaction_status:  # not idle: left in a transaction
                    self._conn.rollback()
                driver.autocommit = True
                if self._set_async:
                    self._cursor.execute("SET synchronous_commit TO off")
                elif not self.async_commit and self.engine in ASYNC_COMMIT_ENGINES:
                    self._cursor.execute("SET synchronous_commit TO on")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            if self.codec.sqlite:
                self._conn.rollback()  # anything not committed was not meant to be
            elif self._set_async or not self.async_commit:
                self._cursor.execute("RESET synchronous_commit")
            setattr(self._conn.driver_connection, *self._restore)  # back to the pool as it came
        except Exception:
            pass
        self._conn.close()
        self._conn = self._cursor = None

    def _run(self, name: str, params: tuple[Any, ...]) -> Any:
        self._cursor.execute(self._sql[name], params)
        return self._cursor

    def _write(self, writes: list[tuple[str, tuple[Any, ...]]], last: tuple[str, tuple[Any, ...]],
               returning: bool = False) -> Any:
        """Run ``writes`` then ``last`` in one transaction; return ``last``'s first row if ``returning``,
        else its row count.

        On SQLite: the statements in turn, then COMMIT. On PostgreSQL: ONE statement, the writes as
        data-modifying CTEs before ``last`` (``WITH w0 AS (...), w1 AS (...) UPDATE ...``), in
        autocommit: atomic, and one round trip. All parts see the same snapshot; none of them
        touches a row another one changes.
        """
        with _WriteGuard(self):
            if self.codec.sqlite:
                for name, params in writes:
                    self._run(name, params)
                cur = self._run(*last)
                out = cur.fetchone() if returning else cur.rowcount  # sqlite3 cannot commit with a row unread
                self._conn.commit()
                return out
            if writes:
                self._cursor.execute(self._with(writes) + self._sql[last[0]], self._params(writes, last[1]))
            else:
                self._run(*last)
            return self._cursor.fetchone() if returning else self._cursor.rowcount

    def _with(self, writes: list[tuple[str, tuple[Any, ...]]], more: bool = False) -> str:
        """``WITH w0 AS (...), w1 AS (...) `` for these buffered writes (PostgreSQL; built once per
        shape); with ``more``, ready for further CTEs (a trailing comma)."""
        shape = (more, *(name for name, _ in writes))
        prefix = self._ctes.get(shape)
        if prefix is None:
            ctes = [f"w{i} AS ({self._sql[name]})" for i, (name, _) in enumerate(writes)]
            prefix = self._ctes[shape] = "WITH " + "".join(c + ", " for c in ctes) if more else \
                "WITH " + ", ".join(ctes) + " "
        return prefix

    @staticmethod
    def _params(writes: list[tuple[str, tuple[Any, ...]]], last: tuple[Any, ...]) -> list[Any]:
        params: list[Any] = []
        for _, part in writes:
            params.extend(part)
        params.extend(last)
        return params

    def _take_pending(self) -> list[tuple[str, tuple[Any, ...]]]:
        pending, self._pending = self._pending, []
        return pending

    def commit(self) -> None:
        """Write everything buffered, in one transaction."""
        pending = self._take_pending()
        if pending:
            self._write(pending[:-1], pending[-1])

    # -- runs

    def create_run(self, run_id: uuid.UUID, workflow_name: str, params: Mapping[str, Any]) -> datetime:
        """Record a new run as pending; return its ``created_at``."""
        now = utcnow()
        self._write([], ("insert_run", (self.codec.id(run_id), workflow_name, RunStatus.PENDING.value, dumps(params),
                                        None, self.codec.time(now), self.codec.time(now))))
        return now

    def create_and_start_run(self, run_id: uuid.UUID, workflow_name: str, params: Mapping[str, Any]
                             ) -> tuple[datetime, datetime]:
        """:meth:`create_run` and :meth:`start_run` in one transaction, so the run is created running
        (nobody could have seen it pending: nobody knows its id yet). One INSERT: the start's UPDATE
        would rewrite every index entry of the row, since ``status`` is indexed."""
        now = utcnow()
        self._write([], ("insert_run", (self.codec.id(run_id), workflow_name, RunStatus.RUNNING.value, dumps(params),
                                        self.codec.time(now), self.codec.time(now), self.codec.time(now))))
        return now, now

    def start_run(self, run_id: uuid.UUID, from_status: RunStatus) -> datetime | None:
        """Move the run from ``from_status`` to running and return when; None if its status was not
        ``from_status`` (someone else moved it). ``started_at`` is kept if the run had started before."""
        now = utcnow()
        count = self._write([], ("start_run", (RunStatus.RUNNING.value, self.codec.time(now), self.codec.time(now),
                                               self.codec.id(run_id), from_status.value)))
        return now if count == 1 else None

    def interrupt_stages(self, run_id: uuid.UUID, message: str) -> int:
        """Mark stages left ``started`` by a process that is gone as failed; return how many."""
        return self._write([], ("interrupt_stages", (StageStatus.FAILED.value, message, self.codec.id(run_id),
                                                     StageStatus.STARTED.value)))

    def finish_run(self, run_id: uuid.UUID, status: RunStatus, *, error: str | None = None,
                   result_json: str | None = None, cancel_reason: str | None = None,
                   from_status: RunStatus = RunStatus.RUNNING) -> Finished | None:
        """Buffered writes plus the run's final status (and result, as JSON text), in one transaction;
        return when, with the run's cancel request and its reason if it has one, or None if the run
        was not ``from_status``. ``cancel_reason`` is stored unless a request stored one first.

        A completion is recorded also over a forced cancel: a run force-cancelled (its process
        thought gone) whose process was alive after all, and completed all its work, keeps its
        result rather than ending cancelled without one."""
        now = utcnow()
        also = RunStatus.CANCELLED if status is RunStatus.COMPLETED else from_status
        row = self._write(self._take_pending(), ("finish_run", (
            status.value, result_json, error, self.codec.time(now), self.codec.time(now), cancel_reason,
            self.codec.id(run_id), from_status.value, also.value)), returning=True)
        if row is None:
            return None
        return Finished(now, None if row[0] is None else self.codec.time_in(row[0]), row[1])

    def request_cancel(self, run_id: uuid.UUID, reason: str) -> bool:
        """Record a cancel request for a running run, and why (its executor stops before the next
        node); a run asked before keeps the first request and its reason."""
        now = self.codec.time(utcnow())
        return self._write([], ("request_cancel", (now, reason, now, self.codec.id(run_id),
                                                   RunStatus.RUNNING.value))) == 1

    def force_cancel(self, run_id: uuid.UUID, stage_message: str, reason: str) -> bool:
        """End a running run as cancelled now (its process is gone), with ``reason``, marking the stages
        it left ``started`` as failed with ``stage_message``; one transaction. False if it was not running."""
        now = self.codec.time(utcnow())
        rid = self.codec.id(run_id)
        interrupt = ("interrupt_stages", (StageStatus.FAILED.value, stage_message, rid, StageStatus.STARTED.value))
        return self._write([interrupt], ("force_cancel", (RunStatus.CANCELLED.value, now, reason, now, now, rid,
                                                          RunStatus.RUNNING.value))) == 1

    def delete_run(self, run_id: uuid.UUID, *, force: bool = False) -> bool:
        """Delete a run unless it is running (or even then, with ``force``); its stages, decisions
        and checkpoint go with it (ON DELETE CASCADE). False if nothing was deleted."""
        if force:
            return self._write([], ("delete_run_any", (self.codec.id(run_id),))) == 1
        return self._write([], ("delete_run", (self.codec.id(run_id), RunStatus.RUNNING.value))) == 1

    # -- the step boundary

    def begin_stage(self, run_id: uuid.UUID, node: str, iteration: int, input_json: str) -> tuple[uuid.UUID | None, bool]:
        """Commit what is buffered, check for a cancel request, and (if none) record the stage's start.

        One transaction (one statement on PostgreSQL): the buffered writes, the run's ``updated_at``
        (whose UPDATE returns the cancel request, read under the row's lock), and the stage's INSERT
        unless a cancel was requested. Returns ``(stage_id, cancel_requested)``; the stage id is None
        when a cancel was requested.
        """
        now = self.codec.time(utcnow())
        stage_id = uuid.uuid4()
        rid = self.codec.id(run_id)
        stage = (self.codec.id(stage_id), rid, node, iteration, StageStatus.STARTED.value, input_json, now)
        writes = self._take_pending()
        with _WriteGuard(self):
            if self.codec.sqlite:  # one writer at a time holds the database: the steps cannot interleave
                for name, params in writes:
                    self._run(name, params)
                row = self._run("touch_run", (now, rid)).fetchone()
                if row is not None and row[0] is None:
                    self._run("insert_stage", stage)
                self._conn.commit()
            else:
                self._cursor.execute(self._with(writes, more=True) + self._sql["touch_and_start_stage"],
                                     self._params(writes, (now, rid, *stage)))
                row = self._cursor.fetchone()
        if row is None:
            raise DatabaseError(f"run {run_id} disappeared from the database while it was running")
        if row[0] is not None:
            return None, True
        return stage_id, False

    def end_stage(self, stage_id: uuid.UUID, status: StageStatus, *, duration_ms: float,
                  error: str | None = None, traceback: str | None = None, output_json: str | None = None) -> None:
        """Buffer a stage's end alone (a failure, with its one-line error and the formatted traceback if
        there is one; a completion goes with its decision: :meth:`step_done`)."""
        self._pending.append(("end_stage", (status.value, output_json, duration_ms, error, traceback,
                                            self.codec.id(stage_id))))

    def step_done(self, run_id: uuid.UUID, stage: tuple[uuid.UUID, str, float] | None,
                  decision: tuple[str, str | None, str | None, bool, str],
                  checkpoint: tuple[str, str] | None) -> None:
        """Buffer a completed step as one piece: the stage's completion ``(stage_id, output_json: the
        node's updates as JSON text, duration_ms)`` (None for a route chosen again, with no node run),
        its decision ``(from_node, to_node, predicate_name, predicate_result, reason)``, and the
        checkpoint ``(node just completed, state_data as JSON text)`` if one is due (its format is the
        executor's business: :mod:`wfkit.executor.checkpoints`).

        The three join the buffer in one operation, so that an interrupt (Ctrl-C, a signal) can never
        leave a completion buffered without its checkpoint: committed later with the run's end, that
        half step would make a resume run the node again."""
        codec = self.codec
        now, rid = codec.time(utcnow()), codec.id(run_id)
        from_node, to_node, predicate_name, predicate_result, reason = decision
        writes = [] if stage is None else [
            ("end_stage", (StageStatus.COMPLETED.value, stage[1], stage[2], None, None, codec.id(stage[0]))),
        ]
        writes.append(("insert_decision", (codec.id(uuid.uuid4()), rid, from_node, to_node, predicate_name,
                                           codec.flag(predicate_result), reason, now)))
        if checkpoint is not None:
            writes.append(("upsert_checkpoint", (rid, checkpoint[1], checkpoint[0], now, now)))
        self._pending += writes  # one operation: see above


_STATEMENTS = {
    "insert_run": _INSERT_RUN,
    "touch_run": _TOUCH_RUN,
    "start_run": _START_RUN,
    "finish_run": _FINISH_RUN,
    "insert_stage": _INSERT_STAGE,
    "touch_and_start_stage": _TOUCH_AND_START_STAGE,
    "end_stage": _END_STAGE,
    "insert_decision": _INSERT_DECISION,
    "upsert_checkpoint": _UPSERT_CHECKPOINT,
    "interrupt_stages": _INTERRUPT_STAGES,
    "request_cancel": _REQUEST_CANCEL,
    "force_cancel": _FORCE_CANCEL,
    "delete_run": _DELETE_RUN,
    "delete_run_any": _DELETE_RUN_ANY,
}


@functools.cache
def _statements_for(dialect_name: str) -> tuple[dict[str, str], dict[tuple[Any, ...], str]]:
    """The statements in a dialect's form, and its cache of ``WITH`` prefixes (shared by recorders:
    both are made once per process, not once per run)."""
    codec = codec_for(dialect_name)
    return {name: codec.sql(text) for name, text in _STATEMENTS.items()}, {}


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
