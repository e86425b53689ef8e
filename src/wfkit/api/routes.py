"""The routes: ``/workflows`` (tag "Workflows") and ``/workflows/runs`` (tag "Runs"), and ``/health``.

Every route does its database work in the service's thread pool (the repository and the executor
are synchronous), answers with the records' own JSON (``to_dict()``: the same as ``--json`` on the
command line), and reads its input through the same parsers as the command line, so that what
one rejects the other rejects with the same message.
"""

# FastAPI reads the annotations of the route functions (defined inside build_router) when they are
# made: they are not postponed here (no `from __future__ import annotations`).


import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException

from wfkit.api import schemas
from wfkit.api.problems import problem, responses
from wfkit.api.service import Service
from wfkit.errors import DatabaseError, InvalidParamsError, InvalidQueryError, NotFoundError
from wfkit.executor.history import RunHistory
from wfkit.ids import parse_run_ref
from wfkit.store.models import RunStatus
from wfkit.store.query import MAX_CURSOR_LENGTH, MAX_FILTER_VALUES, RUNS, TOTALS, PageRequest, RunFilters, check_total
from wfkit.store.repository import LISTING_FIELDS, SUMMARY_LEFT_OUT

log = logging.getLogger("wfkit.api")
#: A stream reads its run again at least this often (seconds), woken or not: a change the watcher
#: missed (a database that was away) is late by this much, never lost.
SAFETY_SECONDS = 2.0
#: The longest long-poll (``GET /workflows/runs/{id}?wait=``), in seconds.
MAX_WAIT_SECONDS = 300.0
_FINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)

# What the OpenAPI document says each text parameter holds. The values themselves are read by
# wfkit's own parsers (those of the command line), not by FastAPI's validation, so that a bad value
# gets the same message everywhere: these patterns only describe, and the parsers accept a little
# more (any case, spaces around values).
_STATUS = f"({'|'.join(s.value for s in RunStatus)})"
_SORT = f"[+-]?({'|'.join(sorted(RUNS.sortable))})"
_H = "[0-9a-fA-F]"
# A whole id, or a start of it, without dashes or with them where a UUID has them (the parser
# ignores dashes anywhere); every value the pattern allows is a valid id (404 if no run has it).
_RUN_ID = (f"^(latest|{_H}{{6,32}}|{_H}{{8}}(-{_H}{{1,4}}|-{_H}{{4}}-{_H}{{1,4}}|-{_H}{{4}}-{_H}{{4}}-{_H}{{1,4}}|"
           f"-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{1,12}}))$")
_COUNT = "^[1-9][0-9]{0,8}$"
_FINISHED = f"({'|'.join(s.value for s in _FINAL)})"
# An age such as 30d, no more than the parser allows (365,000 days) in any unit.
_AGE = "^([1-9][0-9]{0,9}s|[1-9][0-9]{0,7}m|[1-9][0-9]{0,5}h|[1-9][0-9]{0,4}d|[1-9][0-9]{0,3}w)$"


def _described(**schema: Any) -> dict[str, Any]:
    return {"json_schema_extra": schema}


RunId = Annotated[str, Path(description="the run's id (a UUID), a prefix of at least 6 of its hex digits that no "
                            "other run's id starts with (409 if several do), or latest (the newest run)",
                            examples=["123e4567-e89b-12d3-a456-426614174000", "123e4567-e8", "latest"],
                            **_described(pattern=_RUN_ID))]
Force = Annotated[bool, Query(description="as `--force` on the command line")]


