"""What does recording cost? Microseconds per node step: in memory, on SQLite, on PostgreSQL, against raw.

Workloads (the same for every backend):
  chain10  nodes n0..n9 in a line; state {count, log}; each node increments count and appends
           a 64-character string to log
  loop50   node `work` increments count; an edge with predicate `count_below_limit` loops back
           while count < 50, else goes to `done`

Backends:
  memory     StateGraph.run(): the engine alone, no database
  sqlite     Executor on a SQLite file (WAL)
  postgresql Executor on a throwaway PostgreSQL database
each in both durability modes: sync (the default: SQLite synchronous=FULL, PostgreSQL
synchronous_commit as the server says, on) and async (synchronous=NORMAL, synchronous_commit=off).

Each database backend is measured against a raw baseline in the same run: the rows the executor
writes, with the same fencing and the same settings, written by hand through the raw driver
(sqlite3 / psycopg), JSON encoded: the run created running with its first stage current and its
start checkpoint, then one transaction per step gated on the run's lease epoch (see raw_run).
Also printed, not a target: the floor, i.e. the very statements one executor run sent (captured),
replayed through the raw driver with fresh ids (wfkit/floor is what the executor adds to its own
SQL), and the fsync floor: one small write and fsync on the disk the database commits to.
``--before SRC`` adds an earlier wfkit (the src folder of another checkout) as a side, on a
database of its own, in durability async.

Targets: memory under 20 us per step; sqlite and postgresql within 1.3x of raw in both modes; in
sync, within 2x of the fsync floor; in async, at most 5% over the wfkit before (with --before).
The peers (LangGraph, Burr) are measured by bench_peers.py.

    python bench/bench_executor.py [--runs 200] [--engines memory,sqlite,postgresql] [--durability sync,async]
                                   [--before ../old/src] [--postgres-url URL] [--pin same|apart]

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


def side_by_side_us(sides: dict[str, Callable[[int], list[float]]], steps: int, runs: int, block: int = 10
                    ) -> dict[str, float]:
    """Median microseconds per step of each side, ``runs`` runs each, taken in turns of ``block``
    runs per side (after one untimed turn each). Each side runs ``block`` runs when called and
    returns their times in seconds. This VM's speed drifts over seconds (disk writeback, CPU
    placement): taking turns spreads every side over the same stretch of time, and a block of runs
    in a row keeps the CPU caches warm as a busy executor's are."""
    for fn in sides.values():
        fn(block)
    times: dict[str, list[float]] = {label: [] for label in sides}
    for _ in range(-(-runs // block)):
        for label, fn in sides.items():
            times[label] += fn(block)
    return {label: statistics.median(t) / steps * 1e6 for label, t in times.items()}


def timed(fn: Callable[[], None]) -> Callable[[int], list[float]]:
    """A side for :func:`side_by_side_us` that runs ``fn`` in this process."""

    def runs(count: int) -> list[float]:
        out = []
        for _ in range(count):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    return runs


class Before:
    """Another wfkit (``--before SRC``: the ``src`` folder of an earlier checkout) executing the same
    workloads in a process of its own on a database of its own, a block of runs at each call: the
    sides of the comparison still take turns."""

    SCRIPT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from wfkit.executor import Executor
from wfkit.store import migrations
sys.path.insert(0, sys.argv[3])
from bench_executor import registry
migrations.upgrade(sys.argv[2])
executor = Executor(sys.argv[2], registry=registry())
print("ready", flush=True)
for line in sys.stdin:
    name, count = line.split()
    times = []
    for _ in range(int(count)):
        t0 = time.perf_counter()
        executor.execute(name)
        times.append(time.perf_counter() - t0)
    print(json.dumps(times), flush=True)
"""

    def __init__(self, src: str, url: str):
        import subprocess

        env = {k: v for k, v in os.environ.items() if not k.startswith("WFKIT_")}
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, src, url, str(Path(__file__).parent)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "ready"

    def side(self, name: str) -> Callable[[int], list[float]]:
        def runs(count: int) -> list[float]:
            self.proc.stdin.write(f"{name} {count}\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

        return runs

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def fsync_floor_us(directory: str, writes: int = 300) -> float:
    """Median microseconds of a small write plus fsync of a file in ``directory``: the least a commit
    that must reach the disk can cost there."""
    path = os.path.join(directory, "fsync-probe.bin")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    times = []
    try:
        for _ in range(writes):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 512)
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times[20:]) * 1e6


def per_step_us(fn: Callable[[], None], steps: int, runs: int) -> float:  # the engine alone
    fn()  # warm up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / steps * 1e6


# --------------------------------------------------------------------------- raw baselines


class RawSqlite:
    def __init__(self, path: str, durability: str):
        import sqlite3

        self.conn = sqlite3.connect(path)
        sync = "FULL" if durability == "sync" else "NORMAL"
        for pragma in ("foreign_keys=ON", "busy_timeout=5000", "journal_mode=WAL", f"synchronous={sync}"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.ph, self.jph = "?", "?"
        self.sqlite = True

    def id(self, u):
        return u.hex

    def time(self):
        return datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def lease(self) -> str:
        return "(strftime('%Y-%m-%d %H:%M:%f', 'now', ? || ' seconds') || '000')"

    def settings(self) -> str:
        jm = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[self.conn.execute("PRAGMA synchronous").fetchone()[0]]
        return f"journal_mode={jm}, synchronous={sync}"


class RawPostgres:
    def __init__(self, url: str, durability: str):
        import psycopg

        self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
        if durability == "async":
            self.conn.execute("SET synchronous_commit TO off")
        self.ph, self.jph = "%s", "%s::jsonb"
        self.sqlite = False

    def id(self, u):
        return u

    def time(self):
        return datetime.now(UTC)

    def lease(self) -> str:
        return "now() + %s * interval '1 second'"

    def settings(self) -> str:
        sc = self.conn.execute("SHOW synchronous_commit").fetchone()[0]
        fs = self.conn.execute("SHOW fsync").fetchone()[0]
        return f"synchronous_commit={sc}, fsync={fs}"


def floor_postgres(url: str, durability: str):
    """A connection set as the recorder sets its own: autocommit, and its durability."""
    import psycopg

    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    if durability == "async":
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
    """Write, by hand, the rows the executor writes for one run of ``name``, with the same fencing:
    the run created running with its first stage current and its start checkpoint (one transaction),
    then per step one transaction gated on the run's lease epoch (the run's row: lease extended,
    next stage current; the stage's row, its input the end state of the stage before; the decision;
    the checkpoint, naming the stage), the last one ending the run. On PostgreSQL each transaction
    is one statement whose parts read FROM the fenced UPDATE; on SQLite the fenced UPDATE comes first."""
    p, j = db.ph, db.jph
    c = db.conn
    cur = c.cursor()
    dumps = lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
    run_id = uuid.uuid4()
    rid = db.id(run_id)
    t = db.time()
    first = uuid.uuid4()
    run_insert = (f"INSERT INTO runs (id, workflow_name, status, params, started_at, created_at, updated_at, owner, "
                  f"attempt, lease_epoch, lease_expires_at, current_stage_id, current_node, current_iteration, "
                  f"current_stage_started_at) VALUES ({p}, {p}, 'running', {j}, {p}, {p}, {p}, {p}, 1, 1, {db.lease()}, "
                  f"{p}, {p}, 1, {p}) RETURNING id")
    run_args = (rid, name, "{}", t, t, t, "raw", 30.0, db.id(first), plan[0][0], t)
    start = dumps({"start": True, "next_node": plan[0][0], "counters": {}, "route_from": None, "format": 3})
    ckpt_insert = ("INSERT INTO checkpoints (run_id, state_data, checkpoint_node, created_at, updated_at) "
                   f"{{}} {p}, {j}, NULL, {p}, {p}")
    if db.sqlite:
        cur.execute(run_insert, run_args).fetchone()
        cur.execute(ckpt_insert.format("VALUES (") + ")", (rid, start, t, t))
        c.commit()
    else:
        cur.execute(f"WITH r AS ({run_insert}) " + ckpt_insert.format("SELECT") + " FROM r", (*run_args, rid, start, t, t))
    counters: dict[str, int] = {}
    stage, before = first, None
    state_json = dumps(plan[0][1])
    for i, (node, state, updates, nxt, pred) in enumerate(plan):
        counters[node] = counters.get(node, 0) + 1
        t = db.time()
        last = i == len(plan) - 1
        if last:
            gate = (f"UPDATE runs SET status = 'completed', result = {j}, completed_at = {p}, updated_at = {p}, "
                    f"lease_expires_at = NULL, current_stage_id = NULL, current_node = NULL, current_iteration = NULL, "
                    f"current_stage_started_at = NULL WHERE id = {p} AND lease_epoch = 1 RETURNING cancel_requested_at")
            gate_args: tuple = (dumps({**state, **updates}), t, t, rid)
        else:
            following = uuid.uuid4()
            gate = (f"UPDATE runs SET updated_at = {p}, lease_expires_at = {db.lease()}, current_stage_id = {p}, "
                    f"current_node = {p}, current_iteration = {p}, current_stage_started_at = {p} "
                    f"WHERE id = {p} AND lease_epoch = 1 RETURNING cancel_requested_at")
            gate_args = (t, 30.0, db.id(following), nxt, counters.get(nxt, 0) + 1, t, rid)
        kw = "VALUES (" if db.sqlite else "SELECT"
        tail = ")" if db.sqlite else " FROM r"
        parts = [
            (f"INSERT INTO stages (id, run_id, node_name, iteration, status, input_snapshot, input_from, "
             f"output_snapshot, duration_ms, created_at) {kw} {p}, {p}, {p}, {p}, 'completed', {j}, {p}, {j}, {p}, "
             f"{p}{tail}", (db.id(stage), rid, node, counters[node], state_json if before is None else None,
                            None if before is None else db.id(before), dumps(updates), 0.01, t)),
            (f"INSERT INTO decisions (id, run_id, from_node, to_node, predicate_name, predicate_result, reason, "
             f"created_at) {kw} {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}{tail}",
             (db.id(uuid.uuid4()), rid, node, nxt, pred, 1 if db.sqlite else True, "unconditional edge", t)),
            (f"UPDATE checkpoints SET state_data = {j}, checkpoint_node = {p}, updated_at = {p}"
             f"{'' if db.sqlite else ' FROM r'} WHERE checkpoints.run_id = {p}",
             (dumps({"stage": stage.hex, "next_node": nxt, "counters": counters, "route_from": None, "format": 3}),
              node, t, rid)),
        ]
        if db.sqlite:
            assert cur.execute(gate, gate_args).fetchone() is not None
            for sql, args in parts:
                cur.execute(sql, args)
            c.commit()
        else:
            sql = "WITH r AS (" + gate + "), " + ", ".join(f"w{k} AS ({part})" for k, (part, _) in enumerate(parts))
            args = [*gate_args, *(a for _, part_args in parts for a in part_args)]
            cur.execute(sql + " SELECT * FROM r", args)
            assert cur.fetchone() is not None
        if not last:
            before, stage = stage, following


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
    parser.add_argument("--durability", default="sync,async", help="the modes to measure (sync, async or both)")
    parser.add_argument("--before", metavar="SRC",
                        help="the src folder of an earlier wfkit checkout: its executor (on a database of its own) "
                             "is a side too, for durability=async")
    parser.add_argument("--pin", choices=("same", "apart"),
                        help="PostgreSQL: pin client and server to one CPU, or to two (a diagnostic)")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: throwaway databases are created there and dropped after")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    modes = [m.strip() for m in args.durability.split(",") if m.strip()]
    rows: list[tuple] = []
    checks: list[tuple[str, bool]] = []
    notes: list[str] = []
    reg = registry()
    plans = {name: steps_of(name) for name in WORKLOADS}

    if "memory" in engines:
        for name in WORKLOADS:
            graph, state = reg.get(name).build()
            us = per_step_us(lambda: graph.run(state), len(plans[name]), args.runs * 20)
            rows.append((name, "memory", "-", us, None, None, None, ""))
            checks.append((f"{name} memory under 20 us per step ({us:.1f})", us < 20))

    def measure(backend: str, url: str, raw_factory: Callable[[str], object], floor_conn: Callable[[str], object],
                before_url: str | None, fsync_us: float) -> None:
        migrations.upgrade(url)
        engine = create_engine(url)
        before = Before(args.before, before_url) if args.before and before_url else None
        try:
            for mode in modes:
                executor = Executor(engine, registry=reg, durability=mode)
                raw, conn = raw_factory(mode), floor_conn(mode)
                for name in WORKLOADS:
                    n = len(plans[name])
                    with tapped() as log:
                        executor.execute(name)
                    if backend == "postgresql":
                        if args.pin:  # every connection of the sides is open by now
                            raw_run(raw, name, plans[name])
                            notes.append(f"{name}: {pin_postgres(conn, args.pin)}")
                        rt = round_trip_us(conn)
                        notes.append(f"{name} {mode}: a PostgreSQL round trip (SELECT 1) took {rt:.0f} us just before")
                    sides = {
                        "wfkit": timed(lambda: executor.execute(name)),
                        "raw": timed(lambda: raw_run(raw, name, plans[name])),
                        "floor": timed(lambda: floor_run(conn, log)),
                    }
                    if before is not None and mode == "async":
                        sides["before"] = before.side(name)
                    us = side_by_side_us(sides, n, args.runs)
                    ours, base, floor = us["wfkit"], us["raw"], us["floor"]
                    rows.append((name, backend, mode, ours, base, floor, us.get("before"), raw.settings()))
                    checks.append((f"{name} {backend} {mode} within 1.3x of raw ({ours / base:.2f}x)",
                                   ours / base <= 1.3))
                    if mode == "sync":
                        checks.append((f"{name} {backend} sync within 2x of the fsync floor ({ours:.0f} us against "
                                       f"{fsync_us:.0f} us: {ours / fsync_us:.2f}x)", ours <= 2 * fsync_us))
                    elif "before" in us:
                        checks.append((f"{name} {backend} async at most 5% over the wfkit before "
                                       f"({ours / us['before']:.3f}x)", ours <= 1.05 * us["before"]))
                raw.conn.close()
                conn.close()
        finally:
            if before is not None:
                before.close()
            engine.dispose()

    if "sqlite" in engines:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bench.db")
            fsync_us = fsync_floor_us(tmp)
            notes.append(f"fsync floor where the SQLite file lives: {fsync_us:.0f} us")
            measure("sqlite", f"sqlite:///{path}", lambda mode: RawSqlite(path, mode),
                    lambda mode: RawSqlite(path, mode).conn, f"sqlite:///{os.path.join(tmp, 'before.db')}", fsync_us)

    if "postgresql" in engines:
        import psycopg

        admin = args.postgres_url.replace("postgresql+psycopg://", "postgresql://")
        names = [f"wfkit_bench_{uuid.uuid4().hex[:10]}" for _ in range(2)]
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f'CREATE DATABASE "{name}"')
            data = conn.execute("SHOW data_directory").fetchone()[0]
        url, before_url = (admin.rsplit("/", 1)[0] + "/" + name for name in names)
        # The server's WAL is what a commit waits for: its disk, where the probe can reach it.
        probe_dir = os.path.join(data, "pg_wal") if os.access(os.path.join(data, "pg_wal"), os.W_OK) else \
            tempfile.gettempdir()
        fsync_us = fsync_floor_us(probe_dir)
        notes.append(f"fsync floor in {probe_dir}: {fsync_us:.0f} us")
        try:
            measure("postgresql", url, lambda mode: RawPostgres(url, mode), lambda mode: floor_postgres(url, mode),
                    before_url, fsync_us)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                for name in names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print(f"{'workload':9} {'backend':11} {'mode':5} {'wfkit us/step':>14} {'raw us/step':>12} {'ratio':>6} "
          f"{'floor us/step':>14} {'wfkit/floor':>12} {'before':>8}  durability")
    for name, backend, mode, ours, base, floor, before_us, settings in rows:
        raw_text = f"{base:12.1f} {ours / base:6.2f}" if base else f"{'-':>12} {'-':>6}"
        floor_text = f"{floor:14.1f} {ours / floor:12.2f}" if floor else f"{'-':>14} {'-':>12}"
        before_text = f"{before_us:8.1f}" if before_us else f"{'-':>8}"
        print(f"{name:9} {backend:11} {mode:5} {ours:14.1f} {raw_text} {floor_text} {before_text}  {settings}")
    for note in notes:
        print(note)
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
