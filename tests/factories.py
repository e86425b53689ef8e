"""Helpers that write history rows for tests (the repository itself never writes)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from wfkit.executor import checkpoints
from wfkit.graph import Snapshot
from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, StageStatus, utcnow
from wfkit.store.repository import Repository

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=utcnow().tzinfo)


def add(engine: sa.Engine, *rows: Any) -> None:
    with Session(engine, expire_on_commit=False) as session:
        session.add_all(rows)
        session.commit()


def make_run(**fields: Any) -> Run:
    fields.setdefault("workflow_name", "demo")
    fields.setdefault("status", RunStatus.PENDING)
    fields.setdefault("created_at", utcnow())
    fields.setdefault("updated_at", fields["created_at"])
    return Run(**fields)


def add_runs(engine: sa.Engine, count: int, **fields: Any) -> list[Run]:
    """``count`` runs one second apart from T0 (oldest first), sharing ``fields``."""
    runs = [make_run(created_at=T0 + timedelta(seconds=i), **fields) for i in range(count)]
    add(engine, *runs)
    return runs


def add_history(engine: sa.Engine, run: Run, nodes: list[str]) -> tuple[list[Stage], list[Decision]]:
    """Stages for ``nodes`` (in order) and a decision between each pair, plus a checkpoint."""
    stages, decisions = [], []
    at = run.created_at
    for i, node in enumerate(nodes):
        stages.append(
            Stage(run_id=run.id, node_name=node, iteration=1, status=StageStatus.COMPLETED,
                  input_snapshot={"i": i}, output_snapshot={"i": i + 1}, duration_ms=1.5, created_at=at)
        )
        at += timedelta(milliseconds=10)
        if i + 1 < len(nodes):
            decisions.append(
                Decision(run_id=run.id, from_node=node, to_node=nodes[i + 1], predicate_name=f"p{i}",
                         predicate_result=True, reason=f"step {i}", created_at=at)
            )
    add(engine, *stages, *decisions, Checkpoint(run_id=run.id, state_data={"i": len(nodes)}, checkpoint_node=nodes[-1]))
    return stages, decisions


def saved_checkpoint(engine_or_url: Any, run_id: uuid.UUID) -> tuple[str | None, Snapshot]:
    """The node a run's checkpoint was saved after, and the snapshot saved, read as a resume reads them."""
    repo = Repository(engine_or_url)
    return repo.find_checkpoint(run_id).checkpoint_node, checkpoints.load(repo, run_id).snapshot


def count(engine: sa.Engine, model: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def wait_for(path: Any, proc: Any, seconds: float = 30) -> None:
    """Wait until ``path`` exists (a marker the fixture plugin ``steps`` drops), while ``proc`` runs."""
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.02)


def only_run(db_url: str) -> Any:
    """The one run of a database."""
    page = Repository(db_url).list_runs()
    assert page.total == 1
    return page.data[0]


def picky_registry(name: str = "picky") -> Any:
    """A registry with one one-node workflow whose factory refuses ``{"bad": true}`` (ValueError
    "bad must be false"): a factory that fails on the params it is given."""
    from wfkit.registry import Registry

    def factory(g: Any, rt: Any, p: Any) -> dict[str, Any]:
        if p.get("bad"):
            raise ValueError("bad must be false")
        g.add_node("a", lambda s: {"n": 1})
        g.set_entry_point("a")
        g.set_finish_point("a")
        return {"n": 0}

    registry = Registry()
    registry.register(name, factory)
    return registry
