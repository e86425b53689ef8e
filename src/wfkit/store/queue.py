"""The workers' queue: Procrastinate's tables, installed and migrated beside wfkit's on PostgreSQL.

Procrastinate (the ``worker`` extra) ships its whole schema as it stands in the installed version
(``schema.sql``) and one SQL file per change from each version to the next
(``sql/migrations/*.sql``); which of those a database has had applied is left to the application.
wfkit keeps that record in ``wfkit_queue_migrations``: one row per migration file, applied, or made
unneeded because the whole schema was installed at once. ``wfkit db upgrade`` (:func:`upgrade`)
then installs the schema on a database that has none, and applies the files it has not yet had on
one that does (after Procrastinate itself was upgraded), in one transaction, under an advisory lock
so that two upgrades at once do not both apply them. ``wfkit db check`` (:func:`state`) says what
is missing.

SQLite has no queue: workers need PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, DatabaseError
from wfkit.store.db import engine_for, translate_errors

#: The table that records which of Procrastinate's migration files a database has had.
TRACKING_TABLE = "wfkit_queue_migrations"
#: The prefix of Procrastinate's tables (left out when wfkit compares its own schema with its models).
QUEUE_PREFIX = "procrastinate_"
#: The key of the advisory lock an upgrade of the queue holds (any constant unlikely to clash).
_LOCK_KEY = 0x77666B71  # "wfkq"
#: What the tracking table records for a fresh install of the whole schema.
WHOLE_SCHEMA = "schema.sql"
#: wfkit's index on the queue's jobs by the run each executes (cancel, recovery and `runs show` find
#: a run's jobs through it).
RUN_JOBS_INDEX = "wfkit_jobs_run_id_idx"
_CREATE_RUN_JOBS_INDEX = f"CREATE INDEX IF NOT EXISTS {RUN_JOBS_INDEX} ON procrastinate_jobs ((args->>'run_id'))"


def available() -> bool:
    """Whether Procrastinate is installed (``pip install 'wfkit[worker]'``)."""
    return importlib.util.find_spec("procrastinate") is not None


def version() -> str | None:
    """The installed Procrastinate's version (None: not installed)."""
    if not available():
        return None
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("procrastinate")
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class QueueState:
    """Where a PostgreSQL database's queue stands against the installed Procrastinate."""

    version: str | None  # the installed Procrastinate's (None: not installed)
    installed: bool  # whether the database has Procrastinate's tables
    pending: list[str] = field(default_factory=list)  # migration files it has not had, in order

    @property
    def up_to_date(self) -> bool:
        return self.installed and not self.pending


def migration_files() -> list[str]:
    """The names of the installed Procrastinate's migration files, in the order they apply (their
    names begin with the version that brings them)."""
    folder = resources.files("procrastinate.sql") / "migrations"
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))


def _read(name: str) -> str:
    base = resources.files("procrastinate.sql")
    return (base / name).read_text(encoding="utf-8") if name == WHOLE_SCHEMA else \
        (base / "migrations" / name).read_text(encoding="utf-8")


