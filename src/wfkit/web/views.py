"""What the viewer's pages show, computed on the server: plain data for the templates.

Nothing here reads the database or renders HTML: each function takes records (runs, stages,
decisions, a graph) and returns what a template lays out, so that each can be tested alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from wfkit.graph.mermaid import END_ID, link_number, node_ids, to_mermaid

#: At most this many bars per node in a timeline: beyond, neighbouring executions share a bar.
MAX_BARS = 300
#: A value whose JSON is longer than this is shown collapsed.
COLLAPSE_CHARS = 400
FINAL = ("completed", "failed", "cancelled")


def when(value: datetime | None, now: datetime | None = None) -> dict[str, str] | None:
    """A time as the pages show it: relative (``3 min ago``) with the absolute time beside it."""
    if value is None:
        return None
    now = now or datetime.now(timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    seconds = (now - value).total_seconds()
    if abs(seconds) < 45:
        relative = "just now"
    else:
        span = abs(seconds)
        for unit, size in (("day", 86400), ("h", 3600), ("min", 60), ("s", 1)):
            if span >= size:
                count = int(span // size)
                relative = f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}"
                break
        relative = f"{relative} ago" if seconds > 0 else f"in {relative}"
    iso = value.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"relative": relative, "iso": iso, "text": iso.replace("T", " ").replace("Z", " UTC")}


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; an empty string for None."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def run_seconds(run: Any, now: datetime | None = None) -> float | None:
    """How long a run has taken (so far, if it has not ended)."""
    if run.started_at is None:
        return None
    end = run.completed_at or (now or datetime.now(timezone.utc))
    return max(0.0, (end - run.started_at).total_seconds())


def shown(value: Any) -> dict[str, Any]:
    """A JSON value as the pages show it: its indented text, and whether it is long enough to be
    collapsed (with a one-line preview)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    flat = json.dumps(value, ensure_ascii=False, default=str)
    long = len(text) > COLLAPSE_CHARS
    return {"text": text, "long": long, "preview": flat[:120] + ("…" if len(flat) > 120 else "")}


# ----------------------------------------------------------------------------- the timeline


@dataclass
class Bar:
    left: float  # where it starts, in percent of the run's span
    width: float  # in percent (at least a sliver, so that a quick node shows)
    status: str  # the worst status among the executions it stands for
    title: str  # what hovering says: node, iteration(s), duration, status
    count: int = 1
    slot: int = -1  # which of the MAX_BARS slots of the span it began in


@dataclass
class Lane:
    node: str
    bars: list[Bar] = field(default_factory=list)
    executions: int = 0


@dataclass
class Group:
    attempt: int | None  # the run's attempt that ran these stages (None: recorded before wfkit kept it)
    lanes: list[Lane]


@dataclass
class Timeline:
    groups: list[Group]  # one per attempt, in order: a resumed run's attempts told apart
    span_ms: float  # from the first stage's start to the last one's end
    ticks: list[tuple[float, str]]  # (percent, label) along the axis
    aggregated: bool  # some bars stand for several executions

    @property
    def lanes(self) -> list[Lane]:
        return [lane for group in self.groups for lane in group.lanes]


_RANK = {"completed": 0, "started": 1, "failed": 2}


def timeline(stages: Sequence[Any], now: datetime | None = None) -> Timeline:
    """A Gantt of a run's stages, grouped by the attempt that ran them: in each group one lane per
    node (in the order they first ran), one bar per execution placed by its start and duration on
    one time axis for the whole run; a lane with more than :data:`MAX_BARS` executions has
    neighbouring ones merged into one bar (its title says how many)."""
    now = now or datetime.now(timezone.utc)
    if not stages:
        return Timeline([], 0.0, [], False)
    origin = min(s.created_at for s in stages)
    live_ms = (now - origin).total_seconds() * 1000
    # Each stage's start and end, in milliseconds from the first start (one pass: a big run has many).
    spans = []
    for stage in stages:
        begin = (stage.created_at - origin).total_seconds() * 1000
        if stage.duration_ms is not None:
            spans.append((begin, begin + stage.duration_ms))
        else:
            spans.append((begin, max(begin, live_ms) if stage.status.value == "started" else begin))
    span = max(max(end for _begin, end in spans), 1.0)
    counts: dict[tuple[int | None, str], int] = {}
    for stage in stages:
        key = (stage.attempt, stage.node_name)
        counts[key] = counts.get(key, 0) + 1
    lanes = {key: Lane(key[1], executions=count) for key, count in counts.items()}
    merge = {key for key, count in counts.items() if count > MAX_BARS}
    slot_width = 100.0 / MAX_BARS
    scale = 100.0 / span
    for stage, (begin, end) in zip(stages, spans):
        key = (stage.attempt, stage.node_name)
        lane = lanes[key]
        left = begin * scale
        width = max((end - begin) * scale, 0.15)
        status = stage.status.value
        slot = int(left / slot_width)
        last = lane.bars[-1] if lane.bars else None
        if key in merge and last is not None and slot == last.slot:
            last.width = round(max(last.width, left + width - last.left), 3)
            last.count += 1
            if _RANK.get(status, 0) > _RANK.get(last.status, 0):
                last.status = status
            last.title = f"{stage.node_name}: {last.count} executions, the last #{stage.iteration}"
            continue
        took = duration(None if stage.duration_ms is None else stage.duration_ms / 1000) or "running"
        lane.bars.append(Bar(round(left, 3), round(width, 3), status,
                             f"{stage.node_name} #{stage.iteration}: {took}, {status}", slot=slot))
    ticks = [(pct, _tick(span * pct / 100, span)) for pct in (0, 25, 50, 75, 100)]
    groups: dict[int | None, Group] = {}
    for (attempt, _node), lane in lanes.items():
        groups.setdefault(attempt, Group(attempt, [])).lanes.append(lane)
    return Timeline(list(groups.values()), span, ticks, bool(merge))


