"""A run's history as the events an observer of it would have seen, read back from the database.

Whoever executes a run, and wherever, its stored history (the stages, the decisions, the run's
row) says what happened, in order: this module turns it into the same events the executor
reports live (:mod:`wfkit.events`), each with an id that names it for good. A stream of a run's
events (the HTTP API's) is that history read again as it grows: a client that reconnects with the
id of the last event it saw gets exactly the events after it, whichever process answers.

The order: each stage's start, its end (completed or failed), then the decision taken after it;
a stage's row is written when it ends, and the stage being executed is the one on the run's row
(its start is known; its end is not yet). The run's end comes last.

Event ids: ``<stage id>.start``, ``<stage id>.end``, ``<decision id>``, and ``<run id>.end.<attempt>``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from wfkit.events import (
    DecisionMade,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    StageCompleted,
    StageFailed,
    StageStarted,
)
from wfkit.executor import checkpoints
from wfkit.store.models import Decision, Run, RunStatus, Stage, StageStatus
from wfkit.store.repository import Repository, fill_output

#: The stream's name for each kind of event (the HTTP API's ``event:`` field).
STREAM_NAMES = {
    StageStarted: "stage.start",
    StageCompleted: "stage.complete",
    StageFailed: "error",
    DecisionMade: "decision",
    RunCompleted: "complete",
    RunFailed: "complete",
    RunCancelled: "complete",
}
_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a run's history: its id, its stream name and the event (a failed stage's stored
    traceback beside it: the exception itself is not stored)."""

    id: str
    name: str
    event: Event
    traceback: str | None = None

    @property
    def final(self) -> bool:
        """Whether this is the run's end (nothing comes after it)."""
        return self.name == "complete"

    def data(self) -> dict[str, Any]:
        """The event as JSON (``Event.to_dict()``: its ``kind``, its fields, ``run_id``)."""
        out = self.event.to_dict()
        if "traceback" in out:
            out["traceback"] = self.traceback
        return out


@dataclass
class RunHistory:
    """The events of one run read so far, read further with :meth:`read` (only what is new is
    fetched: stages and decisions from the latest start time seen on)."""

    repository: Repository
    run_id: uuid.UUID
    events: list[HistoryEvent] = field(default_factory=list)
    run: Run | None = None
    _seen: set[str] = field(default_factory=set)
    _since: datetime | None = None
    _ended: bool = False
    _after: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)  # completed stage -> its end state

    def read(self) -> list[HistoryEvent]:
        """Read what is new since the last call; return the new events, in order (the run's end
        last, once it has ended)."""
        if self._ended:
            return []
        run, stages, decisions, checkpoint = self.repository.read_history(self.run_id, since=self._since)
        for stage in stages:  # an input stored as a reference to a stage read before: fill it in
            if stage.input_snapshot is None and stage.input_from is not None:
                stage.__dict__["input_snapshot"] = self._after.get(stage.input_from)
            fill_output(stage)
            if isinstance(stage.input_snapshot, dict) and stage.status is StageStatus.COMPLETED:
                self._after[stage.id] = {**stage.input_snapshot, **(stage.output_snapshot or {})}
        if stages and stages[-1].status is StageStatus.STARTED and stages[-1].input_snapshot is None:
            # The stage being executed has no row yet: it starts from where the checkpoint stands
            # (written with it, in the same snapshot).
            stages[-1].__dict__["input_snapshot"] = checkpoints.state_of(checkpoint, self._after)
        new = [e for e in _merge(run, stages, decisions) if e.id not in self._seen]
        if run.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED):
            new.append(_end(run))
            self._ended = True
        starts = [s.created_at for s in stages]
        if starts:
            self._since = max(starts)
        for event in new:
            self._seen.add(event.id)
        self.events += new
        self.run = run
        return new

    @property
    def ended(self) -> bool:
        """Whether the run's end has been read (nothing comes after it)."""
        return self._ended

    def after(self, last_id: str | None) -> list[HistoryEvent]:
        """The events read so far that come after ``last_id`` (all of them for None, or for an id
        this history does not hold: a client is then given everything again, and its ids)."""
        if last_id is None:
            return list(self.events)
        for i, event in enumerate(self.events):
            if event.id == last_id:
                return self.events[i + 1:]
        return list(self.events)


def _merge(run: Run, stages: Iterable[Stage], decisions: Iterable[Decision]) -> list[HistoryEvent]:
    """Stages and decisions in the order they happened: a decision comes after the stage it ends
    and before the next stage's start (see the module's docstring)."""
    keyed: list[tuple[Any, HistoryEvent]] = []
    for stage in stages:
        sid = stage.id.hex
        state = stage.input_snapshot if isinstance(stage.input_snapshot, dict) else None
        keyed.append(((stage.created_at, 1, sid), HistoryEvent(
            f"{sid}.start", "stage.start",
            StageStarted(run.id, stage.node_name, stage.iteration, MappingProxyType(state) if state else _EMPTY))))
        if stage.status is StageStatus.COMPLETED:
            output = stage.output_snapshot if isinstance(stage.output_snapshot, dict) else {}
            event: Event = StageCompleted(run.id, stage.node_name, stage.iteration, MappingProxyType(output),
                                          stage.duration_ms or 0.0)
            keyed.append(((stage.created_at, 2, sid), HistoryEvent(f"{sid}.end", "stage.complete", event)))
        elif stage.status is StageStatus.FAILED:
            event = StageFailed(run.id, stage.node_name, stage.iteration, stage.error_message or "",
                                stage.duration_ms or 0.0)
            keyed.append(((stage.created_at, 2, sid), HistoryEvent(f"{sid}.end", "error", event,
                                                                    stage.error_traceback)))
    for decision in decisions:
        event = DecisionMade(run.id, decision.from_node, decision.to_node, decision.predicate_name,
                             decision.predicate_result, decision.reason or "")
        keyed.append(((decision.created_at, 0, decision.id.hex), HistoryEvent(decision.id.hex, "decision", event)))
    keyed.sort(key=lambda item: item[0])
    return [event for _, event in keyed]


def _end(run: Run) -> HistoryEvent:
    event_id = f"{run.id.hex}.end.{run.attempt}"
    if run.status is RunStatus.COMPLETED:
        return HistoryEvent(event_id, "complete", RunCompleted(run.id, run.result))
    if run.status is RunStatus.FAILED:
        return HistoryEvent(event_id, "complete", RunFailed(run.id, run.error_message or ""))
    return HistoryEvent(event_id, "complete", RunCancelled(run.id, run.cancel_reason or "cancel requested"))
