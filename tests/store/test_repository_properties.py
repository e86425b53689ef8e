"""Property: list_runs agrees with the same filter, sort and slice done in Python."""

from __future__ import annotations

import uuid
from datetime import timedelta

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import T0, add, make_run
from wfkit.store.models import Run, RunStatus
from wfkit.store.query import PageRequest, RunFilters, SortField

NAMES = ["a", "b", "b-2", "b_2", "c.x"]
SORTABLE = ["id", "workflow_name", "status", "created_at", "updated_at", "started_at", "completed_at"]
# Few distinct times, so that ties are common and the tie-breaker matters.
times = st.integers(min_value=0, max_value=5).map(lambda s: T0 + timedelta(seconds=s))

run_rows = st.builds(
    dict,
    id=st.uuids(version=4),
    workflow_name=st.sampled_from(NAMES),
    status=st.sampled_from(list(RunStatus)),
    created_at=times,
    updated_at=times,
    started_at=st.none() | times,
    completed_at=st.none() | times,
)
sorts = st.lists(st.tuples(st.sampled_from(SORTABLE), st.booleans()), max_size=3, unique_by=lambda t: t[0])


def python_listing(rows, filters: RunFilters, sort: list[SortField], page: int, size: int):
    chosen = [r for r in rows if (not filters.workflow_name or r["workflow_name"] in filters.workflow_name)
              and (not filters.status or r["status"] in filters.status)]
    keys = sort or [SortField("created_at", True)]
    if all(k.name != "id" for k in keys):
        keys = [*keys, SortField("id", keys[0].descending)]
    for key in reversed(keys):  # stable sorts, least significant key first; NULLs last both ways
        def value(r, name=key.name):
            v = r[name]
            return v.value if isinstance(v, RunStatus) else v
        if key.descending:
            chosen.sort(key=lambda r: (value(r) is not None, value(r)), reverse=True)
        else:
            chosen.sort(key=lambda r: (value(r) is None, value(r)))
    return len(chosen), [r["id"] for r in chosen[(page - 1) * size : page * size]]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(run_rows, max_size=25, unique_by=lambda r: r["id"]),
    workflow=st.none() | st.sampled_from(NAMES) | st.lists(st.sampled_from(NAMES), min_size=1, max_size=2),
    statuses=st.lists(st.sampled_from(list(RunStatus)), max_size=3),
    sort=sorts,
    page=st.integers(min_value=1, max_value=5),
    size=st.integers(min_value=1, max_value=10),
)
def test_list_runs_agrees_with_python(engine, repo, rows, workflow, statuses, sort, page, size):
    with engine.begin() as conn:
        conn.execute(sa.delete(Run))
    add(engine, *(make_run(**r) for r in rows))
    filters = RunFilters(workflow_name=workflow, status=statuses)
    fields = [SortField(name, desc) for name, desc in sort]
    result = repo.list_runs(PageRequest(page=page, page_size=size, sort=tuple(fields)), filters)
    total, want = python_listing(rows, filters, fields, page, size)
    assert result.total == total
    assert [r.id for r in result.data] == want
    assert all(isinstance(r.id, uuid.UUID) for r in result.data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(run_rows, max_size=25, unique_by=lambda r: r["id"]),
    workflow=st.none() | st.sampled_from(NAMES),
    statuses=st.lists(st.sampled_from(list(RunStatus)), max_size=2),
    since=st.none() | times,
    sort=sorts,
    size=st.integers(min_value=1, max_value=6),
)
def test_paging_by_cursor_walks_the_listing_without_gaps_or_repeats(engine, repo, rows, workflow, statuses, since,
                                                                     sort, size):
    """Whatever the sort (NULLs, ties, mixed directions), following next_cursor from the first page
    gives exactly the whole listing, in its order; the last page has no cursor."""
    with engine.begin() as conn:
        conn.execute(sa.delete(Run))
    add(engine, *(make_run(**r) for r in rows))
    filters = RunFilters(workflow_name=workflow, status=statuses, since=since)
    fields = tuple(SortField(name, desc) for name, desc in sort)
    in_python = [r for r in rows if since is None or r["created_at"] >= since]
    total, want = python_listing(in_python, filters, list(fields), 1, 10_000)
    seen: list[uuid.UUID] = []
    page = repo.list_runs(PageRequest(page_size=size, sort=fields or None), filters, total="none")
    while True:
        seen += [r.id for r in page.data]
        assert len(seen) <= len(rows), "the cursor went back: rows came twice"
        assert page.total is None and page.total_kind == "none"
        if page.next_cursor is None:
            break
        assert len(page.data) == size
        page = repo.list_runs(PageRequest(page_size=size), filters, cursor=page.next_cursor, total="none")
        assert page.page is None
    assert seen == want
    assert [r.id for r in repo.iter_runs(filters, sort=",".join(map(str, fields)) or None, page_size=size)] == want
