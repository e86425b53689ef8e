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

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from wfkit.errors import ConfigurationError, InvalidQueryError
from wfkit.formatting import shown
from wfkit.store.models import Decision, Run, RunStatus, Stage

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
    total: int
    page: int
    page_size: int
    total_pages: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; items with a ``to_dict()`` use it (fields in declared order)."""
        items = [item.to_dict() if hasattr(item, "to_dict") else item for item in self.data]
        return {"data": items, **self.model_dump(mode="json", exclude={"data"})}

    @classmethod
    def build(cls, data: Iterable[T], *, total: int, page: int, page_size: int) -> PageResult[T]:
        pages = max(1, math.ceil(total / page_size)) if page_size else 1
        return cls(data=list(data), total=total, page=page, page_size=page_size, total_pages=pages)


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", parse_statuses(_values(self.status, "status", (str, RunStatus))))
        object.__setattr__(self, "workflow_name", parse_workflow_names(_values(self.workflow_name, "workflow_name",
                                                                               (str,))))

    @classmethod
    def from_query(cls, query: Mapping[str, Any]) -> RunFilters:
        """Read ``workflow_name`` and ``status`` (repeated, or comma-separated) from query parameters."""
        return cls(workflow_name=parse_workflow_names(_query_values(query, "workflow_name")),
                   status=parse_statuses(_query_values(query, "status")))

    def apply(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """``stmt`` with these filters added as bound-parameter WHERE clauses."""
        clauses = self.clauses()
        return stmt.where(*clauses).params(self.values()) if clauses else stmt

    @property
    def shape(self) -> tuple[int, int]:
        """What the SQL of these filters depends on (not their values): statements are cached by it."""
        return len(self.workflow_name), len(self.status)

    def clauses(self) -> list[Any]:
        """The WHERE clauses, with bound parameters named as :meth:`values` names them."""
        return [clause for clause in (_any_of(RUNS.column("workflow_name", purpose="filter"), "f_workflow_name",
                                              len(self.workflow_name)),
                                      _any_of(RUNS.column("status", purpose="filter"), "f_status", len(self.status)))
                if clause is not None]

    def values(self) -> dict[str, Any]:
        """The bound parameters' values (plain strings)."""
        values: dict[str, Any] = {f"f_status_{i}": status.value for i, status in enumerate(self.status)}
        values.update({f"f_workflow_name_{i}": name for i, name in enumerate(self.workflow_name)})
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


