"""Checkpoint stores: where a run's resumable state is kept.

A checkpoint is saved after a node completes: the state, the node just
completed, and ``meta`` with what resume needs (the next node and the
per-node iteration counters). One checkpoint per run: a new save replaces
the last.

- :class:`CheckpointStore`: the protocol (``save``, ``load``, ``delete``, ``list``).
- :class:`MemoryCheckpointStore`: in a dict, for tests and in-memory use.
- :class:`SqlCheckpointStore`: the ``checkpoints`` table. (The executor writes
  checkpoints through :class:`wfkit.store.recorder.SqlRecorder` instead, in the same
  transaction as the stage and decision they follow; both use the same rows.)
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable

from wfkit.ids import parse_uuid
from wfkit.jsontext import dumps_state


@dataclass(frozen=True, slots=True)
class SavedCheckpoint:
    """A stored checkpoint: the run, the node last completed, the state and the resume metadata."""

    run_id: uuid.UUID
    node: str | None
    state: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None

    def to_state_data(self) -> dict[str, Any]:
        """The JSON stored in ``checkpoints.state_data``."""
        return {"state": self.state, **self.meta}

    @classmethod
    def from_row(cls, run_id: uuid.UUID, node: str | None, state_data: Mapping[str, Any],
                 updated_at: datetime | None = None) -> SavedCheckpoint:
        data = dict(state_data or {})
        state = data.pop("state", {})
        return cls(run_id, node, dict(state or {}), data, updated_at)


def checkpoint_json(run_id: Any, state: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """A checkpoint's ``state_data`` as the JSON text stored, or
    :class:`~wfkit.errors.StateNotSerializableError` naming what cannot be stored."""
    dumps_state(state, f"the checkpoint state of run {run_id}")  # names the state's key, not "state"
    return dumps_state({"state": dict(state), **meta}, f"the checkpoint meta of run {run_id}")


@runtime_checkable
class CheckpointStore(Protocol):
    """Keeps the latest checkpoint of each run."""

    def save(self, run_id: uuid.UUID | str, node: str | None, state: Mapping[str, Any],
             meta: Mapping[str, Any] | None = None) -> None: ...

    def load(self, run_id: uuid.UUID | str) -> SavedCheckpoint | None: ...

    def delete(self, run_id: uuid.UUID | str) -> bool: ...

    def list(self) -> list[uuid.UUID]: ...


class MemoryCheckpointStore:
    """Checkpoints in a dict (thread-safe). Nothing survives the process."""

    def __init__(self) -> None:
        self._data: dict[uuid.UUID, SavedCheckpoint] = {}
        self._lock = threading.Lock()

    def save(self, run_id: uuid.UUID | str, node: str | None, state: Mapping[str, Any],
             meta: Mapping[str, Any] | None = None) -> None:
        rid = parse_uuid(run_id)
        checkpoint_json(rid, state, meta or {})  # what the SQL store could not store, this one refuses too
        with self._lock:
            self._data[rid] = SavedCheckpoint(rid, node, dict(state), dict(meta or {}), datetime.now(timezone.utc))

    def load(self, run_id: uuid.UUID | str) -> SavedCheckpoint | None:
        with self._lock:
            return self._data.get(parse_uuid(run_id))

    def delete(self, run_id: uuid.UUID | str) -> bool:
        with self._lock:
            return self._data.pop(parse_uuid(run_id), None) is not None

    def list(self) -> list[uuid.UUID]:
        with self._lock:
            return sorted(self._data)


class SqlCheckpointStore:
    """Checkpoints in the ``checkpoints`` table (one row per run; the run must exist)."""

    def __init__(self, engine_or_url: Any = None):
        from wfkit.store.db import as_engine

        self.engine = as_engine(engine_or_url)

    def save(self, run_id: uuid.UUID | str, node: str | None, state: Mapping[str, Any],
             meta: Mapping[str, Any] | None = None) -> None:
        from wfkit.store.recorder import SqlRecorder

        with SqlRecorder(self.engine) as recorder:
            recorder.save_checkpoint(parse_uuid(run_id), node, state, meta or {})
            recorder.commit()

    def load(self, run_id: uuid.UUID | str) -> SavedCheckpoint | None:
        from sqlalchemy.orm import Session

        from wfkit.store.db import translate_errors
        from wfkit.store.models import Checkpoint

        rid = parse_uuid(run_id)
        with translate_errors(self.engine), Session(self.engine) as session:
            row = session.get(Checkpoint, rid)
            if row is None:
                return None
            return SavedCheckpoint.from_row(rid, row.checkpoint_node, row.state_data, row.updated_at)

    def delete(self, run_id: uuid.UUID | str) -> bool:
        import sqlalchemy as sa

        from wfkit.store.db import translate_errors
        from wfkit.store.models import Checkpoint

        with translate_errors(self.engine), self.engine.begin() as conn:
            result = conn.execute(sa.delete(Checkpoint).where(Checkpoint.run_id == parse_uuid(run_id)))
        return result.rowcount > 0

    def list(self) -> list[uuid.UUID]:
        import sqlalchemy as sa

        from wfkit.store.db import translate_errors
        from wfkit.store.models import Checkpoint

        with translate_errors(self.engine), self.engine.connect() as conn:
            return list(conn.execute(sa.select(Checkpoint.run_id).order_by(Checkpoint.run_id)).scalars())
