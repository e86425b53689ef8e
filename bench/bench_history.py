"""How large is a run's history? Bytes stored per run, against the state's size, on SQLite and PostgreSQL.

Workload: a 1,000-step loop over a 100 KB state (``blob``: 100,000 characters of random base64,
so that compression flatters no side; ``n``: the step counter). Two kinds of node:

  small  returns only what it changes: {"n": n + 1}
  whole  returns the whole state with one key changed: {**state, "n": n + 1} (common: LangGraph's
         examples and many users' nodes do this)

Sides, each measured in the same run, in turns:

  full snapshots   every stage stores its whole input state and its node's whole return (what a
                   history of "input and output snapshots" costs naively; computed from the
                   stages that get_stages returns, as compact JSON)
  wfkit before        each stage's input is a reference to the stage before it (input_from), its
                   output the node's whole return: measured by running wfkit with the elision of
                   unchanged keys turned off (this script patches it out)
  wfkit now        the same, plus only the updates whose JSON text changed are stored
                   (stages.output_unchanged names the others)

Bytes are those of the JSON values as the database stores them: on SQLite the JSON text
(LENGTH), on PostgreSQL the jsonb values as stored (pg_column_size, after TOAST compression), plus
the growth of the database on disk per run (SQLite file pages; PostgreSQL pg_total_relation_size
of stages, decisions and checkpoints).

Target (issue 15): a 1,000-step loop over a 100 KB state stores well under 10x the state.

    python bench/bench_history.py [--steps 1000] [--size 100000] [--rounds 3] [--engines sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sqlalchemy as sa  # noqa: E402

from wfkit import jsontext  # noqa: E402
from wfkit.executor import Executor, run_loop  # noqa: E402
from wfkit.jsontext import dumps  # noqa: E402
from wfkit.registry import Registry  # noqa: E402
from wfkit.store import migrations  # noqa: E402
from wfkit.store.db import create_engine  # noqa: E402
from wfkit.store.repository import Repository  # noqa: E402


def workflows(steps: int, size: int) -> Registry:
    blob = base64.b64encode(os.urandom(size))[:size].decode()

    def loop(update: Any) -> Any:
        def factory(graph: Any, runtime: Any, params: Any) -> dict[str, Any]:
            graph.add_node("tick", update)
            graph.set_entry_point("tick")
            graph.add_edge("tick", "tick", when=lambda s: s["n"] < steps, name="more")
            graph.set_finish_point("tick")
            graph.set_max_iterations(steps + 1)
            return {"n": 0, "blob": blob}

        return factory

    reg = Registry()
    reg.register("small", loop(lambda s: {"n": s["n"] + 1}))
    reg.register("whole", loop(lambda s: {**s, "n": s["n"] + 1}))
    return reg


def _all_changed(updates: Any, texts: dict[str, str], where: str) -> tuple[str, None]:
    """wfkit before's way: every key of the node's updates is stored."""
    for key, value in updates.items():
        texts[key] = jsontext.check_json(value, check_depth=False)
    return jsontext.dumps_state(updates, where), None


def stored_bytes(engine: sa.Engine, run_id: uuid.UUID) -> int:
    sqlite = engine.dialect.name == "sqlite"
    size = "LENGTH({})" if sqlite else "pg_column_size({})"
    rid = run_id.hex if sqlite else run_id
    with engine.connect() as conn:
        total = 0
        for table, columns in (("stages", ("input_snapshot", "output_snapshot", "output_unchanged")),
                               ("checkpoints", ("state_data",))):
            parts = " + ".join(f"COALESCE(SUM({size.format(c)}), 0)" for c in columns)
            total += int(conn.execute(sa.text(f"SELECT {parts} FROM {table} WHERE run_id = :r"), {"r": rid}).scalar())
        return total


def disk_bytes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() - conn.exec_driver_sql(
                "PRAGMA freelist_count").scalar()
            return int(pages * conn.exec_driver_sql("PRAGMA page_size").scalar())
        return int(conn.exec_driver_sql(
            "SELECT pg_total_relation_size('stages') + pg_total_relation_size('decisions') + "
            "pg_total_relation_size('checkpoints')").scalar())


def full_snapshots(engine: sa.Engine, run_id: uuid.UUID) -> int:
    return sum(len(dumps(s.input_snapshot).encode()) + len(dumps(s.output_snapshot).encode())
               for s in Repository(engine).get_stages(run_id))


def database(engine_name: str, admin_url: str, tmp: Path) -> tuple[str, Any]:
    name = f"wfkit_bench_history_{uuid.uuid4().hex[:8]}"
    if engine_name == "sqlite":
        return f"sqlite:///{tmp / (name + '.db')}", None
    admin = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return sa.make_url(admin.url).set(database=name).render_as_string(hide_password=False), drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100_000, help="characters of the state's blob")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each kind and side (medians)")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    reg = workflows(args.steps, args.size)
    state_bytes = args.size + 20
    misses = 0
    print(f"{args.steps}-step loop over a {args.size / 1000:.0f} KB state; bytes per run, and x the state's size "
          f"(medians of {args.rounds})\n")
    with tempfile.TemporaryDirectory() as tmp:
        for engine_name in args.engines.split(","):
            url, drop = database(engine_name, args.postgres_url, Path(tmp))
            try:
                migrations.upgrade(url)
                engine = create_engine(url)
                executor = Executor(engine, registry=reg)
                measured: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
                naive: dict[str, list[int]] = {}
                for _ in range(args.rounds):
                    for kind in ("small", "whole"):
                        for side in ("wfkit before", "wfkit now"):  # in turns
                            run_loop.changed_texts = _all_changed if side == "wfkit before" else jsontext.changed_texts
                            before = disk_bytes(engine)
                            t0 = time.perf_counter()
                            run = executor.execute(kind)
                            seconds = time.perf_counter() - t0
                            assert run.status.value == "completed", run.error_message
                            measured.setdefault((kind, side), []).append(
                                (stored_bytes(engine, run.id), disk_bytes(engine) - before, seconds))
                            if side == "wfkit now":
                                naive.setdefault(kind, []).append(full_snapshots(engine, run.id))
                run_loop.changed_texts = jsontext.changed_texts
                print(f"## {engine_name}\n")
                print("| node returns | side | JSON bytes per run | x state | on disk per run | x state | run time s |")
                print("|---|---|---:|---:|---:|---:|---:|")
                for kind in ("small", "whole"):
                    full = statistics.median(naive[kind])
                    print(f"| {kind} | full snapshots (computed) | {full:,.0f} | {full / state_bytes:,.1f} | | | |")
                    for side in ("wfkit before", "wfkit now"):
                        rows = measured[(kind, side)]
                        json_b = statistics.median(r[0] for r in rows)
                        disk_b = statistics.median(r[1] for r in rows)
                        secs = statistics.median(r[2] for r in rows)
                        print(f"| {kind} | {side} | {json_b:,.0f} | {json_b / state_bytes:,.2f} | {disk_b:,.0f} | "
                              f"{disk_b / state_bytes:,.2f} | {secs:.2f} |")
                        if side == "wfkit now" and max(json_b, disk_b) >= 10 * state_bytes:
                            misses += 1
                print()
                executor.close() if hasattr(executor, "close") else None
                engine.dispose()
            finally:
                if drop is not None:
                    drop()
    print("target: well under 10x the state per run (wfkit now, both kinds, both engines):",
          "PASS" if not misses else f"MISS ({misses})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
