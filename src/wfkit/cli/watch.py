"""``wfkit runs watch RUN_ID`` (and ``runs show RUN_ID --follow``): follow a run live, from any terminal.

Through the database (the default), the run's row is polled (``Repository.run_versions``: one
primary-key read) every ``--interval`` seconds, and only when it changed is its new history read
(``RunHistory``: the stages and decisions since the last one seen). Through a wfkit HTTP API
(``--api URL``), the run's server-sent event stream is read (``GET /workflows/runs/{id}/events``),
and read again from the last event seen if the connection drops. Either way the same events, in
the same order, with the same ids: what the executor reported while it ran the run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import click

from wfkit.cli.common import (
    database_url,
    database_url_option,
    plural,
    run_id_argument,
    runs,
    wfkit_command,
)
from wfkit.errors import WfkitError

#: How often the database is asked whether a watched run changed (seconds), unless --interval says.
DEFAULT_INTERVAL = 0.5
#: A stream that sent nothing (not even the server's keep-alive ping, every 15 s) for this long is
#: taken as cut, and opened again.
STREAM_SILENCE = 60.0
#: How many times in a row a stream is opened again after failing, before watching gives up.
STREAM_RETRIES = 10
#: What wfkit's HTTP API sends as a ``Bearer`` token (the server's own setting of the same name).
TOKEN_ENV = "WFKIT_API_TOKEN"


@runs.command("watch")
@run_id_argument
@click.option("--api", "api", metavar="URL", default=None,
              help="Follow the run through the wfkit HTTP API at URL (its event stream; the token from "
              f"${TOKEN_ENV} if set) instead of the database.")
@click.option("--interval", type=click.FloatRange(min=0.05, max=60), default=None, metavar="SECONDS",
              help=f"How often to ask the database whether the run changed (default {DEFAULT_INTERVAL:g}).")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON object per line.")
@database_url_option
def runs_watch(run_id: str, api: str | None, interval: float | None, as_json: bool) -> None:
    """Follow a run live, stage by stage, until it ends.

    Prints each stage as it starts and ends (node, iteration, duration) and
    each decision taken, then a summary line. A run that already ended
    prints its history and exits at once. Exit code 0 when the run
    completed, 1 when it failed or was cancelled; Ctrl-C stops watching
    (exit 130), not the run. With --json, one object per line:
    {"event", "id", "data"}, as the HTTP API's event stream sends them.

    Example: wfkit runs watch latest
    """
    if api is not None and interval is not None:
        raise click.UsageError("--interval is how often the database is read: with --api the server sends each "
                               "event as it happens")
    watch(run_id, api=api, as_json=as_json, interval=interval)


def watch(run_id: str, *, api: str | None, as_json: bool, interval: float | None) -> None:
    """Follow ``run_id`` (any form a command takes) until it ends; exit as ``wfkit run`` does."""
    printer = _Printer(as_json)
    try:
        if api is not None:
            run = _through_api(api, run_id, printer)
        else:
            run = _through_database(run_id, printer, DEFAULT_INTERVAL if interval is None else interval)
    except KeyboardInterrupt:
        what = f"run {printer.run_id}" if printer.run_id else "the run"
        click.echo(f"Stopped watching {what} (Ctrl-C); it goes on.", err=True)
        sys.exit(130)
    sys.exit(printer.summary(run))


# --------------------------------------------------------------------------- printing


class _Printer:
    """Each event as one line, for people (as ``wfkit run`` prints them) or as JSON; then the run's end."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.run_id: str | None = None
        self.stages = 0

    def header(self, run: Mapping[str, Any]) -> None:
        self.run_id = str(run["id"])
        if not self.as_json:
            click.echo(f"run {run['id']} ({run['workflow_name']}): {run['status']}")

    def event(self, event_id: str, name: str, data: Mapping[str, Any], event: Any = None) -> None:
        if name == "stage.start":
            self.stages += 1
        if self.as_json:
            click.echo(json.dumps({"event": name, "id": event_id, "data": data}, ensure_ascii=False))
        elif name != "complete":  # the summary says how the run ended
            from wfkit.events import describe, event_from_dict

            click.echo(describe(event if event is not None else event_from_dict(data)))

    def summary(self, run: Mapping[str, Any]) -> int:
        """How the run ended, in one line (and its result), unless --json; 0 if it completed, else 1."""
        from wfkit.formatting import format_ms

        status = run["status"]
        if not self.as_json:
            ms = _duration_ms(run)
            took = f" {'in' if status == 'completed' else 'after'} {format_ms(ms)}" if ms is not None else ""
            why = run.get("error_message") if status == "failed" else run.get("cancel_reason")
            click.echo(f"run {run['id']} {status}{took} ({plural(self.stages, 'stage')})"
                       + (f": {why}" if why and status != "completed" else ""))
            if status == "completed" and run.get("result") is not None:
                click.echo(f"result: {json.dumps(run['result'], ensure_ascii=False, sort_keys=True)}")
            if status in ("failed", "cancelled"):
                click.echo(f"Resume it with: {wfkit_command('runs', 'resume', str(run['id']))}", err=True)
        return 0 if status == "completed" else 1


