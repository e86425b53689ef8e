from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from factories import T0, add, add_history, add_runs, make_run
from wfkit.errors import DatabaseError, DatabaseNotMigratedError, InvalidQueryError, NotFoundError
from wfkit.store.db import create_engine
from wfkit.store.models import Run, RunStatus
from wfkit.store.query import PageRequest, PaginationConfig, RunFilters
from wfkit.store.repository import Repository


def ids(runs):
    return [r.id for r in runs]


# --------------------------------------------------------------------------- pagination


def test_empty_table(repo):
    page = repo.list_runs()
    assert page.data == [] and page.total == 0 and page.page == 1 and page.page_size == 20 and page.total_pages == 1


def test_default_page_is_newest_first(repo, engine):
    runs = add_runs(engine, 25)
    page = repo.list_runs()
    assert page.total == 25 and page.total_pages == 2 and page.page_size == 20
    assert ids(page.data) == ids(reversed(runs))[:20]


def test_last_partial_page_and_past_the_end(repo, engine):
    runs = add_runs(engine, 7)
    newest_first = ids(reversed(runs))
    last = repo.list_runs(PageRequest(page=3, page_size=3))
    assert ids(last.data) == newest_first[6:] and last.total_pages == 3 and last.total == 7
    past = repo.list_runs(PageRequest(page=4, page_size=3))
    assert past.data == [] and past.total == 7 and past.page == 4


def test_one_rule_for_pages_a_size_above_the_maximum_is_limited_below_one_refused(engine):
    add_runs(engine, 12)
    repo = Repository(engine, pagination=PaginationConfig(default_page_size=5, max_page_size=10))
    assert repo.list_runs().page_size == 5
    limited = repo.list_runs(PageRequest(page_size=50))
    assert len(limited.data) == 10 and limited.page_size == 10  # the result says which size was used
    for bad in (dict(page=0), dict(page=-1), dict(page_size=0), dict(page_size=-5)):
        with pytest.raises(InvalidQueryError, match="must be a whole number of at least 1"):
            PageRequest(**bad)
    for query in ({"page": "0"}, {"page_size": "-1"}):  # the same rule for URL parameters
        with pytest.raises(InvalidQueryError, match="must be a whole number of at least 1"):
            PageRequest.from_query(query)
    assert repo.list_runs(PageRequest.from_query({"page_size": "100000"})).page_size == 10
    with pytest.raises(InvalidQueryError, match="page 4611686018427387904 is too far"):
        repo.list_runs(PageRequest(page=2**62))


def test_list_runs_takes_the_obvious_keywords_and_says_what_to_pass_otherwise(engine):
    runs = add_runs(engine, 7, status=RunStatus.FAILED) + add_runs(engine, 2, workflow_name="other")
    repo = Repository(engine)
    page = repo.list_runs(page=2, page_size=3, sort="created_at", status="failed")
    assert [r.id for r in page.data] == [r.id for r in runs[3:6]] and page.total == 7
    assert repo.list_runs(workflow_name=["other", "demo"]).total == 9
    assert repo.list_runs(workflow_name="other,nope").total == 2
    with pytest.raises(InvalidQueryError, match=r"list_runs takes a page number or a PageRequest as its page, "
                                                r"got '2' \(str\)"):
        repo.list_runs(page="2")
    with pytest.raises(InvalidQueryError, match="a PageRequest, or page=, page_size= and sort=, not both"):
        repo.list_runs(PageRequest(page=2), page_size=5)
    with pytest.raises(InvalidQueryError, match="a RunFilters, or workflow_name= and status=, not both"):
        repo.list_runs(filters=RunFilters(status="failed"), status="completed")
    with pytest.raises(InvalidQueryError, match=r"takes a RunFilters as its filters, got \{'status'"):
        repo.list_runs(filters={"status": "failed"})
    with pytest.raises(InvalidQueryError, match=r"page must be a whole number of at least 1, got '2' \(str\); "
                                                "for text from a URL, use PageRequest.from_query"):
        PageRequest(page="2")


