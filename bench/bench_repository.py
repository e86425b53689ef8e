"""How fast is the read-only repository? Each query against the same SQL through the raw driver.

Seeds N runs (wfkit.store.seed.seed_history: 20 workflows, every status, 5 stages and
4 decisions for one run in ten) into a SQLite file and a throwaway PostgreSQL
database, migrated with wfkit.store.migrations.upgrade, then measures the median
wall time over --repeat calls of:

  list_runs page 1 (50 rows): unfiltered, --status, --workflow, --workflow + --status
  list_runs page 2,000 (50 rows, unfiltered)
  find_run, get_stages

each beside its raw baseline: the very statements the repository sent (captured
as it sends them: same SQL text and parameters) replayed through sqlite3 /
psycopg on one open connection, rows decoded to dicts with JSON parsed; for a
listing both the COUNT and the page. It prints the ratio wfkit / raw.

Targets (meant for 1,000,000 runs): every page-1 listing within 1.5x of raw,
and under 20 ms on SQLite; find_run and get_stages within 2x of raw. The deep
page has no target (shown for information).

It also prints the query plans (EXPLAIN QUERY PLAN / EXPLAIN) of every listing
the CLI offers and checks them: the page must come from an index in sort order
(no sort step, no table scan); a filtered COUNT must read only its index range.

    python bench/bench_repository.py [--runs 100000] [--repeat 30]
        [--engines sqlite,postgresql] [--postgres-url URL] [--keep | --reuse] [--strict]
        [--engine-option KEY=VALUE ...] [--pragma NAME=VALUE ...]

PostgreSQL: --postgres-url (default $WFKIT_BENCH_POSTGRES_URL, else
postgresql://postgres@127.0.0.1:5432/postgres) is an admin URL; a database with
a random name is created there and dropped at the end. SQLite: the file is
bench/bench_<runs>.db (gitignored), removed at the end unless --keep or
--reuse (--reuse also uses the file as is when it already holds N runs and is
migrated to head). Ctrl-C or SIGTERM still drops the database and the file.

What-if options, to measure a settings change before making it in wfkit.store.db:
--engine-option KEY=VALUE goes to create_engine() for wfkit's engine (e.g.
pool_pre_ping=true, pool_size=10); --pragma NAME=VALUE runs on
each of wfkit's SQLite connections (e.g. mmap_size=2147418112). The raw side
always copies the SQLite settings of wfkit's connections.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from wfkit.store import migrations
from wfkit.store.db import create_engine
from wfkit.store.query import PageRequest, RunFilters
from wfkit.store.repository import Repository
from wfkit.store.seed import WORKFLOW_NAMES, seed_history

BENCH_DIR = Path(__file__).resolve().parent
PG_URL_ENV = "WFKIT_BENCH_POSTGRES_URL"
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENGINES = ("sqlite", "postgresql")

PAGE_SIZE = 50
DEEP_PAGE = 2000
WORKFLOW = "branching"
STATUS = "failed"
assert WORKFLOW in WORKFLOW_NAMES
#: Run ids cycled through by find_run and get_stages (the same sequence on both sides).
LOOKUP_IDS = 20
#: The JSON columns of the tables read here; the raw SQLite side parses them.
JSON_COLUMNS = frozenset({"params", "result", "input_snapshot", "output_snapshot", "state_data"})

LISTING_TARGET_RATIO = 1.5
LISTING_TARGET_SQLITE_MS = 20.0
LOOKUP_TARGET_RATIO = 2.0

#: The listings the CLI offers (`wfkit runs list` with no filter, --status, --workflow, both).
CLI_LISTINGS: dict[str, RunFilters] = {
    "default (no filter)": RunFilters(),
    "--status": RunFilters(status=STATUS),
    "--workflow": RunFilters(workflow_name=WORKFLOW),
    "--workflow --status": RunFilters(workflow_name=WORKFLOW, status=STATUS),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the raw side


Statement = tuple[str, Any]  # SQL text as sent to the driver, and its parameters


@contextlib.contextmanager
def captured(repo: Repository) -> Iterator[list[Statement]]:
    """Every statement (text, driver-ready parameters) the repository sends while the block runs."""
    seen: list[Statement] = []
    send = repo._execute

    def record(cursor: Any, statement: Any, values: Any) -> Any:
        seen.append((statement.text, statement.params(values)))
        return send(cursor, statement, values)

    repo._execute = record  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del repo._execute


class RawSide:
    """One open driver connection replaying captured statements, rows decoded to dicts."""

    def __init__(self, backend: str, url: sa.URL, pragmas: list[str] = ()):
        self.backend = backend
        if backend == "sqlite":
            import sqlite3

            self.conn: Any = sqlite3.connect(url.database)
            for pragma in pragmas:  # the settings of wfkit's own connections: a like-for-like baseline
                self.conn.execute(f"PRAGMA {pragma}")
        else:
            import psycopg

            # Autocommit: at READ COMMITTED every statement takes its own snapshot
            # anyway, so a transaction around count + page would add round trips, not meaning.
            self.conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def run(self, statements: list[Statement]) -> list[list[dict[str, Any]]]:
        out = []
        for sql, params in statements:
            cur = self.conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, row)) for row in cur.fetchall()]
            if self.backend == "sqlite":  # psycopg parses JSON and JSONB itself
                parse = [n for n in names if n in JSON_COLUMNS]
                for row in rows:
                    for name in parse:
                        value = row[name]
                        if value is not None:
                            row[name] = json.loads(value)
            out.append(rows)
        return out

    def version(self) -> str:
        if self.backend == "sqlite":
            import sqlite3

            return f"SQLite {sqlite3.sqlite_version}"
        return str(self.conn.execute("SELECT version()").fetchone()[0]).split(",")[0]

    def plan(self, sql: str, params: Any) -> list[str]:
        if self.backend == "sqlite":
            rows = self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            depth: dict[int, int] = {0: -1}
            lines = []
            for node, parent, _notused, detail in rows:
                depth[node] = depth.get(parent, -1) + 1
                lines.append("  " * depth[node] + detail)
            return lines
        return [r[0] for r in self.conn.execute(f"EXPLAIN {sql}", params).fetchall()]


#: Connection settings that change how SQLite reads (the journal mode is kept in the file itself).
SQLITE_PRAGMAS = ("foreign_keys", "busy_timeout", "synchronous", "cache_size", "mmap_size", "temp_store")


def sqlite_pragmas(engine: sa.Engine) -> list[str]:
    """The SQLite settings of a connection wfkit opens, as ``name=value``, to give the raw side the same."""
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        return [f"{name}={driver.execute(f'PRAGMA {name}').fetchone()[0]}" for name in SQLITE_PRAGMAS]


# --------------------------------------------------------------------------- plans


def plan_problems(backend: str, kind: str, filtered: bool, lines: list[str]) -> list[str]:
    """What is wrong with a plan: a sort step under the page's LIMIT, a table scan, a filter checked row by row.

    ``kind`` is "count", "page" or "lookup". A lookup (find_run, get_stages)
    only must not scan a table: sorting the few stages of one run is fine. A
    page is a deferred join (its ids from an index under LIMIT, then the rows
    by primary key): sorting those page_size rows again at the top is fine, a
    sort below the LIMIT (of every matching row) is not.
    """
    problems = []
    if backend == "sqlite":
        materialized = any(line.strip().startswith("MATERIALIZE") for line in lines)
        for line in lines:
            s = line.strip()
            top_level = not line.startswith(" ")
            if "TEMP B-TREE" in s and kind != "lookup" and not (materialized and top_level):
                problems.append(f"sort step ({s})")
            if s.startswith("SCAN ") and "INDEX" not in s and not s.startswith(("SCAN anon_", "SCAN (subquery")):
                problems.append(f"table scan ({s})")
            elif filtered and s.startswith("SCAN ") and "INDEX" in s and kind != "lookup":
                problems.append(f"reads the whole index, not the filter's range ({s})")
    else:
        limit_depth = None
        for k, line in enumerate(lines):
            s = line.strip()
            is_node = k == 0 or s.startswith("->")
            depth = len(line) - len(line.lstrip())
            s = s.removeprefix("->").strip()
            node = s.split("  (")[0]
            if is_node and node.startswith("Limit") and limit_depth is None:
                limit_depth = depth
            below_limit = limit_depth is not None and depth > limit_depth
            if (is_node and node.startswith(("Sort", "Incremental Sort", "Gather Merge")) and kind != "lookup"
                    and (below_limit or kind == "count")):
                problems.append(f"sort step ({node})")
            if is_node and "Seq Scan" in node:
                problems.append(f"table scan ({node})")
            if not is_node and filtered and s.startswith("Filter:") and kind != "lookup":
                # The scan walks rows outside the filter and drops them one by one: when
                # the matching rows are old, that is most of the index for one page.
                problems.append(f"filter checked row by row on another index, not an index range ({s})")
    return sorted(set(problems))


def print_plans(backend: str, repo: Repository, raw: RawSide, run_id: uuid.UUID, staged_id: uuid.UUID) -> bool:
    """Print and check the plan of every statement of the CLI's listings (and of find_run, get_stages)."""
    ok = True
    print(f"\n## Query plans, {backend} ({'EXPLAIN QUERY PLAN' if backend == 'sqlite' else 'EXPLAIN'})")

    def show(label: str, kind: str, filtered: bool, sql: str, params: Any) -> None:
        nonlocal ok
        lines = raw.plan(sql, params)
        problems = plan_problems(backend, kind, filtered, lines)
        if kind == "count" and not filtered:
            # Counting every run reads every entry of some index (or the table, on
            # PostgreSQL): unavoidable for an exact total, so not a plan problem.
            problems = [p for p in problems if not p.startswith("reads the whole")]
            if backend == "postgresql":
                problems = [p for p in problems if not p.startswith("table scan")]
        ok = ok and not problems
        print(f"\n{label} [{kind}]: {'ok' if not problems else 'PROBLEM: ' + '; '.join(problems)}")
        print("    " + " ".join(sql.split()))
        for line in lines:
            print(f"    | {line}")

    for label, filters in CLI_LISTINGS.items():
        with captured(repo) as stmts:
            repo.list_runs(PageRequest(page=1, page_size=PAGE_SIZE), filters)
        filtered = filters.workflow_name is not None or bool(filters.status)
        for kind, (sql, params) in zip(("count", "page"), stmts):
            show(f"runs list {label}", kind, filtered, sql, params)
    for label, call in (("find_run", lambda: repo.find_run(run_id)), ("get_stages", lambda: repo.get_stages(staged_id))):
        with captured(repo) as stmts:
            call()
        for sql, params in stmts:
            show(label, "lookup", True, sql, params)
    return ok


