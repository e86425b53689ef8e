"""The run viewer: server-rendered pages that ``wfkit serve`` (and ``create_app``) serve at ``/``.

- ``/``: the runs, with the filters, sort and pages of ``wfkit runs list`` in the URL;
- ``/runs/{id}``: one run (header and actions, timeline, graph with the path taken, decisions,
  state with what each stage changed), kept up to date while it executes through the API's event
  stream;
- ``/catalog``: the registered workflows, with their params schemas and graphs;
- ``/static/...``: the pages' own CSS and JavaScript, and the vendored libraries
  (``static/vendor/VENDOR.json`` records their versions, licences and checksums). Nothing is
  fetched from another host.

Jinja2 templates (FastAPI's templating) shipped in the wheel; a little JavaScript. The pages read
through the same repository and parsers as the API and the command line: a bad filter gets the
same message, as a page with status 400.
"""

# FastAPI reads the annotations of the route functions (defined inside build_viewer) when they are
# made: they are not postponed here (no `from __future__ import annotations`).

import hashlib
import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import resources
from typing import TYPE_CHECKING, Any

from wfkit.errors import NotFoundError, WfkitError
from wfkit.web import views

if TYPE_CHECKING:
    from fastapi import APIRouter

#: Stages per page of a run's state section, and decisions per page of its decisions.
STAGES_PER_PAGE = 50
DECISIONS_PER_PAGE = 100
#: A run with at most this many stages has its whole page at once; a bigger one has its first screen
#: (facts, timeline) first, and its graph, decisions and state fetched after.
INLINE_STAGES = 2000
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
                 ".LICENSE": "text/plain; charset=utf-8"}


