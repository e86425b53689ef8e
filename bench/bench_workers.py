"""Workers on one PostgreSQL database: throughput, dispatch latency, recovery, and what 10M runs a day cost.

Everything runs against a throwaway PostgreSQL database (a random name, created, migrated with
`wfkit.store.migrations.upgrade`, which installs Procrastinate's queue, and dropped at the end, also on an
error, Ctrl-C or SIGTERM). Workers are real `wfkit worker` subprocesses; they find the workflows through a
small plugin written to a temporary folder (an entry point in the group `wfkit`, declared by a dist-info
folder as an installed wheel declares it, and put on PYTHONPATH).

  throughput  chain10 (n0..n9 in a line; state {count, log}; each node appends a 64-character string: the
              workload of bench_executor.py) with 1, 2 and 4 worker processes, each at --concurrency 1
              and 4, against the same runs executed in this process back to back with
              `Executor(url).execute("chain10")`. For a worker side, --runs runs are submitted first
              (`Executor.submit`, into a queue no worker listens to), the workers are started and
              waited for (each has LISTENed), then the runs' jobs are moved to the workers' queue and
              the workers woken in one transaction. Runs per second = runs / (last run's completed_at -
              first stage's created_at), from the database's records: worker start-up and shutdown
              are not in it, and neither is the submission (measured apart: submits per second). The
              in-process side's span runs from its first stage's start too (a run is created running
              with its first stage current). Sides take turns, in rotating order, --rounds times;
              medians. Each worker batch first warms its workers (W x C runs, not counted); between
              batches a VACUUM (ANALYZE) does what autovacuum would (--no-vacuum: not). Also per side: CPU per run of the clients (the workers, or this process) and of
              this database's PostgreSQL backends, the machine's busy share, WAL bytes and durable
              commits per run (this database's records in pg_waldump's reading of the batch's WAL: the
              server may be shared, e.g. with a test suite, whose commits per second are shown as noise).
  latency     one idle worker (concurrency 1) already running; chain10 runs submitted one at a time
              with a random gap; submit (runs.created_at) -> first stage's start (stages.created_at),
              p50/p99. Target: p50 < 50 ms.
  recovery    two workers with WFKIT_LEASE_SECONDS=--lease and WFKIT_RECOVERY_SECONDS=--recovery; a run
              of `naps` (--nodes nodes, each sleeping --nap s) is submitted, the worker holding it is
              SIGKILLed at a random instant while a node runs, and the time from the kill to the start of
              the run's next stage on the other worker is read from the stages' records. The run must
              complete with every node completed once. Target: at most lease + recovery interval + 1 s.
  estimate    rows and bytes in wfkit's tables (per run) and Procrastinate's (per dispatched run), as
              written (vacuumed between batches, or not) and after VACUUM FULL (the live rows), per
              index, and the figures scaled to 10 million
              runs a day (rows, bytes, WAL, commits, notifications, dead tuples, what retention deletes
              per hour).

    python bench/bench_workers.py [--runs 200] [--rounds 5] [--workers 1,2,4] [--concurrency 1,4]
        [--latency-samples 120] [--kills 8] [--lease 3] [--recovery 1] [--no-vacuum] [--quiet-pct 15]
        [--phases throughput,latency,recovery,estimate] [--postgres-url URL] [--json PATH] [--logs DIR]
        [--quick] [--strict]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(ROOT / "src"))
#: The installed console script of this environment.
WFKIT = str(Path(sys.executable).with_name("wfkit"))

#: The queue the workers take jobs from, and the one runs wait in until released to them.
QUEUE, HOLD = "wfkit", "bench-hold"
PLUGIN_NAME = "benchworkers"
RUNS_PER_DAY = 10_000_000
LATENCY_TARGET_MS = 50.0
WFKIT_TABLES = ("runs", "stages", "decisions", "checkpoints")
QUEUE_TABLES = ("procrastinate_jobs", "procrastinate_events")
CLK_TCK = os.sysconf("SC_CLK_TCK")

PLUGIN = '''\
"""bench_workers.py's workflows: chain10 (as bench_executor.py defines it) and naps (nodes that sleep)."""
import time

import wfkit
from wfkit.graph import END

LINE = "x" * 64


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


def naps(graph, runtime, params):
    """params: nodes (m0..m<nodes-1> in a line), nap (seconds each node sleeps)."""
    nodes, nap = int(params.get("nodes", 6)), float(params.get("nap", 0.5))

    def make(name):
        def work(state):
            time.sleep(nap)
            return {"done": [*state["done"], name]}
        return work

    for i in range(nodes):
        graph.add_node(f"m{i}", make(f"m{i}"))
    graph.set_entry_point("m0")
    for i in range(nodes - 1):
        graph.add_edge(f"m{i}", f"m{i + 1}")
    graph.add_edge(f"m{nodes - 1}", END)
    return {"done": []}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("chain10", chain10)
    registry.register("naps", naps)
