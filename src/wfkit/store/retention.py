"""Retention: deleting the finished runs that ended long ago, a batch at a time.

The write side beside the read-only :class:`~wfkit.store.repository.Repository`, for services and
for ``wfkit runs prune`` and ``DELETE /workflows/runs`` (which call it)::

    from wfkit import prune_runs
    result = prune_runs("postgresql://wfkit@db/wfkit", older_than="30d")
    print(result.deleted)

**What goes.** A run whose status is one of ``statuses`` (completed, failed and cancelled by
default; pending and running are refused, never deleted) and that *ended* more than
``older_than`` ago: created before the cutoff, and its ``completed_at`` (for a run that never
recorded one, its ``updated_at``) before the cutoff too. Its stages, decisions and checkpoint go
with it (the tables' ``ON DELETE CASCADE``). On PostgreSQL with the workers' queue installed, the
finished jobs of the runs deleted go too (their ``procrastinate_jobs`` rows, with their events):
the queue would otherwise keep a job for every run ever submitted. Jobs waiting or being executed
are left alone.

**The cutoff** is taken once, at the start, from the database's clock (PostgreSQL's ``now()``; a
SQLite file's clock is the machine's that its processes share), as leases are: the machines that
prune need not agree on the time with the database. Runs that end while the prune goes on are
not caught up by it.

**Batches.** Each batch is one short transaction of one statement: it deletes the next
``batch_size`` runs in ``(created_at, id)`` order (a keyset: each batch starts where the last one
ended, so no batch reads what the last one deleted), repeating the status and age conditions on
the rows it deletes. A run resumed (or otherwise changed) between one batch and the next is
therefore kept: it no longer matches, and the statement checks it under the row's lock
(PostgreSQL) or the database's write lock (SQLite). Between batches, live runs commit their
steps: on SQLite, where a transaction locks the whole database for writing, the prune pauses
after each batch for as long as the batch held the lock (see :data:`SQLITE_PAUSE_SHARE`), so
that a writer waiting for the lock gets it; on PostgreSQL, which locks rows, nothing waits on a
prune but for the disk and CPU it shares. A prune interrupted keeps the batches it committed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.errors import InvalidQueryError, InvalidStatusError
from wfkit.formatting import shown
from wfkit.store.codec import codec_for
from wfkit.store.db import engine_for, translate_errors
from wfkit.store.models import RunStatus, utcnow
from wfkit.store.query import parse_statuses, parse_workflow_names

#: The statuses a prune deletes unless told otherwise: every final one.
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
#: Runs per batch unless told otherwise (see bench/README.md, ``bench_prune.py``: larger batches
#: go hardly faster, and hold SQLite's write lock longer).
DEFAULT_BATCH_SIZE = 1000
#: The most runs one batch may take.
MAX_BATCH_SIZE = 100_000
#: The longest age ``older_than`` may give (a cutoff before any run was ever recorded).
MAX_AGE = timedelta(days=365_000)
#: On SQLite, the prune pauses after each batch for this share of the time the batch held the
#: database's write lock (at least 1 ms, at most :data:`SQLITE_LONGEST_WAIT`): a writer that waited
#: for the lock sleeps in SQLite's busy handler, and must wake to find the lock free, not taken by
#: the next batch already.
SQLITE_PAUSE_SHARE = 1.0
#: The longest the pause gets: the longest sleep of SQLite's busy handler (the steps of its default
#: handler, which Python's sqlite3 installs, grow to 100 ms), so that a writer asleep in it wakes
#: within the pause, while a prune of long batches does not spend half its time asleep.
SQLITE_LONGEST_WAIT = 0.1
#: The units ``older_than`` text may use, in seconds.
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
AGE_FORMS = "a whole number and a unit: 45s, 90m, 12h, 30d or 2w"
_AGE = re.compile(r"^\s*([0-9]+)\s*([a-zA-Z])\s*$")
#: The queue's job statuses that are final (a job in any other is waiting or being executed).
_FINAL_JOBS = ("succeeded", "failed", "cancelled", "aborted")


def parse_age(value: timedelta | str) -> timedelta:
    """How long ago runs must have ended: a positive ``timedelta``, or text such as ``30d`` (a whole
    number and one of ``s``, ``m``, ``h``, ``d``, ``w``). Anything else is an
    :class:`InvalidQueryError` naming the value and the forms allowed."""
    if isinstance(value, timedelta):
        age = value
        what = shown(str(value))
    elif isinstance(value, str):
        found = _AGE.match(value)
        unit = found.group(2).lower() if found else ""
        if not found or unit not in AGE_UNITS:
            raise InvalidQueryError(f"older_than {shown(value)} is not a duration: give {AGE_FORMS}")
        number = int(found.group(1))
        if number > MAX_AGE.total_seconds() // AGE_UNITS[unit]:
            raise InvalidQueryError(f"older_than {shown(value)} is too long: at most {MAX_AGE.days}d")
        age = timedelta(seconds=number * AGE_UNITS[unit])
        what = shown(value)
    else:
        raise InvalidQueryError(f"older_than must be a timedelta or text such as '30d', got {value!r} "
                                f"({type(value).__name__})")
    if age <= timedelta(0):
        raise InvalidQueryError(f"older_than {what} must be more than zero: give {AGE_FORMS}")
    if age > MAX_AGE:
        raise InvalidQueryError(f"older_than {what} is too long: at most {MAX_AGE.days}d")
    return age


def parse_prune_statuses(values: Iterable[str | RunStatus] | str | RunStatus | None) -> tuple[RunStatus, ...]:
    """The statuses to prune (each value may hold several, comma-separated; none given: every
    finished one). Pending and running are refused with :class:`InvalidStatusError`: a run that has
    not ended is never pruned."""
    if values is None or isinstance(values, (str, RunStatus)):
        values = () if values is None else (values,)
    statuses = parse_statuses(values)
    live = [s.value for s in statuses if s not in FINISHED]
    if live:
        raise InvalidStatusError(
            f"runs that have not ended are never pruned: status {', '.join(live)} is not allowed; give any of "
            f"{', '.join(s.value for s in FINISHED)} (default: all three)")
    return statuses or FINISHED


def _batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_SIZE:
        raise InvalidQueryError(f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}, got {value!r}")
    return value


@dataclass(frozen=True)
class PruneResult:
    """What a prune did (or, for a dry run, would do); also what its ``progress`` callback gets
    after each batch, with the counts so far."""

    #: runs deleted (a dry run: runs that would be)
    deleted: int
    dry_run: bool
    #: runs that ended before this (by the database's clock) were candidates
    cutoff: datetime
    statuses: tuple[str, ...]
    #: the workflows pruned (empty: all)
    workflow_names: tuple[str, ...] = ()
    #: transactions committed (a dry run: 0)
    batches: int = 0
    #: jobs of the workers' queue deleted with their runs (PostgreSQL with the queue installed)
    jobs_deleted: int = 0
    #: seconds the prune took (so far)
    seconds: float = 0.0
    #: the runs deleted per second (0 when nothing was)
    runs_per_second: float = field(init=False)

    def __post_init__(self) -> None:
        rate = self.deleted / self.seconds if self.seconds > 0 and not self.dry_run else 0.0
        object.__setattr__(self, "runs_per_second", rate)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``, and the HTTP API's answer)."""
        return {"deleted": self.deleted, "dry_run": self.dry_run,
                "cutoff": self.cutoff.isoformat().replace("+00:00", "Z"), "statuses": list(self.statuses),
                "workflow_names": list(self.workflow_names), "batches": self.batches,
                "jobs_deleted": self.jobs_deleted, "seconds": round(self.seconds, 3)}