def _duration_ms(run: Mapping[str, Any]) -> float | None:
    """From the run's start to its end (its JSON form's times), if it started."""
    from datetime import datetime

    try:
        start, end = (datetime.fromisoformat(run[key]) for key in ("started_at", "completed_at"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds() * 1000.0


# --------------------------------------------------------------------------- through the database


def _through_database(run_id: str, printer: _Printer, interval: float) -> dict[str, Any]:
    """Read the run's history, then what is new each time its row changes, until it ends."""
    from wfkit.errors import NotFoundError
    from wfkit.executor.history import RunHistory
    from wfkit.store.repository import Repository

    with Repository(database_url()) as repository:
        rid = repository.resolve_run_id(run_id)
        version = repository.run_versions([rid]).get(rid)  # before reading: a change after it is seen
        history = RunHistory(repository, rid)
        new = history.read()
        printer.header(history.run.to_dict())  # type: ignore[union-attr]
        while True:
            for item in new:
                printer.event(item.id, item.name, item.data(), item.event)
            if history.ended:
                return history.run.to_dict()  # type: ignore[union-attr]
            while True:
                time.sleep(interval)
                now = repository.run_versions([rid]).get(rid)
                if now is None:
                    raise NotFoundError(f"run {rid} was deleted while it was being watched")
                if now != version:
                    version = now
                    break
            new = history.read()


# --------------------------------------------------------------------------- through the HTTP API


def _through_api(base: str, run_id: str, printer: _Printer) -> dict[str, Any]:
    """Read the run's event stream from a wfkit server (opened again after the last event seen if it
    is cut), then the run as it ended."""
    from urllib.parse import quote

    client = _Api(base)
    run = client.get_json(f"/workflows/runs/{quote(run_id.strip(), safe='')}")  # resolves short ids, latest
    printer.header(run)
    rid = str(run["id"])
    last_id: str | None = None
    failures = 0
    while True:
        try:
            for event_id, name, data in client.events(f"/workflows/runs/{rid}/events", last_id):
                failures = 0
                last_id = event_id
                printer.event(event_id, name, data)
                if name == "complete":
                    return client.get_json(f"/workflows/runs/{rid}")
            if last_id is not None and client.ended_before:  # 204: the server says we saw the end
                return client.get_json(f"/workflows/runs/{rid}")
        except _Unreachable as err:
            failures += 1
            if failures > STREAM_RETRIES:
                raise WfkitError(f"lost the event stream of run {rid} from {client.base}: {err}") from None
        # The stream ended before the run did (a server that stops ends its streams), or was cut: open
        # it again after the last event seen, here or on whichever server answers now.
        time.sleep(min(0.2 + 0.5 * failures, 2.0))


class _Unreachable(Exception):
    """The server could not be reached, or the connection was cut."""


class _Api:
    """A few requests to a wfkit HTTP API, with the standard library (the command line needs no HTTP
    client of its own): its problem+json errors become wfkit errors with the same status, so that
    the command exits as it would have on the database."""

    def __init__(self, base: str):
        import os

        from wfkit.errors import ConfigurationError

        self.base = base.strip().rstrip("/")
        if not self.base.startswith(("http://", "https://")):
            raise ConfigurationError(f"--api {base!r} is not an HTTP URL: give the server's address, such as "
                                     "http://127.0.0.1:8000")
        token = os.environ.get(TOKEN_ENV, "").strip()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ended_before = False

    def _open(self, path: str, headers: Mapping[str, str], timeout: float) -> Any:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.base + path, headers={**self.headers, **headers})
        try:
            return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the scheme is checked
        except urllib.error.HTTPError as err:
            raise _remote_error(err, self.base) from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise _Unreachable(f"cannot reach the wfkit API at {self.base}: {reason}") from None

    def get_json(self, path: str) -> dict[str, Any]:
        try:
            with self._open(path, {"Accept": "application/json"}, 30) as response:
                body = response.read()
        except _Unreachable as err:
            raise WfkitError(str(err)) from None
        try:
            found = json.loads(body)
        except ValueError:
            found = None
        if not isinstance(found, dict) or "id" not in found:
            raise WfkitError(f"{self.base}{path} answered something that is not a wfkit run: is it a wfkit API?")
        return found

    def events(self, path: str, last_id: str | None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """The stream's events after ``last_id``: (id, event name, data). Ends when the server ends it."""
        import http.client

        headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}
        response = self._open(path, headers, STREAM_SILENCE)
        with response:
            if response.status == 204:
                self.ended_before = True
                return
            try:
                yield from _sse(response)
            except (OSError, http.client.HTTPException) as err:  # cut, or silent too long
                raise _Unreachable(f"the stream was cut: {err}") from None


def _sse(response: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Server-sent events from a response's lines: those with data, as (id, event name, data)."""
    fields: dict[str, str] = {}
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if "data" in fields:
                yield fields.get("id", ""), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
            continue
        name, _, value = line.partition(":")
        if name == "":  # a comment: the server's keep-alive ping
            continue
        value = value[1:] if value.startswith(" ") else value
        fields[name] = fields[name] + "\n" + value if name == "data" and "data" in fields else value


def _remote_error(err: Any, base: str) -> WfkitError:
    """A server's error answer as the wfkit error of its status (problem+json's detail as its message)."""
    from wfkit.errors import AmbiguousRunIdError, ConfigurationError, InvalidQueryError, NotFoundError

    try:
        detail = json.loads(err.read()).get("detail")
    except Exception:
        detail = None
    message = detail if isinstance(detail, str) and detail else f"{base} answered {err.code} {err.reason}"
    if err.code in (401, 403):
        return ConfigurationError(message if TOKEN_ENV in message else f"{message} (set {TOKEN_ENV} to the server's "
                                                                         "token)")
    kinds = {404: NotFoundError, 409: AmbiguousRunIdError, 400: InvalidQueryError, 422: InvalidQueryError}
    return kinds.get(err.code, WfkitError)(message)
