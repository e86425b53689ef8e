"""``wfkit serve``: the HTTP API (and, later, the run viewer) with uvicorn."""

from __future__ import annotations

import ipaddress
import math
import os
from typing import Any

import click

from wfkit.cli.common import cli, database_url, database_url_option


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Seconds(click.FloatRange):
    """A number of seconds: finite, zero or more (``nan`` and ``inf`` are refused)."""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0, max=24 * 3600)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return number


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than this machine's own (127.0.0.1, ::1) needs --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--token", default=None, metavar="TOKEN",
              help="Clients must send 'Authorization: Bearer TOKEN' (default: $WFKIT_API_TOKEN).")
@click.option("--grace", type=Seconds(), default=0.0, show_default=True, metavar="SECONDS",
              help="On shutdown, how long runs executing in the background may go on before they are stopped "
              "(cancelled before their next node, resumable).")
@click.option("--stop-timeout", type=Seconds(), default=10.0, show_default=True, metavar="SECONDS",
              help="Then, how long to wait for them to stop; a node still executing after that runs again on "
              "resume.")
@click.option("--dispatch", type=click.Choice(["in-process", "workers"]), default="in-process", show_default=True,
              help="Where runs started or resumed through the API execute: in this process, or on the workers "
              "(`wfkit worker`, PostgreSQL).")
@database_url_option
def serve_cmd(host: str, port: int, token: str | None, grace: float, stop_timeout: float, dispatch: str) -> None:
    """Serve the HTTP API for runs: start, watch, cancel, resume.

    OpenAPI at /openapi.json, interactive docs at /docs. Runs started
    through the API execute in this process; Ctrl-C or SIGTERM stop them
    before their next node (cancelled, resumable) after --grace seconds.
    With --dispatch workers, they go to the workers instead.

    Example: wfkit serve --port 8000
    """
    from wfkit.api import TOKEN_ENV, create_app
    from wfkit.errors import ConfigurationError

    token = token or os.environ.get(TOKEN_ENV, "").strip() or None
    if not _loopback(host) and not token:
        raise ConfigurationError(f"--host {host} lets other machines reach this server: give a token that clients "
                                 f"must send (--token, or {TOKEN_ENV}), or listen on 127.0.0.1")
    import uvicorn

    app = create_app(database_url(), token=token, grace=grace, stop_timeout=stop_timeout, dispatch=dispatch)
    service = app.state.wfkit_service

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Stop the background runs at once, not after the open connections close: the event
            # streams and long-polls end once the runs have stopped (a stream of a run executed
            # here ends with its `complete`), so the connections close and the server stops.
            service.begin_stop()
            super().handle_exit(sig, frame)

    # uvicorn waits this long for open connections before it cancels them: the runs' stop comes first.
    waited = math.ceil(grace + stop_timeout) + 5
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=waited)
    Server(config).run()
