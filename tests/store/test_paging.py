"""Paging that stays fast at any depth: cursors, totals, creation-time filters, iter_runs."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from factories import T0, add, make_run
from wfkit.errors import InvalidQueryError
from wfkit.store.models import RunStatus
from wfkit.store.query import Cursor, PageRequest, RunFilters, parse_duration, parse_time


@pytest.fixture
def thirty(engine):
    """30 runs, one a minute from T0: 'etl' runs completed, 'ml' runs failed."""
    runs = [make_run(workflow_name="etl" if i % 2 else "ml", status=RunStatus.COMPLETED if i % 2 else RunStatus.FAILED,
                     created_at=T0 + timedelta(minutes=i)) for i in range(30)]
    add(engine, *runs)
    return sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)


def test_cursor_pages_follow_each_other_and_end(repo, thirty):
    first = repo.list_runs(page_size=7)
    assert (first.total, first.total_kind, first.page, first.total_pages) == (30, "exact", 1, 5)
    ids = [r.id for r in first.data]
    page = first
    while page.next_cursor is not None:
        page = repo.list_runs(page_size=7, cursor=page.next_cursor)
        assert page.page is None and page.total == 30
        ids += [r.id for r in page.data]
    assert ids == [r.id for r in thirty]
    assert len(page.data) == 2
    # a full last page has no cursor either: no empty page to ask for
    assert repo.list_runs(page_size=10, page=3).next_cursor is None
    assert repo.list_runs(page_size=30).next_cursor is None


def test_a_cursor_fits_only_its_own_listing(repo, thirty):
    page = repo.list_runs(page_size=5, status="failed", sort="-created_at")
    cursor = page.next_cursor
    after = repo.list_runs(page_size=5, status="failed", cursor=cursor)  # its sort comes with it
    assert [r.workflow_name for r in after.data] == ["ml"] * 5
    with pytest.raises(InvalidQueryError, match="it was made for other filters"):
        repo.list_runs(page_size=5, cursor=cursor)
    with pytest.raises(InvalidQueryError, match="it was made for the sort -created_at,-id, not created_at,id"):
        repo.list_runs(page_size=5, status="failed", sort="created_at", cursor=cursor)
    with pytest.raises(InvalidQueryError, match="give a page number or a cursor, not both"):
        repo.list_runs(page=2, page_size=5, status="failed", cursor=cursor)


@pytest.mark.parametrize("tamper", [
    lambda c: c[:-3],  # cut short
    lambda c: c + "!!",  # not base64
    lambda c: "x" * 3000,  # longer than any cursor
    lambda c: base64.urlsafe_b64encode(b"[1, 2]").decode(),  # JSON, not a cursor
    lambda c: _edit(c, v=2),  # another version
    lambda c: _edit(c, k=["2026-01-01T00:00:00+00:00"]),  # too few values
    lambda c: _edit(c, k=["yesterday", "00000000000000000000000000000000"]),  # not a time
    lambda c: _edit(c, k=["2026-01-01T00:00:00+00:00", "'; DROP TABLE runs; --"]),  # not an id
    lambda c: _edit(c, k=["2026-01-01T00:00:00", "00000000000000000000000000000000"]),  # a time without a zone
    lambda c: _edit(c, s="-created_at; DROP TABLE runs"),  # not a sort
    lambda c: _edit(c, s="-created_at"),  # a sort without its tie-breaker: not one wfkit makes
])
def test_a_tampered_cursor_is_a_clear_error_and_reaches_no_sql(repo, thirty, tamper):
    cursor = repo.list_runs(page_size=5).next_cursor
    with pytest.raises(InvalidQueryError, match=r"^invalid cursor .*; list again without it to start from the first page$"):
        repo.list_runs(page_size=5, cursor=tamper(cursor))
    assert repo.list_runs(page_size=5).total == 30  # nothing happened to the runs


def _edit(cursor: str, **changes):
    doc = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    doc.update(changes)
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


def test_an_edited_but_valid_cursor_is_just_another_position(repo, thirty):
    """Validated, not signed: a cursor holds nothing secret, and any well-formed position is fine."""
    cursor = repo.list_runs(page_size=5).next_cursor
    moved = _edit(cursor, k=[(T0 + timedelta(minutes=10)).isoformat(), "f" * 32])
    assert [r.created_at for r in repo.list_runs(page_size=3, cursor=moved).data] == [
        T0 + timedelta(minutes=m) for m in (10, 9, 8)]


def test_totals_exact_estimate_none(engine, repo, thirty):
    exact = repo.list_runs(page_size=5, status="completed")
    assert (exact.total, exact.total_kind, exact.total_pages) == (15, "exact", 3)
    none = repo.list_runs(page_size=5, status="completed", total="none")
    assert (none.total, none.total_kind, none.total_pages) == (None, "none", None)
    assert [r.id for r in none.data] == [r.id for r in exact.data] and none.next_cursor == exact.next_cursor
    repo.EXACT_BELOW_ESTIMATE = 0  # (an estimate of a few runs is counted instead: see below)
    estimate = repo.list_runs(page_size=5, status="completed", total="estimate")
    if engine.dialect.name == "sqlite":  # no planner estimate: it counts, and says so
        assert (estimate.total, estimate.total_kind) == (15, "exact")
    else:
        assert estimate.total_kind == "estimate" and estimate.total >= 6  # never below what it has seen
        assert estimate.total_pages == -(-estimate.total // 5)
        with engine.connect() as conn:  # with the statistics autovacuum makes: close to the truth
            conn.exec_driver_sql("ANALYZE runs")
            conn.commit()
        assert 10 <= repo.list_runs(page_size=5, status="completed", total="estimate").total <= 20
        assert 25 <= repo.list_runs(page_size=5, total="estimate").total <= 35
    del repo.EXACT_BELOW_ESTIMATE
    if engine.dialect.name != "sqlite":
        few = repo.list_runs(page_size=5, status="completed", total="estimate")
        assert (few.total, few.total_kind) == (15, "exact")
    # a page far past the end, with no count to tell: an empty page (PostgreSQL's OFFSET is a bigint)
    assert repo.list_runs(page=728_205_953, page_size=100, total="none").data == []
    with pytest.raises(InvalidQueryError, match="unknown total 'roughly': expected one of exact, estimate, none"):
        repo.list_runs(total="roughly")


def test_since_and_until_filter_on_creation_time(repo, thirty):
    window = repo.list_runs(page_size=100, since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=20))
    assert [r.created_at for r in window.data] == [T0 + timedelta(minutes=m) for m in range(19, 9, -1)]
    assert window.total == 10
    assert T0.isoformat() == "2026-01-01T12:00:00+00:00"
    # as text: ISO 8601 with Z, an offset, or none (UTC)
    assert repo.list_runs(since="2026-01-01T12:10:00Z", until="2026-01-01T13:20:00+01:00",
                          workflow_name="etl").total == 5
    text = RunFilters.from_query({"since": "2026-01-01T12:25:00"})
    assert repo.list_runs(filters=text).total == 5
    assert repo.list_runs(since="1d").total == 0 and repo.list_runs(until="1d").total == 30  # T0 is long past
    with pytest.raises(InvalidQueryError, match=r"invalid since 'last tuesday': expected an ISO 8601 date or time"):
        repo.list_runs(since="last tuesday")
    with pytest.raises(InvalidQueryError, match=r"since \(2026-01-02T00:00:00\+00:00\) is after until"):
        repo.list_runs(since="2026-01-02", until="2026-01-01")


def test_iter_runs_reads_everything_a_page_at_a_time(repo, thirty):
    assert [r.id for r in repo.iter_runs(page_size=4)] == [r.id for r in thirty]
    assert [r.id for r in repo.iter_runs(status="failed", sort="created_at", page_size=4)] == [
        r.id for r in reversed(thirty) if r.status is RunStatus.FAILED]
    lazy = repo.iter_runs(page_size=2)
    assert next(lazy).id == thirty[0].id  # one page read so far
    assert list(repo.iter_runs(workflow_name="nothing")) == []


def test_deep_pages_by_cursor_read_an_index_range(engine, repo, thirty):
    """The page after a cursor is a range of the listing's index (not a scan that skips rows)."""
    from wfkit.store.query import RUNS

    for sort, filters, index in ((None, RunFilters(), "ix_runs_created_at"),
                                 (None, RunFilters(status="failed"), "ix_runs_status_created_at"),
                                 (None, RunFilters(workflow_name="etl", since=T0), "ix_runs_workflow_name_created_at")):
        order = RUNS.resolve_sort(sort)
        _count, rows, _estimate = repo._listing(filters, order, "summary", (False,) * len(order))
        params = {**filters.values(repo._codec.time), "limit": 5, "offset": 0, "k_0": repo._codec.time(T0),
                  "k_1": repo._codec.id(thirty[0].id)}
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            cursor = driver.cursor()
            if engine.dialect.name == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + rows.text, rows.params(params))
                plan = " ".join(str(row[-1]) for row in cursor.fetchall())
                assert f"SEARCH runs USING COVERING INDEX {index} (" in plan and "(created_at,id)<(?,?)" in plan, plan
            else:
                cursor.execute("SET enable_seqscan = off")  # a table this small would be read whole otherwise
                cursor.execute("EXPLAIN " + rows.text, rows.params(params))
                plan = " ".join(row[0] for row in cursor.fetchall())
                # Which index the planner takes depends on its statistics (of 30 rows, here); the range
                # condition on (created_at, id) is what makes the page's cost independent of its depth.
                assert "Index Cond: (" in plan and "ROW(created_at, id) < ROW(" in plan.split("Index Cond: (", 1)[1], plan
                assert "Seq Scan" not in plan, plan
            cursor.close()


def test_durations_and_times():
    assert parse_duration("30d") == timedelta(days=30) and parse_duration(" 2W ") == timedelta(weeks=2)
    assert parse_duration("1.5h") == timedelta(minutes=90) and parse_duration(timedelta(seconds=5)).seconds == 5
    for bad in ("30", "d", "-1d", "0s", "30 days", "1e9d", ""):
        with pytest.raises(InvalidQueryError, match="invalid duration"):
            parse_duration(bad)
    assert parse_time("2026-12-01") == parse_time("2026-12-01T00:00:00Z") == parse_time("2026-12-01T01:00+01:00")
    assert parse_time("2026-12-01").tzinfo is not None
    now = parse_time("2026-12-04T12:00Z")
    assert parse_time("12h", now=now) == parse_time("2026-12-04T00:00Z")
    with pytest.raises(InvalidQueryError, match="invalid since '99999999999d': it is too long"):
        parse_time("99999999999d", "since")
    with pytest.raises(InvalidQueryError, match="invalid since '999999w': it is before any date"):
        parse_time("999999w", "since")
    assert Cursor.of(make_run(), (), RunFilters()).values == ()
