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
                 ready: bool = True) -> Server:
    """``wfkit serve`` on ``url`` with the samples and the fixture plugin ``steps`` (markers in ``markers``)."""
    port = free_port()
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
    markers = tmp_path / "markers"
    markers.mkdir()

    def start(url: str, *args: str, env: dict[str, str] | None = None, ready: bool = True) -> Server:
        started.append(start_server(url, installed_plugins, markers, *args, env=env, ready=ready))
        return started[-1]

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


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
