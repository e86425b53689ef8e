"""wfkit on the peer engines' workloads, in their JSON line format, and the whole comparison in one sitting.

The peer scripts (LangGraph, Burr, ... in the workplace's ``shared/peers/``, not in this repository)
each print one JSON line per (engine, backend, workload) with microseconds per node step, rows
per run and, on PostgreSQL, the server's commits and WAL bytes per run. This script prints the same
line for wfkit, so that one summary (``summarize.py`` there) covers both:

    python bench/bench_peers.py one --backend postgres --workload chain10 --durability sync --tag set1

and runs everything interleaved, set after set, so that every engine meets the same stretch of
this machine's drift (the fsync probe first in each set):

    python bench/bench_peers.py sitting --peers DIR --peers-python VENV/bin/python --sets 5 --out results.jsonl

Workloads: ``chain10`` (n0..n9 in a line; state {count, log}; each node adds one to count and
appends a 64-character string to log) and ``loop50`` (``work`` loops while the predicate
``count_below_limit`` holds, then ``done``: 51 steps). wfkit runs them with ``Executor.execute``,
``durability="sync"`` (engine ``wfkit[durable]``: as durable as the peers' SQLite and PostgreSQL
savers) or ``"async"`` (engine ``wfkit``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STEPS = {"chain10": 10, "loop50": 51}
DEFAULT_RUNS = {"chain10": 200, "loop50": 40}


def registry():
    """chain10 and loop50, as bench_executor.py defines them (the same workloads everywhere)."""
    from bench_executor import registry as workloads

    return workloads()


def pg_server_stats(url: str) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        x = conn.execute("SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database "
                         "WHERE datname = current_database()").fetchone()
        w = conn.execute("SELECT wal_records, wal_bytes, wal_write, wal_sync FROM pg_stat_wal").fetchone()
    return {"xact_commit": x[0], "tup_inserted": x[1], "tup_updated": x[2], "wal_records": w[0],
            "wal_bytes": int(w[1]), "wal_write": w[2], "wal_sync": w[3]}


def rows_now(engine) -> dict:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return {table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                for table in ("runs", "stages", "decisions", "checkpoints")}


def one(args: argparse.Namespace) -> dict:
    """One JSON line: wfkit on one backend and workload (a fresh database), warm-up then timed runs."""
    from importlib.metadata import version

    from wfkit.executor import Executor
    from wfkit.store import migrations
    from wfkit.store.db import create_engine

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    dropped = None
    if args.backend == "sqlite":
        path = scratch / f"wfkit_{args.workload}_{args.durability}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        import psycopg

        admin = args.pg_url
        name = f"wfkit_peers_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + "/" + name
        dropped = (admin, name)
    try:
        migrations.upgrade(url)
        engine = create_engine(url)
        executor = Executor(engine, registry=registry(), durability=args.durability)
        steps = STEPS[args.workload]
        runs = args.n or DEFAULT_RUNS[args.workload]
        pg_before = pg_server_stats(url) if args.backend == "postgres" else None
        for _ in range(args.warmup):
            executor.execute(args.workload)
        before = rows_now(engine)
        times = []
        t_start = time.perf_counter()
        for _ in range(runs):
            t0 = time.perf_counter()
            run = executor.execute(args.workload)
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - t_start
        assert run.status.value == "completed" and run.result["count"] == (10 if args.workload == "chain10" else 50)
        after = rows_now(engine)
        rows = {table: (after[table] - before[table]) / runs for table in after}
        rows["total"] = sum(rows.values())
        with executor._recorder() as recorder:
            settings = recorder.durability_settings()
        executor.close()
        engine.dispose()
        times.sort()
        out = {
            "engine": "wfkit[durable]" if args.durability == "sync" else "wfkit",
            "engine_version": version("wfkit"), "backend": args.backend, "workload": args.workload,
            "tag": args.tag, "persistence": f"Executor.execute(), durability={args.durability}",
            "steps_per_run": steps, "warmup": args.warmup, "n_requested": runs, "n": runs,
            "total_s": round(total, 6), "runs_per_s": round(runs / total, 3),
            "steps_per_s": round(runs * steps / total, 1), "us_per_step": round(total / (runs * steps) * 1e6, 2),
            "run_ms_p50": round(times[len(times) // 2] * 1e3, 4),
            "run_ms_p95": round(times[min(len(times) - 1, int(len(times) * 0.95))] * 1e3, 4),
            "rows_per_run": rows, "rows_per_step": round(rows["total"] / steps, 3),
            "python": platform.python_version(), "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if args.backend == "sqlite":
            out.update(sqlite_journal_mode=settings["journal_mode"], sqlite_synchronous=settings["synchronous"].upper())
        else:
            out["pg_synchronous_commit"] = settings["synchronous_commit"]
            time.sleep(1.0)  # a backend flushes its statistics as it exits
            after_pg = pg_server_stats(url)
            out["pg_per_run_approx"] = {k: round((after_pg[k] - pg_before[k]) / (runs + args.warmup), 2)
                                        for k in after_pg}
        return out
    finally:
        if dropped is not None:
            import psycopg

            with psycopg.connect(dropped[0], autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dropped[1]}" WITH (FORCE)')


def sitting(args: argparse.Namespace) -> None:
    """Sets of every engine, backend and workload, interleaved; each line appended to ``--out``."""
    peers = Path(args.peers).resolve()
    out = Path(args.out)
    env = {**os.environ, "PEERS_SCRATCH": args.scratch, "PEERS_PG_URL": args.peers_pg_url}
    me = [sys.executable, str(Path(__file__).resolve()), "one", "--scratch", args.scratch, "--pg-url", args.pg_url]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for number in range(1, args.sets + 1):
        tag = f"set{number}"
        jobs = [[args.peers_python, str(peers / "fsync_probe.py"), args.scratch, tag]]
        for backend in args.backends.split(","):
            for workload in args.workloads.split(","):
                for engine in engines:
                    if engine.startswith("wfkit"):
                        mode = "sync" if engine == "wfkit[durable]" else "async"
                        jobs.append([*me, "--backend", backend, "--workload", workload, "--durability", mode,
                                     "--tag", tag])
                    else:
                        jobs.append([args.peers_python, str(peers / f"bench_{engine}.py"), "--backend", backend,
                                     "--workload", workload, "--tag", tag])
        for job in jobs:
            done = subprocess.run(job, capture_output=True, text=True, env=env)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                print(f"{' '.join(job[1:3])}: failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
                continue
            with out.open("a") as f:
                f.write(lines[-1] + "\n")
            doc = json.loads(lines[-1])
            print(f"{tag} {doc.get('engine'):16} {doc.get('backend', ''):8} {doc.get('workload', ''):8} "
                  f"{doc.get('us_per_step', doc.get('fsync_us_median', '')):>10}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    scratch = os.environ.get("PEERS_SCRATCH", os.path.join(tempfile.gettempdir(), "peers"))
    pg = os.environ.get("WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    p1 = sub.add_parser("one", help="one JSON line: wfkit on one backend and workload")
    p1.add_argument("--backend", required=True, choices=("sqlite", "postgres"))
    p1.add_argument("--workload", required=True, choices=sorted(STEPS))
    p1.add_argument("--durability", default="sync", choices=("sync", "async"))
    p1.add_argument("--n", type=int, default=None)
    p1.add_argument("--warmup", type=int, default=5)
    p1.add_argument("--tag", default="")
    p1.add_argument("--scratch", default=scratch)
    p1.add_argument("--pg-url", default=pg, help="an admin URL: a throwaway database is made there, then dropped")
    p2 = sub.add_parser("sitting", help="sets of wfkit and the peers, interleaved")
    p2.add_argument("--peers", required=True, help="the folder of the peer scripts")
    p2.add_argument("--peers-python", required=True, help="the Python that has the peers installed")
    p2.add_argument("--peers-pg-url", default=os.environ.get("PEERS_PG_URL", pg.rsplit("/", 1)[0] + "/peers"),
                    help="the database the peer scripts use (it must exist)")
    p2.add_argument("--engines", default="wfkit[durable],wfkit,burr,langgraph")
    p2.add_argument("--backends", default="sqlite,postgres")
    p2.add_argument("--workloads", default="chain10,loop50")
    p2.add_argument("--sets", type=int, default=5)
    p2.add_argument("--out", required=True)
    p2.add_argument("--scratch", default=scratch)
    p2.add_argument("--pg-url", default=pg)
    args = parser.parse_args()
    if args.command == "one":
        print(json.dumps(one(args)), flush=True)
    else:
        sitting(args)


if __name__ == "__main__":
    main()