def prune_runs(engine_or_url: Engine | str | None = None, *, older_than: timedelta | str,
               statuses: Iterable[str | RunStatus] | str | None = FINISHED, workflow_names: Iterable[str] | str = (),
               dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE,
               progress: Callable[[PruneResult], None] | None = None) -> PruneResult:
    """Delete the finished runs that ended more than ``older_than`` ago, with their stages,
    decisions and checkpoints, ``batch_size`` runs per transaction (see the module's docstring).

    ``engine_or_url``: an engine, a URL, or None for the configured default (it must be migrated).
    ``older_than``: a ``timedelta``, or text such as ``30d``, ``12h``, ``90m``, ``45s``, ``2w``.
    ``statuses``: which finished statuses go (default all three; pending or running is an
    :class:`InvalidStatusError`). ``workflow_names``: only runs of these workflows (default: all).
    ``dry_run``: count the runs that would go, delete nothing. ``progress``: called after each
    batch with the totals so far (an exception it raises stops the prune; the batches committed
    stay deleted). Returns a :class:`PruneResult`.
    """
    age = parse_age(older_than)
    chosen = parse_prune_statuses(statuses)
    names = parse_workflow_names((workflow_names,) if isinstance(workflow_names, str) else workflow_names)
    size = _batch_size(batch_size)
    started = time.perf_counter()
    with engine_for(engine_or_url, create_missing=False) as engine, translate_errors(engine):
        plan = _Plan(engine, chosen, names)
        cutoff = plan.now() - age
        result = PruneResult(0, dry_run, cutoff, tuple(s.value for s in chosen), names)
        if dry_run:
            return replace(result, deleted=plan.count(cutoff), seconds=time.perf_counter() - started)
        jobs = plan.has_jobs()
        after: tuple[Any, Any] | None = None
        while True:
            began = time.perf_counter()
            deleted, jobs_deleted, last = plan.delete_batch(cutoff, after, size, jobs)
            held = time.perf_counter() - began
            if deleted:
                result = replace(result, deleted=result.deleted + deleted, batches=result.batches + 1,
                                 jobs_deleted=result.jobs_deleted + jobs_deleted,
                                 seconds=time.perf_counter() - started)
                after = last  # the next batch starts after it (ids compare as the driver returns them)
                if progress is not None:
                    progress(result)
            if last is None:  # nothing left to delete
                break
            if plan.sqlite:  # let a writer waiting for the lock have it (see SQLITE_PAUSE_SHARE)
                time.sleep(min(SQLITE_LONGEST_WAIT, max(0.001, held * SQLITE_PAUSE_SHARE)))
    return replace(result, seconds=time.perf_counter() - started)