def test_a_summary_listing_reads_no_params_nor_results(engine):
    run = make_run(params={"big": "x" * 100_000}, result={"big": "y" * 100_000})
    add(engine, run)
    repo = Repository(engine)
    [full] = repo.list_runs().data
    assert full.params == run.params and full.result == run.result
    [summary] = repo.list_runs(fields="summary").data
    assert (summary.id, summary.status, summary.params, summary.result) == (run.id, run.status, None, None)
    assert summary.to_dict(exclude=("params", "result")) == {
        k: v for k, v in full.to_dict().items() if k not in ("params", "result")}
    with pytest.raises(InvalidQueryError, match="unknown fields 'some': expected one of full, summary"):
        repo.list_runs(fields="some")


def test_pages_do_not_overlap_when_times_tie(repo, engine):
    same_time = [make_run(created_at=T0) for _ in range(9)]
    add(engine, *same_time)
    seen = [r.id for p in (1, 2, 3) for r in repo.list_runs(PageRequest(page=p, page_size=4)).data]
    assert sorted(seen) == sorted(ids(same_time)) and len(seen) == 9
    assert seen == sorted(seen, reverse=True)  # the tie-breaker: id, in the direction of created_at


# --------------------------------------------------------------------------- filters and sorting


@pytest.fixture
def mixed(engine):
    """12 runs: 3 workflows x 4 statuses, one second apart."""
    runs = []
    statuses = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.RUNNING]
    for i in range(12):
        runs.append(make_run(workflow_name=["alpha", "beta", "gamma"][i % 3], status=statuses[i % 4],
                             created_at=T0 + timedelta(seconds=i)))
    add(engine, *runs)
    return runs


def expect(runs, workflow=None, statuses=()):
    chosen = [r for r in runs if (workflow is None or r.workflow_name == workflow) and (not statuses or r.status in statuses)]
    return ids(sorted(chosen, key=lambda r: r.created_at, reverse=True))


@pytest.mark.parametrize(
    ("workflow", "statuses"),
    [
        ("alpha", ()),
        (None, (RunStatus.FAILED,)),
        (None, (RunStatus.FAILED, RunStatus.CANCELLED)),
        ("beta", (RunStatus.COMPLETED, RunStatus.RUNNING)),
        ("gamma", (RunStatus.PENDING,)),
        ("nobody", ()),
    ],
)
def test_filters_and_their_combination(repo, mixed, workflow, statuses):
    page = repo.list_runs(PageRequest(page_size=100), RunFilters(workflow_name=workflow, status=statuses))
    assert ids(page.data) == expect(mixed, workflow, statuses)
    assert page.total == len(page.data)


def test_multi_field_sort_both_ways(repo, mixed):
    def listed(sort):
        return ids(repo.list_runs(PageRequest(page_size=100, sort=sort)).data)

    by_wf_then_old = sorted(mixed, key=lambda r: (r.workflow_name, r.created_at))
    assert listed("workflow_name,created_at") == ids(by_wf_then_old)
    by_wf_desc_then_new = sorted(mixed, key=lambda r: (r.workflow_name, r.created_at), reverse=True)
    assert listed("-workflow_name,-created_at") == ids(by_wf_desc_then_new)
    mixed_dirs = sorted(sorted(mixed, key=lambda r: r.created_at, reverse=True), key=lambda r: r.status.value)
    assert listed("status,-created_at") == ids(mixed_dirs)
    assert listed("created_at") == ids(mixed)


def test_nulls_sort_last_both_ways(repo, engine):
    started = [make_run(created_at=T0, started_at=T0 + timedelta(seconds=i)) for i in range(3)]
    never = make_run(created_at=T0)
    add(engine, never, *started)
    assert ids(repo.list_runs(PageRequest(sort="started_at")).data)[-1] == never.id
    assert ids(repo.list_runs(PageRequest(sort="-started_at")).data)[-1] == never.id


