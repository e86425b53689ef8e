"""A run's checkpoint: the engine's own :class:`~wfkit.graph.Snapshot`, as it is stored. The format
lives here and nowhere else.

After a node completes, the executor saves where the walk stands (``Walker.snapshot()``) in the
run's row of the ``checkpoints`` table, and a resume rebuilds the walk from it
(``Walker.from_snapshot``), so that completed nodes do not run again. ``state_data`` holds the
snapshot's JSON form plus the format's number::

    {"state": {...}, "next_node": "review", "counters": {"draft": 1}, "format": 1}

(``next_node`` is null once the walk reached END). ``checkpoint_node`` holds the node just completed.
The store writes and reads this as opaque JSON; only this module knows its shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wfkit.errors import CheckpointError, NotFoundError
from wfkit.graph import Snapshot
from wfkit.jsontext import dumps, dumps_state

if TYPE_CHECKING:
    from wfkit.store.repository import Repository

#: The version of the layout of ``checkpoints.state_data`` that this wfkit writes and reads.
FORMAT = 1


def encode(snapshot: Snapshot, state_json: str | None = None) -> str:
    """The JSON text stored for ``snapshot``.

    ``state_json`` is its state already encoded (the run loop has it at hand, as the next stage's
    input), spliced in rather than encoded a second time. Without it the state is encoded here,
    and :class:`~wfkit.errors.StateNotSerializableError` names the key that cannot be stored.
    """
    fields = snapshot.to_dict()
    state = fields.pop("state")
    if state_json is None:
        state_json = dumps_state(state, "the checkpoint's state")
    rest = dumps({**fields, "format": FORMAT})
    return f'{{"state":{state_json},{rest[1:]}'


def decode(state_data: Mapping[str, Any], run_id: uuid.UUID | str | None = None) -> Snapshot:
    """The snapshot stored as ``state_data`` (of run ``run_id``, for messages);
    :class:`~wfkit.errors.CheckpointError` if it is not in this wfkit's format."""
    what = "the checkpoint" if run_id is None else f"the checkpoint of run {run_id}"
    found = state_data.get("format") if isinstance(state_data, Mapping) else None
    if found is None:
        raise CheckpointError(
            f"{what} was not written by wfkit's executor (it has no format number; synthetic history, "
            "such as `python -m wfkit.store.seed` writes, has none): it cannot be resumed"
        )
    if found != FORMAT:
        raise CheckpointError(
            f"{what} is in format {found!r}; this wfkit reads format {FORMAT} "
            "(resume the run with the wfkit that wrote it, or start a new run)"
        )
    try:
        return Snapshot.from_dict(state_data)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{what} is damaged: {type(err).__name__}: {err}") from None


def load(repository: Repository, run_id: uuid.UUID) -> Snapshot | None:
    """The snapshot a run last saved, or None if it saved none (it starts from its beginning)."""
    try:
        row = repository.find_checkpoint(run_id)
    except NotFoundError:
        return None
    return decode(row.state_data, run_id)