# --------------------------------------------------------------------------- measuring


@dataclass
class Case:
    name: str
    wfkit: Callable[[int], Any]  # called with the iteration number
    raw: Callable[[int], Any]
    kind: str  # "listing", "lookup" or "info"


@dataclass
class Result:
    query: str
    engine: str
    wfkit_ms: float
    raw_ms: float
    target: str
    verdict: str
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.wfkit_ms / self.raw_ms if self.raw_ms else float("inf")


def measure(case: Case, repeat: int) -> tuple[float, float]:
    """Median milliseconds of wfkit and raw, calls interleaved so drift hits both alike."""
    for i in range(min(5, repeat)):  # warm caches: statement caches, prepared statements, pages
        case.wfkit(i)
        case.raw(i)
    ours, theirs = [], []
    clock = time.perf_counter_ns
    for i in range(repeat):
        start = clock()
        case.wfkit(i)
        mid = clock()
        case.raw(i)
        end = clock()
        ours.append(mid - start)
        theirs.append(end - mid)
    return statistics.median(ours) / 1e6, statistics.median(theirs) / 1e6


def judge(case: Case, backend: str, ours: float, ratio: float) -> tuple[str, str]:
    if case.kind == "listing":
        if backend == "sqlite":
            target = f"<= {LISTING_TARGET_RATIO}x, < {LISTING_TARGET_SQLITE_MS:g} ms"
            met = ratio <= LISTING_TARGET_RATIO and ours < LISTING_TARGET_SQLITE_MS
        else:
            target = f"<= {LISTING_TARGET_RATIO}x"
            met = ratio <= LISTING_TARGET_RATIO
        return target, "PASS" if met else "MISS"
    if case.kind == "lookup":
        return f"<= {LOOKUP_TARGET_RATIO}x", "PASS" if ratio <= LOOKUP_TARGET_RATIO else "MISS"
    return "-", "info"