def _tick(ms: float, span_ms: float) -> str:
    """An axis label: precise enough that the labels of a short run differ."""
    if span_ms < 10:
        return f"{ms:.1f} ms"
    return duration(ms / 1000) or "0 ms"


# ----------------------------------------------------------------------------- the state


@dataclass
class Change:
    key: str
    kind: str  # added, changed, removed
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[Change]:
    """The keys ``after`` added, changed or removed against ``before``, in ``after``'s order (the
    removed ones last)."""
    before, after = before or {}, after or {}
    changes = []
    for key, value in after.items():
        if key not in before:
            changes.append(Change(key, "added", None, shown(value)))
        elif before[key] != value:
            changes.append(Change(key, "changed", shown(before[key]), shown(value)))
    changes += [Change(key, "removed", shown(value), None) for key, value in before.items() if key not in after]
    return changes


def state_rows(stages: Sequence[Any]) -> list[dict[str, Any]]:
    """Each stage with its input, its output (the node's updates) and what changed in the state."""
    rows = []
    for stage in stages:
        before = stage.input_snapshot if isinstance(stage.input_snapshot, dict) else None
        updates = stage.output_snapshot if isinstance(stage.output_snapshot, dict) else None
        after = None if before is None or updates is None else {**before, **updates}
        rows.append({"stage": stage, "input": None if before is None else shown(before),
                     "output": None if updates is None else shown(updates),
                     "changes": diff(before, after) if after is not None else []})
    return rows


# ----------------------------------------------------------------------------- the graph


def run_graph(graph: Any, stages: Sequence[Any], decisions: Sequence[Any]) -> str:
    """The workflow's mermaid chart with the path a run took drawn on it: visited nodes filled,
    with their visit counts; the edges it took thicker; a node whose last execution failed marked."""
    chart = to_mermaid(graph)
    ids = node_ids(graph)
    visits: dict[str, int] = {}
    failed: set[str] = set()
    for stage in stages:
        visits[stage.node_name] = visits.get(stage.node_name, 0) + 1
        if stage.status.value == "failed":
            failed.add(stage.node_name)
        elif stage.node_name in failed:
            failed.discard(stage.node_name)  # a later execution succeeded
    lines = [chart.rstrip("\n")]
    from wfkit.graph.mermaid import label_text

    for name, count in visits.items():
        if name in ids:
            lines.append(f'    {ids[name]}["{label_text(name)} ×{count}"]')
    taken: list[int] = []
    if stages and graph.entry_point is not None:
        taken.append(0)
    for decision in decisions:
        for index, edge in enumerate(graph.edges):
            predicate = edge.predicate.name if edge.predicate is not None else None
            if edge.from_node == decision.from_node and edge.to_node == decision.to_node and \
                    (predicate is None or predicate == decision.predicate_name):
                number = link_number(graph, index)
                if number not in taken:
                    taken.append(number)
                break
    lines.append("    classDef visited fill:#d7ecff,stroke:#1f6feb,stroke-width:2px,color:#0b1f33")
    lines.append("    classDef failed fill:#ffe1e1,stroke:#cf222e,stroke-width:3px,color:#3b0a0a")
    visited = [ids[n] for n in visits if n in ids and n not in failed]
    if visited:
        lines.append(f"    class {','.join(visited)} visited")
    marked = [ids[n] for n in failed if n in ids]
    if marked:
        lines.append(f"    class {','.join(marked)} failed")
    ended = any(d.to_node is None for d in decisions)
    if ended and any(e.to_node is None for e in graph.edges):
        lines.append(f"    class {END_ID} visited")
    if taken:
        lines.append(f"    linkStyle {','.join(map(str, sorted(taken)))} stroke:#1f6feb,stroke-width:3px")
    return "\n".join(lines) + "\n"