@pytest.mark.parametrize(
    "sort",
    ["created_at; drop table runs", "-created_at) --", "params", "id desc", "created_at,,bogus"],
)
def test_bad_or_injection_shaped_sort_is_rejected_and_changes_nothing(repo, engine, sort):
    add_runs(engine, 3)
    with pytest.raises(InvalidQueryError, match="sort field"):
        repo.list_runs(PageRequest(sort=sort))
    assert repo.list_runs().total == 3


def test_injection_shaped_filter_value_is_only_a_value(repo, engine):
    add_runs(engine, 2)
    evil = "x' OR '1'='1"
    assert repo.list_runs(filters=RunFilters(workflow_name=evil)).total == 0
    add(engine, make_run(workflow_name=evil))
    assert repo.list_runs(filters=RunFilters(workflow_name=evil)).total == 1
    assert repo.list_runs().total == 3


# --------------------------------------------------------------------------- one run and its history


def test_find_run_by_uuid_or_string(repo, engine):
    run, _ = add_runs(engine, 2)
    assert repo.find_run(run.id).id == run.id
    assert repo.find_run(str(run.id)).workflow_name == "demo"
    assert repo.find_run(str(run.id).upper()).id == run.id


def test_find_run_errors(repo):
    missing = uuid.uuid4()
    with pytest.raises(NotFoundError, match=f"no run with id {missing}"):
        repo.find_run(missing)
    with pytest.raises(InvalidQueryError, match="invalid run id 'abc'"):
        repo.find_run("abc")


def test_stages_and_decisions_oldest_first(repo, engine):
    run, other = add_runs(engine, 2)
    stages, decisions = add_history(engine, run, ["load", "check", "save"])
    add_history(engine, other, ["x", "y"])
    got = repo.get_stages(str(run.id))
    assert [s.node_name for s in got] == ["load", "check", "save"] and ids(got) == ids(stages)
    assert got[0].input_snapshot == {"i": 0} and got[0].output_snapshot == {"i": 1}
    assert got[0].created_at.tzinfo is not None
    got = repo.get_decisions(run.id)
    assert [(d.from_node, d.to_node, d.predicate_name, d.predicate_result) for d in got] == [
        ("load", "check", "p0", True), ("check", "save", "p1", True)
    ]
    assert ids(got) == ids(decisions)


def test_stage_summaries_leave_the_large_values_out(repo, engine):
    from wfkit.store.repository import STAGE_SUMMARY_LEFT_OUT

    run = add_runs(engine, 1, status=RunStatus.RUNNING)[0]
    add_history(engine, run, ["load", "check"])
    from wfkit.store.codec import codec_for

    codec = codec_for(engine.dialect.name)
    with engine.begin() as conn:  # it is executing a third stage (shown from its row)
        conn.exec_driver_sql(
            "UPDATE runs SET current_stage_id = ?, current_node = 'save', current_iteration = 1, "
            "current_stage_started_at = ?, attempt = 2 WHERE id = ?".replace("?", "%s" if codec.sqlite is False else "?"),
            (codec.id(uuid.uuid4()), codec.time(T0 + timedelta(hours=1)), codec.id(run.id)))
    full, summary = repo.get_stages(run.id), repo.get_stages(run.id, fields="summary")
    assert [s.node_name for s in summary] == ["load", "check", "save"] and ids(summary) == ids(full)
    for whole, brief in zip(full, summary):
        for name, value in whole.to_dict().items():
            assert brief.to_dict()[name] == (None if name in STAGE_SUMMARY_LEFT_OUT else value), name
    assert summary[-1].status.value == "started" and summary[-1].attempt == 2
    with pytest.raises(InvalidQueryError, match="unknown fields 'some': expected one of full, summary"):
        repo.get_stages(run.id, fields="some")
    with pytest.raises(NotFoundError):
        repo.get_stages(uuid.uuid4(), fields="summary")