def _templates() -> Any:
    from fastapi.templating import Jinja2Templates
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("wfkit.web", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(duration=views.duration, when=views.when)
    return Jinja2Templates(env=env)


def _static() -> dict[str, tuple[bytes, str, str]]:
    """Every static file: its bytes, media type and ETag (its checksum), read once."""
    files: dict[str, tuple[bytes, str, str]] = {}
    root = resources.files("wfkit.web") / "static"

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            body = entry.read_bytes()
            files[prefix + entry.name] = (body, _STATIC_TYPES.get(suffix, "application/octet-stream"),
                                          '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    walk(root, "")
    return files


def _page_of(text: str | None, count: int, size: int) -> tuple[int, int]:
    """The page a query asks for (1 if it names none or no number; the last if past it), and how
    many pages there are."""
    pages = max(1, math.ceil(count / size))
    try:
        wanted = int(text or 1)
    except ValueError:
        wanted = 1
    return min(max(1, wanted), pages), pages


def build_viewer(service: Any, dependencies: Sequence[Any] = ()) -> "APIRouter":
    """The viewer's routes on the API's service (its repository, registry and thread pool)."""
    from fastapi import APIRouter, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    templates = _templates()
    static = _static()
    router = APIRouter(dependencies=list(dependencies), include_in_schema=False)

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"now": datetime.now(timezone.utc), **context},
                                          status_code=status_code)

    def problem(request: Request, err: WfkitError) -> HTMLResponse:
        status = getattr(err, "http_status", 500)
        return page(request, "error.html", status_code=status, status=status, message=str(err))

    @router.get("/", response_class=HTMLResponse)
    async def runs_page(request: Request) -> Any:
        from wfkit.store.query import PageRequest, RunFilters

        query = request.query_params

        def read() -> dict[str, Any]:
            values = {k: query.get(k) for k in ("page", "page_size", "sort") if query.get(k)}
            request_page = PageRequest.from_query(values)
            filters = RunFilters.from_query({"workflow_name": query.getlist("workflow_name"),
                                             "status": query.getlist("status"), "since": query.get("since"),
                                             "until": query.get("until")})
            result = service.repository.list_runs(request_page, filters, fields="summary")
            if not result.data and result.total and result.total_pages and result.page > result.total_pages:
                # past the last page (a link kept from when there were more runs): the last page
                result = service.repository.list_runs(PageRequest(result.total_pages, request_page.page_size,
                                                                  request_page.sort), filters, fields="summary")
            running = service.repository.list_runs(1, status="running", page_size=1, fields="summary").total
            return {"result": result, "filters": filters, "running": running,
                    "sort": request_page.sort or "-created_at", "workflows": service.registry.names()}

        try:
            context = await service.call(read)
        except WfkitError as err:
            return problem(request, err)
        return page(request, "runs.html", **context, statuses=["pending", "running", "completed", "failed",
                                                               "cancelled"],
                    query=query, run_seconds=views.run_seconds)

    @router.get("/runs/{run_id}", response_class=HTMLResponse)
    async def run_page(request: Request, run_id: str) -> Any:
        query = request.query_params
        part = query.get("part")
        # A short id, latest, or a whole id written otherwise: redirected to the run's own address,
        # so that the page (and its live refreshes) keeps showing this run whatever comes later.
        try:
            from wfkit.ids import parse_run_ref

            ref = parse_run_ref(run_id)
            if not (isinstance(ref, uuid.UUID) and str(ref) == run_id):
                rid = await service.call(service.repository.resolve_run_id, ref)
                target = request.url_for("run_page", run_id=str(rid)).include_query_params(**query)
                return RedirectResponse(str(target), status_code=302)
        except WfkitError as err:
            return problem(request, err)

        def read() -> dict[str, Any]:
            from wfkit.ids import parse_uuid

            rid = parse_uuid(run_id)
            repository = service.repository
            if part == "details":
                return _details(repository.find_run(rid), query)
            run = repository.find_run(rid)
            summaries = repository.get_stages(rid, fields="summary")  # no snapshots: the timeline's
            context = {"run": run, "stages": summaries, "timeline": views.timeline(summaries),
                       "params": views.shown(run.params), "seconds": views.run_seconds(run),
                       "result": None if run.result is None else views.shown(run.result),
                       "live": run.status.value not in views.FINAL, "details": None,
                       "failed_stage": None}
            if run.error_message:  # its traceback is the last failed stage's
                failed = next((s for s in reversed(summaries) if s.status.value == "failed"), None)
                context["failed_stage"] = failed and repository.find_stage(failed.id)
            # A big run's first screen comes first; its details follow (the page fetches them).
            if len(summaries) <= INLINE_STAGES or part == "live":
                context["details"] = _details(run, query)
            return context

        def _details(run: Any, query: Any) -> dict[str, Any]:
            repository = service.repository
            stages, decisions = repository.get_stages(run.id), repository.get_decisions(run.id)
            stage_page, pages = _page_of(query.get("stages_page"), len(stages), STAGES_PER_PAGE)
            shown_stages = stages[(stage_page - 1) * STAGES_PER_PAGE: stage_page * STAGES_PER_PAGE]
            decision_page, decision_pages = _page_of(query.get("decisions_page"), len(decisions), DECISIONS_PER_PAGE)
            first_decision = (decision_page - 1) * DECISIONS_PER_PAGE
            graph_text, graph_error = None, None
            try:
                graph, _state = service.registry.get(run.workflow_name).build(run.params)
                graph_text = views.run_graph(graph, stages, decisions)
            except WfkitError as err:
                graph_error = str(err)
            return {"run": run, "all_stages": stages, "decisions": decisions,
                    "shown_decisions": decisions[first_decision:first_decision + DECISIONS_PER_PAGE],
                    "first_decision": first_decision, "decision_page": decision_page,
                    "decision_pages": decision_pages, "state_rows": views.state_rows(shown_stages),
                    "stage_page": stage_page, "stage_pages": pages, "first_stage": (stage_page - 1) * STAGES_PER_PAGE,
                    "graph": graph_text, "graph_error": graph_error}

        try:
            context = await service.call(read)
        except WfkitError as err:
            return problem(request, err)
        if part == "details":
            return page(request, "run_details.html", **context)
        if context["details"] is not None:
            context.update(context["details"])
        return page(request, "run_live.html" if part == "live" else "run.html", **context)

    @router.get("/catalog", response_class=HTMLResponse)
    async def catalog_page(request: Request) -> Any:
        def read() -> list[dict[str, Any]]:
            out = []
            for info in service.registry.list():
                workflow = service.registry.get(info.name)
                entry: dict[str, Any] = {"info": info, "schema": None, "graph": None, "error": None}
                try:
                    model = workflow.resolve_params_model()
                    entry["schema"] = views.shown(model.model_json_schema()) if model else None
                    graph, _state = workflow.build({})
                    entry["graph"] = graph.to_mermaid()
                except WfkitError as err:
                    entry["error"] = str(err)
                out.append(entry)
            return out

        return page(request, "catalog.html", workflows=await service.call(read))

    @router.get("/static/{path:path}")
    async def static_file(request: Request, path: str) -> Any:
        found = static.get(path)
        if found is None:
            raise NotFoundError(f"no file {path!r} in the viewer's static files")
        body, media, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media, headers=headers)

    return router


__all__ = ["build_viewer"]