def build_router(service: Service, dependencies: Sequence[Any] = ()) -> APIRouter:
    """The API's routes on ``service``, each behind ``dependencies`` (a service's authentication)."""
    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:  # the server stops: so do the runs it executes (see Service.close)
            service.stop_watching()
            await asyncio.to_thread(service.close)

    async def resolved(run_id: str) -> uuid.UUID:
        """The whole id a run id names (a short one or latest is looked up; a whole one is not)."""
        ref = parse_run_ref(run_id)
        if isinstance(ref, uuid.UUID):
            return ref
        return await service.call(service.repository.resolve_run_id, ref)

    router = APIRouter(dependencies=list(dependencies), lifespan=lifespan)
    runs = APIRouter(prefix="/workflows/runs", tags=["Runs"])
    workflows = APIRouter(prefix="/workflows", tags=["Workflows"])

    # ------------------------------------------------------------------ runs (before /workflows/{name})

    @runs.get("", response_model=schemas.RunListing, responses={**responses(400, 503), **_headers(200, Link=(
              "RFC 8288 links: the first page, the next one (by cursor), and by number the previous and the last when the total is known"))},
              summary="List runs, newest first, a page at a time")
    async def list_runs(request: Request, response: Response,
                        page: Annotated[str | None, Query(description="1, 2, ...", **_described(pattern=_COUNT))]
                        = None,
                        page_size: Annotated[str | None, Query(description="runs per page (at most the maximum)",
                                                              **_described(pattern=_COUNT))] = None,
                        sort: Annotated[str | None, Query(description="a field, '-' before it for descending; or "
                                                          "several distinct ones, comma-separated, the first deciding "
                                                          "first", **_described(pattern=f"^{_SORT}$"))]
                        = None,
                        workflow_name: Annotated[list[str], Query(description="repeated or comma-separated", **_described(
                            items={"type": "string", "pattern": "^[^\\u0000]*$"}, maxItems=MAX_FILTER_VALUES))] = [],  # noqa: B006
                        status: Annotated[list[str], Query(description="repeated or comma-separated", **_described(
                            items={"type": "string", "pattern": f"^{_STATUS}(,{_STATUS})*$"}))] = [],  # noqa: B006
                        fields: Annotated[str | None, Query(description="'full': each run's params and result too",
                                                            **_described(enum=list(LISTING_FIELDS)))] = None,
                        since: Annotated[str | None, Query(description="only runs created at or after this time: "
                                                           "ISO 8601, or a time ago such as 7d or 12h")] = None,
                        until: Annotated[str | None, Query(description="only runs created before this time: ISO "
                                                           "8601, or a time ago such as 7d or 12h")] = None,
                        cursor: Annotated[str | None, Query(description="the next_cursor of the page before: the "
                                                            "page after it, in place of a page number (it costs "
                                                            "what the first page costs, at any depth)",
                                                            max_length=MAX_CURSOR_LENGTH)] = None,
                        total: Annotated[str | None, Query(description="'exact' (default): count the matching runs; "
                                                           "'estimate': the planner's estimate (PostgreSQL); 'none': "
                                                           "no total", **_described(enum=list(TOTALS)))] = None
                        ) -> Any:
        query = {"page": page, "page_size": page_size, "sort": sort}
        request_page = PageRequest.from_query({k: v for k, v in query.items() if v is not None})
        filters = RunFilters.from_query({"workflow_name": workflow_name, "status": status, "since": since,
                                         "until": until})
        chosen = fields or "summary"
        if chosen not in LISTING_FIELDS:
            raise InvalidQueryError(f"unknown fields {chosen!r}: expected one of {', '.join(LISTING_FIELDS)}")
        result = await service.call(lambda: service.repository.list_runs(
            request_page, filters, fields=chosen, cursor=cursor, total=check_total(total or "exact")))
        left_out = SUMMARY_LEFT_OUT if chosen == "summary" else ()
        data = [_run_json(run, exclude=left_out) for run in result.data]
        link = _links(request, result.page, result.total_pages, result.next_cursor, filters)
        if link:
            response.headers["Link"] = link
        return JSONResponse({"data": data, "total": result.total, "page": result.page, "page_size": result.page_size,
                             "total_pages": result.total_pages, "total_kind": result.total_kind,
                             "next_cursor": result.next_cursor}, headers=dict(response.headers))

    @runs.delete("", response_model=schemas.PruneOut, responses=responses(400, 503),
                 summary="Delete finished runs that ended more than older_than ago, with their history, in batches")
    async def prune_runs(older_than: Annotated[str, Query(description="how long ago the runs ended: a whole number "
                                                          "and a unit, s, m, h, d or w (45s, 90m, 12h, 30d, 2w)",
                                                          examples=["30d"], **_described(pattern=_AGE))],
                         status: Annotated[list[str], Query(description="completed, failed or cancelled (default: "
                                                            "all three; pending and running are refused); repeated "
                                                            "or comma-separated", **_described(
                             items={"type": "string", "pattern": f"^{_FINISHED}(,{_FINISHED})*$"}))] = [],  # noqa: B006
                         workflow_name: Annotated[list[str], Query(description="only runs of these workflows; "
                                                                   "repeated or comma-separated", **_described(
                             items={"type": "string", "pattern": "^[^\\u0000]*$"}, maxItems=MAX_FILTER_VALUES))]
                         = [],  # noqa: B006
                         dry_run: Annotated[bool, Query(description="count the runs that would go; delete "
                                                        "nothing")] = False) -> Any:
        result = await service.call(lambda: service.executor.control.prune(
            older_than=older_than, statuses=status, workflow_names=workflow_name, dry_run=dry_run))
        return JSONResponse(result.to_dict())

    @runs.get("/{run_id}", response_model=schemas.RunOut, responses=responses(400, 404, 409, 503),
              summary="One run (with ?wait=SECONDS: once it has ended, or the time passes)")
    async def find_run(run_id: RunId,
                       wait: Annotated[float | None, Query(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False,
                                                           description="seconds to wait for the run to end")] = None
                       ) -> Any:
        rid = await resolved(run_id)
        run = await service.call(service.repository.find_run, rid)
        deadline = time.monotonic() + (wait or 0.0)
        while run.status not in _FINAL and time.monotonic() < deadline and not service.stopped:
            await service.wait(rid, min(SAFETY_SECONDS, max(0.0, deadline - time.monotonic())))
            run = await service.call(service.repository.find_run, rid)
        return JSONResponse(_run_json(run))

    @runs.get("/{run_id}/stages", response_model=list[schemas.StageOut], responses=responses(400, 404, 409, 503),
              summary="A run's stages (node executions), oldest first")
    async def get_stages(run_id: RunId) -> Any:
        stages = await service.call(service.repository.get_stages, await resolved(run_id))
        return JSONResponse([stage.to_dict() for stage in stages])

    @runs.get("/{run_id}/decisions", response_model=list[schemas.DecisionOut], responses=responses(400, 404, 409, 503),
              summary="A run's routing decisions, oldest first")
    async def get_decisions(run_id: RunId) -> Any:
        decisions = await service.call(service.repository.get_decisions, await resolved(run_id))
        return JSONResponse([decision.to_dict() for decision in decisions])

    async def history_of(run_id: RunId, last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None
                         ) -> tuple[RunHistory, str | None]:
        history = RunHistory(service.repository, await resolved(run_id))
        await service.call(history.read)  # 404 before any stream starts
        if last_event_id is not None and history.ended and history.events[-1].id == last_event_id:
            # The client saw the run's end already: 204 tells a browser's EventSource not to
            # reconnect (it would otherwise come back every few seconds for nothing).
            raise HTTPException(204)
        return history, last_event_id

    @runs.get("/{run_id}/events", response_class=EventSourceResponse,
              responses={**responses(400, 404, 409, 503), 204: {"description": "the client has seen the run's end "
                                                           "(its Last-Event-ID is the run's last event)"}},
              summary="A run's events as server-sent events: its history, then live until it ends")
    async def run_events(opened: Annotated[tuple[RunHistory, str | None], Depends(history_of)]
                         ) -> AsyncIterator[ServerSentEvent]:
        history, last_event_id = opened
        async for event in _stream(service, history, last_event_id):
            yield event

    @runs.delete("/{run_id}", status_code=204, responses=responses(400, 404, 409, 503),
                 summary="Delete a run with its stages, decisions and checkpoint")
    async def delete_run(run_id: RunId, force: Force = False) -> Response:
        rid = await resolved(run_id)
        await service.call(lambda: service.executor.delete(rid, force=force))
        return Response(status_code=204)

    @runs.post("/{run_id}/cancel", status_code=204, responses=responses(400, 404, 409, 503),
               summary="Cancel a run: at once if pending, before its next node if running")
    async def cancel_run(run_id: RunId, force: Force = False) -> Response:
        from wfkit.executor.control import where_from

        reason = f"{'forced' if force else 'cancel requested'} through the HTTP API of {where_from()}"
        rid = await resolved(run_id)
        await service.call(lambda: service.executor.cancel(rid, force=force, reason=reason))
        return Response(status_code=204)

    @runs.post("/{run_id}/resume", response_model=schemas.RunOut, responses=responses(400, 404, 409, 503),
               summary="Resume a failed or cancelled run (force: take over one whose lease expired)")
    async def resume_run(run_id: RunId, force: Force = False) -> Any:
        rid = await resolved(run_id)

        def go() -> Any:
            if service.workers:
                if force:
                    raise InvalidParamsError("force takes a run over in this server; with workers, their recovery "
                                             "takes over runs whose lease expired: resume without force")
                return service.executor.submit_resume(rid)
            with service.run_slot():
                return service.executor.resume_in_background(rid, force=force)

        return JSONResponse(_run_json(await service.call(go)))

    # ------------------------------------------------------------------ workflows

    @workflows.get("", response_model=list[schemas.WorkflowOut], summary="The registered workflows")
    async def list_workflows() -> Any:
        return JSONResponse([info.to_dict() for info in service.registry.list()])

    @workflows.get("/{name}", response_model=schemas.WorkflowDetail, responses=responses(404, 500),
                   summary="A workflow, with its params as JSON Schema (when it declares a model)")
    async def find_workflow(name: str) -> Any:
        def read() -> dict[str, Any]:
            workflow = service.registry.get(name)
            model = workflow.resolve_params_model()
            return {**workflow.info.to_dict(), "params_schema": model.model_json_schema() if model else None}

        return JSONResponse(await service.call(read))

    # The params are one JSON object in the query: documented as such (a parameter with JSON content),
    # not as any string, so that clients and generated requests know a string that is not JSON is refused.
    @workflows.get("/{name}/graph", response_model=schemas.GraphOut, responses=responses(400, 404, 500),
                   summary="The graph a workflow builds (with its default params, or those given)",
                   openapi_extra={"parameters": [{
                       "name": "params", "in": "query", "required": False,
                       "description": "the params as one JSON object",
                       "content": {"application/json": {"schema": {"type": "object"}}}}]})
    async def workflow_graph(name: str, params: Annotated[str | None, Query(include_in_schema=False)] = None) -> Any:
        def build() -> dict[str, Any]:
            workflow = service.registry.get(name)  # an unknown workflow is 404 whatever the params
            graph, _state = workflow.build(_json_params(params))
            return {"graph": graph.to_dict(), "mermaid": graph.to_mermaid()}

        return JSONResponse(await service.call(build))

    async def started(name: str, response: Response,
                      body: Annotated[schemas.RunRequest, Body()] = schemas.RunRequest()) -> uuid.UUID:
        def go() -> uuid.UUID:
            if service.workers:  # executed by a worker; streamed from the database as any run
                return service.executor.submit(name, body.params)
            with service.run_slot():
                return service.executor.start(name, body.params)

        rid = await service.call(go)
        response.headers["X-Run-ID"] = str(rid)
        return rid

    @workflows.post("/{name}/execute", response_class=EventSourceResponse, responses={
                    **responses(400, 404, 503), **_headers(200, **{"X-Run-ID": "the id of the run created"})},
                    summary="Run a workflow, streaming its events as server-sent events until it ends")
    async def execute(rid: Annotated[uuid.UUID, Depends(started)]) -> AsyncIterator[ServerSentEvent]:
        history = RunHistory(service.repository, rid)
        await service.call(history.read)
        async for event in _stream(service, history, None):
            yield event

    @workflows.post("/{name}/runs", status_code=202, response_model=schemas.RunOut,
                    responses={**responses(400, 404, 409, 503), **_headers(202, Location="the run's own URL")},
                    summary="Run a workflow in the server's background (or on the workers); answer at once with the run")
    async def create_run(name: str, request: Request,
                         body: Annotated[schemas.RunRequest, Body()] = schemas.RunRequest(),
                         idempotency_key: Annotated[str | None, Header(
                             alias="Idempotency-Key", description="a retried request with the same key gets the "
                             "same run", **_described(minLength=1, maxLength=200, pattern="\\S"))] = None) -> Any:
        key = _header_text(idempotency_key)

        def go() -> Any:
            # A retried request is answered from the run it made, even when the server is full.
            earlier = key and service.executor.started_with(key, name, body.params)
            if earlier:
                return earlier
            if service.workers:
                return service.repository.find_run(service.executor.submit(name, body.params, idempotency_key=key))
            with service.run_slot():
                rid = service.executor.start(name, body.params, idempotency_key=key)
            return service.repository.find_run(rid)

        run = await service.call(go)
        location = str(request.url_for("find_run", run_id=str(run.id)).path)
        return JSONResponse(_run_json(run), status_code=202, headers={"Location": location})

    router.include_router(runs)
    router.include_router(workflows)

    @router.get("/health", response_model=schemas.Health, responses=responses(503), tags=["Health"],
                summary="Whether the database answers, migrated to the revision this wfkit needs")
    async def health() -> Any:
        from wfkit.store import migrations

        def check() -> str:
            at, head = migrations.current(service.executor.engine), migrations.head()
            if at != head:
                raise DatabaseError(f"the database is at revision {at or 'none'}, this wfkit needs {head}: "
                                    "run `wfkit db upgrade`")
            return at

        return JSONResponse({"status": "ok", "revision": await service.call(check)})

    return router