def test_related_rows_with_equal_times_have_a_stable_order(repo, engine):
    run = add_runs(engine, 1)[0]
    stages, _ = add_history(engine, run, ["a", "b", "c", "d"])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE stages SET created_at = (SELECT MIN(created_at) FROM stages)"))
    assert ids(repo.get_stages(run.id)) == sorted(ids(stages))


def test_run_without_history_and_missing_run(repo, engine):
    run = add_runs(engine, 1)[0]
    assert repo.get_stages(run.id) == [] and repo.get_decisions(run.id) == []
    for method in (repo.get_stages, repo.get_decisions):
        with pytest.raises(NotFoundError):
            method(uuid.uuid4())
        with pytest.raises(InvalidQueryError):
            method("12345")


def test_returned_objects_are_detached_plain_data(repo, engine):
    run = add_runs(engine, 1, params={"k": [1, 2]})[0]
    found = repo.find_run(run.id)
    engine.dispose()
    assert found.params == {"k": [1, 2]} and found.to_dict()["id"] == str(run.id)


def test_shared_between_threads(repo, engine):
    add_runs(engine, 30, status=RunStatus.COMPLETED)
    errors, totals = [], []

    def worker():
        try:
            for page in range(1, 6):
                result = repo.list_runs(PageRequest(page=page, page_size=7), RunFilters(status="completed"))
                totals.append(result.total)
                repo.get_stages(result.data[0].id) if result.data else None
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and totals == [30] * 40


def test_the_repository_writes_nothing(repo, engine):
    add_runs(engine, 3)
    repo.list_runs()
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT id, updated_at FROM runs ORDER BY id")).all()
    for r in repo.list_runs().data:
        repo.find_run(r.id)
        repo.get_stages(r.id)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, updated_at FROM runs ORDER BY id")).all() == before


# --------------------------------------------------------------------------- databases not ready


def test_unmigrated_database_says_what_to_do(new_database):
    url = new_database()
    engine = create_engine(url)  # creates the (empty) SQLite file
    with engine.connect():
        pass
    engine.dispose()
    repo = Repository(url)
    with pytest.raises(DatabaseNotMigratedError, match="has no wfkit tables: run `wfkit db upgrade` first"):
        repo.list_runs()


def test_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "nothing-here.db"
    repo = Repository(f"sqlite:///{path}")
    with pytest.raises(DatabaseNotMigratedError, match=f"there is no database at {path}: run `wfkit db upgrade`"):
        repo.list_runs()
    assert not path.exists()


