from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from wfkit.errors import ConfigurationError, DatabaseError
from wfkit.store import migrations
from wfkit.store.db import create_engine
from wfkit.store.queue import is_queue_table

ROOT = Path(__file__).resolve().parents[2]
WFKIT_TABLES = {"runs", "stages", "decisions", "checkpoints", "workers"}


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {t for t in sa.inspect(engine).get_table_names() if t != "alembic_version" and not is_queue_table(t)}
    finally:
        engine.dispose()


def test_schema_matches_the_models_after_upgrade(empty_url):
    assert migrations.current(empty_url) is None
    migrations.upgrade(empty_url)
    assert migrations.current(empty_url) == migrations.head() == "0009"
    assert tables(empty_url) == WFKIT_TABLES
    assert migrations.check(empty_url) == []


def test_check_notices_a_difference(empty_url):
    migrations.upgrade(empty_url)
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX ix_runs_status_created_at")
    finally:
        engine.dispose()
    diffs = migrations.check(empty_url)
    assert len(diffs) == 1 and diffs[0][0] == "add_index" and diffs[0][1].name == "ix_runs_status_created_at"


def test_round_trip_upgrade_downgrade_upgrade(empty_url):
    migrations.upgrade(empty_url)
    migrations.downgrade(empty_url, "base")
    assert migrations.current(empty_url) is None
    assert tables(empty_url) == set()
    migrations.upgrade(empty_url, "0001")
    assert tables(empty_url) == WFKIT_TABLES - {"workers"}
    assert sorted(d[0] for d in migrations.check(empty_url)) == ["add_column"] * 15 + ["add_index", "add_table", "remove_index"]  # later ones
    migrations.upgrade(empty_url)
    assert migrations.check(empty_url) == []


def test_unknown_revision_is_a_clear_error(empty_url):
    with pytest.raises(ConfigurationError, match="unknown revision 'zzz': known revisions are 0001, 0002, 0003, 0004, 0005, 0006, 0007, 0008, 0009 \\(or head, base\\)"):
        migrations.upgrade(empty_url, "zzz")


def test_history():
    revs = migrations.history()
    assert [r.revision for r in revs] == ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009"]
    assert revs[-1].is_head and revs[0].down_revision is None
    assert "run history tables" in revs[0].message


