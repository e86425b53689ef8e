"""wfkit's HTTP API: a FastAPI router a service mounts, or a whole app (``wfkit serve``).

    from fastapi import FastAPI
    from wfkit.api import create_router

    app = FastAPI()
    app.include_router(create_router("postgresql://wfkit@db/wfkit", dependencies=[Depends(my_auth)]))

or ``create_app(...)`` for a complete app (the router, problem-details errors, OpenAPI). The
routes: ``GET /workflows``, ``GET /workflows/{name}``, ``GET /workflows/{name}/graph``,
``POST /workflows/{name}/execute`` (server-sent events until the run ends), ``POST
/workflows/{name}/runs`` (in the background, 202), ``GET /workflows/runs`` (a page, with
``Link`` headers), ``GET /workflows/runs/{id}`` (``?wait=`` to long-poll), ``.../stages``,
``.../decisions``, ``.../events`` (server-sent events, resumable with ``Last-Event-ID``),
``DELETE /workflows/runs/{id}``, ``DELETE /workflows/runs?older_than=30d`` (prune), ``POST .../cancel``, ``POST .../resume``, ``GET /health``.
Errors are problem details (:mod:`wfkit.api.problems`).

Needs the ``api`` extra: ``pip install 'wfkit[api]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from wfkit.registry import Registry
    from wfkit.runtime import Runtime

TOKEN_ENV = "WFKIT_API_TOKEN"


def _fastapi() -> None:
    import importlib.util

    from wfkit.errors import ConfigurationError

    if importlib.util.find_spec("fastapi") is None:
        raise ConfigurationError("the HTTP API needs FastAPI and uvicorn, which are not installed: "
                                 "pip install 'wfkit[api]'")


def create_router(database: Any = None, registry: Registry | None = None, runtime: Runtime | None = None,
                  dependencies: Sequence[Any] = (), *, grace: float = 0.0, stop_timeout: float = 10.0,
                  dispatch: str = "in-process") -> APIRouter:
    """The API's routes, for a service to include in its app (its authentication in ``dependencies``,
    e.g. ``[Depends(check_token)]``). ``database``: an engine, a URL or None (the configured
    default); ``registry``: where workflows are looked up (default: the installed plugins');
    ``runtime``: the services handed to factories. Runs started through the API execute in the
    server's background; when the app stops, they stop before their next node (after ``grace``
    seconds, if given), cancelled and resumable; a node still executing ``stop_timeout`` seconds
    after that is left to run again on resume (its run is cancelled as ``force`` cancels).
    ``dispatch``: ``"in-process"`` (the default), or ``"workers"``, which hands new runs and
    resumes to the workers instead (``wfkit worker``;
    PostgreSQL and the ``worker`` extra): they are answered pending, and a worker executes them.
    Install the problem-details error handlers with :func:`install_errors` (``create_app`` does)."""
    _fastapi()
    from wfkit.api.routes import build_router
    from wfkit.api.service import Service

    service = Service(database, registry, runtime, grace=grace, stop_timeout=stop_timeout, dispatch=dispatch)
    router = build_router(service, dependencies)
    router.wfkit_service = service  # type: ignore[attr-defined]  # create_app and wfkit serve reach it here
    return router


def install_errors(app: FastAPI) -> None:
    """Answer every error of ``app`` as RFC 9457 problem details (see :mod:`wfkit.api.problems`)."""
    _fastapi()
    from wfkit.api.problems import install

    install(app)


def create_app(database: Any = None, registry: Registry | None = None, runtime: Runtime | None = None,
               dependencies: Sequence[Any] = (), *, token: str | None = None, grace: float = 0.0,
               stop_timeout: float = 10.0, dispatch: str = "in-process", viewer: bool = True) -> FastAPI:
    """A complete app: :func:`create_router`'s routes, problem-details errors and the OpenAPI
    document (``/openapi.json``, ``/docs``), and with ``viewer`` the run viewer's pages at ``/``
    (:mod:`wfkit.web`). With ``token``, every route but ``/health`` asks for
    ``Authorization: Bearer <token>``. ``dispatch``: as :func:`create_router`."""
    _fastapi()
    from fastapi import FastAPI

    from wfkit import __version__
    from wfkit.api.routes import bearer

    app = FastAPI(title="wfkit", version=__version__,
                  description="Start, watch, cancel and resume wfkit runs, and read their history.")
    install_errors(app)
    router = create_router(database, registry, runtime, [*dependencies, *bearer(token)], grace=grace,
                           stop_timeout=stop_timeout, dispatch=dispatch)
    app.include_router(router)
    if viewer:
        from wfkit.web import build_viewer

        app.include_router(build_viewer(router.wfkit_service, [*dependencies, *bearer(token)]))  # type: ignore[attr-defined]
    #: what ``wfkit serve`` stops as soon as a signal asks the server to stop (see Service.begin_stop)
    app.state.wfkit_service = router.wfkit_service  # type: ignore[attr-defined]
    return app


__all__ = ["TOKEN_ENV", "create_app", "create_router", "install_errors"]
