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
             committed steps survive a killed process or server; see wfkit.recorder)
Each database backend is measured against a raw baseline in the same run: the same statements and
rows the executor writes (run created, started, then one transaction per step: the stage's
completion, its decision, the checkpoint, the run's updated_at with the cancel check, the next
stage's start; then the final one), through the raw driver (sqlite3 / psycopg), JSON encoded.

Targets: memory under 20 us per step; sqlite and postgresql within 1.5x of raw and under 0.4 ms per step.

    python bench/bench_executor.py [--runs 30] [--engines memory,sqlite,postgresql] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wfkit import migrations  # noqa: E402
from wfkit.db import create_engine  # noqa: E402
from wfkit.executor import Executor  # noqa: E402
from wfkit.graph import END  # noqa: E402
from wfkit.registry import Registry  # noqa: E402

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
        self.conn.execute("SET synchronous_commit TO off")  # the executor's setting (see wfkit.recorder)
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


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per measurement (median taken)")
    parser.add_argument("--engines", default="memory,sqlite,postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: a throwaway database is created there and dropped after")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows: list[tuple[str, str, float, float | None, str]] = []
    checks: list[tuple[str, bool]] = []
    reg = registry()
    plans = {name: steps_of(name) for name in WORKLOADS}

    if "memory" in engines:
        for name in WORKLOADS:
            graph, state = reg.get(name).build()
            us = per_step_us(lambda: graph.run(state), len(plans[name]), args.runs * 20)
            rows.append((name, "memory", us, None, ""))
            checks.append((f"{name} memory under 20 us per step ({us:.1f})", us < 20))

    def measure(backend: str, url: str, raw_factory: Callable[[], object]) -> None:
        migrations.upgrade(url)
        engine = create_engine(url)
        executor = Executor(engine, registry=reg)
        raw = raw_factory()
        for name in WORKLOADS:
            n = len(plans[name])
            ours = per_step_us(lambda: executor.execute(name), n, args.runs)
            base = per_step_us(lambda: raw_run(raw, name, plans[name]), n, args.runs)
            rows.append((name, backend, ours, base, raw.settings()))
            checks.append((f"{name} {backend} within 1.5x of raw ({ours / base:.2f}x)", ours / base <= 1.5))
            checks.append((f"{name} {backend} under 0.4 ms per step ({ours / 1000:.3f} ms)", ours < 400))
        raw.conn.close()
        engine.dispose()

    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bench.db")
            measure("sqlite", f"sqlite:///{path}", lambda: RawSqlite(path))

    if "postgresql" in engines:
        import psycopg

        admin = args.postgres_url.replace("postgresql+psycopg://", "postgresql://")
        name = f"wfkit_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + "/" + name
        try:
            measure("postgresql", url, lambda: RawPostgres(url))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{'workload':9} {'backend':11} {'wfkit us/step':>14} {'raw us/step':>12} {'ratio':>6}  durability")
    for name, backend, ours, base, settings in rows:
        raw_text = f"{base:12.1f}" if base else f"{'-':>12}"
        ratio = f"{ours / base:6.2f}" if base else f"{'-':>6}"
        print(f"{name:9} {backend:11} {ours:14.1f} {raw_text} {ratio}  {settings}")
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