class _Plan:
    """The statements of one prune, in the engine's dialect, and how to run them."""

    def __init__(self, engine: Engine, statuses: tuple[RunStatus, ...], names: tuple[str, ...]):
        self.engine = engine
        self.codec = codec_for(engine.dialect.name)
        self.sqlite = self.codec.sqlite
        # Statuses come from the enum (never a user's text); workflow names are parameters.
        self.status_list = ", ".join(f"'{s.value}'" for s in statuses)
        self.names = names
        by_name = f" AND workflow_name IN ({', '.join('?' for _ in names)})" if names else ""
        matches = f"status IN ({self.status_list}) AND created_at < ? AND COALESCE(completed_at, updated_at) < ?"
        self._count = self.codec.sql(f"SELECT count(*) FROM runs WHERE {matches}{by_name}")
        # A batch reads the runs in (created_at, id) order from where the last one stopped, and stops
        # after ``batch_size``: through an index on (created_at, id) (or, for one workflow, on
        # (workflow_name, created_at, id)), which yields them in that order. SQLite would rather take
        # the status index and sort every remaining run at each batch, and look the rows to delete up
        # by status rather than by id: a unary + keeps it off the status column's indexes.
        plus = "+" if self.sqlite else ""
        checks = f"{plus}status IN ({self.status_list}) AND {plus}COALESCE(completed_at, updated_at) < ?"
        select = ("SELECT id FROM runs WHERE {keyset}created_at < ? AND " + checks + by_name
                  + " ORDER BY created_at, id LIMIT ?")
        delete = f"DELETE FROM runs WHERE id IN ({select}) AND {checks} RETURNING created_at, id"
        self._first = self.codec.sql(delete.format(keyset=""))
        self._next = self.codec.sql(delete.format(keyset="(created_at, id) > (?, ?) AND "))

    def now(self) -> datetime:
        """The database's clock (a SQLite file's is this machine's)."""
        if self.sqlite:
            return utcnow()
        with self.engine.connect() as conn:
            return self.codec.time_in(conn.exec_driver_sql("SELECT now()").scalar_one())

    def _matches(self, cutoff: datetime) -> list[Any]:
        at = self.codec.time(cutoff)
        return [at, at, *self.names]

    def count(self, cutoff: datetime) -> int:
        with self.engine.connect() as conn:
            return int(conn.exec_driver_sql(self._count, tuple(self._matches(cutoff))).scalar_one())

    def has_jobs(self) -> bool:
        from wfkit.store import queue

        return queue.has_queue(self.engine)

    def delete_batch(self, cutoff: datetime, after: tuple[Any, Any] | None, size: int,
                     jobs: bool) -> tuple[int, int, tuple[Any, Any] | None]:
        """One batch, in a transaction of its own: (runs deleted, jobs deleted, the (created_at, id)
        of the last run deleted, None if none was)."""
        at = self.codec.time(cutoff)
        keyset = [] if after is None else list(after)
        params = (*keyset, *self._matches(cutoff), size, at)
        with self.engine.connect() as conn:
            if self.sqlite:
                _foreign_keys_on(conn)
                conn.commit()  # ends SQLAlchemy's own transaction around the pragmas (SQLite had none open)
            with conn.begin():
                rows = conn.exec_driver_sql(self._first if after is None else self._next, params).all()
                jobs_deleted = 0
                if rows and jobs:
                    from wfkit.store.queue import EXECUTE_TASK

                    ids = [str(row[1]) for row in rows]
                    jobs_deleted = conn.exec_driver_sql(
                        "DELETE FROM procrastinate_jobs WHERE args->>'run_id' = ANY(%s) AND task_name = %s "
                        f"AND status::text IN ({', '.join(repr(s) for s in _FINAL_JOBS)})",
                        (ids, EXECUTE_TASK)).rowcount
        if not rows:
            return 0, 0, None
        return len(rows), jobs_deleted, max((row[0], row[1]) for row in rows)


def _foreign_keys_on(conn: Any) -> None:
    """SQLite cascades only with foreign keys on, a per-connection setting: wfkit's engines set it
    on every connection, an engine made otherwise may not have. (It can be changed only outside a
    transaction: this runs before the batch's.)"""
    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    if not conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one():
        from wfkit.errors import ConfigurationError

        raise ConfigurationError("foreign keys cannot be turned on for this SQLite connection (it is inside a "
                                 "transaction): a prune would leave the stages of the runs it deletes")


__all__ = ["DEFAULT_BATCH_SIZE", "FINISHED", "PruneResult", "parse_age", "parse_prune_statuses", "prune_runs"]
