"""What does recording cost? Microseconds per node step: in memory, on SQLite, on PostgreSQL, against raw.

Workloads (the same for every backend):
  chain10  nodes n0..n9 in a line; state {count, log}; each node increments count and appends
           a 64-character string to log
  loop50   node `work` increments count; an edge with predicate `count_below_limit` loops back
           while count < 50, else goes to `done`

Backends:
  memory     StateGraph.run(): the engine alone, no database
  sqlite     Executor on a SQLite file (WAL, synchronous=NORMAL: committed steps survive a killed process)
  postgresql Executor on a throwaway PostgreSQL database (synchronous_commit=off for the run's session:
             committed steps survive a killed process or server; see wfkit.store.recorder)
Each database backend is measured against a raw baseline in the same run: the same statements and
rows the executor writes (run created, started, then one transaction per step: the stage's
completion, its decision, the checkpoint, the run's updated_at with the cancel check, the next
stage's start; then the final one), through the raw driver (sqlite3 / psycopg), JSON encoded.
Also printed, not a target: the floor, i.e. the very statements one executor run sent (captured),
replayed through the raw driver with fresh ids. wfkit/floor is what the executor adds to its own SQL.

Targets: memory under 20 us per step; sqlite and postgresql within 1.5x of raw and under 0.4 ms per step.

    python bench/bench_executor.py [--runs 200] [--engines memory,sqlite,postgresql] [--postgres-url URL]
                                   [--pin same|apart]

--pin (a diagnostic, needs the right to set other processes' CPU affinity, e.g. root): put this
process on CPU 0 and its PostgreSQL server processes on CPU 0 too (same) or on CPU 1 (apart). A
round trip costs far less when client and server share a CPU; unpinned, the scheduler decides.
The targets are meant unpinned.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wfkit.executor import Executor  # noqa: E402
from wfkit.graph import END  # noqa: E402
from wfkit.registry import Registry  # noqa: E402
from wfkit.store import migrations  # noqa: E402
from wfkit.store.db import create_engine  # noqa: E402
from wfkit.store.recorder import SqlRecorder  # noqa: E402

LINE = "x" * 64
UTC = timezone.utc


def chain10(graph, runtime, params):
    def step(state):
        return {"count": state["count"] + 1, "log": [*state["log"], LINE]}

    for i in range(10):
        graph.add_node(f"n{i}", step)
    graph.set_entry_point("n0")
    for i in range(9):
        graph.add_edge(f"n{i}", f"n{i + 1}")
    graph.add_edge("n9", END)
    return {"count": 0, "log": []}


def loop50(graph, runtime, params):
    def count_below_limit(state):
        return state["count"] < 50

    graph.add_node("work", lambda state: {"count": state["count"] + 1})
    graph.add_node("done", lambda state: None)
    graph.set_entry_point("work")
    graph.add_edge("work", "work", when=count_below_limit)
    graph.add_edge("work", "done")
    graph.add_edge("done", END)
    return {"count": 0}


WORKLOADS: dict[str, Callable] = {"chain10": chain10, "loop50": loop50}


def registry() -> Registry:
    reg = Registry()
    for name, factory in WORKLOADS.items():
        reg.register(name, factory)
    return reg


def steps_of(name: str) -> list[tuple[str, dict, dict, str | None, str | None]]:
    """The (node, input state, updates, next node, predicate) sequence of a workload, from an in-memory walk."""
    graph, state = registry().get(name).build()
    result = graph.run(state)
    out, current = [], state
    for visit, decision in zip(result.visits, result.decisions):
        updates, new_state = graph.execute_node(visit.node, current)
        out.append((visit.node, current, dict(updates), decision.to_node, decision.predicate_name))
        current = new_state
    return out


def side_by_side_us(sides: dict[str, Callable[[], None]], steps: int, runs: int, block: int = 10
                    ) -> dict[str, float]:
    """Median microseconds per step of each side, ``runs`` runs each, taken in turns of ``block``
    runs per side (after one untimed turn each). This VM's speed drifts over seconds (disk
    writeback, CPU placement): taking turns spreads every side over the same stretch of time, and
    a block of runs in a row keeps the CPU caches warm as a busy executor's are."""
    for fn in sides.values():
        for _ in range(block):
            fn()
    times: dict[str, list[float]] = {label: [] for label in sides}
    for _ in range(-(-runs // block)):
        for label, fn in sides.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(t) / steps * 1e6 for label, t in times.items()}


def per_step_us(fn: Callable[[], None], steps: int, runs: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / steps * 1e6


# --------------------------------------------------------------------------- raw baselines


class RawSqlite:
    def __init__(self, path: str):
        import sqlite3

        self.conn = sqlite3.connect(path)
        for pragma in ("foreign_keys=ON", "busy_timeout=5000", "journal_mode=WAL", "synchronous=NORMAL"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.ph, self.jph = "?", "?"

    def id(self, u):
        return u.hex

    def time(self):
        return datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def settings(self) -> str:
        jm = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[self.conn.execute("PRAGMA synchronous").fetchone()[0]]
        return f"journal_mode={jm}, synchronous={sync}"


class RawPostgres:
    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        self.conn.execute("SET synchronous_commit TO off")  # the executor's setting (see wfkit.store.recorder)
        self.conn.commit()
        self.ph, self.jph = "%s", "%s::jsonb"

    def id(self, u):
        return u

    def time(self):
        return datetime.now(UTC)

    def settings(self) -> str:
        cur = self.conn.execute("SHOW synchronous_commit")
        sc = cur.fetchone()[0]
        fs = self.conn.execute("SHOW fsync").fetchone()[0]
        self.conn.rollback()
        return f"synchronous_commit={sc}, fsync={fs}"


def floor_postgres(url: str):
    """A connection set as the recorder sets its own: autocommit, synchronous_commit off."""
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    conn.execute("SET synchronous_commit TO off")
    return conn


def pin_postgres(conn, mode: str) -> str:
    """Pin this process to CPU 0 and the server processes of ``conn``'s database to CPU 0 (``same``)
    or CPU 1 (``apart``); say what was done."""
    server_cpu = 0 if mode == "same" else 1
    pids = [row[0] for row in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall()]
    try:
        os.sched_setaffinity(0, {0})
        for pid in pids:
            os.sched_setaffinity(pid, {server_cpu})
    except (OSError, ValueError) as err:
        sys.exit(f"--pin {mode}: cannot set CPU affinity ({err}); it needs CPUs 0 and 1 and the right to "
                 "pin the server's processes (e.g. run as root)")
    return f"pinned: this process on CPU 0, its {len(pids)} server processes on CPU {server_cpu}"


def round_trip_us(conn, calls: int = 2000) -> float:
    """Median microseconds of ``SELECT 1`` on ``conn``: one round trip, next to no server work."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def raw_run(db, name: str, plan) -> None:
    """Write what the executor writes for one run of ``name``, statement for statement."""
    p, j = db.ph, db.jph
    c = db.conn
    cur = c.cursor()
    dumps = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    run_id = uuid.uuid4()
    rid = db.id(run_id)
    cur.execute(f"INSERT INTO runs (id, workflow_name, status, params, result, error_message, started_at, "
                f"completed_at, created_at, updated_at, cancel_requested_at) VALUES ({p}, {p}, {p}, {j}, NULL, NULL, "
                f"NULL, NULL, {p}, {p}, NULL)", (rid, name, "pending", "{}", db.time(), db.time()))
    c.commit()
    cur.execute(f"UPDATE runs SET status = {p}, started_at = COALESCE(started_at, {p}), updated_at = {p}, "
                f"completed_at = NULL, error_message = NULL, cancel_requested_at = NULL WHERE id = {p} AND status = {p}",
                (("running", db.time(), db.time(), rid, "pending")))
    c.commit()
    counters: dict[str, int] = {}
    pending: list = []
    for node, state, updates, nxt, pred in plan:
        for sql, args in pending:
            cur.execute(sql, args)
        pending = []
        cur.execute(f"UPDATE runs SET updated_at = {p} WHERE id = {p} RETURNING cancel_requested_at", (db.time(), rid))
        cur.fetchone()
        stage = uuid.uuid4()
        counters[node] = counters.get(node, 0) + 1
        cur.execute(f"INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, output_snapshot, "
                    f"duration_ms, error_message, created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {j}, NULL, NULL, NULL, {p})",
                    (db.id(stage), rid, node, counters[node], "started", dumps(state), db.time()))
        c.commit()
        new_state = {**state, **updates}
        state_json = dumps(new_state)
        pending.append((f"UPDATE stages SET status = {p}, output_snapshot = {j}, duration_ms = {p}, error_message = {p} "
                        f"WHERE id = {p}", ("completed", dumps(updates), 0.01, None, db.id(stage))))
        pending.append((f"INSERT INTO decisions (id, run_id, from_node, to_node, predicate_name, predicate_result, reason, "
                        f"created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})",
                        (db.id(uuid.uuid4()), rid, node, nxt, pred, 1 if p == "?" else True, "unconditional edge",
                         db.time())))
        meta = dumps({"next_node": nxt, "counters": counters, "format": 1})
        pending.append((f"INSERT INTO checkpoints (run_id, state_data, checkpoint_node, created_at, updated_at) VALUES "
                        f"({p}, {j}, {p}, {p}, {p}) ON CONFLICT (run_id) DO UPDATE SET state_data = excluded.state_data, "
                        f"checkpoint_node = excluded.checkpoint_node, updated_at = excluded.updated_at",
                        (rid, '{"state":' + state_json + "," + meta[1:], node, db.time(), db.time())))
    for sql, args in pending:
        cur.execute(sql, args)
    cur.execute(f"UPDATE runs SET status = {p}, result = {j}, error_message = {p}, completed_at = {p}, updated_at = {p} "
                f"WHERE id = {p} AND status = {p}", ("completed", state_json, None, db.time(), db.time(), rid, "running"))
    c.commit()


# --------------------------------------------------------------------------- the floor: wfkit's own SQL


class _Tap:
    """Stands in for the recorder's driver cursor or connection: logs statements and commits."""

    def __init__(self, inner, log: list):
        self._inner, self._log = inner, log

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def execute(self, sql, params=()):
        self._log.append((sql, tuple(params)))
        self._inner.execute(sql, params)
        return self

    def commit(self):
        self._log.append(None)
        self._inner.commit()


@contextlib.contextmanager
def tapped() -> Iterator[list]:
    """Log what every SqlRecorder entered inside the block sends: (sql, params), or None for a commit."""
    log: list = []
    enter = SqlRecorder.__enter__

    def enter_tapped(self):
        enter(self)
        self._cursor, self._conn = _Tap(self._cursor, log), _Tap(self._conn, log)
        return self

    SqlRecorder.__enter__ = enter_tapped
    try:
        yield log
    finally:
        SqlRecorder.__enter__ = enter


HEX_ID = re.compile(r"[0-9a-f]{32}")


def floor_run(conn, log: list) -> None:
    """Replay one run's captured statements on ``conn`` (as the recorder left it set), ids made fresh."""
    ids: dict = {}

    def fresh(v):
        if isinstance(v, uuid.UUID) or (isinstance(v, str) and HEX_ID.fullmatch(v)):
            new = ids.get(v)
            if new is None:
                new = ids[v] = uuid.uuid4() if isinstance(v, uuid.UUID) else uuid.uuid4().hex
            return new
        return v

    cur = conn.cursor()
    for item in log:
        if item is None:
            conn.commit()
            continue
        sql, params = item
        cur.execute(sql, [fresh(v) for v in params])
        if cur.description:
            cur.fetchall()


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per measurement (median taken)")
    parser.add_argument("--engines", default="memory,sqlite,postgresql")
    parser.add_argument("--pin", choices=("same", "apart"),
                        help="PostgreSQL: pin client and server to one CPU, or to two (a diagnostic)")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: a throwaway database is created there and dropped after")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows: list[tuple[str, str, float, float | None, float | None, str]] = []
    checks: list[tuple[str, bool]] = []
    notes: list[str] = []
    reg = registry()
    plans = {name: steps_of(name) for name in WORKLOADS}

    if "memory" in engines:
        for name in WORKLOADS:
            graph, state = reg.get(name).build()
            us = per_step_us(lambda: graph.run(state), len(plans[name]), args.runs * 20)
            rows.append((name, "memory", us, None, None, ""))
            checks.append((f"{name} memory under 20 us per step ({us:.1f})", us < 20))

    def measure(backend: str, url: str, raw_factory: Callable[[], object], floor_conn: Callable[[], object]) -> None:
        migrations.upgrade(url)
        engine = create_engine(url)
        executor = Executor(engine, registry=reg)
        raw, conn = raw_factory(), floor_conn()
        for name in WORKLOADS:
            n = len(plans[name])
            with tapped() as log:
                executor.execute(name)
            if backend == "postgresql":
                if args.pin:  # every connection of the three sides is open by now
                    raw_run(raw, name, plans[name])
                    notes.append(f"{name}: {pin_postgres(conn, args.pin)}")
                rt = round_trip_us(conn)
                notes.append(f"{name}: a PostgreSQL round trip (SELECT 1) took {rt:.0f} us just before")
            us = side_by_side_us({
                "wfkit": lambda: executor.execute(name),
                "raw": lambda: raw_run(raw, name, plans[name]),
                "floor": lambda: floor_run(conn, log),
            }, n, args.runs)
            ours, base, floor = us["wfkit"], us["raw"], us["floor"]
            rows.append((name, backend, ours, base, floor, raw.settings()))
            checks.append((f"{name} {backend} within 1.5x of raw ({ours / base:.2f}x)", ours / base <= 1.5))
            checks.append((f"{name} {backend} under 0.4 ms per step ({ours / 1000:.3f} ms)", ours < 400))
        raw.conn.close()
        conn.close()
        engine.dispose()

    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bench.db")
            measure("sqlite", f"sqlite:///{path}", lambda: RawSqlite(path), lambda: RawSqlite(path).conn)

    if "postgresql" in engines:
        import psycopg

        admin = args.postgres_url.replace("postgresql+psycopg://", "postgresql://")
        name = f"wfkit_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + "/" + name
        try:
            measure("postgresql", url, lambda: RawPostgres(url), lambda: floor_postgres(url))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{'workload':9} {'backend':11} {'wfkit us/step':>14} {'raw us/step':>12} {'ratio':>6} "
          f"{'floor us/step':>14} {'wfkit/floor':>12}  durability")
    for name, backend, ours, base, floor, settings in rows:
        raw_text = f"{base:12.1f} {ours / base:6.2f}" if base else f"{'-':>12} {'-':>6}"
        floor_text = f"{floor:14.1f} {ours / floor:12.2f}" if floor else f"{'-':>14} {'-':>12}"
        print(f"{name:9} {backend:11} {ours:14.1f} {raw_text} {floor_text}  {settings}")
    for note in notes:
        print(note)
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