def check_same(name: str, ours: Any, theirs: list[list[dict[str, Any]]]) -> None:
    """The raw replay must return what the repository returned (else the baseline measures something else)."""

    def as_uuid(value: Any) -> uuid.UUID:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))

    if hasattr(ours, "total"):  # a PageResult: count, then the page
        raw_total = next(iter(theirs[0][0].values()))
        raw_ids = [as_uuid(r["id"]) for r in theirs[1]] if len(theirs) > 1 else []
        same = raw_total == ours.total and raw_ids == [r.id for r in ours.data]
    elif isinstance(ours, list):
        same = [as_uuid(r["id"]) for r in theirs[0]] == [s.id for s in ours]
    else:
        same = [as_uuid(r["id"]) for r in theirs[0]] == [ours.id]
    if not same:
        raise SystemExit(f"the raw baseline of {name!r} does not return what the repository returns")


def build_cases(
    repo: Repository, raw: RawSide, run_ids: list[uuid.UUID], staged_ids: list[uuid.UUID], runs: int
) -> list[Case]:
    cases: list[Case] = []

    def listing(name: str, page: int, filters: RunFilters, kind: str) -> None:
        def call(_i: int) -> Any:
            return repo.list_runs(PageRequest(page=page, page_size=PAGE_SIZE), filters)

        with captured(repo) as stmts:
            result = call(0)
        check_same(name, result, raw.run(stmts))
        cases.append(Case(name, call, lambda _i, s=list(stmts): raw.run(s), kind))

    def lookup(name: str, method: Callable[[uuid.UUID], Any], ids: list[uuid.UUID]) -> None:
        replays = []
        for rid in ids:
            with captured(repo) as stmts:
                result = method(rid)
            check_same(name, result, raw.run(stmts))
            replays.append(list(stmts))
        cases.append(
            Case(
                name,
                lambda i: method(ids[i % len(ids)]),
                lambda i: raw.run(replays[i % len(replays)]),
                "lookup",
            )
        )

    listing("list_runs p1", 1, RunFilters(), "listing")
    listing("list_runs p1 status", 1, RunFilters(status=STATUS), "listing")
    listing("list_runs p1 workflow", 1, RunFilters(workflow_name=WORKFLOW), "listing")
    listing("list_runs p1 workflow+status", 1, RunFilters(workflow_name=WORKFLOW, status=STATUS), "listing")
    if runs >= DEEP_PAGE * PAGE_SIZE:
        listing(f"list_runs p{DEEP_PAGE}", DEEP_PAGE, RunFilters(), "info")
    lookup("find_run", repo.find_run, run_ids)
    lookup("get_stages", repo.get_stages, staged_ids)
    return cases


