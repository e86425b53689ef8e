"""The read side of wfkit: browse runs and their stages and decisions.

>>> from wfkit.repository import Repository
>>> from wfkit.query import PageRequest, RunFilters
>>> repo = Repository("sqlite:///runs.db")                          # doctest: +SKIP
>>> page = repo.list_runs(PageRequest(page=1, page_size=50), RunFilters(status="failed"))  # doctest: +SKIP

The repository writes nothing. Each call opens and closes its own session,
so one instance is safe to share between the threads of a web service.
Returned objects are detached: plain data, readable after the call.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from wfkit.db import as_engine, translate_errors
from wfkit.errors import NotFoundError
from wfkit.models import Decision, Run, Stage
from wfkit.query import (
    DECISIONS,
    RUNS,
    STAGES,
    PageRequest,
    PageResult,
    PaginationConfig,
    RunFilters,
    parse_uuid,
)

M = TypeVar("M")


def _loader(model: type[M]) -> Any:
    """Rows (mappings of column name to typed value) to detached ``model`` instances, cheaply.

    This is what the ORM's loader does for each row, without a session, identity map or
    validation: the values come from the database through the columns' own types, so they
    are already what the model holds. (A validated ``model(**row)`` costs ~15x more.)
    """
    sa.orm.configure_mappers()
    new = model._sa_class_manager.new_instance  # type: ignore[attr-defined]

    def load(row: Any) -> M:
        obj = new()
        obj.__dict__.update(row)
        return obj

    return load


class Repository:
    """Read-only access to run history.

    ``engine_or_url``: a SQLAlchemy engine, a database URL, or None for the
    configured default (``WFKIT_DATABASE_URL``, else the per-user SQLite file).
    ``pagination``: page size limits; by default read from the environment
    (``WFKIT_DEFAULT_PAGE_SIZE``, ``WFKIT_MAX_PAGE_SIZE``).
    """

    def __init__(self, engine_or_url: Engine | str | None = None, pagination: PaginationConfig | None = None):
        self.engine: Engine = as_engine(engine_or_url, create_missing=False)
        self.pagination = pagination if pagination is not None else PaginationConfig.from_env()
        # Reads need no transaction (each statement sees committed data): autocommit saves the
        # BEGIN and ROLLBACK round trips on PostgreSQL.
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._load = {model: _loader(model) for model in (Run, Stage, Decision)}
        # Lookups are built once, with a bound parameter: building a select costs more than running it.
        rid = sa.bindparam("rid", type_=sa.Uuid())
        self._find_run = RUNS.select_all(Run.id == rid)
        self._run_exists = sa.select(Run.id).where(Run.id == rid)
        self._related_stmt = {
            Stage: STAGES.select_all(Stage.run_id == rid, sort=STAGES.default_sort),
            Decision: DECISIONS.select_all(Decision.run_id == rid, sort=DECISIONS.default_sort),
        }

    def __repr__(self) -> str:
        return f"Repository({self.engine.url.render_as_string(hide_password=True)!r})"

    def _connect(self) -> Any:
        return self._reader.connect()

    def list_runs(self, page: PageRequest | None = None, filters: RunFilters | None = None) -> PageResult[Run]:
        """One page of runs, newest first unless ``page.sort`` says otherwise.

        The total counts every run that matches ``filters``. A page past the
        end has empty ``data``.
        """
        request = (page or PageRequest()).normalized(self.pagination)
        filters = filters or RunFilters()
        order = RUNS.order_by(request.sort)
        size = request.page_size or self.pagination.default_page_size
        count_stmt = filters.apply(sa.select(sa.func.count()).select_from(Run))
        # A deferred join: the page's ids come from the index alone (an index-only scan in the order
        # of the listing, skipping the offset there), then only those rows are fetched.
        page_ids = filters.apply(sa.select(Run.id)).order_by(*order).limit(size).offset(request.offset).subquery()
        rows_stmt = RUNS.select_all().join(page_ids, Run.id == page_ids.c.id).order_by(*order)
        load = self._load[Run]
        with translate_errors(self.engine), self._connect() as conn:
            total = conn.execute(count_stmt).scalar_one()
            data = [load(row) for row in conn.execute(rows_stmt).mappings()] if request.offset < total else []
        return PageResult[Run].build(data, total=total, page=request.page, page_size=size)

    def find_run(self, run_id: uuid.UUID | str) -> Run:
        """The run with this id (a UUID or its string form), or :class:`NotFoundError`."""
        rid = parse_uuid(run_id)
        with translate_errors(self.engine), self._connect() as conn:
            row = conn.execute(self._find_run, {"rid": rid}).mappings().first()
        if row is None:
            raise NotFoundError(f"no run with id {rid}")
        return self._load[Run](row)

    def get_stages(self, run_id: uuid.UUID | str) -> list[Stage]:
        """Every stage of a run, oldest first; :class:`NotFoundError` if the run does not exist."""
        return self._related(run_id, Stage)

    def get_decisions(self, run_id: uuid.UUID | str) -> list[Decision]:
        """Every decision of a run, oldest first; :class:`NotFoundError` if the run does not exist."""
        return self._related(run_id, Decision)

    def _related(self, run_id: uuid.UUID | str, model: type[Any]) -> list[Any]:
        params = {"rid": parse_uuid(run_id)}
        load = self._load[model]
        with translate_errors(self.engine), self._connect() as conn:
            rows = [load(row) for row in conn.execute(self._related_stmt[model], params).mappings()]
            # Only an empty answer needs the existence check: rows imply the run.
            if not rows and conn.execute(self._run_exists, params).first() is None:
                raise NotFoundError(f"no run with id {params['rid']}")
        return rows