def _headers(status: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: the headers a successful answer carries."""
    return {status: {"headers": {name: {"description": text, "schema": {"type": "string"}}
                                 for name, text in described.items()}}}


def bearer(token: str | None) -> list[Any]:
    """A dependency that asks for ``Authorization: Bearer <token>`` on every route of the API but
    ``/health`` (none without a token). The OpenAPI document and ``/docs`` are the app's, not the
    router's: they describe the routes and hold no run data, and stay open."""
    if not token:
        return []
    import secrets

    expected = token.encode()

    # async: a check this small needs no thread of the pool (a sync dependency would take one)
    async def check(request: Request) -> None:
        if request.url.path == "/health":
            return
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        # The scheme's name is case-insensitive (RFC 9110, section 11.1); the token is not.
        valid = scheme.lower() == "bearer"
        if not secrets.compare_digest(given.strip().encode("latin-1", "replace"), expected) or not valid:
            raise HTTPException(401, "this server needs Authorization: Bearer <token> (its WFKIT_API_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    return [Depends(check)]


def _header_text(value: str | None) -> str | None:
    """A header's value as its sender wrote it: HTTP hands headers over as Latin-1, so text a client
    sent as UTF-8 is decoded again (a value that is not UTF-8 stays as it came)."""
    if value is None:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _run_json(run: Any, exclude: Sequence[str] = ()) -> dict[str, Any]:
    return run.to_dict(exclude=exclude)


def _json_params(text: str | None) -> dict[str, Any]:
    """``?params=`` as a JSON object (none: the workflow's defaults)."""
    import json

    if text is None:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise InvalidQueryError(f"params must be one JSON object: {err}") from None
    if not isinstance(value, dict):
        raise InvalidQueryError(f"params must be one JSON object, got {type(value).__name__}")
    return value


def _links(request: Request, page: int | None, pages: int | None, next_cursor: str | None,
           filters: RunFilters) -> str:
    """RFC 8288 ``Link`` header of a listing (the request's own URL, its other parameters in their
    order; ``since`` and ``until`` as the times they stood for, since ``7d`` means another time
    later): ``next`` by cursor (the page after this one, at the cost of the first page, however
    deep), ``first``; and, when the page and the total are known, ``prev`` and ``last`` by number."""
    from urllib.parse import parse_qsl, quote, urlencode

    url = request.url
    times = {"since": filters.since, "until": filters.until}
    # The query is parsed and encoded once; each link only appends its page number or cursor.
    others = urlencode([(k, times[k].isoformat().replace("+00:00", "Z") if k in times and times[k] else v)
                        for k, v in parse_qsl(url.query, keep_blank_values=True) if k not in ("page", "cursor")])
    base = f"{url.scheme}://{url.netloc}{url.path}?{others}{'&' if others else ''}"
    out = [f'<{base}page=1>; rel="first"']
    if page is not None and pages is not None and 1 < page <= pages + 1:
        out.append(f'<{base}page={min(page - 1, pages)}>; rel="prev"')
    if next_cursor is not None:
        out.append(f'<{base}cursor={quote(next_cursor)}>; rel="next"')
    if pages is not None:
        out.append(f'<{base}page={pages}>; rel="last"')
    return ", ".join(out)


async def _stream(service: Service, history: RunHistory, last_event_id: str | None) -> AsyncIterator[ServerSentEvent]:
    """A run's events (``history``, read once already): those after ``last_event_id``, then each new
    one as it is written, until the run ends. Written events are read from the database, so any
    process can serve any run; this process's own runs wake the stream at once, others when the
    service's watcher sees their row change (see Service.wait)."""
    run_id = history.run_id
    for event in history.after(last_event_id):
        yield _sse(event)
    if history.ended:  # the client has seen the end already, or just did
        return
    while not service.stopped:  # a server that stops ends its streams: clients reconnect elsewhere
        await service.wait(run_id, SAFETY_SECONDS)
        try:
            events = await service.call(history.read)
        except (NotFoundError, DatabaseError) as err:
            # Deleted meanwhile, or the database is away: the stream ends (a client that reconnects
            # with its last id is answered 404 or 503, or gets the rest once the database is back).
            log.warning("the event stream of run %s ended: %s", run_id, err)
            return
        for event in events:
            yield _sse(event)
            if event.final:
                return


def _sse(event: Any) -> ServerSentEvent:
    return ServerSentEvent(data=event.data(), event=event.name, id=event.id)


__all__ = ["bearer", "build_router", "problem"]
