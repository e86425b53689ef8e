"""A run's checkpoint: the engine's own :class:`~wfkit.graph.Snapshot`, as it is stored. The format
lives here and nowhere else.

After a node completes, the executor saves where the walk stands (``Walker.snapshot()``) in the
run's row of the ``checkpoints`` table, and a resume rebuilds the walk from it
(``Walker.from_snapshot``), so that completed nodes do not run again. ``state_data`` holds the
snapshot's JSON form plus the format's number. The state is not written again when a stage row
already holds it: the checkpoint then names the stage just completed, whose input snapshot and
output (its updates) make the state (``{**input, **output}``, as the walk merges them)::

    {"stage": "0193...", "next_node": "review", "counters": {"draft": 1}, "route_from": null, "format": 3}
    {"state": {...}, "next_node": "review", "counters": {"draft": 1}, "route_from": null, "format": 3}
    {"start": true, "state": {...}, "next_node": "draft", "counters": {}, "route_from": null, "format": 3}

The last is the checkpoint a run is created with: no node has completed, and a resume starts the
walk from the factory's initial state (the state there is the one the first stage starts from, for
readers of the history; one written before migration 0005 may have none).

(``next_node`` is null once the walk reached END; ``route_from`` names a node that completed but
whose route could not be chosen: a resume chooses it again). ``checkpoint_node`` holds the node
just completed. Formats 1 (no ``route_from``) and 2 (always the state) are read too. The store
writes and reads this as opaque JSON; only this module knows its shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from wfkit.errors import CheckpointError, NotFoundError
from wfkit.graph import Snapshot
from wfkit.jsontext import dumps, dumps_state

if TYPE_CHECKING:
    from wfkit.store.repository import Repository

#: The version of the layout of ``checkpoints.state_data`` that this wfkit writes.
FORMAT = 3
#: The versions it reads (1 had no ``route_from``; 2 always held the state).
READS = (1, 2, 3)


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


def encode_start(entry: str | None, state_json: str) -> str:
    """The JSON text a run's checkpoint holds before its first node completes, with the initial
    state (``state_json``, JSON text) that its first stage starts from. (A resume from here builds
    the initial state again with the factory; the state is kept for those who read the history
    before the first stage's row holds it, such as the API's event streams.)"""
    return (f'{{"start":true,"state":{state_json},"next_node":{dumps(entry)},"counters":{{}},"route_from":null,'
            f'"format":{FORMAT}}}')


def encode_at_stage(next_node: str | None, counters: Mapping[str, int], route_from: str | None,
                    stage_id: uuid.UUID) -> str:
    """The JSON text stored for a walk just after stage ``stage_id`` completed (where it goes next,
    its visit counters, the node whose route is still to choose): the stage's row holds the state
    already (its input and its output), so the checkpoint names it. (Written at every step: made
    from its parts, with no Snapshot in between.)"""
    return (f'{{"stage":"{stage_id.hex}","next_node":{dumps(next_node)},"counters":{dumps(counters)},'
            f'"route_from":{dumps(route_from)},"format":{FORMAT}}}')


def decode(state_data: Any, run_id: uuid.UUID | str | None = None, *,
           stage_state: Mapping[str, Any] | None = None) -> Snapshot:
    """The snapshot stored as ``state_data`` (of run ``run_id``, for messages);
    :class:`~wfkit.errors.CheckpointError` if it is not in this wfkit's format. The shape is checked
    here; whether ``next_node`` and the counters name nodes of the workflow, the walker checks."""
    what = "the checkpoint" if run_id is None else f"the checkpoint of run {run_id}"
    if not isinstance(state_data, Mapping):
        raise CheckpointError(f"{what} is damaged: a JSON object was expected, not {type(state_data).__name__}")
    found = state_data.get("format")
    if found is None:
        raise CheckpointError(
            f"{what} was not written by wfkit's executor (it has no format number; synthetic history, "
            "such as `python -m wfkit.store.seed` writes, has none): it cannot be resumed"
        )
    if type(found) is not int or found not in READS:
        raise CheckpointError(
            f"{what} is in format {found!r}; this wfkit reads formats {', '.join(map(str, READS))} "
            "(resume the run with the wfkit that wrote it, or start a new run)"
        )
    if "stage" in state_data and found >= 3:
        if stage_state is None:
            raise CheckpointError(f"{what} names stage {state_data['stage']!r}, whose state was not given")
        state_data = {**state_data, "state": stage_state}
    problem = _shape_problem(state_data)
    if problem:
        raise CheckpointError(f"{what} is damaged: {problem}")
    return Snapshot.from_dict(state_data)


def _shape_problem(data: Mapping[str, Any]) -> str | None:
    """What is wrong with a checkpoint's fields, or None."""
    missing = [key for key in ("state", "next_node", "counters") if key not in data]
    if missing:
        return f"it lacks {', '.join(repr(key) for key in missing)}"
    state, next_node, counters = data["state"], data["next_node"], data["counters"]
    if not isinstance(state, dict):
        return f"'state' must be a JSON object, not {type(state).__name__}"
    if next_node is not None and not isinstance(next_node, str):
        return f"'next_node' must be a node name or null, not {next_node!r}"
    if not isinstance(counters, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in counters.items()):
        return f"'counters' must map node names to visit counts, not {counters!r}"
    route_from = data.get("route_from")
    if route_from is not None and not (isinstance(route_from, str) and next_node is None):
        return f"'route_from' must be a node name (with no next node) or null, not {route_from!r}"
    return None


class Loaded(NamedTuple):
    """A run's checkpoint as a resume needs it: the snapshot (None: start from the beginning), the
    stage whose end state is the snapshot's state (None: the state is written in the checkpoint),
    and whether the run has a checkpoint row at all (runs made before wfkit 0004 may not)."""

    snapshot: Snapshot | None
    stage_id: uuid.UUID | None
    exists: bool


def load(repository: Repository, run_id: uuid.UUID) -> Loaded:
    """The checkpoint a run last saved."""
    try:
        row = repository.find_checkpoint(run_id)
    except NotFoundError:
        return Loaded(None, None, False)
    data = row.state_data
    if isinstance(data, Mapping) and data.get("format") == 3 and data.get("start") is True:
        return Loaded(None, None, True)
    stage_id = stage_state = None
    if isinstance(data, Mapping) and data.get("format") == 3 and "stage" in data:
        stage_id, stage_state = _state_after(repository, run_id, data["stage"])
    return Loaded(decode(data, run_id, stage_state=stage_state), stage_id, True)


def _state_after(repository: Repository, run_id: uuid.UUID, stage: Any) -> tuple[uuid.UUID, dict[str, Any]]:
    """The completed stage a checkpoint names, and the state it ended with."""
    try:
        stage_id = uuid.UUID(str(stage))
        return stage_id, repository.state_after(run_id, stage_id)
    except (ValueError, NotFoundError):
        raise CheckpointError(f"the checkpoint of run {run_id} is damaged: it names stage {stage!r}, which does not "
                              "hold this run's state") from None


def state_of(data: Any, stages: Mapping[uuid.UUID, Any]) -> dict[str, Any] | None:
    """The state a checkpoint's ``data`` stands at (where the next stage starts), if it can be told:
    its own, or that of the stage it names, from ``stages`` (id -> the stage's state after it)."""
    if not isinstance(data, Mapping):
        return None
    if "stage" in data:
        try:
            return stages.get(uuid.UUID(str(data["stage"])))
        except ValueError:
            return None
    state = data.get("state")
    return state if isinstance(state, dict) else None