def is_postgresql(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def state(engine_or_url: Engine | str | None) -> QueueState | None:
    """The queue's state (None on SQLite, which has none)."""
    with engine_for(engine_or_url, create_missing=False) as engine:
        if not is_postgresql(engine):
            return None
        with translate_errors(engine), engine.connect() as conn:
            installed = _has_table(conn, "procrastinate_jobs")
            applied = _applied(conn)
            index = _has_table(conn, RUN_JOBS_INDEX)
        if not available():
            return QueueState(None, installed)
        pending = [name for name in migration_files() if name not in applied] if installed else []
        if installed and not index:
            pending.append(RUN_JOBS_INDEX)
        return QueueState(version(), installed, pending)


def upgrade(engine_or_url: Engine | str | None) -> list[str]:
    """Install or migrate the queue's tables to the installed Procrastinate's (PostgreSQL, with
    Procrastinate installed; else nothing): the whole schema on a database without it, else the
    migration files it has not had. One transaction. Returns what was applied, in order."""
    if not available():
        return []
    with engine_for(engine_or_url) as engine:
        if not is_postgresql(engine):
            return []
        with translate_errors(engine), engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (name TEXT PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), procrastinate_version TEXT NOT NULL)")
            applied = _applied(conn)
            files = migration_files()
            installed = _has_table(conn, "procrastinate_jobs")
            if installed and not applied:
                raise DatabaseError(
                    f"the database has Procrastinate's tables but no record of the migrations they had "
                    f"({TRACKING_TABLE}): they were installed by something other than wfkit, so wfkit cannot "
                    "tell which of Procrastinate's migrations to apply; apply them as Procrastinate's "
                    f"documentation says, then record them in {TRACKING_TABLE}")
            if not installed:
                # The whole schema is the newest: every migration file up to it is in it already.
                todo, record = [WHOLE_SCHEMA], [WHOLE_SCHEMA, *files]
            else:
                todo = [name for name in files if name not in applied]
                record = todo
            driver = conn.connection.driver_connection
            for name in todo:
                # No parameters: the driver sends the file as it is (several statements, % and all).
                driver.execute(_read(name))  # type: ignore[union-attr]
            for name in record:
                if name not in applied:
                    conn.execute(sa.text(f"INSERT INTO {TRACKING_TABLE} (name, procrastinate_version) "
                                         "VALUES (:name, :version)"), {"name": name, "version": version() or "?"})
            if not _has_table(conn, RUN_JOBS_INDEX):
                conn.exec_driver_sql(_CREATE_RUN_JOBS_INDEX)
                todo.append(RUN_JOBS_INDEX)
            return todo


def _has_table(conn: Any, name: str) -> bool:
    return conn.execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar_one()


def _applied(conn: Any) -> set[str]:
    if not _has_table(conn, TRACKING_TABLE):
        return set()
    return set(conn.execute(sa.text(f"SELECT name FROM {TRACKING_TABLE}")).scalars())


def is_queue_table(name: str | None) -> bool:
    """Whether a table is the queue's (Procrastinate's, or wfkit's record of its migrations)."""
    return bool(name) and (name.startswith(QUEUE_PREFIX) or name == TRACKING_TABLE)  # type: ignore[union-attr]


#: The name of the workers' task that executes a submitted run (its job's ``run_id`` argument).
EXECUTE_TASK = "wfkit.execute_run"
#: The queue a run is submitted to when none is named.
DEFAULT_QUEUE = "wfkit"
_APP: Any = None


def _app() -> Any:
    """A Procrastinate app for deferring jobs on a connection the caller gives (it opens none)."""
    global _APP
    if _APP is None:
        import procrastinate

        _APP = procrastinate.App(connector=procrastinate.SyncPsycopgConnector())
    return _APP


def enqueuer(run_id: Any, queue: str | None = None, recoveries: int = 0) -> Any:
    """How to enqueue the job that executes run ``run_id``, on a psycopg connection inside the
    caller's transaction (see :meth:`SqlRecorder.submit_run <wfkit.store.recorder.SqlRecorder.submit_run>`).
    One job per run waits at a time (its queueing lock is the run's id): if one waits already
    (a recovery and a hand-back crossed), it is the run's job, and nothing more is enqueued; the
    caller's transaction goes on either way. ``recoveries``: how many times the workers' recovery
    has re-dispatched the run since it was submitted (the job carries it, so that hand-backs of a
    stopping worker do not count as attempts)."""
    if not available():
        raise ConfigurationError("submitting runs to workers needs Procrastinate, which is not installed: "
                                 "pip install 'wfkit[worker]'")

    def enqueue(connection: Any) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        deferrer = _app().configure_task(EXECUTE_TASK, queueing_lock=str(run_id), queue=queue or DEFAULT_QUEUE,
                                         connection=connection)
        try:
            with connection.transaction():  # a savepoint: a clash rolls back the insert only
                deferrer.defer(run_id=str(run_id), recoveries=recoveries)
        except AlreadyEnqueued:
            pass

    return enqueue