def test_unreachable_postgresql_is_a_database_error():
    repo = Repository("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(DatabaseError, match=r"cannot use the database at postgresql://nobody@127.0.0.1:1/none"):
        repo.find_run(uuid.uuid4())


def test_loaded_objects_equal_what_the_orm_loads(repo, engine):
    from sqlalchemy.orm import Session

    from wfkit.store.models import Stage

    run = add_runs(engine, 1, params={"nested": {"x": [1, None]}}, status=RunStatus.FAILED, error_message="e")[0]
    stages, _ = add_history(engine, run, ["a", "b"])
    with Session(engine) as session:
        orm_run = session.get(Run, run.id)
        orm_stages = [session.get(Stage, s.id) for s in stages]
        assert repo.find_run(run.id).to_dict() == orm_run.to_dict()
        assert repo.list_runs().data[0].to_dict() == orm_run.to_dict()
        assert [s.to_dict() for s in repo.get_stages(run.id)] == [s.to_dict() for s in orm_stages]
    found = repo.find_run(run.id)
    assert found.status is RunStatus.FAILED and found.created_at.tzinfo is not None
    assert isinstance(found.id, uuid.UUID) and found.duration_ms is None


def test_every_column_type_reads_back_as_the_orm_reads_it(repo, engine):
    """The repository types driver rows itself (wfkit.store.codec): every column kind must agree with
    SQLAlchemy's own types, on both engines (times with microseconds, given in another zone)."""
    from sqlalchemy.orm import Session

    from wfkit.store.models import Decision

    elsewhere = timezone(timedelta(hours=-5, minutes=-30))
    run = make_run(status=RunStatus.CANCELLED, params={"ü": ["x", 1.5, None, True]}, result=[{"deep": {}}],
                   error_message="boom\nsecond line", created_at=datetime(2026, 3, 1, 1, 2, 3, 456789, elsewhere),
                   started_at=T0, completed_at=T0 + timedelta(microseconds=1),
                   cancel_requested_at=T0 + timedelta(seconds=1))
    add(engine, run)
    add(engine, Decision(run_id=run.id, from_node="a", to_node=None, predicate_name=None, predicate_result=False,
                         reason="no edge", created_at=T0))
    with Session(engine) as session:
        orm_run = session.get(Run, run.id)
        orm_decision = session.scalars(sa.select(Decision).where(Decision.run_id == run.id)).one()
        expected_run, expected_decision = orm_run.to_dict(), orm_decision.to_dict()
        expected_values = dict(orm_run.__dict__)
    found = repo.find_run(run.id)
    assert found.to_dict() == expected_run
    for name in Run.model_fields:  # the Python values themselves, not only their JSON
        assert getattr(found, name) == expected_values[name], name
        assert type(getattr(found, name)) is type(expected_values[name]), name
    assert found.created_at.utcoffset() == timedelta(0) and found.created_at.microsecond == 456789
    [decision] = repo.get_decisions(run.id)
    assert decision.to_dict() == expected_decision and decision.predicate_result is False


def test_filters_apply_to_a_select_like_the_listing(repo, mixed, engine):
    filters = RunFilters(workflow_name="alpha", status="failed,cancelled")
    with engine.connect() as conn:
        via_select = conn.execute(filters.apply(sa.select(sa.func.count()).select_from(Run))).scalar_one()
    assert via_select == repo.list_runs(filters=filters).total > 0


def test_many_listing_shapes_stay_correct(repo, mixed, engine, monkeypatch):
    """Statements are cached per shape (filters x sort); every shape, also past the cache's bound,
    lists what a plain SQLAlchemy select with the same filters and order lists."""
    from wfkit.store.query import RUNS

    monkeypatch.setattr(Repository, "MAX_CACHED_LISTINGS", 8)
    fields = ["created_at", "-created_at", "workflow_name", "-status", "started_at", "-updated_at", "id"]
    shapes = [(f"{a},{b}", status) for a in fields for b in fields if a.lstrip("-") != b.lstrip("-")
              for status in ("failed", "failed,completed", None)]
    assert len(shapes) > 100
    with engine.connect() as conn:
        for sort, status in shapes + shapes[:20]:  # the first ones again, after the cache turned over
            filters = RunFilters(status=status)
            expected = conn.execute(filters.apply(sa.select(Run.id)).order_by(*RUNS.order_by(sort))).scalars().all()
            assert ids(repo.list_runs(PageRequest(page_size=100, sort=sort), filters).data) == expected, sort
    assert len(repo._listings) <= 8


@pytest.mark.parametrize("value", [5, -2.5, True, "text", None, [], {"a": 1}])
def test_scalar_and_empty_json_values_read_back(repo, engine, value):
    """SQLite stores a JSON column's bare number as a number: it must read back as the same value."""
    run = make_run(result=value, params={"n": 1})
    add(engine, run)
    from wfkit.store.models import Stage

    add(engine, Stage(run_id=run.id, node_name="a", input_snapshot=value, output_snapshot=value))
    assert repo.find_run(run.id).result == value
    assert type(repo.find_run(run.id).result) is type(value)
    [stage] = repo.get_stages(run.id)
    assert stage.input_snapshot == value and stage.output_snapshot == value
