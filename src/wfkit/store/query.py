"""Listing queries: public-field projections, sorting, filters and pages.

Everything a user types (a sort spec, a filter value, a page number) is
checked here against a whitelist and reaches SQL only as a column object or a
bound parameter, never as text.

- :class:`Projection`: the public field names of one table that may be sorted
  or filtered on, mapped to their columns.
- :func:`parse_sort`: ``"-created_at,workflow_name"`` to :class:`SortField` s.
- :class:`PaginationConfig`, :class:`PageRequest`, :class:`PageResult`.
- :class:`RunFilters`: the run listing's filters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from wfkit.errors import ConfigurationError, InvalidQueryError
from wfkit.formatting import shown
from wfkit.jsontext import dumps
from wfkit.store.models import Decision, Run, RunStatus, Stage, UTCDateTime

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
#: The largest page size a setting may ask for.
PAGE_SIZE_LIMIT = 10_000
DEFAULT_PAGE_SIZE_ENV = "WFKIT_DEFAULT_PAGE_SIZE"
MAX_PAGE_SIZE_ENV = "WFKIT_MAX_PAGE_SIZE"

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# --------------------------------------------------------------------------- sorting


@dataclass(frozen=True, slots=True)
class SortField:
    """One sort key: a public field name and its direction."""

    name: str
    descending: bool = False

    def __str__(self) -> str:
        return f"-{self.name}" if self.descending else self.name


def parse_sort(spec: str | Sequence[str] | None, projection: Projection | None = None) -> tuple[SortField, ...]:
    """Parse a sort spec such as ``"-created_at,workflow_name"``.

    Fields are separated by commas (a sequence of specs is joined); a leading
    ``-`` means descending, a leading ``+`` or nothing ascending. With a
    ``projection``, every field must be one of its sortable fields. An empty
    spec gives an empty tuple (the caller's default sort applies).
    """
    if spec is None:
        return ()
    parts = [spec] if isinstance(spec, str) else list(spec)
    fields: list[SortField] = []
    seen: set[str] = set()
    for part in parts:
        for raw in str(part).split(","):
            item = raw.strip()
            if not item:
                continue
            descending = item.startswith("-")
            name = (item[1:].strip() if item[0] in "+-" else item).lower()  # as --status: case is not meaning
            if not _FIELD_NAME.match(name):
                allowed = (
                    f"allowed fields are {projection.allowed_sort()}"
                    if projection
                    else "expected field names, comma-separated, each with an optional leading '-' for descending"
                )
                raise InvalidQueryError(f"invalid sort field {shown(item)}: {allowed}")
            if projection is not None:
                projection.column(name, purpose="sort")
            if name in seen:
                raise InvalidQueryError(f"sort field {shown(name)} is given more than once")
            seen.add(name)
            fields.append(SortField(name, descending))
    return tuple(fields)


@dataclass(frozen=True)
class Projection:
    """The public fields of one table that users may sort and filter on.

    ``default_sort`` applies when a request names none. ``tie_breaker`` (a
    unique field) is appended to every sort that lacks it, in the direction of
    the first key, so pages never overlap or skip rows.
    """

    model: type[Any]
    sortable: Mapping[str, Any]
    filterable: frozenset[str]
    default_sort: tuple[SortField, ...]
    tie_breaker: str = "id"

    def allowed_sort(self) -> str:
        return ", ".join(sorted(self.sortable))

    def column(self, name: str, *, purpose: str = "sort") -> Any:
        """The column behind public field ``name``, or :class:`InvalidQueryError` listing the allowed ones."""
        if purpose == "filter":
            if name not in self.filterable:
                raise InvalidQueryError(
                    f"unknown filter field {shown(name)}: allowed fields are {', '.join(sorted(self.filterable))}"
                )
            return self.sortable.get(name, getattr(self.model, name))
        try:
            return self.sortable[name]
        except KeyError:
            raise InvalidQueryError(
                f"unknown sort field {shown(name)}: allowed fields are {self.allowed_sort()}"
            ) from None

    def resolve_sort(self, sort: Sequence[SortField] | str | None) -> tuple[SortField, ...]:
        """The full sort: the request's (checked) or the default, plus the tie-breaker."""
        fields = parse_sort(sort, self) if isinstance(sort, str) or sort is None else tuple(sort)
        for f in fields:
            self.column(f.name)
        if not fields:
            fields = self.default_sort
        if all(f.name != self.tie_breaker for f in fields):
            fields = (*fields, SortField(self.tie_breaker, fields[0].descending))
        return fields

    def order_by(self, sort: Sequence[SortField] | str | None) -> list[Any]:
        """ORDER BY clauses for ``sort``. NULLs sort last in both directions, on every engine."""
        clauses = []
        for f in self.resolve_sort(sort):
            col = self.column(f.name)
            clause = col.desc() if f.descending else col.asc()
            if getattr(col, "nullable", False):
                clause = clause.nulls_last()
            clauses.append(clause)
        return clauses

    def select_all(self, *where: Any, sort: Sequence[SortField] | str | None = ()) -> sa.Select[Any]:
        """A select of every public column of the table's rows matching ``where``, unbounded.

        Ordered by ``sort`` (None: the default sort plus tie-breaker; an empty tuple, the
        default: no ORDER BY, for callers that add their own).
        """
        stmt = sa.select(*self.model.__table__.columns).where(*where)
        if sort == ():
            return stmt
        return stmt.order_by(*self.order_by(sort))


def _columns(model: type[Any], *names: str) -> dict[str, Any]:
    table = model.__table__
    return {name: table.c[name] for name in names}


RUNS = Projection(
    model=Run,
    sortable=_columns(
        Run, "id", "workflow_name", "status", "created_at", "updated_at", "started_at", "completed_at"
    ),
    filterable=frozenset({"workflow_name", "status"}),
    default_sort=(SortField("created_at", descending=True),),
)
STAGES = Projection(
    model=Stage,
    sortable=_columns(Stage, "id", "node_name", "iteration", "status", "duration_ms", "created_at"),
    filterable=frozenset({"node_name", "status"}),
    default_sort=(SortField("created_at"),),
)
DECISIONS = Projection(
    model=Decision,
    sortable=_columns(Decision, "id", "from_node", "to_node", "predicate_name", "predicate_result", "created_at"),
    filterable=frozenset({"from_node", "to_node", "predicate_name"}),
    default_sort=(SortField("created_at"),),
)


# --------------------------------------------------------------------------- pages


def _whole_number(value: Any, what: str, *, minimum: int | None = None, maximum: int | None = None,
                  error: type[Exception] = InvalidQueryError) -> int:
    """``value`` (text, or a number) as an int; ``error`` naming ``what`` if it is not a whole
    number, or is below ``minimum`` or above ``maximum``."""
    text = str(value).strip()
    try:
        number = int(text) if len(text) <= 30 else None  # longer than any count: not worth converting
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise error(f"{what} must be a whole number, got {shown(str(value))}")
    if minimum is not None and number < minimum:
        raise error(f"{what} must be a whole number of at least {minimum}, got {value!r}")
    if maximum is not None and number > maximum:
        raise error(f"{what} must be at most {maximum}, got {shown(str(value))}")
    return number


@dataclass(frozen=True, slots=True)
class PaginationConfig:
    """Page size limits: ``default_page_size`` (20) when none is asked, never more than ``max_page_size`` (100)."""

    default_page_size: int = DEFAULT_PAGE_SIZE
    max_page_size: int = MAX_PAGE_SIZE

    def __post_init__(self) -> None:
        for name in ("default_page_size", "max_page_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= PAGE_SIZE_LIMIT:
                raise ConfigurationError(f"{name} must be a whole number from 1 to {PAGE_SIZE_LIMIT}, got {value!r}")
        if self.default_page_size > self.max_page_size:
            raise ConfigurationError(
                f"default_page_size ({self.default_page_size}) must not exceed "
                f"max_page_size ({self.max_page_size})"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PaginationConfig:
        """Read ``WFKIT_DEFAULT_PAGE_SIZE`` and ``WFKIT_MAX_PAGE_SIZE`` (unset or empty: the defaults)."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for key, var in (("default_page_size", DEFAULT_PAGE_SIZE_ENV), ("max_page_size", MAX_PAGE_SIZE_ENV)):
            raw = env.get(var, "").strip()
            if raw:
                values[key] = _whole_number(raw, var, minimum=1, maximum=PAGE_SIZE_LIMIT, error=ConfigurationError)
        # One of the two set alone: the other follows it (a small maximum lowers the default, a large
        # default raises the maximum). Both set and contradicting each other is an error.
        if "max_page_size" not in values and values.get("default_page_size", 0) > MAX_PAGE_SIZE:
            values["max_page_size"] = values["default_page_size"]
        if "default_page_size" not in values and values.get("max_page_size", DEFAULT_PAGE_SIZE) < DEFAULT_PAGE_SIZE:
            values["default_page_size"] = values["max_page_size"]
        try:
            return cls(**values)
        except ConfigurationError as err:
            raise ConfigurationError(
                f"invalid pagination settings ({DEFAULT_PAGE_SIZE_ENV}/{MAX_PAGE_SIZE_ENV}): {err}"
            ) from None


def _query_values(query: Mapping[str, Any], key: str) -> list[str]:
    """All values of ``key`` in a URL-style mapping (plain, list-valued, or multi-dict)."""
    getlist = getattr(query, "getlist", None) or getattr(query, "getall", None)
    if callable(getlist):
        try:
            values = list(getlist(key))
        except KeyError:
            values = []
    else:
        raw = query.get(key)
        if raw is None:
            values = []
        elif isinstance(raw, (list, tuple)):
            values = list(raw)
        else:
            values = [raw]
    return [str(v) for v in values if v is not None]


def _last_value(query: Mapping[str, Any], key: str) -> str | None:
    values = [v for v in _query_values(query, key) if v.strip()]
    return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page to return, how large, in which order.

    ``page`` counts from 1; ``page_size`` None means the configured default;
    ``sort`` is a spec string (``"-created_at"``) or parsed :class:`SortField` s.
    One rule for the library, the command line and the HTTP API: a page or a page size below 1,
    or one that is not a whole number, is an :class:`InvalidQueryError`; a page size above the
    configured maximum is limited to it (the result's ``page_size`` says which was used).
    """

    page: int = 1
    page_size: int | None = None
    sort: str | tuple[SortField, ...] | None = None

    def __post_init__(self) -> None:
        _check_count(self.page, "page")
        if self.page_size is not None:
            _check_count(self.page_size, "page_size")
        if self.sort is not None and not isinstance(self.sort, (str, tuple)):
            raise InvalidQueryError(f"sort must be a spec such as '-created_at,id' (or SortFields), "
                                    f"got {self.sort!r} ({type(self.sort).__name__})")

    def normalized(self, config: PaginationConfig | None = None) -> PageRequest:
        """With the configured default page size if none was asked, and no larger than the maximum."""
        config = config or PaginationConfig()
        size = config.default_page_size if self.page_size is None else min(self.page_size, config.max_page_size)
        if (self.page - 1) * size > MAX_OFFSET:
            raise InvalidQueryError(f"page {self.page} is too far: pages of {size} runs reach only to page "
                                    f"{MAX_OFFSET // size + 1}")
        return PageRequest(page=self.page, page_size=size, sort=self.sort or None)

    @property
    def offset(self) -> int:
        return (self.page - 1) * (self.page_size or DEFAULT_PAGE_SIZE)

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> PageRequest:
        """Read ``page``, ``page_size`` and ``sort`` (fields of runs) from URL-style query parameters."""
        page = _last_value(query, "page")
        size = _last_value(query, "page_size")
        sort_values = [v for v in _query_values(query, "sort") if v.strip()]
        return cls(
            page=_whole_number(page, "page", minimum=1) if page is not None else 1,
            page_size=_whole_number(size, "page_size", minimum=1) if size is not None else None,
            sort=parse_sort(sort_values, RUNS) or None,  # the fields a listing of runs sorts by
        )


#: The deepest offset a listing reaches (the databases' 64-bit integers, with room to spare).
MAX_OFFSET = 2**62
#: How many workflow names one filter may hold: each is a bound parameter, and databases cap those
#: (PostgreSQL at 65,535 a statement), which would otherwise be a server error, not bad input.
MAX_FILTER_VALUES = 1000


def _check_count(value: Any, what: str) -> None:
    """``value`` must be a whole number of at least 1 (a Python int; text belongs to from_query)."""
    if isinstance(value, bool) or not isinstance(value, int):
        hint = "; for text from a URL, use PageRequest.from_query" if isinstance(value, str) else ""
        raise InvalidQueryError(f"{what} must be a whole number of at least 1, got {value!r} "
                                f"({type(value).__name__}){hint}")
    if value < 1:
        raise InvalidQueryError(f"{what} must be a whole number of at least 1, got {value}")
    if value > MAX_OFFSET:
        raise InvalidQueryError(f"{what} {value} is too large: at most {MAX_OFFSET}")


class PageResult(BaseModel, Generic[T]):
    """One page of results and where it stands in the whole."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    data: list[T]
    #: how many runs match (None with ``total="none"``); ``total_kind`` says how it was counted
    total: int | None
    #: the page's number (None for a page asked for by cursor: its number is not known)
    page: int | None
    page_size: int
    total_pages: int | None
    #: ``"exact"`` (counted), ``"estimate"`` (the database planner's estimate) or ``"none"``
    total_kind: str = "exact"
    #: where the next page starts (pass it as ``cursor=``); None on the last page
    next_cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; items with a ``to_dict()`` use it (fields in declared order)."""
        items = [item.to_dict() if hasattr(item, "to_dict") else item for item in self.data]
        return {"data": items, **self.model_dump(mode="json", exclude={"data"})}

    @classmethod
    def build(cls, data: Iterable[T], *, total: int | None, page: int | None, page_size: int,
              total_kind: str = "exact", next_cursor: str | None = None) -> PageResult[T]:
        if total is None:
            pages = None
        else:
            pages = max(1, math.ceil(total / page_size)) if page_size else 1
        return cls(data=list(data), total=total, page=page, page_size=page_size, total_pages=pages,
                   total_kind=total_kind, next_cursor=next_cursor)


# --------------------------------------------------------------------------- filters


def parse_statuses(values: Iterable[str | RunStatus]) -> tuple[RunStatus, ...]:
    """Run statuses from values that may each hold several, comma-separated; duplicates dropped."""
    out: list[RunStatus] = []
    for value in values:
        items = [value] if isinstance(value, RunStatus) else str(value).split(",")
        for item in items:
            if isinstance(item, RunStatus):
                status = item
            else:
                text = item.strip().lower()
                if not text:
                    continue
                try:
                    status = RunStatus(text)
                except ValueError:
                    allowed = ", ".join(s.value for s in RunStatus)
                    raise InvalidQueryError(f"unknown status {shown(item.strip())}: allowed values are {allowed}") from None
            if status not in out:
                out.append(status)
    return tuple(out)


def _values(given: Any, name: str, kinds: tuple[type, ...]) -> tuple[Any, ...]:
    """A filter's values: None, one value, or an iterable of them; anything else is an
    :class:`InvalidQueryError` saying what to pass."""
    if given is None:
        return ()
    if isinstance(given, kinds):
        return (given,)
    what = "a run status" if name == "status" else "a workflow name"
    if isinstance(given, (list, tuple, set, frozenset)) and all(isinstance(v, kinds) for v in given):
        return tuple(given)
    raise InvalidQueryError(f"{name} filter must be {what} or a list of them (text), got {shown(given)} "
                            f"({type(given).__name__})")


@dataclass(frozen=True)
class RunFilters:
    """Filters of the run listing. ``workflow_name`` and ``status`` are each one value or several
    (any of them matches); text may hold several, comma-separated."""

    workflow_name: tuple[str, ...] = field(default=())
    status: tuple[RunStatus, ...] = field(default=())
    #: only runs created at or after this time (a datetime; text: see :func:`parse_time`)
    since: datetime | None = None
    #: only runs created before this time
    until: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", parse_statuses(_values(self.status, "status", (str, RunStatus))))
        object.__setattr__(self, "workflow_name", parse_workflow_names(_values(self.workflow_name, "workflow_name",
                                                                               (str,))))
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_time(value, name))
        if self.since is not None and self.until is not None and self.since > self.until:
            raise InvalidQueryError(f"since ({self.since.isoformat()}) is after until ({self.until.isoformat()}): "
                                    "no run was created in between")

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> RunFilters:
        """Read ``workflow_name`` and ``status`` (repeated, or comma-separated), ``since`` and
        ``until`` from query parameters."""
        return cls(workflow_name=parse_workflow_names(_query_values(query, "workflow_name")),
                   status=parse_statuses(_query_values(query, "status")),
                   since=_last_value(query, "since"), until=_last_value(query, "until"))

    @property
    def filtered(self) -> bool:
        """Whether any filter is set."""
        return bool(self.workflow_name or self.status or self.since or self.until)

    def fingerprint(self) -> str:
        """A short digest of these filters: a cursor carries it, so that it is not used with others."""
        text = dumps([sorted(self.workflow_name), sorted(s.value for s in self.status),
                      None if self.since is None else self.since.isoformat(),
                      None if self.until is None else self.until.isoformat()])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def apply(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """``stmt`` with these filters added as bound-parameter WHERE clauses."""
        clauses = self.clauses()
        return stmt.where(*clauses).params(self.values()) if clauses else stmt

    @property
    def shape(self) -> tuple[int, int, bool, bool]:
        """What the SQL of these filters depends on (not their values): statements are cached by it."""
        return len(self.workflow_name), len(self.status), self.since is not None, self.until is not None

    def clauses(self) -> list[Any]:
        """The WHERE clauses, with bound parameters named as :meth:`values` names them."""
        created = RUNS.column("created_at")
        return [clause for clause in (_any_of(RUNS.column("workflow_name", purpose="filter"), "f_workflow_name",
                                              len(self.workflow_name)),
                                      _any_of(RUNS.column("status", purpose="filter"), "f_status", len(self.status)),
                                      None if self.since is None else created >= sa.bindparam("f_since"),
                                      None if self.until is None else created < sa.bindparam("f_until"))
                if clause is not None]

    def values(self, time: Callable[[datetime], Any] = lambda value: value) -> dict[str, Any]:
        """The bound parameters' values (plain strings, and times as ``time`` gives them to the driver)."""
        values: dict[str, Any] = {f"f_status_{i}": status.value for i, status in enumerate(self.status)}
        values.update({f"f_workflow_name_{i}": name for i, name in enumerate(self.workflow_name)})
        if self.since is not None:
            values["f_since"] = time(self.since)
        if self.until is not None:
            values["f_until"] = time(self.until)
        return values


def _any_of(column: Any, prefix: str, count: int) -> Any:
    """``column = :prefix_0`` for one value, ``column IN (:prefix_0, ...)`` for several, None for none."""
    if count == 0:
        return None
    if count == 1:
        return column == sa.bindparam(f"{prefix}_0", type_=sa.String())
    return column.in_([sa.bindparam(f"{prefix}_{i}", type_=sa.String()) for i in range(count)])


def parse_workflow_names(values: Iterable[str]) -> tuple[str, ...]:
    """Workflow names from values that may each hold several, comma-separated; duplicates dropped.
    Text no database can compare (a NUL, a lone surrogate) is an :class:`InvalidQueryError`."""
    out: dict[str, None] = {}  # ordered, and a set's speed for the duplicates
    for value in values:
        for item in str(value).split(","):
            name = item.strip()
            if not name or name in out:
                continue
            check_filter_text(name, "workflow name")
            out[name] = None
            if len(out) > MAX_FILTER_VALUES:
                raise InvalidQueryError(f"more than {MAX_FILTER_VALUES} workflow names in one filter: give at most "
                                        f"{MAX_FILTER_VALUES}")
    return tuple(out)


def check_filter_text(text: str, what: str) -> str:
    """``text`` if every database can compare it: no NUL character, no lone surrogate."""
    if "\x00" in text:
        raise InvalidQueryError(f"the {what} filter {shown(text)} contains a NUL character, which no name holds")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQueryError(f"the {what} filter {shown(text)} is not valid text (a lone surrogate)") from None
    return text




# --------------------------------------------------------------------------- times and durations

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_FORMS = "a number and a unit: 45s, 90m, 12h, 30d, 2w"


def parse_duration(value: timedelta | str, what: str = "duration") -> timedelta:
    """A positive length of time: a :class:`timedelta`, or text such as ``30d``, ``12h``, ``90m``,
    ``45s``, ``2w``; anything else is an :class:`InvalidQueryError` naming the value and the forms."""
    if isinstance(value, timedelta):
        amount = value
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise InvalidQueryError(f"invalid {what} {shown(str(value))}: expected {DURATION_FORMS}")
        try:
            amount = timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
        except OverflowError:
            raise InvalidQueryError(f"invalid {what} {shown(str(value))}: it is too long") from None
    if amount <= timedelta(0):
        raise InvalidQueryError(f"invalid {what} {shown(str(value))}: it must be longer than nothing")
    return amount


def parse_time(value: datetime | str, what: str = "time", *, now: datetime | None = None) -> datetime:
    """A moment, timezone-aware UTC: a datetime (naive means UTC), or text: an ISO 8601 date or time
    (``2026-12-01``, ``2026-12-01T08:00``, ``...Z`` or ``...+01:00``; without an offset, UTC) or a
    length of time ago (``7d``, ``2h``: see :func:`parse_duration`). Anything else is an
    :class:`InvalidQueryError` naming the value and the forms."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and _DURATION.match(value):
        try:
            return (now or datetime.now(timezone.utc)) - parse_duration(value, what)
        except OverflowError:
            raise InvalidQueryError(f"invalid {what} {shown(value)}: it is before any date") from None
    else:
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
        except ValueError:
            raise InvalidQueryError(f"invalid {what} {shown(text)}: expected an ISO 8601 date or time "
                                    f"(2026-12-01, 2026-12-01T08:00:00Z) or a time ago ({DURATION_FORMS})") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


# --------------------------------------------------------------------------- totals and cursors

#: What ``list_runs(total=...)`` takes: count the matching runs, ask the database's planner for an
#: estimate (PostgreSQL; SQLite has none and counts), or leave the total out.
TOTALS = ("exact", "estimate", "none")


def check_total(value: str) -> str:
    if value not in TOTALS:
        raise InvalidQueryError(f"unknown total {shown(str(value))}: expected one of {', '.join(TOTALS)}")
    return value


CURSOR_VERSION = 1
#: Longer than any cursor wfkit makes (a handful of sort values): a longer one is not worth decoding.
MAX_CURSOR_LENGTH = 2000


@dataclass(frozen=True)
class Cursor:
    """Where a page of a listing ends: the sort it was made with (with the tie-breaker), the last
    row's values of those fields, and the fingerprint of the filters. Text to clients
    (:meth:`encode`), opaque to them.

    A cursor is validated, not signed: it holds nothing secret (the sort values of a row the client
    was shown), and whatever it holds reaches SQL only as bound parameters of the types its fields
    have. A cursor that does not decode, or does not fit the listing it is given to, is an
    :class:`InvalidQueryError` (HTTP 400)."""

    sort: tuple[SortField, ...]
    values: tuple[Any, ...]
    filters: str

    def encode(self) -> str:
        keys = [_cursor_value(value) for value in self.values]
        text = dumps({"v": CURSOR_VERSION, "s": ",".join(map(str, self.sort)), "k": keys, "f": self.filters})
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def of(cls, run: Any, sort: tuple[SortField, ...], filters: RunFilters) -> Cursor:
        """The cursor after ``run`` in a listing sorted by ``sort`` (resolved) with ``filters``."""
        return cls(sort, tuple(getattr(run, f.name) for f in sort), filters.fingerprint())

    @classmethod
    def decode(cls, text: str, filters: RunFilters, sort: tuple[SortField, ...] | None) -> Cursor:
        """The cursor ``text`` stands for, checked against the listing it is given to (``filters``,
        and ``sort`` if the request names one; else the cursor's own sort applies)."""
        def bad(why: str) -> InvalidQueryError:
            return InvalidQueryError(f"invalid cursor {shown(str(text)[:40] + ('...' if len(str(text)) > 40 else ''))}: "
                                     f"{why}; list again without it to start from the first page")

        if not isinstance(text, str) or not text.strip() or len(text) > MAX_CURSOR_LENGTH:
            raise bad("it is not a cursor this listing gave")
        try:
            raw = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=True)
            doc = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
            raise bad("it is not a cursor this listing gave") from None
        if not isinstance(doc, dict) or set(doc) != {"v", "s", "k", "f"} or doc["v"] != CURSOR_VERSION:
            raise bad("it is not a cursor this listing gave")
        if not isinstance(doc["s"], str) or not isinstance(doc["k"], list) or not isinstance(doc["f"], str):
            raise bad("it is not a cursor this listing gave")
        try:
            own = RUNS.resolve_sort(doc["s"])
        except InvalidQueryError:
            raise bad("it is not a cursor this listing gave") from None
        if ",".join(map(str, own)) != doc["s"] or len(doc["k"]) != len(own):
            raise bad("it is not a cursor this listing gave")
        if sort is not None and tuple(sort) != own:
            raise bad(f"it was made for the sort {doc['s']}, not {','.join(map(str, sort))}")
        if doc["f"] != filters.fingerprint():
            raise bad("it was made for other filters")
        values = tuple(_cursor_field(f.name, value, bad) for f, value in zip(own, doc["k"]))
        return cls(own, values, doc["f"])


def _cursor_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, RunStatus):
        return value.value
    return value


def _cursor_field(name: str, value: Any, bad: Callable[[str], InvalidQueryError]) -> Any:
    """A cursor's value of field ``name``, as the column's type (else ``bad``)."""
    column = RUNS.column(name)
    if value is None:
        if column.nullable:
            return None
        raise bad(f"its {name} is missing")
    if not isinstance(value, str) or len(value) > 100:
        raise bad(f"its {name} is not a {name}")
    try:
        if isinstance(column.type, UTCDateTime):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError(value)
            return moment.astimezone(timezone.utc)
        if name == "id":
            return uuid.UUID(hex=value)
        if name == "status":
            return RunStatus(value)
    except ValueError:
        raise bad(f"its {name} is not a {name}") from None
    return check_filter_text(value, name)


def keyset(sort: Sequence[SortField], nulls: Sequence[bool]) -> Any:
    """The WHERE clause of the rows after a cursor in a listing sorted by ``sort`` (resolved: its
    last field is the unique tie-breaker), NULLs last in both directions, with bound parameters
    ``k_0``, ``k_1``... for the cursor's values (``nulls``: which of them are NULL, and have no
    parameter). When every field is NOT NULL and sorts the same way, it is one row comparison,
    ``(created_at, id) < (:k_0, :k_1)``, which both databases answer with a range of the index the
    listing reads; otherwise the lexicographic expansion, led by a bound on the first field that
    an index range can start from."""
    columns = [RUNS.column(f.name) for f in sort]
    params = [None if null else sa.bindparam(f"k_{i}", type_=col.type) for i, (col, null) in
              enumerate(zip(columns, nulls))]
    same_way = len({f.descending for f in sort}) == 1
    if same_way and not any(getattr(col, "nullable", False) for col in columns):
        left, right = sa.tuple_(*columns), sa.tuple_(*params)
        return left < right if sort[0].descending else left > right
    disjuncts = []
    for i, (f, col, param) in enumerate(zip(sort, columns, params)):
        if param is None:
            continue  # NULL sorts last: nothing comes after it in this field
        after = col < param if f.descending else col > param
        if getattr(col, "nullable", False):
            after = sa.or_(after, col.is_(None))
        equal = [c.is_(None) if p is None else c == p for c, p in zip(columns[:i], params[:i])]
        disjuncts.append(sa.and_(*equal, after))
    first, lead = columns[0], params[0]
    if lead is None:
        bound = first.is_(None)
    else:
        bound = first <= lead if sort[0].descending else first >= lead
        if getattr(first, "nullable", False):
            bound = sa.or_(bound, first.is_(None))
    return sa.and_(bound, sa.or_(*disjuncts) if disjuncts else sa.false())
