"""Real ``wfkit serve`` processes (uvicorn on a free port) for the API's tests, spoken to with httpx.

``serve`` starts a server on a database with the sample workflows and the fixture plugin
``steps`` installed; :func:`events` reads a server-sent event stream as a list of dicts.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import WFKIT, WfkitCli


PROBLEM = "application/problem+json"
MISSING = "123e4567-e89b-12d3-a456-426614174000"


def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem details of an error response (asserting their shape)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert "Traceback" not in body["detail"] and "\n" not in body["detail"]
    return body


def cli_error(out: Any) -> str:
    """The message of a command's one-line error."""
    assert out.returncode != 0 and "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line.removeprefix("Error: ")


def finished(api: Server, run_id: str, seconds: float = 30) -> dict[str, Any]:
    response = api.client.get(f"/workflows/runs/{run_id}", params={"wait": seconds})
    assert response.status_code == 200
    run = response.json()
    assert run["status"] in ("completed", "failed", "cancelled"), run
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A ``wfkit serve`` process and an httpx client on it."""

    proc: subprocess.Popen[str]
    url: str
    markers: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server ended: {self.proc.communicate()}")
            try:
                self.client.get("/openapi.json")
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str]:
        """Stop the server with ``sig``; its exit code and what it wrote to stderr."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
            raise AssertionError(f"the server did not stop on {sig!r}: {err}") from None
        return self.proc.returncode, err


def start_server(url: str, plugins: dict[str, Path], markers: Path, *args: str, env: dict[str, str] | None = None,
                 ready: bool = True, port: int | None = None) -> Server:
    """``wfkit serve`` on ``url`` with the samples and the fixture plugin ``steps`` (markers in ``markers``),
    on ``port`` (default: a free one)."""
    port = port or free_port()
    environ = WfkitCli().environ(url, {"PYTHONPATH": str(plugins["steps"]), "WFKIT_LOAD_PLUGINS": "steps,samples",
                                       "WFKIT_TEST_MARKERS": str(markers), **(env or {})})
    proc = subprocess.Popen([WFKIT, "serve", "--port", str(port), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)
    server = Server(proc, f"http://127.0.0.1:{port}", markers)
    if ready:
        server.wait_ready()
    return server


@pytest.fixture
def serve(installed_plugins: dict[str, Path], tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(url, *args, env=..., ready=True)``: a started ``wfkit serve``, killed after the test if
    it still runs."""
    started: list[Server] = []
    markers = tmp_path / "markers"  # the same folder as the steps_cli fixture's
    markers.mkdir(exist_ok=True)

    def start(url: str, *args: str, env: dict[str, str] | None = None, ready: bool = True) -> Server:
        started.append(start_server(url, installed_plugins, markers, *args, env=env, ready=ready))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def api(backend: str, databases: Any, installed_plugins: dict[str, Path],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per engine for this module, on a database of its own."""
    from wfkit.store import migrations

    url = databases.new(backend)
    migrations.upgrade(url)
    markers = tmp_path_factory.mktemp("markers")
    server = start_server(url, installed_plugins, markers)
    server.db_url = url  # type: ignore[attr-defined]
    yield server
    code, err = server.stop()
    # uvicorn shuts down cleanly, then ends by the signal it was sent, as a shell expects (143)
    assert code == -15 and "Application shutdown complete" in err, err


@pytest.fixture
def cli(api: Server, installed_plugins: dict[str, Path]) -> WfkitCli:
    """``wfkit`` on the server's database, with the same plugins."""
    return WfkitCli({"WFKIT_DATABASE_URL": api.db_url, "PYTHONPATH": str(installed_plugins["steps"]),  # type: ignore[attr-defined]
                     "WFKIT_LOAD_PLUGINS": "steps,samples", "WFKIT_TEST_MARKERS": str(api.markers)})


def parse_events(lines: Iterator[str], stop_after: int | None = None) -> list[dict[str, Any]]:
    """Server-sent events from a stream's lines: ``{"event", "id", "data"}`` each (comments, such as
    keep-alive pings, as ``{"comment": ...}``); after ``stop_after`` events, stop reading."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if current:
                if "data" in current:
                    current["data"] = json.loads(current["data"])
                out.append(current)
                current = {}
                if stop_after is not None and sum("event" in e for e in out) >= stop_after:
                    break
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            current["comment"] = value
        elif name == "data" and "data" in current:
            current["data"] += "\n" + value
        else:
            current[name] = value
    return out


def events(client: httpx.Client, method: str, path: str, *, stop_after: int | None = None,
           headers: dict[str, str] | None = None, **kwargs: Any) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """A whole event stream (or its first ``stop_after`` events, then the connection is cut)."""
    with client.stream(method, path, headers=headers, **kwargs) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        found = parse_events(response.iter_lines(), stop_after)
    return response, [e for e in found if "event" in e]