def cancel_jobs(run_id: Any, *, abort: bool) -> Callable[[Any], None]:
    """What cancels run ``run_id``'s jobs, on a psycopg connection inside the caller's transaction
    (the run's own cancel): a queued job is cancelled; with ``abort``, a job being executed is
    asked to abort (Procrastinate notifies its worker, which stops the run at once)."""

    def cancel(connection: Any) -> None:
        connection.execute(
            "SELECT procrastinate_cancel_job_v1(id, %s, false) FROM procrastinate_jobs "
            "WHERE args->>'run_id' = %s AND task_name = %s AND status IN ('todo', 'doing')",
            (abort, str(run_id), EXECUTE_TASK))

    return cancel


def has_queue(engine: Engine) -> bool:
    """Whether the database has the queue's tables (PostgreSQL, after ``wfkit db upgrade`` with the
    worker extra): remembered per engine once seen."""
    if not is_postgresql(engine):
        return False
    if engine in _HAS_QUEUE:
        return True
    with translate_errors(engine), engine.connect() as conn:
        known = _has_table(conn, "procrastinate_jobs")
    if known:  # a missing queue may be installed later: only its presence is remembered
        _HAS_QUEUE[engine] = True
    return known


_HAS_QUEUE: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()


def jobs_of(engine_or_url: Engine | str | None, run_id: Any) -> list[tuple[str, str, str]]:
    """The queue's jobs for run ``run_id``: (task, queue, status) each, oldest first."""
    with engine_for(engine_or_url, create_missing=False) as engine, translate_errors(engine), \
            engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT task_name, queue_name, status::text FROM procrastinate_jobs "
            "WHERE args->>'run_id' = :rid ORDER BY id"), {"rid": str(run_id)})
        return [tuple(row) for row in rows]  # type: ignore[misc]


#: The key of the advisory lock the workers' recovery holds (one worker recovers at a time).
_RECOVERY_KEY = 0x77666B72  # "wfkr"
#: What recovery records on the stage a dead worker left running.
INTERRUPTED = "interrupted: the worker executing this stage stopped before it finished"


@dataclass(frozen=True)
class Recovery:
    """What one pass of the workers' recovery did."""

    redispatched: list[str] = field(default_factory=list)  # runs handed to the queue again
    given_up: list[str] = field(default_factory=list)  # runs failed: their attempts were used up
    jobs_closed: int = 0  # jobs left 'doing' by workers that stopped heartbeating, closed as failed


#: The workers' recovery failing a pending run nobody could start (see :func:`recover`).
_GIVE_UP_PENDING = (
    "UPDATE runs SET status = 'failed', error_message = %s, completed_at = %s, updated_at = %s, "
    "lease_epoch = lease_epoch + 1 WHERE id = %s AND status = 'pending' AND owner IS NULL"
)