def sample_ids(raw: RawSide) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Run ids spread over the history, and ids of runs that have stages."""

    def ids(sql: str) -> list[uuid.UUID]:
        return [v if isinstance(v, uuid.UUID) else uuid.UUID(v) for (v,) in raw.conn.execute(sql).fetchall()]

    return (
        ids(f"SELECT id FROM runs ORDER BY id LIMIT {LOOKUP_IDS}"),
        ids(f"SELECT DISTINCT run_id FROM stages ORDER BY run_id LIMIT {LOOKUP_IDS}"),
    )


# --------------------------------------------------------------------------- databases


def count_runs(url: str) -> int | None:
    """How many runs the database at ``url`` holds, or None if it is not a migrated wfkit database."""
    engine = create_engine(url, create_missing=False)
    try:
        if migrations.current(engine) != migrations.head():
            return None
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
    except Exception:  # noqa: BLE001 - a broken leftover file is simply re-seeded
        return None
    finally:
        engine.dispose()


def seed(url: str, runs: int, backend: str) -> None:
    engine = create_engine(url)
    try:
        start = time.perf_counter()
        migrations.upgrade(engine)
        summary = seed_history(engine, runs)
        seeded = time.perf_counter() - start
        # A database in service is vacuumed and analyzed by autovacuum; a fresh
        # bulk load is not yet. Without the visibility map the COUNTs could not
        # be index-only scans, and without statistics the plans are guesses.
        # The VACUUM runs with synchronous_commit on: in a session with it off (as wfkit's engines
        # set it), VACUUM marked no page all-visible after the asynchronously committed COPYs.
        if backend == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("SET synchronous_commit TO on")
                conn.exec_driver_sql("VACUUM ANALYZE")
        log(
            f"{backend}: seeded {summary.runs:,} runs, {summary.stages:,} stages, {summary.decisions:,} decisions, "
            f"{summary.checkpoints:,} checkpoints in {seeded:.1f} s (migrate + seed_history)"
            + (f", VACUUM ANALYZE {time.perf_counter() - start - seeded:.1f} s" if backend == "postgresql" else "")
        )
    finally:
        engine.dispose()


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def sqlite_database(runs: int, keep: bool, reuse: bool) -> Iterator[str]:
    path = BENCH_DIR / f"bench_{runs}.db"
    url = f"sqlite:///{path}"
    try:
        if reuse and path.exists() and count_runs(url) == runs:
            log(f"sqlite: reusing {path} ({runs:,} runs)")
        else:
            remove_sqlite(path)
            seed(url, runs, "sqlite")
        yield url
    finally:
        if (keep or reuse) and path.exists():
            log(f"sqlite: kept {path} (use --reuse to measure it again without seeding)")
        else:
            remove_sqlite(path)


@contextlib.contextmanager
def postgres_database(admin_url: str, runs: int) -> Iterator[str]:
    admin = sa.make_url(admin_url)
    if admin.drivername in ("postgresql", "postgres"):
        admin = admin.set(drivername="postgresql+psycopg")
    name = f"wfkit_bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            url = admin.set(database=name).render_as_string(hide_password=False)
            seed(url, runs, "postgresql")
            yield url
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"postgresql: dropped database {name}")
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- main


def option_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        return text.strip()


def repository_for(backend: str, url: str, engine_options: list[str], pragmas: list[str]) -> Repository:
    """The repository as an application makes it; --engine-option / --pragma try out a settings change."""
    if not engine_options and not (pragmas and backend == "sqlite"):
        return Repository(url)
    options = {k.strip(): option_value(v) for k, v in (o.split("=", 1) for o in engine_options)}
    engine = create_engine(url, create_missing=False, **options)
    if backend == "sqlite" and pragmas:

        def extra_pragmas(dbapi_conn: Any, _record: Any) -> None:
            for pragma in pragmas:
                dbapi_conn.execute(f"PRAGMA {pragma}")

        event.listen(engine, "connect", extra_pragmas)
    return Repository(engine)


def bench_engine(
    backend: str, url: str, runs: int, repeat: int, engine_options: list[str] = (), pragmas: list[str] = ()
) -> tuple[list[Result], bool]:
    repo = repository_for(backend, url, list(engine_options), list(pragmas))
    if engine_options or pragmas:
        print(f"\n# what-if: engine options {list(engine_options)}, SQLite pragmas {list(pragmas)}")
    if backend == "sqlite":
        pragmas = sqlite_pragmas(repo.engine)
        raw = RawSide(backend, sa.make_url(url), pragmas)
    else:
        raw = RawSide(backend, repo.engine.url)
    try:
        print(f"\n# {raw.version()}" + (f" (both sides: {', '.join(pragmas)})" if backend == "sqlite" else ""))
        run_ids, staged_ids = sample_ids(raw)
        plans_ok = print_plans(backend, repo, raw, run_ids[0], staged_ids[0])
        results = []
        for case in build_cases(repo, raw, run_ids, staged_ids, runs):
            ours, theirs = measure(case, repeat)
            target, verdict = judge(case, backend, ours, ours / theirs if theirs else float("inf"))
            results.append(Result(case.name, backend, ours, theirs, target, verdict))
            log(f"{backend}: {case.name}: {ours:.3f} ms vs {theirs:.3f} ms raw")
        return results, plans_ok
    finally:
        raw.close()
        repo.engine.dispose()


def print_table(results: list[Result]) -> None:
    header = ("query", "engine", "wfkit ms", "raw ms", "ratio", "target", "result")
    rows = [
        (r.query, r.engine, f"{r.wfkit_ms:.3f}", f"{r.raw_ms:.3f}", f"{r.ratio:.2f}x", r.target, r.verdict)
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    right = {2, 3, 4}
    for i, row in enumerate((header, *rows)):
        print("  ".join(str(c).rjust(w) if k in right else str(c).ljust(w) for k, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_repository.py", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100_000, help="runs to seed (default 100,000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per query and side (default 30)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(PG_URL_ENV, "").strip() or DEFAULT_PG_ADMIN_URL,
        help=f"admin URL where a throwaway database is created (default ${PG_URL_ENV}, else {DEFAULT_PG_ADMIN_URL})",
    )
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="keep the seeded SQLite file bench/bench_<runs>.db")
    keep.add_argument("--reuse", action="store_true", help="use bench/bench_<runs>.db if it holds the runs already (seed it otherwise); keep it")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed or a plan has a problem")
    parser.add_argument(
        "--engine-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="what-if: an extra create_engine() option for wfkit's engine, e.g. pool_pre_ping=false (repeatable)",
    )
    parser.add_argument(
        "--pragma",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="what-if: an extra PRAGMA on wfkit's SQLite connections (the raw side copies it), e.g. mmap_size=268435456",
    )
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown or not engines:
        parser.error(f"--engines: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(ENGINES)}")
    if args.runs < 1000:
        parser.error("--runs must be at least 1,000 (below 100,000 the page-2,000 query is left out)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    for flag, values in (("--engine-option", args.engine_option), ("--pragma", args.pragma)):
        bad = [v for v in values if "=" not in v or not v.split("=", 1)[0].strip()]
        if bad:
            parser.error(f"{flag}: expected NAME=VALUE, got {bad[0]!r}")
    args.engines = engines
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the clean-ups

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    print(
        f"# wfkit repository benchmark: {args.runs:,} runs, median of {args.repeat} calls, page size {PAGE_SIZE}; "
        f"python {platform.python_version()}, SQLAlchemy {sa.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"# filters: status={STATUS!r}, workflow={WORKFLOW!r}")
    results: list[Result] = []
    plans_ok = True
    for backend in args.engines:
        db = (
            sqlite_database(args.runs, args.keep, args.reuse)
            if backend == "sqlite"
            else postgres_database(args.postgres_url, args.runs)
        )
        with db as url:
            engine_results, engine_plans_ok = bench_engine(backend, url, args.runs, args.repeat, args.engine_option, args.pragma)
            results += engine_results
            plans_ok = plans_ok and engine_plans_ok
    print(f"\n## Timings ({args.runs:,} runs, median of {args.repeat})\n")
    print_table(results)
    missed = [r for r in results if r.verdict == "MISS"]
    print(
        f"\n{len(missed)} of {sum(r.verdict != 'info' for r in results)} targets missed"
        + ("" if plans_ok else "; some query plans have problems (see above)")
    )
    return 1 if args.strict and (missed or not plans_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
