"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API answers has the same shape: ``type``, ``title``, ``status``, ``detail``, and
wfkit's own ``error`` (the exception class, e.g. ``NotFoundError``). The status is
:func:`wfkit.http_status`'s: a malformed id or a bad query 400, an unknown run or workflow 404, a
status change that is not allowed 400, a request that contradicts an earlier one 409, the
database down 503, anything else 500 with nothing of its internals in the body (the traceback
goes to the server's log). Request validation errors (a body that is not JSON, a query value of
the wrong type) are 400 in the same shape, their message naming the bad value.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wfkit.errors import WfkitError, http_status, wfkit_error_in

log = logging.getLogger("wfkit.api")
MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, error: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """A problem-details response."""
    body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
                            "detail": detail}
    if error:
        body["error"] = error
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def for_exception(err: BaseException) -> JSONResponse:
    """The problem that answers ``err`` (500 for anything that is not wfkit's, with no internals)."""
    found = wfkit_error_in(err)
    status = http_status(err)
    if found is None or status >= 500 and status != 503:
        log.error("internal error answering a request", exc_info=err)
        return problem(500, "the server met an error it did not expect; it is in the server's log", "InternalError")
    return problem(status, str(found), type(found).__name__)


def _validation_detail(err: RequestValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem details."""

    @app.exception_handler(WfkitError)
    async def _wfkit(_request: Request, err: WfkitError) -> JSONResponse:
        return for_exception(err)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, err: RequestValidationError) -> JSONResponse:
        return problem(400, _validation_detail(err), "RequestValidationError")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, err: StarletteHTTPException) -> Response:
        if err.status_code in (204, 304):  # answers with no body at all
            return Response(status_code=err.status_code, headers=err.headers)
        return problem(err.status_code, str(err.detail), None, dict(err.headers or {}))

    @app.exception_handler(Exception)
    async def _anything(_request: Request, err: Exception) -> JSONResponse:
        return for_exception(err)


#: OpenAPI: every route may answer these, as problem details.
PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "error": {"type": "string"},
    },
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each problem details."""
    return {status: {"description": HTTPStatus(status).phrase,
                     "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}}} for status in statuses}
