"""Run events and the observers that receive them.

The executor reports what happens during a run as events, in order:
``RunStarted``, then per node ``StageStarted`` and ``StageCompleted`` (or
``StageFailed``) followed by ``DecisionMade``, and finally one of
``RunCompleted``, ``RunFailed`` or ``RunCancelled``.

An observer is any object with ``on_event(event)``. Observers given to the
executor, and those plugins contribute through the ``wfkit_observers()``
hook, are isolated: one that raises is logged and the run goes on. (The
SQL recorder that writes the run's history is not isolated: if history
cannot be written, the run fails, since history is the product.)

This module imports only the standard library.
"""

from __future__ import annotations

import copy
import logging
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from wfkit.formatting import format_ms

log = logging.getLogger("wfkit.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a run."""

    run_id: uuid.UUID

    @property
    def kind(self) -> str:
        """The event's name in snake_case (``stage_completed``)."""
        return _KINDS[type(self)]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, with ``kind`` first: a copy (snapshots, read-only views of the run's
        state, become dicts), so that changing it changes nothing in the run. An exception becomes
        ``traceback``: its formatted traceback (see :func:`traceback_text`)."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, BaseException) or f.name == "exception":
                data["traceback"] = traceback_text(value)
            else:
                data[f.name] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
        data["run_id"] = str(self.run_id)
        return data


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    workflow_name: str
    params: dict[str, Any]
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class StageStarted(Event):
    node: str
    iteration: int
    input_snapshot: Mapping[str, Any]  # a read-only view of the state


@dataclass(frozen=True, slots=True)
class StageCompleted(Event):
    node: str
    iteration: int
    output_snapshot: Mapping[str, Any]  # a read-only view of the node's updates
    duration_ms: float


@dataclass(frozen=True, slots=True)
class StageFailed(Event):
    node: str
    iteration: int
    error: str  # one line
    duration_ms: float
    #: what failed the stage (a node's exception is the ``__cause__`` of the NodeError), if anything raised
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True)
class DecisionMade(Event):
    from_node: str
    to_node: str | None
    predicate_name: str | None
    predicate_result: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RunCompleted(Event):
    result: Any


@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    error: str  # one line
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RunCancelled(Event):
    reason: str = "cancel requested"


_KINDS: dict[type, str] = {
    RunStarted: "run_started",
    StageStarted: "stage_started",
    StageCompleted: "stage_completed",
    StageFailed: "stage_failed",
    DecisionMade: "decision",
    RunCompleted: "run_completed",
    RunFailed: "run_failed",
    RunCancelled: "run_cancelled",
}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """The event a :meth:`Event.to_dict` form (as an event stream carries it) describes: its ``kind``
    picks the class, its fields fill it in (a ``traceback`` stays behind: the exception it came from
    is not sent). ``ValueError`` for a kind or fields no event has."""
    classes = {kind: cls for cls, kind in _KINDS.items()}
    cls = classes.get(data.get("kind")) if isinstance(data, Mapping) else None
    if cls is None:
        raise ValueError(f"not a wfkit event: kind {data.get('kind') if isinstance(data, Mapping) else data!r}")
    try:
        values = {f.name: data[f.name] for f in fields(cls) if f.name not in ("run_id", "exception") and f.name in data}
        return cls(uuid.UUID(str(data["run_id"])), **values)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"not a wfkit {data.get('kind')} event: {err}") from None


def traceback_text(err: BaseException | None) -> str | None:
    """The formatted traceback of what failed: for an error that wraps the exception a node (or a
    predicate) raised, that exception's own traceback, where the bug is; None for None."""
    if err is None:
        return None
    cause = err.__cause__ if err.__cause__ is not None else err
    return "".join(traceback.format_exception(cause)).rstrip()


@runtime_checkable
class Observer(Protocol):
    """Receives every event of a run, in order."""

    def on_event(self, event: Event) -> None: ...


class MultiObserver:
    """Fans each event out to several observers; one that raises is logged and skipped, never fatal."""

    def __init__(self, observers: Iterable[Observer] = (), *, logger: logging.Logger | None = None):
        self.observers: list[Observer] = list(observers)
        self.logger = logger or log

    def on_event(self, event: Event) -> None:
        for observer in self.observers:
            try:
                observer.on_event(event)
            except Exception:
                self.logger.exception("observer %r failed on %s of run %s; the run goes on",
                                      observer, event.kind, event.run_id)

    def __bool__(self) -> bool:
        return bool(self.observers)


def describe(event: Event) -> str:
    """One human line for an event (used by the logging observer and the CLI)."""
    match event:
        case RunStarted(workflow_name=name, resumed=resumed):
            return f"run {event.run_id} {'resumed' if resumed else 'started'}: {name}"
        case StageStarted(node=node, iteration=it):
            return f"  > {node} (iteration {it})"
        case StageCompleted(node=node, iteration=it, duration_ms=ms):
            return f"  + {node} (iteration {it}) completed in {format_ms(ms)}"
        case StageFailed(node=node, iteration=it, error=error, duration_ms=ms):
            return f"  x {node} (iteration {it}) failed after {format_ms(ms)}: {error}"
        case DecisionMade(from_node=src, predicate_result=False, reason=reason):
            return f"    {src} -> (no route): {reason}"
        case DecisionMade(from_node=src, to_node=dst, predicate_name=pred, predicate_result=held):
            via = f"{pred}={str(held).lower()}" if pred else "unconditional"
            return f"    {src} -> {dst or 'END'} [{via}]"
        case RunCompleted():
            return f"run {event.run_id} completed"
        case RunFailed(error=error):
            return f"run {event.run_id} failed: {error}"
        case RunCancelled(reason=reason):
            return f"run {event.run_id} cancelled: {reason}"
    return f"{event.kind} {event.run_id}"


class LoggingObserver:
    """Logs each event as one line on ``logger`` (default ``wfkit.run``) at ``level`` (INFO); a failed
    stage or run at ERROR, a stage with the traceback of what failed it."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO):
        self.logger = logger or logging.getLogger("wfkit.run")
        self.level = level

    def on_event(self, event: Event) -> None:
        failed = isinstance(event, (StageFailed, RunFailed))
        level = max(self.level, logging.ERROR) if failed else self.level
        if self.logger.isEnabledFor(level):
            exception = event.exception if isinstance(event, StageFailed) else None
            self.logger.log(level, describe(event), exc_info=_exc_info(exception))


def _exc_info(err: BaseException | None) -> Any:
    # The node's own exception (the cause of a NodeError) carries the traceback worth reading.
    if err is None:
        return None
    cause = err.__cause__ if err.__cause__ is not None else err
    return (type(cause), cause, cause.__traceback__)


class CallbackObserver:
    """Calls ``fn(event)`` for each event: the shortest way to watch a run."""

    def __init__(self, fn: Any):
        self.fn = fn

    def on_event(self, event: Event) -> None:
        self.fn(event)
