"""The read side of wfkit: browse runs and their stages and decisions.

>>> from wfkit.store.repository import Repository
>>> from wfkit.store.query import PageRequest, RunFilters
>>> repo = Repository("sqlite:///runs.db")                          # doctest: +SKIP
>>> page = repo.list_runs(PageRequest(page=1, page_size=50), RunFilters(status="failed"))  # doctest: +SKIP

The repository writes nothing. It is safe to share between the threads of a
web service: on PostgreSQL each call borrows a connection from the engine's
pool and gives it back; on a SQLite file each thread keeps a connection of its
own (closed when the thread ends, or by :meth:`Repository.close`). Returned
objects belong to no session: plain data, readable after the call.

Reads are short and frequent, so they skip SQLAlchemy's per-call machinery:
each statement is built with SQLAlchemy once per shape (which filters, which
sort), compiled for the engine's dialect, and then run on the driver
connection, its rows typed by :mod:`wfkit.store.codec` into the SQLModel classes.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wfkit.errors import AmbiguousRunIdError, InvalidQueryError, NotFoundError
from wfkit.formatting import shown
from wfkit.ids import LATEST, id_prefix, parse_run_ref, parse_uuid, prefix_range
from wfkit.store.codec import UNREADABLE, UNREADABLE_MARK, codec_for, json_loads, row_loader
from wfkit.store.connections import ThreadConnections
from wfkit.store.db import as_engine, display_url, translate_errors
from wfkit.store.models import Checkpoint, Decision, Run, Stage
from wfkit.store.query import (
    DECISIONS,
    RUNS,
    STAGES,
    Cursor,
    PageRequest,
    PageResult,
    PaginationConfig,
    RunFilters,
    check_total,
    keyset,
)


@dataclass(frozen=True)
class Statement:
    """A select compiled for one driver: its text, and how to pass its named parameters."""

    text: str
    positions: tuple[str, ...] | None  # parameter names in order (positional drivers), else None

    @classmethod
    def compile(cls, stmt: sa.ClauseElement, dialect: sa.Dialect) -> Statement:
        compiled = stmt.compile(dialect=dialect)
        positions = tuple(compiled.positiontup or ()) if dialect.positional else None
        return cls(compiled.string, positions)

    def params(self, values: Mapping[str, Any]) -> Any:
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)


#: What ``list_runs(fields=...)`` takes: every column, or all but the ones that may be large.
LISTING_FIELDS = ("full", "summary")
#: The columns a summary listing leaves out (None in its runs).
SUMMARY_LEFT_OUT = ("params", "result")
_RUN_COLUMNS = tuple(Run.__table__.columns)
_SUMMARY_COLUMNS = tuple(c for c in _RUN_COLUMNS if c.key not in SUMMARY_LEFT_OUT)
#: The columns ``get_stages(fields="summary")`` leaves out (None in its stages): the snapshots and
#: the traceback, which may be large; what is left places each stage in time (a timeline).
STAGE_SUMMARY_LEFT_OUT = ("input_snapshot", "output_snapshot", "error_traceback")
_STAGE_SUMMARY_COLUMNS = tuple(c for c in Stage.__table__.columns if c.key not in STAGE_SUMMARY_LEFT_OUT)


def _page_request(page: PageRequest | int | None, page_size: int | None, sort: str | None) -> PageRequest:
    """The page asked for, as a PageRequest or as keywords (not both)."""
    if page is None or isinstance(page, int) and not isinstance(page, bool):
        return PageRequest(page=1 if page is None else page, page_size=page_size, sort=sort)
    if isinstance(page, PageRequest):
        if page_size is not None or sort is not None:
            raise InvalidQueryError("give list_runs a PageRequest, or page=, page_size= and sort=, not both")
        return page
    raise InvalidQueryError(f"list_runs takes a page number or a PageRequest as its page, got {page!r} "
                            f"({type(page).__name__})")


def _run_filters(filters: RunFilters | None, workflow_name: Any, status: Any, since: Any = None,
                 until: Any = None) -> RunFilters:
    """The filters asked for, as a RunFilters or as keywords (not both)."""
    if filters is None:
        return RunFilters(workflow_name=workflow_name or (), status=status or (), since=since, until=until)
    if not isinstance(filters, RunFilters):
        raise InvalidQueryError(f"list_runs takes a RunFilters as its filters, got {filters!r} "
                                f"({type(filters).__name__}); or pass workflow_name= and status=")
    if workflow_name is not None or status is not None:
        raise InvalidQueryError("give list_runs a RunFilters, or workflow_name= and status=, not both")
    return filters


class RunIdMatch(NamedTuple):
    """A run whose id starts with a prefix that was asked for (:meth:`Repository.match_run_ids`)."""

    id: uuid.UUID
    workflow_name: str
    status: str
    created_at: datetime


#: How many candidates an ambiguous short id's error names.
AMBIGUOUS_SHOWN = 5


class Repository:
    """Read-only access to run history.

    ``engine_or_url``: a SQLAlchemy engine, a database URL, or None for the
    configured default (``WFKIT_DATABASE_URL``, else the per-user SQLite file).
    ``pagination``: page size limits; by default read from the environment
    (``WFKIT_DEFAULT_PAGE_SIZE``, ``WFKIT_MAX_PAGE_SIZE``).
    """

    #: Compiled listings kept (one per filters-and-sort shape); sorts are user input, so it is bounded.
    MAX_CACHED_LISTINGS = 256

    def __init__(self, engine_or_url: Engine | str | None = None, pagination: PaginationConfig | None = None):
        self.engine: Engine = as_engine(engine_or_url, create_missing=False)
        self.pagination = pagination if pagination is not None else PaginationConfig.from_env()
        dialect = self.engine.dialect
        self._codec = codec_for(dialect.name)
        self._own_engine = not isinstance(engine_or_url, Engine)
        # A SQLite file: each thread keeps a connection (see ThreadConnections); an in-memory
        # database lives in its pool's one connection, so it is borrowed like any other. PostgreSQL:
        # pooled connections, reading in autocommit (each statement sees committed data anyway),
        # which saves the BEGIN and ROLLBACK round trips. sqlite3 opens no transaction for a SELECT.
        self._autocommit = dialect.name == "postgresql"
        self._kept = ThreadConnections(self.engine) if ThreadConnections.suits(self.engine) else None
        self._decode = {model: row_loader(model, codec=self._codec) for model in (Run, Stage, Decision, Checkpoint)}
        self._decode_summary = row_loader(Run, _SUMMARY_COLUMNS, codec=self._codec,
                                          absent={column: None for column in SUMMARY_LEFT_OUT})
        self._decode_stage_summary = row_loader(Stage, _STAGE_SUMMARY_COLUMNS, codec=self._codec,
                                                absent={column: None for column in STAGE_SUMMARY_LEFT_OUT})
        self._lock = threading.Lock()
        self._listings: dict[Any, tuple[Statement, Statement]] = {}
        rid = sa.bindparam("rid", type_=sa.Uuid())
        self._find_run = Statement.compile(RUNS.select_all(Run.id == rid), dialect)
        self._find_run_by_key = Statement.compile(
            RUNS.select_all(Run.idempotency_key == sa.bindparam("key", type_=sa.String())), dialect)
        self._run_exists = Statement.compile(sa.select(Run.id).where(Run.id == rid), dialect)
        # The stage a run is executing lives on the run's row until it ends (then it gets its own).
        self._current_stage = Statement.compile(
            sa.select(Run.current_stage_id, Run.current_node, Run.current_iteration, Run.current_stage_started_at,
                      Run.attempt)
            .where(Run.id == rid), dialect)
        self._find_stage = Statement.compile(STAGES.select_all(Stage.id == rid), dialect)
        self._find_checkpoint = Statement.compile(
            sa.select(*Checkpoint.__table__.columns).where(Checkpoint.run_id == rid), dialect)
        self._related_stmt = {
            Stage: Statement.compile(STAGES.select_all(Stage.run_id == rid, sort=STAGES.default_sort), dialect),
            Decision: Statement.compile(
                DECISIONS.select_all(Decision.run_id == rid, sort=DECISIONS.default_sort), dialect),
        }
        self._stage_summaries = Statement.compile(
            sa.select(*_STAGE_SUMMARY_COLUMNS).where(Stage.run_id == rid).order_by(*STAGES.order_by(None)), dialect)
        # Short ids: a prefix is a range of the primary key (lowest..highest id with it), newest id
        # first; ``latest`` is the newest run by the created_at index. Neighbours by id say how much
        # of an id tells it apart (short_ids): one index seek each.
        matched = (Run.id, Run.workflow_name, Run.status, Run.created_at)
        self._match_ids = Statement.compile(
            sa.select(*matched).where(Run.id >= sa.bindparam("low", type_=sa.Uuid()),
                                      Run.id <= sa.bindparam("high", type_=sa.Uuid()))
            .order_by(Run.id.desc()).limit(sa.bindparam("limit", type_=sa.Integer()))
            .offset(sa.bindparam("offset", type_=sa.BigInteger())), dialect)  # SQLite's LIMIT ? has an OFFSET too
        self._newest_ids = Statement.compile(
            sa.select(*matched).order_by(Run.created_at.desc(), Run.id.desc())
            .limit(sa.bindparam("limit", type_=sa.Integer())).offset(sa.bindparam("offset", type_=sa.BigInteger())),
            dialect)
        # (PostgreSQL before 16 has no max() of uuid: ORDER BY ... LIMIT 1, the same index seek.)
        self._neighbours = self._codec.sql("SELECT (SELECT id FROM runs WHERE id < ? ORDER BY id DESC LIMIT 1), "
                                           "(SELECT id FROM runs WHERE id > ? ORDER BY id LIMIT 1)")
        since = sa.bindparam("since", type_=Stage.__table__.c.created_at.type)
        # The same from a time on (a follower reading only what is new): still one index range.
        self._related_since = {
            Stage: Statement.compile(STAGES.select_all(Stage.run_id == rid, Stage.created_at >= since,
                                                       sort=STAGES.default_sort), dialect),
            Decision: Statement.compile(DECISIONS.select_all(Decision.run_id == rid, Decision.created_at >= since,
                                                             sort=DECISIONS.default_sort), dialect),
        }

    def __repr__(self) -> str:
        return f"Repository({display_url(self.engine)!r})"

    # -- the public reads

    #: An estimated total below this many runs is counted instead (``total="estimate"``): exact, and cheap.
    EXACT_BELOW_ESTIMATE = 10_000

    def list_runs(self, page: PageRequest | int | None = None, filters: RunFilters | None = None, *,
                  page_size: int | None = None, sort: str | None = None,
                  workflow_name: str | Sequence[str] | None = None, status: str | Sequence[str] | None = None,
                  since: datetime | str | None = None, until: datetime | str | None = None,
                  cursor: str | None = None, total: str = "exact", fields: str = "full") -> PageResult[Run]:
        """One page of runs, newest first unless the sort says otherwise.

        Give the page as a :class:`PageRequest`, or as keywords (``list_runs(page=2, page_size=50,
        sort="-created_at")``), and the filters as a :class:`RunFilters` or as keywords
        (``workflow_name=``, ``status=``, each one value or several; ``since=`` and ``until=``, the
        creation time: a datetime, ISO 8601 text or a time ago such as ``"7d"``).
        ``fields="summary"`` leaves each run's ``params`` and ``result`` out (they are None): a
        listing then reads none of them, however large. A page past the end has empty ``data``; a
        page size above the configured maximum is limited to it.

        Paging by number costs more the deeper the page (the database skips the rows before it).
        ``cursor=`` (the ``next_cursor`` of the page before, in place of a page number) starts
        right after that page's last run, and costs what the first page costs at any depth; a
        cursor only fits the filters and sort it was made with. ``total``: ``"exact"`` (the
        default) counts the matching runs; ``"estimate"`` asks PostgreSQL's planner (SQLite has
        no estimate, and counts: the result's ``total_kind`` says which it is); ``"none"`` leaves
        the total out (``total`` and ``total_pages`` are None), which spares a count over every
        matching run.
        """
        request = _page_request(page, page_size, sort).normalized(self.pagination)
        filters = _run_filters(filters, workflow_name, status, since, until)
        if fields not in LISTING_FIELDS:
            raise InvalidQueryError(f"unknown fields {fields!r}: expected one of {', '.join(LISTING_FIELDS)}")
        check_total(total)
        order = RUNS.resolve_sort(request.sort)
        after = None
        if cursor is not None:
            if request.page != 1:
                raise InvalidQueryError("give a page number or a cursor, not both")
            after = Cursor.decode(cursor, filters, order if request.sort else None)
            order = after.sort
        size = request.page_size or self.pagination.default_page_size
        nulls = None if after is None else tuple(value is None for value in after.values)
        count, rows, estimate = self._listing(filters, order, fields, nulls)
        codec = self._codec
        values = {**filters.values(codec.time), "limit": size + 1, "offset": 0 if after else request.offset}
        if after is not None:
            for i, value in enumerate(after.values):
                if value is not None:
                    values[f"k_{i}"] = (codec.time(value) if isinstance(value, datetime) else codec.id(value)
                                        if isinstance(value, uuid.UUID) else getattr(value, "value", value))
        decode = self._decode[Run] if fields == "full" else self._decode_summary
        kind = "exact" if total == "estimate" and codec.sqlite else total
        counted_kind = [kind]

        def read(cursor: Any) -> tuple[int | None, list[Run]]:
            counted = None
            if kind == "exact":
                counted = self._execute(cursor, count, values).fetchone()[0]
                if after is None and request.offset >= counted:
                    return counted, []
            elif kind == "estimate":
                # The planner's estimate of the rows the listing's filters match: the top of the plan
                # of the select of their ids (not of the count, whose plan may be a parallel one).
                plan = self._execute(cursor, estimate, values).fetchone()[0]
                plan = json_loads(plan) if isinstance(plan, str) else plan
                counted = int(plan[0]["Plan"]["Plan Rows"])
                if counted < self.EXACT_BELOW_ESTIMATE:  # few: counting them costs little, and is exact
                    counted, counted_kind[0] = self._execute(cursor, count, values).fetchone()[0], "exact"
            page = [decode(row) for row in self._execute(cursor, rows, values).fetchall()]
            for run in page:  # one row nobody can read must not take the page down with it
                for name in ("params", "result"):
                    if run.__dict__.get(name) is UNREADABLE:
                        run.__dict__[name] = dict(UNREADABLE_MARK)
            return counted, page

        counted, data = self._read(read)
        kind = counted_kind[0]
        more = len(data) > size
        data = data[:size]
        next_cursor = Cursor.of(data[-1], order, filters).encode() if more else None
        if kind == "estimate" and counted is not None and counted < len(data) + request.offset:
            counted = len(data) + request.offset + (1 if more else 0)  # an estimate never below what is seen
        return PageResult[Run].build(data, total=counted, page=None if after else request.page, page_size=size,
                                     total_kind=kind, next_cursor=next_cursor)

    def iter_runs(self, filters: RunFilters | None = None, *, sort: str | None = None,
                  workflow_name: str | Sequence[str] | None = None, status: str | Sequence[str] | None = None,
                  since: datetime | str | None = None, until: datetime | str | None = None,
                  page_size: int = 100, fields: str = "full") -> Iterator[Run]:
        """Every run that matches, in the listing's order (newest first unless ``sort`` says
        otherwise), read a page at a time by cursor (``page_size`` runs per read, limited to the
        configured maximum; no total is counted). Lazy: a run is read when the iteration comes to
        its page, so that memory stays bounded however many runs match. Runs created while it
        iterates may or may not be included (each page reads the database as it is then)."""
        filters = _run_filters(filters, workflow_name, status, since, until)
        cursor = None
        while True:
            page = self.list_runs(None, filters, page_size=page_size, sort=None if cursor else sort, cursor=cursor,
                                  total="none", fields=fields)
            yield from page.data
            cursor = page.next_cursor
            if cursor is None:
                return

    def find_run(self, run_id: uuid.UUID | str) -> Run:
        """The run with this id (a UUID or its string form), or :class:`NotFoundError`."""
        return self._one(self._find_run, Run, run_id, "no run with id {rid}")

    # -- run ids as people type them

    def resolve_run_id(self, run_id: uuid.UUID | str) -> uuid.UUID:
        """The whole id of the run ``run_id`` names: a whole id (returned as it is, without reading:
        whether that run exists is the next read's to say), ``latest`` (the newest run, by
        ``created_at`` then id), or a prefix of at least 6 hex digits (dashes anywhere, any case)
        that exactly one run's id starts with. :class:`NotFoundError` if no run matches (or there
        is no run at all, for ``latest``); :class:`AmbiguousRunIdError` naming a few of them if
        several do; :class:`InvalidQueryError` for text that is none of these forms.

        The library's other methods take whole ids only: resolving is this separate step, so that a
        command or route resolves once and then acts on the one run it names."""
        ref = parse_run_ref(run_id)
        if isinstance(ref, uuid.UUID):
            return ref
        if ref == LATEST:
            newest = self.match_run_ids("", limit=1)
            if not newest:
                raise NotFoundError("no run yet: latest names the newest run")
            return newest[0].id
        found = self.match_run_ids(ref, limit=AMBIGUOUS_SHOWN + 1)
        if not found:
            raise NotFoundError(f"no run with an id starting {shown(str(run_id).strip())}")
        if len(found) == 1:
            return found[0].id
        more = len(found) > AMBIGUOUS_SHOWN
        listed = "; ".join(f"{m.id} ({m.workflow_name}, {m.status}, created {m.created_at:%Y-%m-%d %H:%M:%SZ})"
                           for m in found[:AMBIGUOUS_SHOWN])
        raise AmbiguousRunIdError(
            f"run id {shown(str(run_id).strip())} is ambiguous: {'more than ' if more else ''}"
            f"{min(len(found), AMBIGUOUS_SHOWN)} runs' ids start with it, newest first: {listed}"
            f"{'; ...' if more else ''}; give more of its digits", tuple(m.id for m in found[:AMBIGUOUS_SHOWN]))

    def match_run_ids(self, prefix: str = "", limit: int = 10) -> list[RunIdMatch]:
        """At most ``limit`` runs whose id starts with ``prefix`` (hex digits, dashes ignored, any
        case; fewer than 6 is fine here), newest id first (ids made by wfkit sort by creation time);
        for an empty prefix, the newest runs by ``created_at``. For completion and for
        :meth:`resolve_run_id`; read through the primary key's index, whatever the table's size."""
        digits = prefix.replace("-", "").strip().lower()
        if len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
            return []
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidQueryError(f"limit must be a whole number of at least 1, got {limit!r}")
        if digits:
            low, high = prefix_range(digits)
            statement = self._match_ids
            values: dict[str, Any] = {"low": self._codec.id(low), "high": self._codec.id(high), "limit": limit,
                                       "offset": 0}
        else:
            statement, values = self._newest_ids, {"limit": limit, "offset": 0}
        rows = self._read(lambda cursor: self._execute(cursor, statement, values).fetchall())
        as_id = uuid.UUID if self._codec.sqlite else (lambda value: value)
        return [RunIdMatch(as_id(raw), name, str(status), self._codec.time_in(created)) for raw, name, status, created
                in rows]

    def short_ids(self, run_ids: Sequence[uuid.UUID], min_digits: int = 8) -> dict[uuid.UUID, str]:
        """For each of these ids, the shortest start of it (at least ``min_digits`` hex digits, in
        its dashed form) that no other run's id in the database starts with: what a listing prints,
        and what :meth:`resolve_run_id` then resolves to the same run. Ids made by wfkit begin with
        their creation time, so runs made within about a minute share their first 8 digits: the
        shortest start that tells them apart is found from each id's neighbours in the primary key
        (two index seeks per id, in one round trip)."""
        ids = list(dict.fromkeys(run_ids))
        as_id = uuid.UUID if self._codec.sqlite else (lambda value: value)

        def read(cursor: Any) -> dict[uuid.UUID, str]:
            out = {}
            for rid in ids:
                key = self._codec.id(rid)
                before, after = cursor.execute(self._neighbours, (key, key)).fetchone()
                own = rid.hex
                shared = max((_common(own, as_id(other).hex) for other in (before, after) if other is not None),
                             default=0)
                out[rid] = id_prefix(rid, max(min_digits, shared + 1))
            return out

        return self._read(read) if ids else {}

    def find_run_by_idempotency_key(self, key: str) -> Run:
        """The run created with this idempotency key, or :class:`NotFoundError`."""
        decode = self._decode[Run]
        row = self._read(lambda cursor: self._execute(cursor, self._find_run_by_key, {"key": key}).fetchone())
        if row is None:
            raise NotFoundError(f"no run with idempotency key {shown(key)}")
        return decode(row)

    def get_stages(self, run_id: uuid.UUID | str, *, since: datetime | None = None,
                   fields: str = "full") -> list[Stage]:
        """Every stage of a run, oldest first; :class:`NotFoundError` if the run does not exist. The
        stage a running run is executing comes last, ``started``, with no snapshots yet (its input
        and output are written with its row when it ends). ``since``: only the stages that started
        then or later (an input that refers to an earlier stage is then left None).
        ``fields="summary"`` leaves out each stage's snapshots and traceback (they are None): what
        places the stages in time, read from the index's order without the large values."""
        if fields not in LISTING_FIELDS:
            raise InvalidQueryError(f"unknown fields {fields!r}: expected one of {', '.join(LISTING_FIELDS)}")
        if fields == "full":
            return self._related(run_id, Stage, since)
        if since is not None:
            raise InvalidQueryError("get_stages(fields='summary') reads every stage: it takes no since=")
        rid = parse_uuid(run_id)
        values = {"rid": self._codec.id(rid)}

        def read(cursor: Any) -> list[Stage] | None:
            rows = self._execute(cursor, self._stage_summaries, values).fetchall()
            run = self._execute(cursor, self._current_stage, values).fetchone()
            if run is None:
                return None
            found = [self._decode_stage_summary(row) for row in rows]
            if run[0] is not None:  # the stage it is executing, from the run's row
                found.append(self._decode_stage_summary((run[0], values["rid"], run[1], run[2], "started", None,
                                                         None, None, run[3], run[4], None)))
            return found

        found = self._read(read)
        if found is None:
            raise NotFoundError(f"no run with id {rid}")
        return found

    def lease_expired(self, run_id: uuid.UUID | str) -> bool | None:
        """Whether no process holds a pending or running run any more, by the database's clock (the
        one claims use): its lease expired, or a running run never had one. None for a run that
        ended; :class:`NotFoundError` if there is no such run. (``Run.lease_expired`` says the same
        by this machine's clock.)"""
        rid = parse_uuid(run_id)
        sql = self._codec.sql(
            "SELECT CASE WHEN status NOT IN ('pending', 'running') THEN NULL WHEN lease_expires_at IS NULL "
            "THEN CASE WHEN status = 'running' THEN 1 ELSE 0 END WHEN lease_expires_at <= {now} THEN 1 ELSE 0 END "
            "FROM runs WHERE id = ?")
        row = self._read(lambda cursor: cursor.execute(sql, (self._codec.id(rid),)).fetchone())
        if row is None:
            raise NotFoundError(f"no run with id {rid}")
        return None if row[0] is None else bool(row[0])

    def run_versions(self, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        """For each of these runs that exists, a token that changes whenever its row does (each step,
        cancel, claim and end): one query for any number of runs, for those who watch runs for
        changes (the API's event streams). The token is opaque: compare it, nothing else."""
        out: dict[uuid.UUID, Any] = {}
        ids = list(dict.fromkeys(run_ids))
        for at in range(0, len(ids), 500):  # well under every database's limit of parameters
            chunk = {self._codec.id(rid): rid for rid in ids[at:at + 500]}
            sql = self._codec.sql(f"SELECT id, updated_at, status FROM runs WHERE id IN ({', '.join('?' * len(chunk))})")
            rows = self._read(lambda cursor, sql=sql, chunk=chunk: cursor.execute(sql, tuple(chunk)).fetchall())
            for raw, updated_at, status in rows:
                out[chunk.get(raw) or uuid.UUID(str(raw))] = (updated_at, status)
        return out

    def find_stage(self, stage_id: uuid.UUID | str) -> Stage:
        """The ended stage with this id, or :class:`NotFoundError`. (Its ``input_snapshot`` is None
        when it is stored as ``input_from``, and its ``output_snapshot`` leaves out the keys named in
        ``output_unchanged`` when its input is not stored in the row: :meth:`get_stages` fills both in.)"""
        return self._one(self._find_stage, Stage, stage_id, "no stage with id {rid}", what="stage id")

    def state_after(self, run_id: uuid.UUID | str, stage_id: uuid.UUID | str) -> dict[str, Any]:
        """The state a completed stage of a run ended with: its input with its output merged in (the
        state its run's next stage started from); :class:`NotFoundError` if the run has no such stage."""
        sid = parse_uuid(stage_id, "stage id")
        stages = {stage.id: stage for stage in self._related(run_id, Stage)}
        stage = stages.get(sid)
        if stage is None or not isinstance(stage.input_snapshot, dict):
            raise NotFoundError(f"run {run_id} has no stage {sid} that holds a state")
        return {**stage.input_snapshot, **(stage.output_snapshot or {})}

    def get_decisions(self, run_id: uuid.UUID | str, *, since: datetime | None = None) -> list[Decision]:
        """Every decision of a run, oldest first (``since``: those made then or later);
        :class:`NotFoundError` if the run does not exist."""
        return self._related(run_id, Decision, since)

    def find_checkpoint(self, run_id: uuid.UUID | str) -> Checkpoint:
        """The checkpoint a run saved last, or :class:`NotFoundError` if the run has none (or does not
        exist). Its ``state_data`` is in the executor's format (:mod:`wfkit.executor.checkpoints`)."""
        return self._one(self._find_checkpoint, Checkpoint, run_id, "run {rid} has no checkpoint (or does not exist)")

    # -- how

    def _one(self, statement: Statement, model: type[Any], run_id: uuid.UUID | str, missing: str,
             what: str = "run id") -> Any:
        """The one ``model`` row ``statement`` finds for an id, or :class:`NotFoundError` (``missing``)."""
        rid = parse_uuid(run_id, what)
        values = {"rid": self._codec.id(rid)}
        decode = self._decode[model]

        def read(cursor: Any) -> Any:
            row = self._execute(cursor, statement, values).fetchone()
            found = None if row is None else decode(row)
            if found is not None and any(value is UNREADABLE for value in found.__dict__.values()):
                raise RecursionError  # asked for this one record, which cannot be read: see translate_errors
            return found

        found = self._read(read)
        if found is None:
            raise NotFoundError(missing.format(rid=rid))
        return found

    def read_history(self, run_id: uuid.UUID | str, *, since: datetime | None = None) -> History:
        """A run with its stages, its decisions (``since``: those that started or were made then or
        later) and its checkpoint's data, all as of one moment: they are read in one snapshot, so
        that a run being executed is never seen half way through a step (a stage's end without the
        decision taken after it). :class:`NotFoundError` if the run does not exist."""
        rid = parse_uuid(run_id)
        values = {"rid": self._codec.id(rid)}
        if since is not None:
            values["since"] = self._codec.time(since)
        begin = ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if not self._codec.sqlite
                 else "BEGIN")

        def read(cursor: Any) -> History | None:
            cursor.execute(begin)
            try:
                row = self._execute(cursor, self._find_run, values).fetchone()
                checkpoint = None if row is None else self._execute(cursor, self._find_checkpoint, values).fetchone()
                found = None if row is None else History(
                    _readable(self._decode[Run](row)), self._related_rows(cursor, Stage, values, since),
                    self._related_rows(cursor, Decision, values, since),
                    None if checkpoint is None else self._decode[Checkpoint](checkpoint).state_data)
            except BaseException:
                with contextlib.suppress(Exception):  # the error that matters is the one raised
                    cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")  # it wrote nothing: this only ends the snapshot
            return found

        found = self._read(read)
        if found is None:
            raise NotFoundError(f"no run with id {rid}")
        return found

    def _related(self, run_id: uuid.UUID | str, model: type[Any], since: datetime | None = None) -> list[Any]:
        rid = parse_uuid(run_id)
        values = {"rid": self._codec.id(rid)}
        if since is not None:
            values["since"] = self._codec.time(since)
        found = self._read(lambda cursor: self._related_rows(cursor, model, values, since, check=True))
        if found is None:
            raise NotFoundError(f"no run with id {rid}")
        return found

    def _related_rows(self, cursor: Any, model: type[Any], values: Mapping[str, Any], since: datetime | None, *,
                      check: bool = False) -> list[Any] | None:
        """A run's stages or decisions (None if ``check`` and the run does not exist)."""
        statement = self._related_stmt[model] if since is None else self._related_since[model]
        decode = self._decode[model]
        rows = self._execute(cursor, statement, values).fetchall()
        if model is Stage:  # the run's row: it exists, and the stage it is executing
            run = self._execute(cursor, self._current_stage, values).fetchone()
            if run is None:
                return None
            found = [_readable(decode(row)) for row in rows]
            fill_inputs(found)
            if run[0] is not None:
                found.append(decode((run[0], values["rid"], run[1], run[2], "started", None, None, None, None,
                                     None, None, run[3], run[4], None)))
            return found
        # Only an empty answer needs the existence check: rows imply the run.
        if check and not rows and self._execute(cursor, self._run_exists, values).fetchone() is None:
            return None
        return [_readable(decode(row)) for row in rows]

    def _listing(self, filters: RunFilters, sort: Sequence[Any], fields: str,
                 nulls: tuple[bool, ...] | None = None) -> tuple[Statement, Statement, Statement]:
        """The COUNT, the page, and the EXPLAIN that estimates the count (PostgreSQL) of a listing
        of this shape (built and compiled on first use); ``nulls``: a page after a cursor, and
        which of its values are NULL."""
        key = (filters.shape, tuple(sort), fields, nulls)
        found = self._listings.get(key)
        if found is not None:
            return found
        order = RUNS.order_by(sort)
        where = filters.clauses()
        count = sa.select(sa.func.count()).select_from(Run).where(*where)
        matching = sa.select(Run.id).where(*where)
        if nulls is not None:
            where.append(keyset(tuple(sort), nulls))
        # A deferred join: the page's ids come from the index alone (an index-only scan in the order
        # of the listing, skipping the offset there), then only those rows are fetched.
        page_ids = (sa.select(Run.id).where(*where).order_by(*order)
                    .limit(sa.bindparam("limit", type_=sa.Integer()))
                    .offset(sa.bindparam("offset", type_=sa.BigInteger())).subquery())
        columns = _RUN_COLUMNS if fields == "full" else _SUMMARY_COLUMNS
        rows = sa.select(*columns).join(page_ids, Run.id == page_ids.c.id).order_by(*order)
        dialect = self.engine.dialect
        ids = Statement.compile(matching, dialect)
        found = (Statement.compile(count, dialect), Statement.compile(rows, dialect),
                 Statement(f"EXPLAIN (FORMAT JSON) {ids.text}", ids.positions))
        with self._lock:
            if len(self._listings) >= self.MAX_CACHED_LISTINGS:
                self._listings.clear()
            self._listings[key] = found
        return found

    def _execute(self, cursor: Any, statement: Statement, values: Mapping[str, Any]) -> Any:
        cursor.execute(statement.text, statement.params(values))
        return cursor

    def _read(self, work: Callable[[Any], Any]) -> Any:
        """``work(cursor)`` on a driver connection: on SQLite this thread's own, kept between
        calls; on PostgreSQL one from the engine's pool (a connection the server dropped, as in
        a restart, is discarded and the read tried once more on a fresh one)."""
        if self._kept is not None:
            with translate_errors(self.engine), self._kept.using() as connection:
                cursor = connection.cursor()
                try:
                    return work(cursor)
                except self.engine.dialect.loaded_dbapi.ProgrammingError:
                    self._kept.discard()  # e.g. closed under us: the next read opens a new one
                    raise
                finally:
                    cursor.close()
        for attempt in (1, 2):
            with translate_errors(self.engine):
                conn = self.engine.raw_connection()
                driver = conn.driver_connection
                if self._autocommit and not conn.info.get("wfkit_json_loads"):  # PostgreSQL's, once: see json_loads
                    from psycopg.types.json import set_json_loads

                    set_json_loads(json_loads, driver)
                    conn.info["wfkit_json_loads"] = True
                was_autocommit = bool(getattr(driver, "autocommit", False))
                try:
                    if self._autocommit and not was_autocommit:
                        driver.autocommit = True
                    cursor = conn.cursor()
                    try:
                        return work(cursor)
                    finally:
                        cursor.close()
                except self.engine.dialect.loaded_dbapi.Error as err:
                    if attempt == 1 and self.engine.dialect.is_disconnect(err, driver, None):
                        conn.invalidate(err)
                        self.engine.pool.dispose()  # its other idle connections are as dead
                        continue
                    raise
                finally:
                    if conn.dbapi_connection is not None:  # not invalidated
                        try:
                            if self._autocommit and not was_autocommit and not driver.closed:
                                driver.autocommit = False  # back to the pool as it came
                        finally:
                            conn.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the connections this repository keeps (and its engine, if it made it from a URL).
        Optional: they also close when their threads end. A closed repository may read again."""
        if self._kept is not None:
            self._kept.close()
        if self._own_engine:
            self.engine.dispose()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class History(NamedTuple):
    """A run's history as of one moment (:meth:`Repository.read_history`)."""

    run: Run
    stages: list[Stage]
    decisions: list[Decision]
    checkpoint: Any  # its checkpoint's data (None: it has none), as the executor wrote it


