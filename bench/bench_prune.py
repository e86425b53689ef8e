"""How fast does `prune_runs` delete, and what does it cost the runs being executed meanwhile?

Seeds N runs (bench_repository.py's helpers: one run a minute going back from now, statuses
spread evenly, one run in ten with 5 stages, 4 decisions and a checkpoint; the SQLite file
bench/bench_<runs>.db is kept with --keep / --reuse and copied for each prune, PostgreSQL is a
throwaway database seeded with COPY), then, per engine:

  writer   a separate process executing runs of a 5-node chain workflow with the real Executor
           (durability sync, the default), one after another, timing each step: the time from one
           step's commit being reported to the next one's (its nodes do nothing, so that is the
           step's write: its wait for the lock, and its commit). It runs alone for --baseline
           seconds first ("before"), then throughout the prune ("during").
  prune    prune_runs(older_than=--older-than) in this process: every finished run that ended more
           than 30 days ago (at 1M runs: 573,602 runs of 1,000,000, with their ~287,000 stages,
           ~230,000 decisions, ~57,000 checkpoints), --batch-size runs per transaction.

Printed: runs deleted, the prune's time and runs/s, batches; the writer's step latency p50, p99
and max before and during the prune (max during: the longest a step waited, the "peak lock
wait"), its steps per second, and whether it committed throughout (the longest time with no
step committed) and met no error.

    python bench/bench_prune.py [--runs 1000000] [--engines sqlite,postgresql] [--reuse | --keep]
        [--batch-size 1000] [--older-than 30d] [--baseline 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
NODES = 5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


# --------------------------------------------------------------------------- the writer process


def chain(graph: Any, _runtime: Any, _params: Any) -> dict[str, Any]:
    from wfkit.graph import END

    for i in range(NODES):
        graph.add_node(f"n{i}", lambda s, i=i: {"count": s["count"] + 1})
        graph.add_edge(f"n{i}", f"n{i + 1}" if i + 1 < NODES else END)
    graph.set_entry_point("n0")
    return {"count": 0}


def writer(url: str, out_path: str) -> None:
    """Execute chain runs until SIGTERM; write one line per step commit: (wall time, seconds since
    the previous commit of the same run), and a line per error."""
    from wfkit.events import RunCompleted, RunStarted, StageCompleted
    from wfkit.executor import Executor
    from wfkit.registry import Registry

    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    registry = Registry()
    registry.register("bench-chain", chain, description="5 nodes in a line, each doing nothing")
    out = open(out_path, "w", buffering=1)
    last = [0.0]

    class Timer:
        def on_event(self, event: Any) -> None:
            now = time.perf_counter()
            if isinstance(event, RunStarted):
                last[0] = now
            elif isinstance(event, (StageCompleted, RunCompleted)):
                out.write(f"{time.time():.6f} {now - last[0]:.6f}\n")
                last[0] = now

    with Executor(url, registry=registry, observers=[Timer()]) as executor:
        out.write("ready\n")
        while not stop:
            started = time.perf_counter()
            try:
                executor.execute("bench-chain", {})
            except Exception as err:  # noqa: BLE001 - every error is counted, and the writer goes on
                out.write(f"error {time.time():.6f} {time.perf_counter() - started:.3f} {err}\n".replace("\n", " ")
                          + "\n")
    out.close()


def read_writer(path: Path) -> tuple[list[tuple[float, float]], list[str]]:
    steps, errors = [], []
    for line in path.read_text().splitlines():
        if line.startswith("error"):
            errors.append(line)
        elif line and line != "ready":
            at, took = line.split()
            steps.append((float(at), float(took)))
    return steps, errors


# --------------------------------------------------------------------------- one engine


def measure(backend: str, url: str, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    from wfkit.store.retention import prune_runs

    out_path = scratch / f"writer-{backend}.txt"
    proc = subprocess.Popen([sys.executable, __file__, "--writer", url, "--writer-out", str(out_path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out_path.exists() and out_path.read_text().startswith("ready")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the writer did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)
        time.sleep(2)  # its first runs warm it up
        before_start = time.time()
        time.sleep(args.baseline)
        prune_start = time.time()
        log(f"{backend}: pruning (older than {args.older_than}, batches of {args.batch_size})")
        result = prune_runs(url, older_than=args.older_than, batch_size=args.batch_size)
        prune_end = time.time()
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    steps, errors = read_writer(out_path)
    before = [took for at, took in steps if before_start <= at < prune_start]
    during = [took for at, took in steps if prune_start <= at < prune_end]
    commits = [before_start] + [at for at, _ in steps if before_start <= at < prune_end] + [prune_end]
    gap = max(b - a for a, b in zip(commits, commits[1:]))
    return {"deleted": result.deleted, "batches": result.batches, "seconds": result.seconds,
            "rate": result.deleted / result.seconds if result.seconds else 0.0,
            "before": before, "during": during, "before_s": prune_start - before_start,
            "during_s": prune_end - prune_start, "gap": gap, "errors": errors}


def database(backend: str, args: argparse.Namespace, scratch: Path) -> Any:
    import contextlib

    import bench_repository as rb

    if backend == "postgresql":
        return rb.postgres_database(args.postgres_url, args.runs)

    @contextlib.contextmanager
    def copied() -> Any:
        with rb.sqlite_database(args.runs, args.keep, args.reuse) as seeded:
            import sqlite3

            source = Path(seeded.removeprefix("sqlite:///"))
            with sqlite3.connect(source) as conn:  # everything in the main file, then copy that
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            target = scratch / "prune.db"
            shutil.copyfile(source, target)
            yield f"sqlite:///{target}"

    return copied()


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get("WFKIT_TEST_POSTGRES_URL",
                                                                  "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--older-than", default="30d")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--baseline", type=float, default=10.0, help="seconds the writer runs alone first")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    parser.add_argument("--writer-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        writer(args.writer, args.writer_out)
        return 0
    from wfkit.store.retention import DEFAULT_BATCH_SIZE

    args.batch_size = args.batch_size or DEFAULT_BATCH_SIZE
    sys.path.insert(0, str(BENCH_DIR))
    print(f"# wfkit prune benchmark: {args.runs:,} runs, prune older than {args.older_than}, batches of "
          f"{args.batch_size:,}; python {platform.python_version()}, {os.cpu_count()} CPUs")
    print("\n| engine | runs deleted | prune time | runs/s | batches | writer steps/s before / during | "
          "step p50 before / during | step p99 before / during | step max before / during | longest time with "
          "no commit | writer errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="wfkit-bench-prune-") as tmp:
        for backend in args.engines.split(","):
            with database(backend, args, Path(tmp)) as url:
                r = measure(backend, url, args, Path(tmp))
            b, d = r["before"], r["during"]
            print(f"| {backend} | {r['deleted']:,} | {r['seconds']:.1f} s | {r['rate']:,.0f} | {r['batches']:,} | "
                  f"{len(b) / r['before_s']:.0f} / {len(d) / r['during_s']:.0f} | "
                  f"{ms(statistics.median(b))} / {ms(statistics.median(d))} | "
                  f"{ms(percentile(b, 99))} / {ms(percentile(d, 99))} | {ms(max(b))} / {ms(max(d))} | "
                  f"{ms(r['gap'])} | {len(r['errors'])} |", flush=True)
            for line in r["errors"][:5]:
                log(f"{backend}: writer error: {line}")
            failed += bool(r["errors"]) or not d
    verdict = "pass" if not failed else "MISSED"
    print(f"\ntarget: the writer keeps committing steps throughout every prune, with no error: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
