"""The ``workers`` table: the ``wfkit worker`` processes sharing a PostgreSQL database.

A worker writes its row as it starts (:func:`register`), refreshes its heartbeat while it runs
(:func:`heartbeat`, by the database's clock; it writes the row again if it was pruned) and deletes
its row when it stops (:func:`unregister`). The row of a worker that died stays, silent, until the
workers' recovery prunes it (:func:`prune`): once it has been silent for the time the recovery is
given (``dead_seconds``) and holds no pending or running run. :func:`list_workers` is what ``wfkit workers``
shows: each worker with the runs it holds (the running runs whose ``owner`` is its id).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wfkit.store.db import translate_errors


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as ``wfkit workers`` shows it."""

    id: str  # the owner its runs are held by
    name: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    alive: bool  # heard from within its lease (else it stopped without saying so, or stalls)
    runs: int  # the running runs it holds

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("started_at", "last_heartbeat"):
            out[key] = out[key].isoformat().replace("+00:00", "Z")
        return out


def register(engine: Engine, worker_id: str, *, name: str, host: str, pid: int, queues: Sequence[str],
             concurrency: int, lease_seconds: float) -> None:
    """Write the worker's row, or refresh the heartbeat of the row it has. ``lease_seconds``: how
    long it may be silent and still be alive (it heartbeats a few times within it)."""
    with translate_errors(engine), engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO workers (id, name, host, pid, queues, concurrency, started_at, last_heartbeat, lease_seconds) "
            "VALUES (:id, :name, :host, :pid, CAST(:queues AS jsonb), :concurrency, now(), now(), :lease) "
            "ON CONFLICT (id) DO UPDATE SET last_heartbeat = now()"),
            {"id": worker_id, "name": name, "host": host, "pid": pid, "queues": json.dumps(list(queues)),
             "concurrency": concurrency, "lease": lease_seconds})


def heartbeat(engine: Engine, worker_id: str, **registration: Any) -> None:
    """Refresh the worker's heartbeat; a worker whose row was pruned meanwhile (it was stopped for
    longer than the recovery allows, then went on) writes it again (``registration``: what
    :func:`register` takes), so that the runs it takes from now on are known to be a worker's."""
    register(engine, worker_id, **registration)


def unregister(engine: Engine, worker_id: str) -> None:
    with translate_errors(engine), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM workers WHERE id = :id"), {"id": worker_id})


def prune(conn: Any, silent_seconds: float) -> int:
    """Delete the rows of workers silent for ``silent_seconds`` that hold no pending or running run
    any more (the recovery handed them on); how many. On the caller's connection."""
    return conn.execute(sa.text(
        "DELETE FROM workers w WHERE w.last_heartbeat < now() - :s * interval '1 second' AND NOT EXISTS "
        "(SELECT 1 FROM runs r WHERE r.status IN ('pending', 'running') AND r.owner = w.id)"),
        {"s": silent_seconds}).rowcount


def list_workers(engine: Engine, *, silent_seconds: float) -> list[WorkerInfo]:
    """Every worker with a row, oldest first; ``alive`` if heard from within its own lease (or
    ``silent_seconds``, for a row that does not say)."""
    with translate_errors(engine), engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT w.id, w.name, w.host, w.pid, w.queues, w.concurrency, w.started_at, w.last_heartbeat, "
            "w.last_heartbeat >= now() - COALESCE(w.lease_seconds, :s) * interval '1 second', "
            "(SELECT count(*) FROM runs r WHERE r.status = 'running' AND r.owner = w.id) "
            "FROM workers w ORDER BY w.started_at, w.id"), {"s": silent_seconds}).all()
    return [WorkerInfo(*row[:4], list(row[4] or []), *row[5:8], bool(row[8]), int(row[9])) for row in rows]