def _common(a: str, b: str) -> int:
    """How many leading characters two strings share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _readable(record: Any) -> Any:
    """``record`` with any value too deep to read shown as :data:`UNREADABLE_MARK` (a list of a run's
    stages or decisions is not lost to one of them)."""
    values = record.__dict__
    for name, value in values.items():
        if value is UNREADABLE:
            values[name] = dict(UNREADABLE_MARK)
    return record


def fill_inputs(stages: Sequence[Stage]) -> None:
    """Fill in the input of each stage stored as ``input_from`` (the stage whose end state it started
    from): that stage's input with its output merged in; then the output of each stage that names
    keys it returned unchanged (``output_unchanged``): their values, from its input. The filled-in
    snapshots share their values with the stages they come from: treat them as read-only."""
    by_id = {stage.id: stage for stage in stages}
    for stage in stages:
        # Follow the references back to a stage whose input is known, then fill them in forward (no
        # recursion: a run may have any number of steps; no reliance on the order of start times).
        chain: list[Stage] = []
        seen: set[uuid.UUID] = set()
        at: Stage | None = stage
        while at is not None and at.input_snapshot is None and at.input_from is not None and at.id not in seen:
            chain.append(at)
            seen.add(at.id)
            at = by_id.get(at.input_from)
        for later in reversed(chain):
            before = by_id.get(later.input_from)  # type: ignore[arg-type]
            if before is not None and isinstance(before.input_snapshot, dict):
                later.__dict__["input_snapshot"] = {**before.input_snapshot, **(before.output_snapshot or {})}
    for stage in stages:
        fill_output(stage)


def fill_output(stage: Stage) -> None:
    """Fill in the keys a stage's node returned unchanged (``output_unchanged``) into its output, from
    its input (when that is known)."""
    unchanged, state, output = stage.output_unchanged, stage.input_snapshot, stage.output_snapshot
    if unchanged and isinstance(state, dict) and isinstance(output, dict):
        # In the state's order, then the new keys: the order of a node that returns ``{**state, ...}``.
        kept = set(unchanged)
        whole = {key: value if key in kept else output[key] for key, value in state.items()
                 if key in kept or key in output}
        whole.update((key, value) for key, value in output.items() if key not in whole)
        stage.__dict__["output_snapshot"] = whole
