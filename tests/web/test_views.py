"""What the viewer computes on the server (no browser): the timeline, state differences, the graph
with a run's path, times; and the vendored JavaScript against its recorded checksums."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from importlib import resources
from types import SimpleNamespace

from wfkit.store.models import StageStatus
from wfkit.web import views

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _stage(node: str, start_ms: float, ms: float | None, status: str = "completed", iteration: int = 1,
           before: dict | None = None, updates: dict | None = None, attempt: int | None = 1) -> SimpleNamespace:
    return SimpleNamespace(node_name=node, iteration=iteration, status=StageStatus(status), attempt=attempt,
                           created_at=T0 + timedelta(milliseconds=start_ms), duration_ms=ms,
                           input_snapshot=before, output_snapshot=updates, id=f"{node}{iteration}")


def test_the_timeline_places_each_execution_by_start_and_duration():
    stages = [_stage("a", 0, 100), _stage("b", 100, 300), _stage("a", 400, 100, iteration=2)]
    line = views.timeline(stages)
    assert [lane.node for lane in line.lanes] == ["a", "b"] and line.span_ms == 500
    assert [(bar.left, bar.width) for bar in line.lanes[0].bars] == [(0, 20), (80, 20)]
    assert [(bar.left, bar.width) for bar in line.lanes[1].bars] == [(20, 60)]
    assert line.lanes[0].bars[1].title == "a #2: 100 ms, completed"
    assert not line.aggregated and [group.attempt for group in line.groups] == [1]
    assert [label for _pct, label in line.ticks] == ["0 ms", "125 ms", "250 ms", "375 ms", "500 ms"]


def test_a_big_run_s_timeline_merges_neighbouring_executions_and_keeps_the_worst_status():
    stages = [_stage("loop", i * 10, 5, iteration=i + 1, status="failed" if i == 5000 else "completed")
              for i in range(10_000)]
    line = views.timeline(stages)
    (lane,) = line.lanes
    assert line.aggregated and lane.executions == 10_000
    assert len(lane.bars) <= views.MAX_BARS and sum(bar.count for bar in lane.bars) == 10_000
    assert [bar.status for bar in lane.bars].count("failed") == 1


def test_a_resumed_run_s_attempts_are_told_apart():
    stages = [_stage("a", 0, 100), _stage("b", 100, 50, status="failed"),
              _stage("b", 5000, 50, attempt=2), _stage("c", 5050, 50, attempt=2)]
    line = views.timeline(stages)
    assert [(g.attempt, [lane.node for lane in g.lanes]) for g in line.groups] == [(1, ["a", "b"]), (2, ["b", "c"])]
    assert line.groups[1].lanes[0].bars[0].left == round(5000 / 5100 * 100, 3)  # one time axis for all


def test_state_differences_name_what_each_stage_added_changed_and_removed():
    changes = views.diff({"a": 1, "b": [1], "gone": True}, {"a": 1, "b": [1, 2], "new": "x" * 500})
    assert [(c.key, c.kind) for c in changes] == [("b", "changed"), ("new", "added"), ("gone", "removed")]
    assert changes[1].after["long"] and changes[1].after["preview"].endswith("…")
    (row,) = views.state_rows([_stage("a", 0, 1, before={"n": 1}, updates={"n": 2})])
    assert [(c.key, c.kind, c.before["text"], c.after["text"]) for c in row["changes"]] == [("n", "changed", "1", "2")]


def test_the_graph_shows_the_path_a_run_took():
    graph = _branching()
    stages = [_stage("receive", 0, 1), _stage("express", 1, 1, status="failed")]
    decisions = [SimpleNamespace(from_node="receive", to_node="express", predicate_name="is_express",
                                 predicate_result=True)]
    chart = views.run_graph(graph, stages, decisions)
    assert 'n_receive["receive ×1"]' in chart and 'n_express["express ×1"]' in chart
    assert "class n_receive visited" in chart and "class n_express failed" in chart
    taken = [line for line in chart.splitlines() if line.strip().startswith("linkStyle")]
    assert taken == ["    linkStyle 0,1 stroke:#1f6feb,stroke-width:3px"]


def _branching():
    from wfkit.plugins import load_plugins
    from wfkit.registry import Registry

    registry = Registry()
    load_plugins(registry, environ={"WFKIT_LOAD_PLUGINS": "samples"})
    graph, _state = registry.get("branching").build({"priority": "express"})
    return graph


def test_times_and_durations_read_as_people_write_them():
    now = T0
    assert views.when(T0 - timedelta(seconds=10), now)["relative"] == "just now"
    assert views.when(T0 - timedelta(minutes=5), now)["relative"] == "5 min ago"
    assert views.when(T0 - timedelta(days=3), now) == {"relative": "3 days ago", "iso": "2026-11-28T12:00:00Z",
                                                       "text": "2026-11-28 12:00:00 UTC"}
    assert [views.duration(s) for s in (0.25, 12.34, 245, 7380)] == ["250 ms", "12.3 s", "4 min 05 s", "2 h 03 min"]


def test_the_vendored_javascript_is_what_its_record_says():
    vendor = resources.files("wfkit.web") / "static" / "vendor"
    record = json.loads((vendor / "VENDOR.json").read_text())
    assert record, "nothing recorded"
    for package, entry in record.items():
        body = (vendor / entry["file"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], package
        assert entry["version"] and entry["license"] and entry["from"].startswith("https://registry.npmjs.org/")
        assert (vendor / f"{package}.LICENSE").read_text().strip()
