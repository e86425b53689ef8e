"""Synthetic run history, for the demo, the tests and the benchmarks.

``seed_history(engine, runs=1000)`` writes deterministic (seeded) runs spread
over :data:`WORKFLOW_NAMES` and every run status, one run a minute going back
from ``now``; one run in ten gets 5 stages and 4 decisions (and a checkpoint).
Rows go in through bulk Core inserts in batches, so a million runs is a
matter of minutes, not hours.

From a shell: ``python -m wfkit.seed --runs 200 [--database-url URL]``
(the database must be migrated first: ``wfkit db upgrade``).
"""

from __future__ import annotations

import argparse
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wfkit.db import engine_for, translate_errors
from wfkit.models import Checkpoint, Decision, Run, RunStatus, Stage, StageStatus, utcnow

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
            checkpoint = {
                "run_id": run_id,
                "state_data": state,
                "checkpoint_node": stages[-1]["node_name"] if not stages[-1]["error_message"] else stages[-2]["node_name"],
                "created_at": started,
                "updated_at": at,
            }
        yield run, stages, decisions, checkpoint


def seed_history(
    engine_or_url: Engine | str | None = None,
    runs: int = 1000,
    *,
    workflows: int = len(WORKFLOW_NAMES),
    detail_every: int = 10,
    seed: int = 0,
    now: datetime | None = None,
    batch_size: int = 5000,
) -> SeedSummary:
    """Insert ``runs`` synthetic runs (and their stages, decisions, checkpoints); return the counts."""
    rng = random.Random(seed)
    now = now or utcnow()
    tables = (Run.__table__, Stage.__table__, Decision.__table__, Checkpoint.__table__)
    totals = [0, 0, 0, 0]
    buffers: list[list[dict[str, Any]]] = [[], [], [], []]
    with engine_for(engine_or_url) as engine, translate_errors(engine):

        def flush(conn: sa.Connection) -> None:
            for k, table in enumerate(tables):
                if buffers[k]:
                    conn.execute(sa.insert(table), buffers[k])
                    totals[k] += len(buffers[k])
                    buffers[k] = []

        with engine.begin() as conn:
            for run, stages, decisions, checkpoint in _history(rng, runs, now, workflows, detail_every):
                buffers[0].append(run)
                buffers[1].extend(stages)
                buffers[2].extend(decisions)
                if checkpoint:
                    buffers[3].append(checkpoint)
                if len(buffers[0]) >= batch_size:
                    flush(conn)
            flush(conn)
    return SeedSummary(*totals)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wfkit.seed", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="how many runs to add (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--database-url", default=None, help="default: $WFKIT_DATABASE_URL, else the per-user SQLite file")
    args = parser.parse_args(argv)
    if args.runs < 0:
        parser.error(f"--runs must be at least 0, got {args.runs}")
    summary = seed_history(args.database_url, args.runs, seed=args.seed)
    print(
        f"added {summary.runs} runs, {summary.stages} stages, {summary.decisions} decisions, "
        f"{summary.checkpoints} checkpoints"
    )


if __name__ == "__main__":
    main()
