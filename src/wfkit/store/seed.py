"""Synthetic run history, for the demo, the tests and the benchmarks.

``seed_history(engine, runs=1000)`` writes deterministic (seeded) runs spread
over :data:`WORKFLOW_NAMES` and every run status, one run a minute going back
from ``now``; one run in ten gets 5 stages and 4 decisions (and a checkpoint row
holding the last state: history to browse, not to resume, since its runs were never
executed; a resume says so).
Rows are converted by the columns' own SQLAlchemy types (so they are stored
exactly as an ORM or Core insert would store them) and then written in large
batches through the driver: ``executemany`` on SQLite, ``COPY`` on PostgreSQL.
A million runs takes well under a minute on either engine.

From a shell: ``python -m wfkit.store.seed --runs 200 --database-url URL`` (the database
must be migrated first: ``wfkit db upgrade``). The URL is required, with no default: the
seeded runs are of workflows that do not exist, so they are not written into the database a
user's real runs are in unless the user names it.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wfkit.errors import DatabaseNotMigratedError, WfkitError
from wfkit.store.db import engine_for, translate_errors
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, StageStatus, utcnow

WORKFLOW_NAMES = (
    "text-pipeline", "review-loop", "branching", "ingest-orders", "nightly-report",
    "invoice-match", "email-digest", "image-resize", "fraud-screen", "sync-crm",
    "backup-verify", "churn-score", "etl-events", "price-update", "geo-enrich",
    "support-triage", "doc-summarize", "ab-analysis", "stock-reorder", "cert-renew",
)  # fmt: skip
NODES = ("load", "validate", "transform", "review", "publish")
_STATUSES = tuple(RunStatus)


@dataclass(frozen=True, slots=True)
class SeedSummary:
    runs: int
    stages: int
    decisions: int
    checkpoints: int


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _history(
    rng: random.Random, count: int, now: datetime, workflows: int, detail_every: int
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any] | None]]:
    names = WORKFLOW_NAMES[:workflows] if workflows <= len(WORKFLOW_NAMES) else tuple(
        f"workflow-{i:03d}" for i in range(workflows)
    )
    for i in range(count):
        created = now - timedelta(minutes=count - i, microseconds=rng.randrange(1_000_000))
        status = _STATUSES[rng.randrange(len(_STATUSES))]
        run_id = _uuid(rng)
        started = None if status is RunStatus.PENDING else created + timedelta(milliseconds=rng.randrange(5, 500))
        finished = status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
        completed = started + timedelta(milliseconds=rng.randrange(50, 60_000)) if finished and started else None
        params = {"size": rng.randrange(1, 100), "mode": rng.choice(["fast", "full"])}
        run = {
            "id": run_id,
            "workflow_name": names[rng.randrange(len(names))],
            "status": status,
            "params": params,
            "result": {"items": rng.randrange(0, 1000), "ok": True} if status is RunStatus.COMPLETED else None,
            "error_message": "ValueError: input row 42 has no id" if status is RunStatus.FAILED else None,
            "started_at": started,
            "completed_at": completed,
            "created_at": created,
            "updated_at": completed or started or created,
        }
        stages: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        checkpoint = None
        if detail_every and i % detail_every == 0 and started is not None:
            at = started
            state: dict[str, Any] = {"count": 0}
            for n, node in enumerate(NODES):
                duration = rng.uniform(0.2, 900.0)
                failed = status is RunStatus.FAILED and n == len(NODES) - 1
                out = None if failed else {**state, "count": state["count"] + 1, "last": node}
                stages.append(
                    {
                        "id": _uuid(rng),
                        "run_id": run_id,
                        "node_name": node,
                        "iteration": 1,
                        "status": StageStatus.FAILED if failed else StageStatus.COMPLETED,
                        "input_snapshot": state,
                        "output_snapshot": out,
                        "duration_ms": round(duration, 3),
                        "error_message": run["error_message"] if failed else None,
                        "created_at": at,
                    }
                )
                at += timedelta(milliseconds=duration)
                if n < len(NODES) - 1 and out is not None:
                    conditional = node == "review"
                    decisions.append(
                        {
                            "id": _uuid(rng),
                            "run_id": run_id,
                            "from_node": node,
                            "to_node": NODES[n + 1],
                            "predicate_name": "score_ok" if conditional else None,
                            "predicate_result": True,
                            "reason": "score 0.91 >= 0.8" if conditional else "unconditional edge",
                            "created_at": at,
                        }
                    )
                    state = out
            if completed is not None:  # the run ends when its last stage does
                run["completed_at"] = run["updated_at"] = at
            checkpoint = {
                "run_id": run_id,
                "state_data": state,
                "checkpoint_node": stages[-1]["node_name"] if not stages[-1]["error_message"] else stages[-2]["node_name"],
                "created_at": started,
                "updated_at": at,
            }
        yield run, stages, decisions, checkpoint


def _row_converter(table: sa.Table, dialect: sa.Dialect, keys: frozenset[str]) -> tuple[list[str], Any]:
    """The columns to write for rows with ``keys``, and a function turning a row into driver-ready values.

    As a Core ``insert(table)`` given such rows would: a column the rows lack
    gets its client-side default (scalar or callable) or, having none, is left
    out (NULL, or the server's default). Each value goes through its column
    type's bind processor for ``dialect``.
    """
    columns = [c for c in table.columns if c.name in keys or (c.default is not None and not c.default.is_sequence)]
    fill: list[tuple[str, Any]] = []  # (row key, its bind processor), or ("", a maker of the default)
    for c in columns:
        proc = c.type.dialect_impl(dialect).bind_processor(dialect)
        if c.name in keys:
            fill.append((c.name, proc))
        elif c.default.is_scalar:
            value = c.default.arg if proc is None else proc(c.default.arg)
            fill.append(("", lambda _row, v=value: v))
        elif c.default.is_callable:
            make = c.default.arg  # SQLAlchemy wraps it to take an execution context
            fill.append(("", (lambda _row, m=make: m(None)) if proc is None else (lambda _row, m=make, p=proc: p(m(None)))))
        else:  # a clause default: better an error than a silently different row
            raise ValueError(f"seed rows for {table.name} must give {c.name}: its default is SQL")

    def convert(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            (row[key] if proc is None else proc(row[key])) if key else proc(row)
            for key, proc in fill
        )

    return [c.name for c in columns], convert


def _writer(conn: sa.Connection, table: sa.Table) -> Any:
    """A function writing a batch of row dicts (all with the same keys) into ``table`` through the raw driver."""
    dialect = conn.dialect
    raw = conn.connection.driver_connection
    quote = dialect.identifier_preparer.quote
    name = dialect.identifier_preparer.format_table(table)
    prepared: dict[frozenset[str], tuple[str, Any]] = {}

    def statement_for(row: dict[str, Any]) -> tuple[str, Any]:
        keys = frozenset(row)
        if keys not in prepared:
            names, convert = _row_converter(table, dialect, keys)
            columns = ", ".join(quote(n) for n in names)
            if dialect.name == "postgresql":
                sql = f"COPY {name} ({columns}) FROM STDIN"
            else:
                sql = f"INSERT INTO {name} ({columns}) VALUES ({', '.join('?' for _ in names)})"
            prepared[keys] = (sql, convert)
        return prepared[keys]

    def write(rows: list[dict[str, Any]]) -> None:
        statement, convert = statement_for(rows[0])
        if dialect.name == "postgresql":
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(convert(row))
            return
        cursor = raw.cursor()
        try:
            cursor.executemany(statement, map(convert, rows))
        finally:
            cursor.close()

    return write


def seed_history(
    engine_or_url: Engine | str | None = None,
    runs: int = 1000,
    *,
    workflows: int = len(WORKFLOW_NAMES),
    detail_every: int = 10,
    seed: int = 0,
    now: datetime | None = None,
    batch_size: int = 20000,
) -> SeedSummary:
    """Insert ``runs`` synthetic runs (and their stages, decisions, checkpoints); return the counts.

    Everything goes in one transaction: on error nothing is left behind.
    """
    rng = random.Random(seed)
    now = now or utcnow()
    tables = (Run.__table__, Stage.__table__, Decision.__table__, Checkpoint.__table__)
    totals = [0, 0, 0, 0]
    buffers: list[list[dict[str, Any]]] = [[], [], [], []]
    with engine_for(engine_or_url) as engine, translate_errors(engine), engine.begin() as conn:
        # Parents before children: the foreign keys hold at every statement.
        writers = [_writer(conn, table) for table in tables]

        def flush() -> None:
            for k, write in enumerate(writers):
                if buffers[k]:
                    write(buffers[k])
                    totals[k] += len(buffers[k])
                    buffers[k] = []

        with _large_sqlite_cache(conn):
            for run, stages, decisions, checkpoint in _history(rng, runs, now, workflows, detail_every):
                buffers[0].append(run)
                buffers[1].extend(stages)
                buffers[2].extend(decisions)
                if checkpoint:
                    buffers[3].append(checkpoint)
                if len(buffers[0]) >= batch_size:
                    flush()
            flush()
    return SeedSummary(*totals)


#: SQLite page cache (KiB) while seeding: the random-UUID primary key indexes
#: of a million runs do not fit SQLite's default 2 MiB, and a large cache saves
#: about a quarter of the time. The connection's own setting is restored after.
_SEED_SQLITE_CACHE_KIB = 256 * 1024


@contextlib.contextmanager
def _large_sqlite_cache(conn: sa.Connection) -> Iterator[None]:
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection
    previous = raw.execute("PRAGMA cache_size").fetchone()[0]
    raw.execute(f"PRAGMA cache_size=-{_SEED_SQLITE_CACHE_KIB}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size={int(previous)}")


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit 2, as with the ``wfkit`` command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {message} (see `{self.prog} --help`)\n")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m wfkit.store.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="how many runs to add (default 200)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed, to make the same history again (default: a new one each time, printed)")
    parser.add_argument("--database-url", default=None,
                        help="the database to add the runs to (required: `wfkit db path` prints the default one's)")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("name the database to add synthetic runs to with --database-url URL: the runs are of "
                     "workflows that do not exist, so there is no default")
    if args.runs < 0:
        parser.error(f"--runs must be at least 0, got {args.runs}")
    from wfkit.store import migrations

    try:
        if migrations.current(args.database_url) != migrations.head():
            import shlex

            from wfkit.formatting import mask_password

            raise DatabaseNotMigratedError(
                "the database is not migrated to the newest revision: run "
                f"`wfkit --database-url {shlex.quote(mask_password(args.database_url))} db upgrade` first"
            )
        seed = args.seed if args.seed is not None else random.randrange(2**31)
        summary = seed_history(args.database_url, args.runs, seed=seed)
    except WfkitError as err:
        sys.exit(f"Error: {err}")
    print(
        f"added {summary.runs} runs, {summary.stages} stages, {summary.decisions} decisions, "
        f"{summary.checkpoints} checkpoints (--seed {seed})"
    )


if __name__ == "__main__":
    main()