def recover(engine: Engine, *, max_attempts: int, dead_seconds: float, lease_seconds: float = 30.0,
            limit: int = 100) -> Recovery | None:
    """One pass of the workers' recovery (PostgreSQL), in one transaction; None if another worker
    is doing it (an advisory lock: one at a time). It finds the workers' runs that nobody executes
    any more and that have no job waiting:

    - a run a worker held (its owner is a registered worker) whose lease expired: the worker died,
      or stalls;
    - a run waiting for a worker (pending, held by nobody) whose job a worker took and then did not
      start it: its job failed (the worker's task raised before the claim), or is still 'doing';

    unless its last job is being executed by a worker heard from within ``lease_seconds`` (that
    worker has it in hand: it is about to claim it, or executing it).

    Each gets a new job in the queue its last job had (a worker then takes it over from its
    checkpoint), or fails once it has had ``max_attempts`` attempts (its first, and one per recovery
    since it was submitted: a stopping worker's hand-back is not one). Runs held by any other
    process (``wfkit run``, a service) are left to ``wfkit runs recover``, even if they once had a
    job. It also prunes the workers silent for ``dead_seconds`` (Procrastinate's, with the jobs
    they left 'doing', closed as failed; and wfkit's rows of those that hold no run any more).
    That is much longer than a lease: a worker that was merely stopped for a while (SIGSTOP, a
    frozen machine) finds its registration when it comes back, and serves on; its runs were taken
    over long before, by their leases."""
    from wfkit.store.recorder import give_up_statement
    from wfkit.store.workers import prune

    with translate_errors(engine), engine.begin() as conn:
        if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _RECOVERY_KEY}).scalar_one():
            return None
        conn.execute(sa.text("SELECT procrastinate_prune_stalled_workers_v1(:s)"), {"s": dead_seconds}).all()
        closed = len(conn.execute(sa.text(
            "SELECT procrastinate_finish_job_v1(id, 'failed', false) FROM procrastinate_jobs "
            "WHERE status = 'doing' AND worker_id IS NULL AND task_name = :task"), {"task": EXECUTE_TASK}).all())
        # With the queue and the recovery count of each run's last job. A worker's row stays while it
        # holds a run (prune), and its heartbeat writes it again if it was pruned while it held none.
        # Its last job is being executed by a worker heard from within a lease: that worker has the run
        # in hand (about to claim it, or executing it), whatever the run's row says yet.
        in_hand = ("(j.status = 'doing' AND EXISTS (SELECT 1 FROM procrastinate_workers pw WHERE pw.id = j.worker_id "
                   "AND pw.last_heartbeat > now() - :lease * interval '1 second'))")
        rows = conn.execute(sa.text(
            "SELECT r.id, r.status::text, j.queue_name, COALESCE((j.args->>'recoveries')::int, 0) FROM runs r "
            "JOIN LATERAL (SELECT j.queue_name, j.args, j.status, j.worker_id FROM procrastinate_jobs j "
            "WHERE j.args->>'run_id' = r.id::text AND j.task_name = :task ORDER BY j.id DESC LIMIT 1) j ON true "
            "WHERE ((r.status = 'running' AND r.lease_expires_at < now() "
            "AND EXISTS (SELECT 1 FROM workers w WHERE w.id = r.owner)) "
            "OR (r.status = 'pending' AND r.owner IS NULL AND j.status IN ('failed', 'doing'))) "
            f"AND NOT {in_hand} AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs t "
            "WHERE t.args->>'run_id' = r.id::text AND t.status = 'todo') "
            "ORDER BY r.created_at, r.id LIMIT :limit FOR UPDATE OF r SKIP LOCKED"),
            {"limit": limit, "task": EXECUTE_TASK, "lease": lease_seconds}).all()
        driver = conn.connection.driver_connection
        redispatched, given_up = [], []
        for run_id, status, queue, recoveries in rows:
            attempts = recoveries + 1  # the first execution, then one per recovery (hand-backs are not counted)
            if attempts >= max_attempts:
                now = datetime.now(timezone.utc)
                if status == "running":
                    error = (f"gave up after {attempts} attempts: the worker executing it stopped each time "
                             f"(WFKIT_MAX_ATTEMPTS={max_attempts}); resume it with `wfkit runs resume {run_id}`")
                    done = conn.exec_driver_sql(give_up_statement(), (run_id, INTERRUPTED, INTERRUPTED, error, now,
                                                                      now)).scalar_one()
                else:
                    error = (f"gave up after {attempts} attempts: each worker that took it stopped or failed "
                             f"before starting it (WFKIT_MAX_ATTEMPTS={max_attempts}); see the workers' logs, "
                             f"then resume it with `wfkit runs resume {run_id} --submit`")
                    done = conn.exec_driver_sql(_GIVE_UP_PENDING, (error, now, now, run_id)).rowcount
                if done:
                    given_up.append(str(run_id))
            else:
                enqueuer(run_id, queue, recoveries + 1)(driver)
                redispatched.append(str(run_id))
        prune(conn, dead_seconds)
        return Recovery(redispatched, given_up, closed)