def test_alembic_cli_from_the_repository_root(empty_url):
    alembic = Path(sys.executable).with_name("alembic")
    env = {**os.environ, "WFKIT_DATABASE_URL": empty_url}
    out = subprocess.run([str(alembic), "upgrade", "head"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert migrations.current(empty_url) == migrations.head()
    assert migrations.check(empty_url) == []


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """wfkit built as a wheel and unpacked into a directory outside the source tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next((tmp / "dist").glob("wfkit-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"), str(wheel)],
        check=True, capture_output=True,
    )
    return tmp


def test_migrations_work_from_an_installed_wheel(wfkit_cli, installed_wheel, empty_url):
    site = installed_wheel / "site"
    assert (site / "wfkit" / "store" / "alembic" / "versions").is_dir()
    wheel_cli = wfkit_cli.using(PYTHONPATH=str(site), WFKIT_DATABASE_URL=empty_url)
    code = "import wfkit, sys; from wfkit.cli import main; print(wfkit.__file__, file=sys.stderr); main()"
    run = lambda *args: wheel_cli.python("-c", code, *args, cwd=installed_wheel)  # noqa: E731
    out = run("db", "upgrade")
    assert out.returncode == 0, out.stderr
    assert str(site) in out.stderr  # the wheel's copy ran, not the source tree
    assert f"to {migrations.head()}" in out.stdout
    assert migrations.current(empty_url) == migrations.head()
    out = run("db", "history")
    assert f"{migrations.head()} (head)" in out.stdout
    out = run("db", "downgrade", "base", "--yes")
    assert out.returncode == 0 and migrations.current(empty_url) is None


def test_downgrade_and_upgrade_keep_history(empty_url):
    """SQLite rebuilds tables to drop columns: that must not cascade-delete the rows that refer to them."""
    from factories import add, add_history, count, make_run
    from wfkit.store.models import Stage

    migrations.upgrade(empty_url)
    engine = create_engine(empty_url)
    try:
        run = make_run()
        add(engine, run)
        add_history(engine, run, ["a", "b", "c"])
        migrations.downgrade(engine, "0001")
        assert migrations.current(engine) == "0001"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM stages").scalar() == 3
            assert conn.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 1
        migrations.upgrade(engine)
        assert count(engine, Stage) == 3 and migrations.check(engine) == []
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_a_failed_upgrade_leaves_nothing_half_built(empty_url):
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:  # something already in the way of the last table 0001 creates
            conn.exec_driver_sql("CREATE TABLE checkpoints (x INTEGER)")
        with pytest.raises(DatabaseError, match="checkpoints"):
            migrations.upgrade(engine)
        assert set(sa.inspect(engine).get_table_names()) == {"checkpoints"}
        assert migrations.current(engine) is None
    finally:
        engine.dispose()


def test_reading_a_database_older_than_the_code_says_upgrade(empty_url):
    import uuid

    from wfkit.errors import DatabaseNotMigratedError
    from wfkit.store.repository import Repository

    migrations.upgrade(empty_url, "0001")
    engine = create_engine(empty_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO runs (id, workflow_name, status, params, created_at, updated_at) "
                "VALUES (:id, 'old', 'completed', '{}', :t, :t)"
            ), {"id": uuid.uuid4().hex if engine.dialect.name == "sqlite" else uuid.uuid4(),
                "t": "2026-01-01 00:00:00.000000" if engine.dialect.name == "sqlite" else "2026-01-01T00:00:00Z"})
    finally:
        engine.dispose()
    with pytest.raises(DatabaseNotMigratedError, match="is older than this wfkit .* run `wfkit db upgrade`"):
        Repository(empty_url).list_runs()


def test_running_on_a_database_older_than_the_code_says_upgrade(empty_url):
    from wfkit.errors import DatabaseNotMigratedError
    from wfkit.executor import Executor
    from wfkit.registry import Registry

    migrations.upgrade(empty_url, "0001")
    reg = Registry()
    reg.register("one", lambda graph, runtime, params: graph.add_node("a", lambda s: None).set_entry_point("a")
                 .set_finish_point("a") and {})
    with pytest.raises(DatabaseNotMigratedError, match="older than this wfkit .* run `wfkit db upgrade`"):
        Executor(empty_url, registry=reg).execute("one")


def test_on_sqlite_the_large_run_columns_come_last(sqlite_url):
    """SQLite reads a row's columns in order, through the pages of any large value before them: with
    params and result last, a listing that reads neither reads no page of them. (PostgreSQL keeps
    large values out of line, TOAST: where their column stands costs nothing there.)"""
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            columns = [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(runs)")]
    finally:
        engine.dispose()
    assert columns[-2:] == ["params", "result"] and len(columns) == 21


def _schema(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = {t for t in inspector.get_table_names() if t != "alembic_version" and not is_queue_table(t)}
        return tables | {f"{t}.{c['name']}" for t in tables for c in inspector.get_columns(t)}
    finally:
        engine.dispose()


def test_each_migration_names_what_its_downgrade_drops(empty_url):
    """`wfkit db downgrade` warns about data in what a downgrade drops: each migration's DROPS must
    be exactly that, so that a new migration cannot forget to say."""
    migrations.upgrade(empty_url)
    script = migrations._script()
    for revision in reversed([r.revision for r in migrations.history()]):
        before = _schema(empty_url)
        migrations.downgrade(empty_url, "-1")
        lost = before - _schema(empty_url)
        tables = {item for item in lost if "." not in item}
        lost = tables | {item for item in lost if item.split(".")[0] not in tables}
        assert lost == set(script.get_revision(revision).module.DROPS), revision


def test_plan_downgrade_names_what_holds_data(empty_url):
    from factories import add, make_run

    migrations.upgrade(empty_url)
    plan = migrations.plan_downgrade(empty_url, "-7")
    assert (plan.current, plan.target, plan.losses) == (migrations.head(), "0002", [])
    engine = create_engine(empty_url)
    try:
        add(engine, make_run(cancel_reason="asked by the test"), make_run())
    finally:
        engine.dispose()
    # a counter at its default (attempt 0, lease_epoch 0) holds no data
    assert migrations.plan_downgrade(empty_url, "0002").losses == ["column runs.cancel_reason, which holds 1 value"]
    engine = create_engine(empty_url)
    try:
        add(engine, make_run(owner="host pid 1 (test)", attempt=2, lease_epoch=3))
    finally:
        engine.dispose()
    assert migrations.plan_downgrade(empty_url, "0003").losses == [
        "column runs.owner, which holds 1 value", "column runs.attempt, which holds 1 value",
        "column runs.lease_epoch, which holds 1 value"]
    assert migrations.plan_downgrade(empty_url, "base").losses[-1] == "table runs, which holds 3 rows"
    with pytest.raises(ConfigurationError, match="-10 would go below base"):
        migrations.plan_downgrade(empty_url, "-10")
    with pytest.raises(ConfigurationError, match=r"the newest revision is 0009: there is no revision \+1"):
        migrations.upgrade(empty_url, "+1")


def test_a_downgrade_from_0004_keeps_every_run_resumable_by_the_wfkit_before(empty_url):
    """0003 reads checkpoints that hold the state, and shows a running stage as a row: the downgrade
    writes stage inputs out in full, checkpoints back in format 2, and the stage a run was executing
    as a `started` row; of what it drops, it asks only about the leases."""
    import threading

    import sqlalchemy as sa

    from wfkit.executor import Executor
    from wfkit.executor.run_loop import RunLoop
    from wfkit.registry import Registry
    from wfkit.store.repository import Repository

    migrations.upgrade(empty_url)
    reg = Registry()
    reg.register("chain", lambda graph, runtime, params: graph.add_node("a", lambda s: {"a": 1})
                 .add_node("b", lambda s: {"b": 2}).add_node("c", lambda s: {"c": 3}).set_entry_point("a")
                 .add_edge("a", "b").add_edge("b", "c").set_finish_point("c") and {"seen": 0})
    engine = create_engine(empty_url)
    try:
        executor = Executor(engine, registry=reg)
        done = executor.execute("chain")
        with executor._recorder() as recorder:  # a run whose process died inside node c
            plan = executor._cold_start("chain", {}, recorder, start=True)
            loop = RunLoop(recorder, plan, observers=executor.observers, checkpoint_every=1, cancel=threading.Event())
            loop.first_stage()
            for _ in range(2):
                assert loop.stepped(loop.walker.step())
        losses = migrations.plan_downgrade(engine, "0003").losses  # the leases and attempts go: the rest is kept
        assert [loss.split(",")[0] for loss in losses] == ["column stages.attempt", "column runs.owner",
                                                           "column runs.attempt", "column runs.lease_epoch",
                                                           "column runs.lease_expires_at"]
        migrations.downgrade(engine, "0003")
        with engine.connect() as conn:
            rows = {run_id: data for run_id, data in conn.execute(
                sa.text("SELECT run_id, state_data FROM checkpoints")).all()}
            stages = conn.execute(sa.text("SELECT run_id, node_name, status, input_snapshot FROM stages "
                                          "ORDER BY created_at")).all()
    finally:
        engine.dispose()

    def as_dict(value):
        import json

        return json.loads(value) if isinstance(value, str) else value

    key = (lambda u: u.hex) if "sqlite" in empty_url else (lambda u: u)
    finished, dead = as_dict(rows[key(done.id)]), as_dict(rows[key(plan.run_id)])
    assert finished == {"state": {"seen": 0, "a": 1, "b": 2, "c": 3}, "next_node": None,
                        "counters": {"a": 1, "b": 1, "c": 1}, "route_from": None, "format": 2}
    assert dead["state"] == {"seen": 0, "a": 1, "b": 2} and dead["next_node"] == "c" and dead["format"] == 2
    of_dead = [(node, status, as_dict(snapshot)) for run_id, node, status, snapshot in stages
               if run_id == key(plan.run_id)]
    assert of_dead == [("a", "completed", {"seen": 0}), ("b", "completed", {"seen": 0, "a": 1}),
                       ("c", "started", {"seen": 0, "a": 1, "b": 2})]
    migrations.upgrade(empty_url)  # and back up: the history reads as before
    assert [s.node_name for s in Repository(empty_url).get_stages(plan.run_id)] == ["a", "b", "c"]


def test_the_newest_revision_read_from_the_file_names_is_alembics_head():
    from wfkit.store.db import _newest_revision

    assert _newest_revision() == migrations.head()


def test_a_downgrade_from_0009_writes_the_unchanged_outputs_back(empty_url):
    """The wfkit before 0009 reads each stage's output whole: the downgrade writes the values a node
    returned unchanged back into its stage's output, from the stage's input."""
    import json

    from wfkit.executor import Executor
    from wfkit.registry import Registry
    from wfkit.store.repository import Repository

    def whole(graph, runtime, params):
        graph.add_node("tick", lambda s: {**s, "n": s["n"] + 1})
        graph.set_entry_point("tick")
        graph.add_edge("tick", "tick", when=lambda s: s["n"] < 3, name="more")
        graph.set_finish_point("tick")
        return {"n": 0, "big": ["x"] * 50}

    migrations.upgrade(empty_url)
    reg = Registry()
    reg.register("whole", whole)
    engine = create_engine(empty_url)
    try:
        run = Executor(engine, registry=reg).execute("whole")
        before = [(s.input_snapshot, s.output_snapshot) for s in Repository(engine).get_stages(run.id)]
        assert [out for _, out in before] == [{"n": i, "big": ["x"] * 50} for i in (1, 2, 3)]
        with engine.connect() as conn:  # as stored: only n
            stored = [json.loads(v) if isinstance(v, str) else v for v in conn.execute(
                sa.text("SELECT output_snapshot FROM stages ORDER BY created_at")).scalars()]
        assert stored == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert migrations.plan_downgrade(engine, "0008").losses == ["column stages.output_unchanged, which holds 3 values"]
        migrations.downgrade(engine, "0008")
        with engine.connect() as conn:
            stored = [json.loads(v) if isinstance(v, str) else v for v in conn.execute(
                sa.text("SELECT output_snapshot FROM stages ORDER BY created_at")).scalars()]
        assert stored == [{"big": ["x"] * 50, "n": i} for i in (1, 2, 3)]
        migrations.upgrade(engine)  # and back: the same history
        assert [(s.input_snapshot, s.output_snapshot) for s in Repository(engine).get_stages(run.id)] == before
    finally:
        engine.dispose()
