from __future__ import annotations

import pytest

from wfkit.errors import ConfigurationError, InvalidQueryError
from wfkit.store.models import RunStatus
from wfkit.store.query import (
    RUNS,
    STAGES,
    PageRequest,
    PageResult,
    PaginationConfig,
    RunFilters,
    SortField,
    parse_sort,
)


def test_parse_sort():
    assert parse_sort("-created_at,workflow_name") == (SortField("created_at", True), SortField("workflow_name"))
    assert parse_sort(" +status , -id ") == (SortField("status"), SortField("id", True))
    assert parse_sort(["status", "-created_at"]) == (SortField("status"), SortField("created_at", True))
    assert parse_sort("") == () and parse_sort(None) == () and parse_sort(",,") == ()
    assert str(SortField("x", True)) == "-x"


@pytest.mark.parametrize(
    "spec",
    ["created_at; drop table runs", "created_at desc", "runs.id", "-", "1abc", "created_at--"],
)
def test_parse_sort_rejects_anything_but_field_names(spec):
    with pytest.raises(InvalidQueryError, match="invalid sort field"):
        parse_sort(spec)


def test_sort_fields_are_case_insensitive_as_statuses_are():
    assert parse_sort("-Created_At,STATUS") == (SortField("created_at", True), SortField("status"))


def test_unknown_sort_field_lists_the_allowed_ones():
    with pytest.raises(InvalidQueryError) as info:
        parse_sort("-params", RUNS)
    assert str(info.value) == (
        "unknown sort field 'params': allowed fields are "
        "completed_at, created_at, id, started_at, status, updated_at, workflow_name"
    )


def test_duplicate_sort_field():
    with pytest.raises(InvalidQueryError, match="'status' is given more than once"):
        parse_sort("status,-status")


def test_default_sorts_and_tie_breaker():
    assert RUNS.resolve_sort(None) == (SortField("created_at", True), SortField("id", True))
    assert STAGES.resolve_sort(None) == (SortField("created_at"), SortField("id"))
    assert RUNS.resolve_sort("status,-created_at") == (
        SortField("status"), SortField("created_at", True), SortField("id")
    )
    assert RUNS.resolve_sort("-id,status") == (SortField("id", True), SortField("status"))


def test_filter_fields_are_whitelisted():
    assert RUNS.column("status", purpose="filter") is not None
    with pytest.raises(InvalidQueryError, match="unknown filter field 'error_message': allowed fields are status, workflow_name"):
        RUNS.column("error_message", purpose="filter")


def test_pagination_config_defaults_and_env():
    assert PaginationConfig() == PaginationConfig(20, 100)
    assert PaginationConfig.from_env({}) == PaginationConfig(20, 100)
    assert PaginationConfig.from_env({"WFKIT_DEFAULT_PAGE_SIZE": "50", "WFKIT_MAX_PAGE_SIZE": "500"}) == PaginationConfig(50, 500)
    assert PaginationConfig.from_env({"WFKIT_DEFAULT_PAGE_SIZE": " "}) == PaginationConfig(20, 100)
    # one set alone: the other follows
    assert PaginationConfig.from_env({"WFKIT_MAX_PAGE_SIZE": "5"}) == PaginationConfig(5, 5)
    assert PaginationConfig.from_env({"WFKIT_DEFAULT_PAGE_SIZE": "500"}) == PaginationConfig(500, 500)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WFKIT_DEFAULT_PAGE_SIZE": "abc"}, "WFKIT_DEFAULT_PAGE_SIZE must be a whole number, got 'abc'"),
        ({"WFKIT_MAX_PAGE_SIZE": "0"}, "WFKIT_MAX_PAGE_SIZE must be a whole number of at least 1, got '0'"),
        ({"WFKIT_DEFAULT_PAGE_SIZE": "200", "WFKIT_MAX_PAGE_SIZE": "100"},
         r"default_page_size \(200\) must not exceed max_page_size \(100\)"),
    ],
)
def test_invalid_pagination_config(env, message):
    with pytest.raises(ConfigurationError, match=message):
        PaginationConfig.from_env(env)


def test_invalid_pagination_config_in_code():
    with pytest.raises(ConfigurationError):
        PaginationConfig(default_page_size=0)
    with pytest.raises(ConfigurationError):
        PaginationConfig(default_page_size=True)


@pytest.mark.parametrize(
    ("page", "size", "want_page", "want_size"),
    [(1, None, 1, 20), (2, 1000, 2, 100), (7, 100, 7, 100), (3, 5, 3, 5)],
)
def test_page_request_normalization(page, size, want_page, want_size):
    got = PageRequest(page, size).normalized(PaginationConfig())
    assert (got.page, got.page_size) == (want_page, want_size)
    assert got.offset == (want_page - 1) * want_size


def test_page_request_from_query():
    assert PageRequest.from_query({}) == PageRequest(1, None, None)
    req = PageRequest.from_query({"page": "3", "page_size": "50", "sort": "-created_at,id"})
    assert req == PageRequest(3, 50, (SortField("created_at", True), SortField("id")))
    # parse_qs style (lists) and multi-valued sort
    req = PageRequest.from_query({"page": ["2"], "sort": ["status", "-id"]})
    assert req.page == 2 and req.sort == (SortField("status"), SortField("id", True))
    with pytest.raises(InvalidQueryError, match="page must be a whole number of at least 1, got '0'"):
        PageRequest.from_query({"page": "0"})


@pytest.mark.parametrize("query", [{"page": "abc"}, {"page_size": "1.5"}, {"page": "1e3"}])
def test_page_request_from_query_rejects_non_numbers(query):
    with pytest.raises(InvalidQueryError, match="must be a whole number, got"):
        PageRequest.from_query(query)


class MultiDict(dict):
    """Like the query mappings of web frameworks: getlist() for repeated keys."""

    def getlist(self, key):
        return self.get(key, [])


def test_run_filters():
    assert RunFilters().status == () and RunFilters().workflow_name == ()
    f = RunFilters.from_query({"status": "failed,cancelled", "workflow_name": "etl"})
    assert f == RunFilters("etl", (RunStatus.FAILED, RunStatus.CANCELLED)) == RunFilters(("etl",), "failed,cancelled")
    assert RunFilters.from_query(MultiDict(workflow_name=["a,b", "a"])).workflow_name == ("a", "b")
    f = RunFilters.from_query(MultiDict(status=["failed", "cancelled", "failed"]))
    assert f.status == (RunStatus.FAILED, RunStatus.CANCELLED)
    assert RunFilters(status="completed").status == (RunStatus.COMPLETED,)
    assert RunFilters(status=[" Failed "]).status == (RunStatus.FAILED,)
    assert RunFilters(workflow_name="  ").workflow_name == ()


def test_run_filters_reject_unknown_status():
    with pytest.raises(InvalidQueryError) as info:
        RunFilters.from_query({"status": "failed,done"})
    assert str(info.value) == "unknown status 'done': allowed values are pending, running, completed, failed, cancelled"


def test_page_result():
    empty = PageResult[int].build([], total=0, page=1, page_size=20)
    assert empty.data == [] and empty.total_pages == 1
    assert PageResult[int].build([1], total=41, page=3, page_size=20).total_pages == 3
    assert PageResult[int].build(range(20), total=40, page=1, page_size=20).total_pages == 2
    assert PageResult[int].build([], total=0, page=1, page_size=20).to_dict() == {
        "data": [], "total": 0, "page": 1, "page_size": 20, "total_pages": 1, "total_kind": "exact", "next_cursor": None
    }