'''


from bench_api import log, percentile  # noqa: E402  (the same helpers as the API's benchmark)


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]], right: set[int]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for i, row in enumerate((header, *rows)):
        print("  ".join(str(c).rjust(w) if k in right else str(c).ljust(w)
                        for k, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


# =========================================================================== plugin, database, processes


def declare_plugin(site: Path) -> None:
    """The plugin's module and an entry point in the group ``wfkit``, declared as an installed wheel
    declares it (a dist-info folder): importlib.metadata finds it on PYTHONPATH."""
    info = site / "wfkit_bench_workers-1.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wfkit-bench-workers\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[wfkit]\n{PLUGIN_NAME} = wfkit_bench_workers\n")
    (site / "wfkit_bench_workers.py").write_text(PLUGIN)


def worker_env(site: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFKIT_")}
    env.update(PYTHONPATH=str(site), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               WFKIT_LOAD_PLUGINS=PLUGIN_NAME, WFKIT_DATABASE_URL=url, **extra)
    return env


@contextlib.contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A new database with a random name on ``admin_url``'s server, migrated (wfkit's tables and the
    queue's); dropped on the way out, whatever happened."""
    import psycopg

    from wfkit.store import migrations

    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"wfkit_bench_workers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    log(f"database {name} created")
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"database {name} dropped")


#: Every worker process started and not yet stopped (stopped on the way out, whatever happened).
LIVE: dict[int, "WorkerProc"] = {}


class WorkerProc:
    """A `wfkit worker` subprocess, its output in files of its own."""

    def __init__(self, name: str, concurrency: int, env: dict[str, str], logs: Path):
        self.name = name
        self.out_path, self.err_path = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            # a session of its own: a Ctrl-C on the bench reaches the bench, which stops it in order
            # PGAPPNAME: libpq names each of its connections after the worker (seen in pg_stat_activity)
            self.proc = subprocess.Popen([WFKIT, "worker", "--concurrency", str(concurrency), "--name", name,
                                          "--queue", QUEUE], stdout=out, stderr=err, env=dict(env, PGAPPNAME=name),
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.spawned = time.monotonic()
        LIVE[self.pid] = self

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (utime + stime; 10 ms ticks)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.out_path, self.err_path):
            with contextlib.suppress(OSError):
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (the graceful stop), then SIGKILL if it has not exited within ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"worker {self.name} did not stop within {timeout:g} s of SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        LIVE.pop(self.pid, None)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait()
        LIVE.pop(self.pid, None)


def stop_all(timeout: float = 15.0) -> None:
    workers = list(LIVE.values())
    for w in workers:
        if w.alive():
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGTERM)
    for w in workers:
        w.stop(timeout)


# =========================================================================== measuring


class Server:
    """What the bench reads from the PostgreSQL server: its WAL position; this database's WAL records
    between two positions (pg_waldump); the CPU time of this database's backends. The server is shared
    (other databases may be busy, e.g. a test suite): records and backends are attributed to this
    database and counted alone."""

    #: a line of pg_waldump: rmgr, record length, total length (with full-page images), transaction, type
    RECORD = re.compile(r"^rmgr: (\S+)\s+len \(rec/tot\):\s*(\d+)/\s*(\d+), tx:\s*(\d+), lsn: \S+, prev \S+, "
                        r"desc: (\S+)")
    RELATION = re.compile(r"rel \d+/(\d+)/(\d+)")

    def __init__(self, conn: Any):
        self.conn = conn
        self.dbname, self.dboid = conn.execute(
            "SELECT current_database(), oid FROM pg_database WHERE datname = current_database()").fetchone()
        self.data_dir = self._setting("SHOW data_directory")
        bindir = self._setting("SELECT setting FROM pg_config WHERE name = 'BINDIR'")
        waldump = Path(bindir) / "pg_waldump" if bindir else None
        self.waldump = str(waldump) if waldump and waldump.exists() else shutil.which("pg_waldump")
        if self.waldump and not os.access(Path(self.data_dir or "/nonexistent") / "pg_wal", os.R_OK):
            self.waldump = None

    def _setting(self, sql: str) -> str | None:
        try:
            return self.conn.execute(sql).fetchone()[0]
        except Exception:  # not a superuser, or no such view
            return None

    def lsn(self) -> str:
        return self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

    def wal_bytes(self, start: str, end: str) -> int:
        """WAL written between two positions by the whole server."""
        return int(self.conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])

    def waldump_stats(self, start: str, end: str) -> dict[str, Any] | None:
        """This database's WAL records between two positions, per type (rmgr/record): [count, bytes,
        of which full-page images]; a record is this database's if it touches one of its relations,
        or belongs to a transaction that did (its commit). Also ``other_commits``: commits of other
        transactions in that stretch (the rest of the server's activity)."""
        if not self.waldump or start == end:
            return None
        try:
            out = subprocess.run([self.waldump, "-p", str(Path(self.data_dir) / "pg_wal"), "-s", start, "-e", end],
                                 capture_output=True, text=True, timeout=120).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        records, mine_tx = [], set()
        for line in out.splitlines():
            m = self.RECORD.match(line)
            if not m:
                continue
            rmgr, rec, tot, tx, kind = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5)
            rels = [(int(d), int(r)) for d, r in self.RELATION.findall(line)]
            ours = any(d == self.dboid for d, _ in rels)
            if ours and tx:
                mine_tx.add(tx)
            rel = next((r for d, r in rels if d == self.dboid), None)
            records.append((f"{rmgr}/{kind}", rec, tot, tx, ours, rel))
        stats: dict[str, Any] = {}
        total = [0, 0, 0]
        other_commits = 0
        relations: dict[int, list[int]] = {}  # relfilenode: [records, bytes]
        updates: dict[int, dict[str, int]] = {}  # relfilenode: {record type: count}, for heap updates
        for name, rec, tot, tx, ours, rel in records:
            if ours or (tx and tx in mine_tx):
                entry = stats.setdefault(name, [0, 0, 0])
                for acc in (entry, total):
                    acc[0] += 1
                    acc[1] += tot
                    acc[2] += tot - rec
                r = relations.setdefault(rel or 0, [0, 0])
                r[0] += 1
                r[1] += tot
                if name.startswith(("Heap/UPDATE", "Heap/HOT_UPDATE")) and rel:
                    kind = "hot" if "HOT" in name else "cold"
                    updates.setdefault(rel, {"hot": 0, "cold": 0})[kind] += 1
            elif name == "Transaction/COMMIT":
                other_commits += 1
        stats["Total"] = total
        stats["other_commits"] = other_commits
        names = self.relations()
        stats["tables"] = tables = {}
        for rel, (n, b) in relations.items():
            table_name = names.get(rel, "(no relation: commits...)" if rel == 0 else "(other)")
            t = tables.setdefault(table_name, [0, 0])
            t[0] += n
            t[1] += b
        stats["heap_updates"] = {names.get(rel, str(rel)): u for rel, u in updates.items()}
        return stats

    def relations(self) -> dict[int, str]:
        """This database's relation files: the table each belongs to (an index's, its table's)."""
        rows = self.conn.execute(
            "SELECT c.relfilenode, COALESCE(t.relname, c.relname) FROM pg_class c LEFT JOIN pg_index i ON "
            "i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid WHERE c.relfilenode <> 0").fetchall()
        return {int(r[0]): r[1] for r in rows}

    def cpu_seconds(self) -> dict[int, float]:
        """CPU time of each live backend of this database (by its process title), by pid."""
        out = {}
        needle = f" {self.dbname} ".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / "cmdline").read_bytes():
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time, which steal/user already count
    return total - idle, total


class Snapshot:
    """CPU and WAL position at one moment."""

    def __init__(self, server: Server, clients: list[WorkerProc] | None = None):
        self.t = time.perf_counter()
        self.busy, self.total = machine_ticks()
        self.pg = server.cpu_seconds()  # by backend
        self.own = time.process_time()
        self.clients = sum(w.cpu_seconds() for w in clients) if clients else math.nan
        self.lsn = server.lsn()


def window(server: Server, a: Snapshot, b: Snapshot, runs: int, clients: str) -> dict[str, float]:
    """Per-run figures of what happened between two snapshots. ``clients``: whose CPU is the
    client's (``workers`` or ``self``)."""
    busy, total = b.busy - a.busy, b.total - a.total
    client = (b.clients - a.clients) if clients == "workers" else (b.own - a.own)
    # a backend that started in the window counts whole; one that ended in it is lost (rare: pools keep theirs)
    pg = sum(cpu - a.pg.get(pid, 0.0) for pid, cpu in b.pg.items())
    seconds = b.t - a.t
    capacity = (os.cpu_count() or 1) * seconds
    machine = busy / total * capacity if total else math.nan
    ours = client + pg + (b.own - a.own if clients == "workers" else 0.0)
    out = {
        "client_cpu_ms_per_run": client / runs * 1e3,
        "pg_cpu_ms_per_run": pg / runs * 1e3,
        "machine_busy_pct": 100.0 * busy / total if total else math.nan,
        "cluster_wal_bytes_per_run": server.wal_bytes(a.lsn, b.lsn) / runs,
        "seconds": seconds,
        # what the machine did besides the clients, this database's backends and this process: PostgreSQL's
        # own background processes (WAL writer...), the kernel, other programs (a test suite, ...)
        "unattributed_cpu_pct": 100.0 * (machine - ours) / capacity if capacity else math.nan,
    }
    stats = server.waldump_stats(a.lsn, b.lsn)
    if stats:
        out["commits_per_run"] = stats.get("Transaction/COMMIT", (0, 0, 0))[0] / runs
        out["wal_bytes_per_run"] = stats["Total"][1] / runs
        out["wal_records_per_run"] = stats["Total"][0] / runs
        out["fpi_bytes_per_run"] = stats["Total"][2] / runs
        out["other_commits_per_s"] = stats["other_commits"] / out["seconds"] if out["seconds"] else math.nan
        out["wal_bytes_per_run_by_table"] = {t: v[1] / runs for t, v in stats["tables"].items()}
        upd = stats["heap_updates"].get("runs", {"hot": 0, "cold": 0})
        out["runs_updates_per_run"] = (upd["hot"] + upd["cold"]) / runs
        out["runs_hot_updates_per_run"] = upd["hot"] / runs
        out["waldump"] = stats
    else:
        out["wal_bytes_per_run"] = out["cluster_wal_bytes_per_run"]
    return out


# =========================================================================== the bench's own connection


class Db:
    """The bench's connection to the throwaway database (autocommit; reads, and the release)."""

    def __init__(self, url: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def one(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: Any = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def listening(self, names: list[str]) -> int:
        """How many of these workers have LISTENed (their Procrastinate listener's last statement)."""
        return self.one("SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND application_name = ANY(%s) AND query LIKE 'LISTEN %%'", (names,))[0]

    def wait_listening(self, workers: list[WorkerProc], timeout: float = 90.0) -> float:
        """Wait until every one of ``workers`` listens for jobs: the seconds it took."""
        t0 = time.monotonic()
        while True:
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"worker {w.name} exited with {w.proc.returncode}:\n{w.tail()}")
            if self.listening([w.name for w in workers]) == len(workers):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{len(workers)} workers were not listening within {timeout:g} s:\n"
                                   + "".join(w.tail() for w in workers))
            time.sleep(0.05)

    def wait_ended(self, ids: list[uuid.UUID], workers: list[WorkerProc], timeout: float) -> None:
        t0 = time.monotonic()
        while True:
            ended = self.one("SELECT count(*) FROM runs WHERE id = ANY(%s) AND status NOT IN ('pending', 'running')",
                             (ids,))[0]
            if ended == len(ids):
                return
            for w in workers:
                if not w.alive():
                    raise RuntimeError(f"worker {w.name} exited with {w.proc.returncode}:\n{w.tail()}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{len(ids) - ended} of {len(ids)} runs had not ended after {timeout:g} s:\n"
                                   + "".join(w.tail() for w in workers))
            time.sleep(0.1)

    def release(self) -> int:
        """Move the held runs' jobs to the workers' queue and wake the workers, in one transaction
        (the notifications are delivered at its commit, as those of a job's insertion are)."""
        with self.conn.transaction():
            moved = self.all("UPDATE procrastinate_jobs SET queue_name = %s WHERE queue_name = %s AND status = 'todo' "
                             "RETURNING id", (QUEUE, HOLD))
            payload = json.dumps({"type": "job_inserted", "job_id": min((r[0] for r in moved), default=0)})
            self.conn.execute("SELECT pg_notify(%s, %s)", (f"procrastinate_queue_v1#{QUEUE}", payload))
            self.conn.execute("SELECT pg_notify('procrastinate_any_queue_v1', %s)", (payload,))
        return len(moved)

    def batch(self, ids: list[uuid.UUID]) -> dict[str, Any]:
        """A batch's records: first stage's start, last completion, statuses, owners."""
        first_stage = self.one("SELECT min(created_at) FROM stages WHERE run_id = ANY(%s)", (ids,))[0]
        row = self.one("SELECT max(completed_at), count(*) FILTER (WHERE status = 'completed'), count(DISTINCT owner), "
                       "min(started_at) FROM runs WHERE id = ANY(%s)", (ids,))
        return {"first_stage": first_stage, "last_end": row[0], "completed": row[1], "owners": row[2],
                "first_started": row[3]}

    def table_stats(self, tables: tuple[str, ...]) -> dict[str, dict[str, int]]:
        rows = self.all("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, n_live_tup, n_dead_tup "
                        "FROM pg_stat_user_tables WHERE relname = ANY(%s)", (list(tables),))
        keys = ("ins", "upd", "hot_upd", "del", "live", "dead")
        return {r[0]: dict(zip(keys, r[1:])) for r in rows}

    def close(self) -> None:
        self.conn.close()


def vacuum(db: Db) -> None:
    """What autovacuum does to a database in service (this server may have it off: CI settings), done
    between batches, outside the timed windows: the queue's dead jobs and events, the runs' dead
    versions and index entries, cleared; statistics for the planner."""
    db.conn.execute("VACUUM (ANALYZE) " + ", ".join((*WFKIT_TABLES, *QUEUE_TABLES)))


def settle_stats() -> None:
    """Backends flush their statistics as they exit, and idle ones within a second or so."""
    time.sleep(1.2)


# =========================================================================== throughput


def submit_held(url: str, runs: int) -> tuple[list[uuid.UUID], float]:
    """Submit ``runs`` chain10 runs into the hold queue (a fresh executor, closed after): their ids
    and the seconds it took."""
    from wfkit.executor import Executor

    executor = Executor(url)
    try:
        ids = [executor.submit("chain10", queue=HOLD)]  # the first warms up: connection, registry; not timed
        t0 = time.perf_counter()
        ids += [executor.submit("chain10", queue=HOLD) for _ in range(runs - 1)]
        return ids, time.perf_counter() - t0
    finally:
        executor.close()


def submit_runs(url: str, runs: int) -> list[uuid.UUID]:
    """Submit ``runs`` chain10 runs to the workers' queue (the warm-up of a batch)."""
    from wfkit.executor import Executor

    executor = Executor(url)
    try:
        return [executor.submit("chain10") for _ in range(runs)]
    finally:
        executor.close()


def worker_batch(ctx: dict[str, Any], workers: int, concurrency: int, round_no: int) -> dict[str, Any]:
    db, server, runs = ctx["db"], ctx["server"], ctx["runs"]
    lsn0 = server.lsn()
    ids, submit_s = submit_held(ctx["url"], runs)
    lsn1 = server.lsn()
    submit_stats = server.waldump_stats(lsn0, lsn1) or {}
    procs = []
    try:
        for k in range(workers):
            procs.append(WorkerProc(f"tput-r{round_no}-{workers}x{concurrency}-{k}", concurrency, ctx["env"],
                                    ctx["logs"]))
        ready_s = db.wait_listening(procs)
        # warm-up, not counted: a fresh worker's first run imports and builds what later runs reuse, opens
        # its pools' connections; W x C runs at once warm every worker at its concurrency
        warm_ids = submit_runs(ctx["url"], workers * concurrency)
        db.wait_ended(warm_ids, procs, timeout=120.0)
        time.sleep(0.3)
        before = Snapshot(server, procs)
        t_release = datetime.now().astimezone()
        moved = db.release()
        db.wait_ended(ids, procs, timeout=max(120.0, runs * 0.5))
        after = Snapshot(server, procs)
    finally:
        codes = [w.stop() for w in procs]
    rec = db.batch(ids)
    span = (rec["last_end"] - rec["first_stage"]).total_seconds()
    out = {
        "side": f"{workers}x{concurrency}", "round": round_no, "runs": runs, "completed": rec["completed"],
        "runs_per_s": runs / span, "span_s": span, "owners": rec["owners"], "jobs_released": moved,
        "release_to_first_stage_ms": (rec["first_stage"] - t_release).total_seconds() * 1e3,
        "workers_ready_s": ready_s, "worker_exit_codes": codes,
        "submits_per_s": (runs - 1) / submit_s if runs > 1 else math.nan,
        "submit_wal_bytes_per_run": (submit_stats["Total"][1] if submit_stats else server.wal_bytes(lsn0, lsn1)) / runs,
        "submit_commits_per_run": submit_stats.get("Transaction/COMMIT", (math.nan,))[0] / runs,
        **window(server, before, after, runs, "workers"),
    }
    return out


def inprocess_batch(ctx: dict[str, Any], round_no: int) -> dict[str, Any]:
    from wfkit.executor import Executor

    db, server, runs = ctx["db"], ctx["server"], ctx["runs"]
    executor = Executor(ctx["url"])
    try:
        executor.execute("chain10")  # warm, as the workers are: connection, registry
        before = Snapshot(server)
        t0 = time.perf_counter()
        ids = [executor.execute("chain10").id for _ in range(runs)]
        wall = time.perf_counter() - t0
        after = Snapshot(server)
    finally:
        executor.close()
    rec = db.batch(ids)
    span = (rec["last_end"] - rec["first_stage"]).total_seconds()
    return {"side": "in-process", "round": round_no, "runs": runs, "completed": rec["completed"],
            "runs_per_s": runs / span, "span_s": span, "wall_runs_per_s": runs / wall, "owners": rec["owners"],
            **window(server, before, after, runs, "self")}


def throughput(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    sides = ["in-process"] + [f"{w}x{c}" for w in args.workers for c in args.concurrency]
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for r in range(args.rounds):
        order = sides[r % len(sides):] + sides[:r % len(sides)]  # each round starts one side later
        for side in order:
            t0 = time.monotonic()
            if side == "in-process":
                res = inprocess_batch(ctx, r)
            else:
                w, c = (int(x) for x in side.split("x"))
                res = worker_batch(ctx, w, c, r)
            if res["completed"] != res["runs"]:
                raise RuntimeError(f"{side}, round {r}: {res['completed']} of {res['runs']} runs completed")
            if args.vacuum:
                vacuum(ctx["db"])
            results[side].append(res)
            log(f"round {r + 1}/{args.rounds} {side:>10}: {res['runs_per_s']:7.1f} runs/s "
                f"(span {res['span_s']:.2f} s, {res['owners']} owners, {time.monotonic() - t0:.1f} s in all)")
    return {"sides": sides, "batches": results}


def report_throughput(tp: dict[str, Any], quiet_pct: float) -> dict[str, Any]:
    sides, batches = tp["sides"], tp["batches"]
    base = {b["round"]: b["runs_per_s"] for b in batches["in-process"]}
    summary = {}
    rows = []
    for side in sides:
        bs = batches[side]
        rps = [b["runs_per_s"] for b in bs]
        ratios = [b["runs_per_s"] / base[b["round"]] for b in bs if b["round"] in base]
        quiet = [b["runs_per_s"] for b in bs if b["unattributed_cpu_pct"] < quiet_pct]
        s = {
            "runs_per_s": median(rps), "min": min(rps), "max": max(rps), "x_in_process": median(ratios),
            "quiet_runs_per_s": median(quiet), "quiet_batches": len(quiet),
            "ms_per_run": 1e3 / median(rps),
            "release_to_first_stage_ms": median([b.get("release_to_first_stage_ms", math.nan) for b in bs]),
            "client_cpu_ms_per_run": median([b["client_cpu_ms_per_run"] for b in bs]),
            "pg_cpu_ms_per_run": median([b["pg_cpu_ms_per_run"] for b in bs]),
            "machine_busy_pct": median([b["machine_busy_pct"] for b in bs]),
            "unattributed_cpu_pct": median([b["unattributed_cpu_pct"] for b in bs]),
            "wal_bytes_per_run": median([b["wal_bytes_per_run"] for b in bs]),
            "commits_per_run": median([b.get("commits_per_run", math.nan) for b in bs]),
            "fpi_bytes_per_run": median([b.get("fpi_bytes_per_run", math.nan) for b in bs]),
            "submits_per_s": median([b.get("submits_per_s", math.nan) for b in bs]),
            "submit_wal_bytes_per_run": median([b.get("submit_wal_bytes_per_run", math.nan) for b in bs]),
            "submit_commits_per_run": median([b.get("submit_commits_per_run", math.nan) for b in bs]),
            "other_commits_per_s": median([b.get("other_commits_per_s", math.nan) for b in bs]),
            "runs_upd_per_run": median([b.get("runs_updates_per_run", math.nan) for b in bs]),
            "runs_hot_per_run": median([b.get("runs_hot_updates_per_run", math.nan) for b in bs]),
            "wal_bytes_per_run_by_table": {t: median([b.get("wal_bytes_per_run_by_table", {}).get(t, 0.0) for b in bs])
                                           for t in sorted({t for b in bs for t in b.get("wal_bytes_per_run_by_table", {})})},
            "owners": median([b["owners"] for b in bs]),
        }
        summary[side] = s
        rows.append((side, fmt(s["runs_per_s"]), f"{fmt(s['min'])}-{fmt(s['max'])}", fmt(s["x_in_process"], 2),
                     f"{fmt(s['quiet_runs_per_s'])} ({len(quiet)})",
                     fmt(s["ms_per_run"], 2), fmt(s["release_to_first_stage_ms"]), fmt(s["client_cpu_ms_per_run"], 2),
                     fmt(s["pg_cpu_ms_per_run"], 2), fmt(s["machine_busy_pct"], 0), fmt(s["unattributed_cpu_pct"], 0),
                     fmt(s["wal_bytes_per_run"], 0),
                     fmt(s["commits_per_run"], 1), f"{fmt(s['runs_hot_per_run'], 1)}/{fmt(s['runs_upd_per_run'], 1)}",
                     fmt(s["other_commits_per_s"], 0)))
    rounds = len(batches[sides[0]])
    print(f"\n## Throughput: chain10, {batches[sides[0]][0]['runs']} runs per batch, {rounds} rounds (medians)\n")
    table(("side", "runs/s", "range", "x in-process", "quiet runs/s (n)", "ms/run", "release->1st stage ms", "client CPU ms/run",
           "PG CPU ms/run", "busy %", "unattrib. %", "WAL B/run", "commits/run", "runs HOT/upd",
           "others' commits/s"), rows, set(range(1, 15)))
    subs = [summary[s] for s in sides if s != "in-process"]
    if subs:
        print(f"\nsubmit (Executor.submit, one at a time, before the workers start): "
              f"{fmt(median([s['submits_per_s'] for s in subs]))} runs/s, "
              f"{fmt(median([s['submit_wal_bytes_per_run'] for s in subs]), 0)} WAL bytes and "
              f"{fmt(median([s['submit_commits_per_run'] for s in subs]), 2)} commits per run")
    tables = sorted({t for s in summary.values() for t in s["wal_bytes_per_run_by_table"]},
                    key=lambda t: -max(s["wal_bytes_per_run_by_table"].get(t, 0) for s in summary.values()))
    print("\nWAL record bytes per run by table (its indexes included), medians:\n")
    table(("table", *sides), [(t, *(fmt(summary[s]["wal_bytes_per_run_by_table"].get(t, 0.0), 0) for s in sides))
                              for t in tables], set(range(1, len(sides) + 1)))
    print()
    print("side WxC: W worker processes at --concurrency C; span = first stage's start -> last run's completed_at; "
          "client CPU = the workers' (or this process's, in-process); PG CPU = this database's backends; busy = "
          "the whole machine's share of its CPUs; unattrib. = the share none of those used (the kernel, PostgreSQL's "
          f"background processes, other programs); quiet = the median of the batches whose unattrib. was under "
          f"{quiet_pct:g}% (how many); WAL (record bytes) and durable commits = this database's records "
          "in pg_waldump of the batch; 'runs HOT/upd' = HOT updates / updates of the run's row, per run; others' "
          "commits/s = commits of other databases on the server meanwhile (noise)")
    return summary


# =========================================================================== latency


def latency(args: argparse.Namespace, ctx: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    from wfkit.executor import Executor

    db = ctx["db"]
    worker = WorkerProc("latency", 1, ctx["env"], ctx["logs"])
    executor = Executor(ctx["url"])
    returned: dict[uuid.UUID, datetime] = {}
    ids: list[uuid.UUID] = []
    try:
        db.wait_listening([worker])
        time.sleep(0.5)
        for _ in range(5):  # warm-up, not counted: the worker's first runs build the workflow, fill pools
            executor.submit("chain10")
            time.sleep(0.1)
        for _ in range(args.latency_samples):
            time.sleep(rng.uniform(args.gap, 2 * args.gap))
            run_id = executor.submit("chain10")
            returned[run_id] = datetime.now().astimezone()
            ids.append(run_id)
        db.wait_ended(ids, [worker], timeout=60)
    finally:
        executor.close()
        code = worker.stop()
    rows = db.all("SELECT r.id, r.created_at, r.started_at, (SELECT min(s.created_at) FROM stages s WHERE s.run_id = r.id), "
                  "r.status FROM runs r WHERE r.id = ANY(%s)", (ids,))
    submit_to_stage = [(r[3] - r[1]).total_seconds() * 1e3 for r in rows]
    returned_to_stage = [(r[3] - returned[r[0]]).total_seconds() * 1e3 for r in rows]
    submit_to_start = [(r[2] - r[1]).total_seconds() * 1e3 for r in rows]
    start_to_stage = [(r[3] - r[2]).total_seconds() * 1e3 for r in rows]
    out = {"samples": len(rows), "completed": sum(r[4] == "completed" for r in rows), "worker_exit_code": code}
    print(f"\n## Latency: submit -> first stage's start, one idle worker (concurrency 1), {len(rows)} runs, "
          f"gaps of {args.gap:g}-{2 * args.gap:g} s\n")
    trows = []
    for label, values in (("submit (runs.created_at) -> first stage", submit_to_stage),
                          ("submit returned (committed) -> first stage", returned_to_stage),
                          ("submit -> run started (runs.started_at)", submit_to_start),
                          ("run started -> first stage", start_to_stage)):
        s = {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
             "max": max(values)}
        out[label] = s
        trows.append((label, fmt(s["p50"], 2), fmt(s["p90"], 2), fmt(s["p99"], 2), fmt(s["max"], 2)))
    table(("ms", "p50", "p90", "p99", "max"), trows, {1, 2, 3, 4})
    p50 = out["submit (runs.created_at) -> first stage"]["p50"]
    out["pass"] = p50 < LATENCY_TARGET_MS
    print(f"\ntarget p50 < {LATENCY_TARGET_MS:g} ms: {'PASS' if out['pass'] else 'MISS'} ({fmt(p50, 2)} ms)")
    return out


# =========================================================================== recovery


def recovery(args: argparse.Namespace, ctx: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    from wfkit.executor import Executor

    db = ctx["db"]
    env = dict(ctx["env"], WFKIT_LEASE_SECONDS=f"{args.lease:g}", WFKIT_RECOVERY_SECONDS=f"{args.recovery:g}")
    bound = args.lease + args.recovery + 1.0
    run_seconds = args.nodes * args.nap
    workers = {}
    serial = 0

    def start_worker() -> WorkerProc:
        nonlocal serial
        w = WorkerProc(f"recovery-{serial}", 1, env, ctx["logs"])
        serial += 1
        workers[w.name] = w
        return w

    executor = Executor(ctx["url"])
    samples = []
    try:
        pair = [start_worker(), start_worker()]
        db.wait_listening(pair)
        time.sleep(0.5)
        for k in range(args.kills):
            alive = [w for w in workers.values() if w.alive()]
            run_id = executor.submit("naps", {"nodes": args.nodes, "nap": args.nap})
            deadline = time.monotonic() + 30
            while True:  # until a worker executes its first node
                row = db.one("SELECT status, owner, started_at FROM runs WHERE id = %s", (run_id,))
                if row[0] == "running" and row[1] and row[2]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} was not started within 30 s:\n"
                                       + "".join(w.tail() for w in alive))
                time.sleep(0.01)
            holder = workers[row[1].split(" on ", 1)[0]]
            old_epoch = db.one("SELECT lease_epoch FROM runs WHERE id = %s", (run_id,))[0]
            kill_at = row[2].timestamp() + rng.uniform(0.25, run_seconds - 0.75)
            time.sleep(max(0.0, kill_at - time.time()))
            held = db.one("SELECT lease_expires_at, current_node, current_stage_started_at FROM runs WHERE id = %s",
                          (run_id,))
            last_job = db.one("SELECT max(id) FROM procrastinate_jobs WHERE args->>'run_id' = %s", (str(run_id),))[0]
            holder.kill()
            t_kill = time.time()
            t_redispatch = t_claim = None
            deadline = time.monotonic() + 60
            while True:  # the recovery's new job, the other worker's claim, the run's end
                now = time.time()
                if t_redispatch is None and db.one("SELECT count(*) FROM procrastinate_jobs WHERE args->>'run_id' = %s "
                                                   "AND id > %s", (str(run_id), last_job))[0]:
                    t_redispatch = now
                status, epoch = db.one("SELECT status, lease_epoch FROM runs WHERE id = %s", (run_id,))
                if t_claim is None and epoch != old_epoch:
                    t_claim = now
                if status not in ("pending", "running"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} did not end within 60 s of the kill:\n"
                                       + "".join(w.tail() for w in workers.values() if w.alive()))
                time.sleep(0.02)
            stages = db.all("SELECT node_name, iteration, status, created_at, error_message FROM stages "
                            "WHERE run_id = %s ORDER BY created_at, id", (run_id,))
            run = db.one("SELECT status, result, attempt, owner FROM runs WHERE id = %s", (run_id,))
            resumed = [s for s in stages if s[3].timestamp() > t_kill]
            completed = [s[0] for s in stages if s[2] == "completed"]
            expected = [f"m{i}" for i in range(args.nodes)]
            problems = []
            if run[0] != "completed":
                problems.append(f"ended {run[0]}")
            if completed != expected:
                problems.append(f"completed stages {completed}")
            if run[1] is None or run[1].get("done") != expected:
                problems.append(f"result {run[1]}")
            if not resumed:
                problems.append("no stage started after the kill")
            sample = {
                "run_id": str(run_id), "killed": holder.name, "taken_over_by": run[3].split(" on ", 1)[0],
                "attempt": run[2], "node_at_kill": held[1],
                "into_node_s": t_kill - held[2].timestamp() if held[2] else math.nan,
                "lease_left_s": held[0].timestamp() - t_kill if held[0] else math.nan,
                "redispatched_s": (t_redispatch - t_kill) if t_redispatch else math.nan,
                "claimed_s": (t_claim - t_kill) if t_claim else math.nan,
                "next_stage_s": (resumed[0][3].timestamp() - t_kill) if resumed else math.nan,
                "problems": problems,
            }
            samples.append(sample)
            log(f"kill {k + 1}/{args.kills}: {holder.name} killed {sample['into_node_s']:.2f} s into {held[1]}; "
                f"next stage on {sample['taken_over_by']} {sample['next_stage_s']:.2f} s later"
                + (f"; PROBLEMS: {problems}" if problems else ""))
            start_worker()  # two idle workers again before the next run
            db.wait_listening([w for w in workers.values() if w.alive()])
            time.sleep(0.5)
    finally:
        executor.close()
        for w in list(workers.values()):
            w.stop()
    times = [s["next_stage_s"] for s in samples]
    out = {"lease_s": args.lease, "recovery_s": args.recovery, "bound_s": bound, "samples": samples,
           "median_s": median(times), "max_s": max(times) if times else math.nan,
           "problems": sum(bool(s["problems"]) for s in samples)}
    out["pass"] = bool(times) and not any(math.isnan(t) for t in times) and out["max_s"] <= bound and not out["problems"]
    print(f"\n## Recovery: SIGKILL of the worker holding a run mid-node -> the run's next stage starts on the other "
          f"worker\n\nWFKIT_LEASE_SECONDS={args.lease:g}, WFKIT_RECOVERY_SECONDS={args.recovery:g}; naps: "
          f"{args.nodes} nodes of {args.nap:g} s; {len(samples)} kills\n")
    rows = [(i + 1, s["node_at_kill"], fmt(s["into_node_s"], 2), fmt(s["lease_left_s"], 2), fmt(s["redispatched_s"], 2),
             fmt(s["claimed_s"], 2), fmt(s["next_stage_s"], 2), s["attempt"], "; ".join(s["problems"]) or "ok")
            for i, s in enumerate(samples)]
    table(("kill", "node", "into node s", "lease left s", "new job s", "claimed s", "next stage s", "attempt", "check"),
          rows, {2, 3, 4, 5, 6, 7})
    print(f"\nnext stage after the kill: median {fmt(out['median_s'], 2)} s, max {fmt(out['max_s'], 2)} s; bound "
          f"lease + recovery interval + 1 s = {bound:g} s: {'PASS' if out['pass'] else 'MISS'}"
          + (f" ({out['problems']} runs with problems)" if out["problems"] else ""))
    print("(columns are seconds after the kill, polled every 20 ms: lease left = when the run's lease was to expire; "
          "new job = the recovery's job seen; claimed = the run's lease epoch changed; next stage = the stage's "
          "recorded start)")
    return out


# =========================================================================== sizes and the paper estimate


def sizes(db: Db) -> dict[str, Any]:
    out = {}
    for name in (*WFKIT_TABLES, *QUEUE_TABLES):
        heap, indexes, total = db.one("SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid), "
                                      "pg_total_relation_size(c.oid) FROM pg_class c WHERE c.relname = %s "
                                      "AND c.relkind = 'r'", (name,))
        per_index = dict(db.all("SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid) FROM pg_index i "
                                "JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname = %s ORDER BY 1", (name,)))
        out[name] = {"heap": heap, "indexes": indexes, "total": total, "per_index": per_index}
    return out


def estimate(ctx: dict[str, Any], tp_summary: dict[str, Any] | None) -> dict[str, Any]:
    db = ctx["db"]
    runs = db.one("SELECT count(*) FROM runs")[0]
    if not runs:
        print("\n## Estimate: no runs in the database (run the throughput phase)")
        return {}
    # the queue's tables serve the dispatched runs alone: their owner names a worker ("NAME on host pid ...")
    dispatched = db.one("SELECT count(*) FROM runs WHERE owner LIKE %s", ("% on %",))[0] or runs
    settle_stats()
    counts = {t: db.one(f"SELECT count(*) FROM {t}")[0] for t in (*WFKIT_TABLES, *QUEUE_TABLES)}
    tstats = db.table_stats((*WFKIT_TABLES, *QUEUE_TABLES))
    written = sizes(db)
    for t in (*WFKIT_TABLES, *QUEUE_TABLES):
        db.conn.execute(f"VACUUM FULL {t}")
    compact = sizes(db)
    per_day = RUNS_PER_DAY
    print(f"\n## Rows and bytes per run ({runs:,} runs in the database, {dispatched:,} of them dispatched: the "
          "queue's tables per dispatched run, wfkit's per run)\n")
    rows = []
    out: dict[str, Any] = {"runs": runs, "dispatched": dispatched, "tables": {}}
    for t in (*WFKIT_TABLES, *QUEUE_TABLES):
        st = tstats.get(t, {})
        w, c = written[t], compact[t]
        n = dispatched if t in QUEUE_TABLES else runs
        fig = {
            "rows_now": counts[t], "inserted_per_run": st.get("ins", 0) / n, "updated_per_run": st.get("upd", 0) / n,
            "hot_per_run": st.get("hot_upd", 0) / n, "deleted_per_run": st.get("del", 0) / n,
            "dead_per_run": st.get("dead", 0) / n,
            "written_heap_per_run": w["heap"] / n, "written_index_per_run": w["indexes"] / n,
            "written_total_per_run": w["total"] / n,
            "live_heap_per_run": c["heap"] / n, "live_index_per_run": c["indexes"] / n,
            "live_total_per_run": c["total"] / n,
            "per_index_written": {k: v / n for k, v in w["per_index"].items()},
            "per_index_live": {k: v / n for k, v in c["per_index"].items()},
        }
        out["tables"][t] = fig
        rows.append((t, fmt(counts[t] / n, 2), fmt(fig["inserted_per_run"], 2), fmt(fig["updated_per_run"], 2),
                     fmt(fig["hot_per_run"], 2), fmt(fig["deleted_per_run"], 2), fmt(fig["written_heap_per_run"], 0),
                     fmt(fig["written_index_per_run"], 0), fmt(fig["live_heap_per_run"], 0),
                     fmt(fig["live_index_per_run"], 0), fmt(fig["live_total_per_run"], 0)))
    table(("table", "rows/run", "ins/run", "upd/run", "HOT/run", "del/run", "heap B/run written", "idx B/run written",
           "heap B/run live", "idx B/run live", "total B/run live"), rows, set(range(1, 11)))
    print("\nwritten = the tables' files as the benchmark left them (this server's autovacuum: "
          f"{db.one('SHOW autovacuum')[0]}; VACUUM between batches: {'yes' if ctx['vacuum'] else 'no'}); live = after "
          "VACUUM FULL (the rows alone, densely packed)")
    print("\nper index, bytes per run (written / live):")
    for t in (*WFKIT_TABLES, *QUEUE_TABLES):
        fig = out["tables"][t]
        for name, b in fig["per_index_written"].items():
            print(f"  {t:22} {name:45} {fmt(b, 0):>8} / {fmt(fig['per_index_live'].get(name, math.nan), 0):>6}")

    # -- the paper estimate at 10M runs a day
    per_s = per_day / 86400
    worker_sides = {k: v for k, v in (tp_summary or {}).items() if k != "in-process"}
    wal_exec = median([v["wal_bytes_per_run"] for v in worker_sides.values()])
    wal_submit = median([v["submit_wal_bytes_per_run"] for v in worker_sides.values()])
    commits_exec = median([v["commits_per_run"] for v in worker_sides.values()])
    commits_submit = median([v["submit_commits_per_run"] for v in worker_sides.values()])
    pg_cpu = median([v["pg_cpu_ms_per_run"] for v in worker_sides.values()])
    client_cpu = median([v["client_cpu_ms_per_run"] for v in worker_sides.values()])
    best_side = max(worker_sides, key=lambda k: worker_sides[k]["runs_per_s"]) if worker_sides else None
    best = worker_sides[best_side]["runs_per_s"] if best_side else math.nan
    wal_run = wal_exec + wal_submit
    commits_run = commits_exec + commits_submit
    live_run = sum(out["tables"][t]["live_total_per_run"] for t in WFKIT_TABLES)
    written_run = sum(out["tables"][t]["written_total_per_run"] for t in WFKIT_TABLES)
    index_live_run = sum(out["tables"][t]["live_index_per_run"] for t in WFKIT_TABLES)
    jobs, events = out["tables"]["procrastinate_jobs"], out["tables"]["procrastinate_events"]
    dead_queue_run = jobs["updated_per_run"] + jobs["deleted_per_run"] + events["deleted_per_run"]
    est = {
        "runs_per_s": per_s, "wal_bytes_per_run": wal_run, "commits_per_run": commits_run,
        "wal_gb_per_day": wal_run * per_day / 1e9, "wal_mb_per_s": wal_run * per_s / 1e6,
        "commits_per_s": commits_run * per_s, "notifies_per_s": 2 * per_s,
        "wfkit_live_gb_per_day": live_run * per_day / 1e9, "wfkit_written_gb_per_day": written_run * per_day / 1e9,
        "wfkit_index_live_gb_per_day": index_live_run * per_day / 1e9,
        "rows_per_day": {t: counts[t] / runs * per_day for t in WFKIT_TABLES},
        "queue_dead_tuples_per_s": dead_queue_run * per_s,
        "pg_cpu_cores": pg_cpu / 1e3 * per_s, "worker_cpu_cores": client_cpu / 1e3 * per_s,
        "best_side": best_side, "best_runs_per_s": best, "best_runs_per_day": best * 86400,
    }
    out["estimate"] = est
    print(f"\n## Paper estimate: {per_day:,} chain10 runs a day ({per_s:.1f} runs/s on average), from the figures "
          "above\n")
    lines = [
        ("runs / stages / decisions / checkpoints per day",
         " / ".join(f"{est['rows_per_day'][t] / 1e6:,.0f}M" for t in WFKIT_TABLES)),
        ("wfkit's tables, bytes per day (live rows; as written)",
         f"{est['wfkit_live_gb_per_day']:,.1f} GB; {est['wfkit_written_gb_per_day']:,.1f} GB"),
        ("  of which indexes (live)", f"{est['wfkit_index_live_gb_per_day']:,.1f} GB/day"),
        ("retention, to keep a fixed window: deleted per hour",
         f"{per_day / 24 / 1e3:,.0f}k runs, "
         f"{sum(est['rows_per_day'][t] for t in WFKIT_TABLES) / 24 / 1e6:,.1f}M rows, "
         f"{est['wfkit_live_gb_per_day'] / 24:,.2f} GB (live)"),
        ("WAL per run (submit + execution)", f"{fmt(wal_submit, 0)} + {fmt(wal_exec, 0)} = {fmt(wal_run, 0)} B"),
        ("WAL per day", f"{est['wal_gb_per_day']:,.0f} GB ({est['wal_mb_per_s']:,.2f} MB/s on average)"),
        ("durable commits per run (submit + execution)",
         f"{fmt(commits_submit, 2)} + {fmt(commits_exec, 2)} = {fmt(commits_run, 2)}"),
        ("durable commits per second", f"{est['commits_per_s']:,.0f} on average"),
        ("NOTIFYs per second (2 per job inserted)", f"{est['notifies_per_s']:,.0f}"),
        ("dead tuples per second in procrastinate_jobs + _events", f"{est['queue_dead_tuples_per_s']:,.0f}"),
        ("PostgreSQL CPU at that rate (this machine's ms/run)", f"{est['pg_cpu_cores']:,.2f} cores"),
        ("workers' CPU at that rate", f"{est['worker_cpu_cores']:,.2f} cores"),
        ("this machine's best measured rate", f"{fmt(best, 1)} runs/s ({best_side}) = "
                                               f"{est['best_runs_per_day'] / 1e6:,.1f}M runs/day"),
    ]
    table(("quantity", "value"), lines, set())
    return out


# =========================================================================== worker logs


def worker_log_problems(logs: Path) -> list[str]:
    """Every line the workers wrote to stderr, and their stdout lines that report a problem."""
    found = []
    for path in sorted(logs.glob("*.err")):
        for line in path.read_text(errors="replace").splitlines():
            if line.strip():
                found.append(f"{path.stem} stderr: {line}")
    for path in sorted(logs.glob("*.out")):
        for line in path.read_text(errors="replace").splitlines():
            if any(word in line for word in ("not executed", "taken over", "given up", "failed", "exits now")):
                found.append(f"{path.stem} stdout: {line}")
    return found


# =========================================================================== main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_workers.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="chain10 runs per throughput batch (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every throughput side (default 5)")
    parser.add_argument("--workers", default="1,2,4", help="worker processes per side (default 1,2,4)")
    parser.add_argument("--concurrency", default="1,4", help="--concurrency of each worker (default 1,4)")
    parser.add_argument("--latency-samples", type=int, default=120, help="runs submitted one at a time (default 120)")
    parser.add_argument("--gap", type=float, default=0.05, help="between two latency submits: a random gap from this to "
                        "twice this, in seconds (default 0.05)")
    parser.add_argument("--kills", type=int, default=8, help="SIGKILLs of the recovery phase (default 8)")
    parser.add_argument("--lease", type=float, default=3.0, help="WFKIT_LEASE_SECONDS of the recovery phase (default 3)")
    parser.add_argument("--recovery", type=float, default=1.0, help="WFKIT_RECOVERY_SECONDS of the recovery phase "
                        "(default 1)")
    parser.add_argument("--nodes", type=int, default=6, help="nodes of a recovery run (default 6)")
    parser.add_argument("--nap", type=float, default=0.5, help="seconds each node of a recovery run sleeps (default 0.5)")
    parser.add_argument("--no-vacuum", dest="vacuum", action="store_false",
                        help="no VACUUM (ANALYZE) between throughput batches (by default one emulates autovacuum)")
    parser.add_argument("--quiet-pct", type=float, default=15.0,
                        help="a throughput batch is quiet if less than this share of the machine's CPU went to "
                        "anything but the clients, this database's backends and the bench (default 15)")
    parser.add_argument("--phases", default="throughput,latency,recovery,estimate",
                        help="which phases, comma-separated (default all; estimate needs throughput)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--postgres-url", default=os.environ.get("WFKIT_BENCH_POSTGRES_URL", "").strip()
                        or "postgresql://postgres@127.0.0.1:5432/postgres",
                        help="an admin URL: a throwaway database is created there and dropped after")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--logs", type=Path, help="keep the workers' output in this folder (default: a temporary one)")
    parser.add_argument("--quick", action="store_true", help="a short try: 80 runs, 1 round, 40 latency samples, 3 kills "
                        "(set options still win)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
    args = parser.parse_args(argv)
    if args.quick:
        for option, value in (("runs", 80), ("rounds", 1), ("latency_samples", 40), ("kills", 3)):
            if f"--{option.replace('_', '-')}" not in given:
                setattr(args, option, value)
    try:
        args.workers = [int(x) for x in args.workers.split(",") if x.strip()]
        args.concurrency = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        parser.error("--workers and --concurrency: comma-separated whole numbers")
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if any(p not in ("throughput", "latency", "recovery", "estimate") for p in args.phases):
        parser.error("--phases: choose from throughput, latency, recovery, estimate")
    if min(args.runs, args.rounds, args.latency_samples, args.kills, *args.workers, *args.concurrency) < 1:
        parser.error("counts must be at least 1")
    if args.nodes * args.nap < 1.5:
        parser.error("a recovery run must last at least 1.5 s (--nodes x --nap)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the clean-ups: workers, then the database

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    figures: dict[str, Any] = {}
    missed = 0
    with tempfile.TemporaryDirectory(prefix="wfkit-bench-workers-") as tmp:
        scratch = Path(tmp)
        site = scratch / "site"
        declare_plugin(site)
        logs = args.logs or scratch / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # this process executes the in-process side and submits: the same plugin, the same settings
        for key in [k for k in os.environ if k.startswith("WFKIT_")]:
            del os.environ[key]
        os.environ["WFKIT_LOAD_PLUGINS"] = PLUGIN_NAME
        sys.path.insert(0, str(site))
        import procrastinate
        import psycopg

        from wfkit.store import queue

        with throwaway_database(args.postgres_url) as url:
            db = Db(url)
            server = Server(db.conn)
            ctx = {"url": url, "db": db, "server": server, "env": worker_env(site, url), "logs": logs,
                   "runs": args.runs, "vacuum": args.vacuum}
            try:
                version = db.one("SHOW server_version")[0]
                settings = dict(db.all("SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', "
                                       "'autovacuum', 'shared_buffers', 'max_wal_size', 'full_page_writes')"))
                print(f"# wfkit workers benchmark: python {platform.python_version()}, PostgreSQL {version}, "
                      f"Procrastinate {procrastinate.__version__ if hasattr(procrastinate, '__version__') else queue.version()}, "
                      f"psycopg {psycopg.__version__}, {os.cpu_count()} CPUs; seed {seed}")
                print(f"# server settings: {', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}; "
                      f"pg_waldump: {'yes' if server.waldump else 'no (no commit counts)'}")
                tp_summary = None
                if "throughput" in args.phases:
                    tp = throughput(args, ctx)
                    tp_summary = report_throughput(tp, args.quiet_pct)
                    figures["throughput"] = {"summary": tp_summary, "batches": tp["batches"]}
                if "estimate" in args.phases:
                    figures["estimate"] = estimate(ctx, tp_summary)
                if "latency" in args.phases:
                    figures["latency"] = lat = latency(args, ctx, rng)
                    missed += not lat["pass"]
                if "recovery" in args.phases:
                    figures["recovery"] = rec = recovery(args, ctx, rng)
                    missed += not rec["pass"]
            finally:
                stop_all()
                db.close()
        problems = worker_log_problems(logs)
        figures["worker_log_problems"] = problems
        print(f"\n## The workers' logs: {len(problems)} lines on stderr or reporting a problem"
              + (" (below)" if problems else ""))
        for line in problems[:40]:
            print(f"  {line}")
        if len(problems) > 40:
            print(f"  ... and {len(problems) - 40} more (--logs DIR keeps them)")
    if args.json:
        meta = {"date": datetime.now().isoformat(timespec="seconds"), "seed": seed, "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({"meta": meta, **figures}, indent=1, default=str))
        log(f"figures written to {args.json}")
    print(f"\n{missed} of {('latency' in args.phases) + ('recovery' in args.phases)} targets missed")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
