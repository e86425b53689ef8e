"""How fast is the HTTP API? `wfkit serve` driven over HTTP from another process, beside its floors.

Seeds N runs as bench_repository.py does (its helpers: the SQLite file bench/bench_<runs>.db,
kept with --keep / --reuse, and a throwaway PostgreSQL database), starts `wfkit serve` on it
as a real subprocess (uvicorn), and a second uvicorn subprocess serving a bare FastAPI app whose
route returns a constant (the framework's floor, same uvicorn settings). A load generator (a
small asyncio HTTP/1.1 client, or httpx with --client httpx) runs in a process of its own.

Measured, per engine (SQLite file, PostgreSQL):

  latency   one client: p50/p99 of GET /workflows/runs (page 1), a filtered page
            (?workflow_name=branching) and GET /workflows/runs/{id}, beside the floor and the
            same repository call made in this process; the sides take turns in rounds and
            the figures are medians of the rounds' p50 and p99.
            Target: api p50 <= floor p50 + 1.5 x repository p50.
  throughput --concurrency clients (default 16): requests per second of each route and of
            the floor, with the server's CPU time per request; beside them the repository
            called in this process by as many threads as the API's service lets query at once.
  SSE       the moment a stage's end is committed to the moment an SSE client receives its
            `stage.complete` event, for runs executed by the server itself (POST
            /workflows/steps/execute) and by another process (`wfkit run steps`, which the
            server sees change by polling). The commit's moment is taken by a small plugin
            whose observer wfkit calls once the write has committed (same machine, same
            clock); each run's nodes sleep a time drawn from [--nap, 2 x --nap), so that the
            commits do not keep one phase against the server's polls. Target: p50 under 50 ms.
  soak      --clients (50) clients for --seconds (60) on a mix of the three routes against a
            freshly started server: its RSS every second (start, peak, end), and every
            response that is not a 2xx or that fails. Target: nothing fails, RSS levels off.
  where the time goes (no target): a thread-pool hop, the route's to_dict + JSON encoding,
            the floor sending a body the size of the route's answer, and in this process
            through ASGI (no uvicorn, no socket, no client): the wfkit app, the wfkit app with
            its repository's answers cached (no database), and the floor app.

The `steps` workflow comes from the test fixture plugin tests/plugin_packages/steps, made
importable for the server and `wfkit run` with PYTHONPATH and an entry point declared in a
temporary folder (nothing is written under tests/). Its runs are deleted again through the API,
so that a kept SQLite file still holds exactly N runs.

    python bench/bench_api.py [--runs 1000000] [--engines sqlite,postgresql] [--reuse | --keep]
        [--rounds 5] [--requests 200] [--concurrency 16] [--clients 50] [--seconds 60]
        [--sse-runs 20] [--client raw|httpx] [--json PATH] [--quick] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
#: The fixture plugin with the `steps` workflow (param `nap`: seconds each of its four nodes sleeps).
STEPS_PLUGIN = ROOT / "tests" / "plugin_packages" / "steps"
WFKIT = str(Path(sys.executable).with_name("wfkit"))

FILTER_QUERY = "workflow_name=branching"  # bench_repository's WORKFLOW
ROUTES = ("page1", "filtered", "find")
ROUTE_LABELS = {
    "page1": "GET /workflows/runs",
    "filtered": f"GET /workflows/runs?{FILTER_QUERY}",
    "find": "GET /workflows/runs/{id}",
}
#: Run ids cycled through by the find route (the same ones on every side).
LOOKUP_IDS = 20
COST_FACTOR = 1.5  # target: api <= floor + 1.5 x repository
SSE_TARGET_MS = 50.0
#: The soak's RSS may grow by at most this share between the peak of its first half and of its second.
SOAK_GROWTH_LIMIT = 0.10
SQLITE_CACHE_MIB = 64  # PRAGMA cache_size of wfkit's SQLite connections (wfkit.store.db)
#: Memory read between two "cold" repository calls: twice this machine's 32 MiB L3.
COLD_BYTES = 64 * 2**20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of ``values``; NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


# =========================================================================== the load generator
# It runs in a process of its own (`bench_api.py --worker`), so that the client's work is not
# the server's and not this process's: one JSON command a line on stdin, one JSON answer a line
# on stdout. The raw client speaks just enough HTTP/1.1 for these GETs on kept-alive
# connections: it costs a few tens of microseconds a request where httpx costs hundreds, which
# on two cores would otherwise come out of the server's share.


class RawConnection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def get(self, path: str) -> tuple[int, int]:
        """Status and body size of ``GET path``; the connection is reopened if the server closed it."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = 0, False, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        if chunked:
            length = 0
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)  # the chunk and its CRLF (the last: CRLF alone)
                length += size
                if size == 0:
                    break
        else:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status, length


class HttpxConnection:
    def __init__(self, client: Any):
        self.client = client

    async def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def get(self, path: str) -> tuple[int, int]:
        response = await self.client.get(path)
        return response.status_code, len(response.content)


async def _load(cmd: dict[str, Any], kind: str) -> dict[str, Any]:
    """``concurrency`` clients sending GETs of ``paths`` (in turn) until ``requests`` are done or
    ``seconds`` have passed, after ``warmup`` untimed requests each."""
    base, paths = cmd["base"], cmd["paths"]
    concurrency, limit, seconds = cmd["concurrency"], cmd.get("requests"), cmd.get("seconds")
    host, port = base.removeprefix("http://").split(":")
    client = None
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency))
        connections: list[Any] = [HttpxConnection(client) for _ in range(concurrency)]
    else:
        connections = [RawConnection(host, int(port)) for _ in range(concurrency)]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    issued = 0
    clock = time.perf_counter_ns

    async def warm(k: int, conn: Any) -> None:
        await conn.open()
        for w in range(cmd.get("warmup", 0)):
            await conn.get(paths[(k + w) % len(paths)])

    async def drive(conn: Any, deadline: float | None) -> None:
        nonlocal issued
        while (limit is None or issued < limit) and (deadline is None or time.perf_counter() < deadline):
            path = paths[issued % len(paths)]
            issued += 1
            start = clock()
            try:
                status, _size = await conn.get(path)
            except Exception as err:  # noqa: BLE001 - a failed request is a result, counted
                failures[f"{type(err).__name__}: {err}"[:200]] += 1
                conn.close()
                continue
            latencies.append((clock() - start) / 1000)
            statuses[status] += 1

    try:
        await asyncio.gather(*(warm(k, c) for k, c in enumerate(connections)))
        cpu, wall = time.process_time(), time.perf_counter()
        deadline = wall + seconds if seconds else None
        await asyncio.gather(*(drive(c, deadline) for c in connections))
        elapsed, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        for conn in connections:
            conn.close()
        if client is not None:
            await client.aclose()
    return {"latencies_us": [round(v, 1) for v in latencies], "statuses": {str(k): v for k, v in statuses.items()},
            "failures": dict(failures), "elapsed": elapsed, "client_cpu": cpu}


def worker_main(kind: str) -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = asyncio.run(_load(json.loads(line), kind))
        except Exception as err:  # noqa: BLE001 - reported to the bench, which stops
            answer = {"error": f"{type(err).__name__}: {err}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


class LoadGenerator:
    """The load generator's process, driven from here."""

    def __init__(self, kind: str):
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator stopped")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the load generator failed: {answer['error']}")
        return answer

    def run(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.receive()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# =========================================================================== servers

FLOOR_APP = '''\
"""The framework's floor for bench_api.py: FastAPI served by uvicorn as `wfkit serve` serves wfkit.

/floor answers a constant, as the API's routes answer: a JSONResponse. The other routes take
one of the API's costs at a time, for the bench's analysis: a hop through a thread pool
limited as the API's is, encoding the API's own answer to a route as JSON, or sending it
already encoded.
"""
import json
import sys

import anyio
import anyio.to_thread
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

CONSTANT = {"status": "ok"}
app = FastAPI()
limiter = anyio.CapacityLimiter(int(sys.argv[2]) if len(sys.argv) > 2 else 8)
BODIES = json.loads(open(sys.argv[3]).read()) if len(sys.argv) > 3 else {}
ENCODED = {name: JSONResponse(body).body for name, body in BODIES.items()}


@app.get("/floor")
async def floor():
    return JSONResponse(CONSTANT)


def nothing():
    return None


@app.get("/floor/thread")
async def thread_hop():
    await anyio.to_thread.run_sync(nothing, limiter=limiter)
    return JSONResponse(CONSTANT)


@app.get("/floor/json/{name}")
async def as_json(name: str):
    return JSONResponse(BODIES[name])


@app.get("/floor/bytes/{name}")
async def as_bytes(name: str):
    return Response(ENCODED[name], media_type="application/json")


if __name__ == "__main__":
    # the settings of `wfkit serve` (wfkit.cli.serve): the access log on, as there
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", timeout_graceful_shutdown=5)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class Server:
    """A server subprocess: its address, its log, and its memory and CPU from /proc."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready: str, logs: Path):
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = logs / f"{name}.log"
        with open(self.log_path, "w") as out:
            # a session of its own: Ctrl-C on the bench reaches the bench, which stops it in order
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if http_get(self.base + ready, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not answer {ready} within 90 s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> dict[str, int]:
        """VmRSS, VmHWM (the peak) in KiB and the thread count, from /proc/PID/status."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
        return out

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds of the main thread (the event loop: uvicorn, FastAPI, the routes' code) and
        of all the other live threads (the thread pool doing the database work), from schedstat."""
        loop = others = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                ns = int((task / "schedstat").read_text().split()[0])
                if task.name == str(self.proc.pid):
                    loop += ns
                else:
                    others += ns
        return loop / 1e9, others / 1e9

    def cpu_seconds(self) -> float:
        """CPU time the server's live threads have used, in nanoseconds' precision (schedstat; the
        clock ticks of /proc/PID/stat are 10 ms, too coarse for a batch of fast requests). A
        thread that ended takes its time with it: the thread pool keeps its threads while busy."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # uvicorn's graceful shutdown; wfkit's lifespan closes the service
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running(name: str, argv: list[str], env: dict[str, str], port: int, ready: str, logs: Path) -> Iterator[Server]:
    server = Server(name, argv, env, port, ready, logs)
    try:
        yield server
    finally:
        server.stop()


COMMIT_CLOCK = '''\
"""bench_api.py's clock: when each stage's end was committed, as wfkit tells its observers.

wfkit calls observers only once the write that recorded an event has committed (RunLoop._told),
so the time taken here is the commit's end, give or take the observers called before this one.
"""
import json
import os
import time

import wfkit


class CommitClock:
    def __init__(self):
        self.path = os.environ.get("WFKIT_BENCH_COMMITS")

    def on_event(self, event):
        from wfkit.events import StageCompleted

        if self.path and isinstance(event, StageCompleted):
            line = json.dumps({"run_id": str(event.run_id), "node": event.node, "iteration": event.iteration,
                               "t": time.time()})
            with open(self.path, "a") as out:
                out.write(line + "\\n")


@wfkit.hookimpl
def wfkit_observers():
    return [CommitClock()]
'''


def declare_plugin(site: Path, distribution: str, entry_point: str) -> None:
    """An entry point in the group ``wfkit``, declared as an installed wheel declares it."""
    info = site / f"{distribution}-1.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution.replace('_', '-')}\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text(f"[wfkit]\n{entry_point}\n")


def plugin_env(scratch: Path) -> dict[str, str]:
    """The environment of `wfkit serve` and `wfkit run`: the samples, the fixture plugin `steps`
    and the bench's commit clock (a plugin whose observer writes when each stage committed).

    The fixture is importable from its source folder; the entry points (what make plugins of
    these modules) are declared by dist-info folders made here, as installed wheels have them.
    """
    site = scratch / "site"
    declare_plugin(site, "wfkit_test_steps", "steps = wfkit_test_steps.plugin")
    declare_plugin(site, "wfkit_bench_clock", "benchclock = wfkit_bench_clock")
    (site / "wfkit_bench_clock.py").write_text(COMMIT_CLOCK)
    markers = scratch / "markers"
    markers.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFKIT_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(STEPS_PLUGIN)]),
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ under tests/
        PYTHONUNBUFFERED="1",
        WFKIT_LOAD_PLUGINS="steps,samples,benchclock",
        WFKIT_TEST_MARKERS=str(markers),
        WFKIT_BENCH_COMMITS=str(scratch / "commits.jsonl"),
    )
    return env


# =========================================================================== the in-process sides


def timed_calls(fn: Callable[[int], Any], requests: int, seconds: float) -> list[float]:
    """Microseconds of each call of ``fn(i)``, ``requests`` of them or as many as fit in ``seconds``."""
    out = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds
    for i in range(requests):
        start = clock()
        fn(i)
        out.append((clock() - start) / 1000)
        if time.perf_counter() > deadline:
            break
    return out


def asgi_get(app: Any, target: str) -> Callable[[], Any]:
    """A coroutine function sending ``GET target`` to ``app`` in this process, through ASGI alone."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call() -> int:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        if status != 200:
            raise RuntimeError(f"ASGI GET {target}: {status}")
        return status

    return call


class InProcess:
    """The repository, and the API's app, called in this process; an event loop kept for the app
    (its thread pool belongs to the loop)."""

    def __init__(self, url: str, run_ids: list[Any], floor_module: Path, limiter: int):
        from wfkit.api import create_app
        from wfkit.api.routes import _run_json
        from wfkit.store.query import PageRequest, RunFilters
        from wfkit.store.repository import SUMMARY_LEFT_OUT, Repository

        self.repo = Repository(url)
        self.ids = run_ids
        self.loop = asyncio.new_event_loop()
        self.app = create_app(url)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        # The floor app's module, imported here: the same app as the floor server's.
        argv, sys.argv = sys.argv, [str(floor_module), "0", str(limiter)]
        try:
            namespace: dict[str, Any] = {"__name__": "bench_api_floor"}
            exec(compile(floor_module.read_text(), str(floor_module), "exec"), namespace)
        finally:
            sys.argv = argv
        self.floor_app = namespace["app"]
        # What the routes ask of the repository, parsed once: the parsing is the API's cost.
        page = PageRequest.from_query({})
        unfiltered = RunFilters.from_query({"workflow_name": [], "status": []})
        filtered = RunFilters.from_query({"workflow_name": [FILTER_QUERY.split("=")[1]], "status": []})
        repo = self.repo
        self.calls: dict[str, Callable[[int], Any]] = {
            "page1": lambda _i: repo.list_runs(page, unfiltered, fields="summary"),
            "filtered": lambda _i: repo.list_runs(page, filtered, fields="summary"),
            "find": lambda i: repo.find_run(run_ids[i % len(run_ids)]),
        }

        from starlette.responses import JSONResponse

        def listing_body(result: Any) -> Any:
            return JSONResponse({"data": [_run_json(r, exclude=SUMMARY_LEFT_OUT) for r in result.data],
                                 "total": result.total, "page": result.page, "page_size": result.page_size,
                                 "total_pages": result.total_pages})

        # What a route does with the repository's answer: to_dict() of each run, encoded by JSONResponse.
        self.encoders: dict[str, Callable[[Any], Any]] = {
            "page1": listing_body, "filtered": listing_body, "find": lambda run: JSONResponse(_run_json(run)),
        }
        self.cached_app = self._app_without_database(url, unfiltered)

    def _app_without_database(self, url: str, unfiltered: Any) -> Any:
        """The API's routes on a service whose repository answers from memory what the database
        answered once: everything a request costs but the query (the hop to a thread included).
        Built as create_app builds its app; the service's repository is swapped for the stub."""
        from fastapi import FastAPI

        from wfkit.api import install_errors
        from wfkit.api.routes import build_router
        from wfkit.api.service import Service

        pages = {True: self.calls["page1"](0), False: self.calls["filtered"](0)}
        runs = {rid: self.repo.find_run(rid) for rid in self.ids}

        class Answers:
            def list_runs(self, _page: Any, filters: Any, fields: str = "full") -> Any:
                return pages[filters == unfiltered]

            def find_run(self, run_id: Any) -> Any:
                return runs[run_id]

        self.cached_service = Service(url)
        self.cached_service.repository = Answers()  # type: ignore[assignment]
        app = FastAPI()
        install_errors(app)
        app.include_router(build_router(self.cached_service))
        return app

    def repository(self, route: str, requests: int, seconds: float) -> list[float]:
        return timed_calls(self.calls[route], requests, seconds)

    def repository_cold(self, route: str, requests: int, seconds: float) -> list[float]:
        """The repository call timed after reading COLD_BYTES of other memory (not timed), as a
        server's other work between two requests would: what a call costs without the CPU's
        last-level cache still holding what the previous call read (a loop of calls keeps it)."""
        if getattr(self, "_junk", None) is None:
            self._junk = bytearray(COLD_BYTES)
        call, junk = self.calls[route], self._junk
        out = []
        clock = time.perf_counter_ns
        deadline = time.perf_counter() + seconds
        for i in range(requests):
            junk.count(1)
            start = clock()
            call(i)
            out.append((clock() - start) / 1000)
            if time.perf_counter() > deadline:
                break
        return out

    def repository_load(self, route: str, threads: int, seconds: float) -> dict[str, float]:
        """The repository called by ``threads`` threads at once for ``seconds``, as the server's
        thread pool calls it under load: calls per second, and this process's CPU per call. The
        threads are kept from one call to the next, and with them their connections and caches."""
        from concurrent.futures import ThreadPoolExecutor

        if getattr(self, "_pool", None) is None or self._pool._max_workers != threads:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="repo-load")
        call, stop = self.calls[route], time.perf_counter() + seconds
        clock = time.perf_counter_ns

        def work(k: int) -> list[float]:
            out, i = [], k
            while time.perf_counter() < stop:
                start = clock()
                call(i)
                out.append((clock() - start) / 1000)
                i += threads
            return out

        cpu, wall = time.process_time(), time.perf_counter()
        latencies = [x for f in [self._pool.submit(work, k) for k in range(threads)] for x in f.result()]
        elapsed, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {**summary(latencies), "rps": len(latencies) / elapsed, "cpu_us": cpu / len(latencies) * 1e6}

    def thread_hops(self, limit: int, requests: int = 300) -> dict[str, float]:
        """What a hop through the thread pool (anyio, limited as the API's) costs in this process,
        after a call that returns at once and after one that blocks for 2 ms (as a query does):
        the hop's time minus the same call made directly, turns interleaved; p50 in ms."""
        import anyio
        import anyio.to_thread

        async def go() -> dict[str, float]:
            limiter = anyio.CapacityLimiter(limit)
            out = {}
            for label, fn in (("noop", lambda: None), ("after_2ms_block", lambda: time.sleep(0.002))):
                direct, hopped = [], []
                for _ in range(requests):
                    start = time.perf_counter_ns()
                    fn()
                    direct.append(time.perf_counter_ns() - start)
                    start = time.perf_counter_ns()
                    await anyio.to_thread.run_sync(fn, limiter=limiter)
                    hopped.append(time.perf_counter_ns() - start)
                out[f"hop_{label}_ms"] = (statistics.median(hopped) - statistics.median(direct)) / 1e6
            return out

        return self.loop.run_until_complete(go())

    def encoding(self, route: str, requests: int) -> list[float]:
        results = [self.calls[route](i) for i in range(min(requests, LOOKUP_IDS))]
        encode = self.encoders[route]
        return timed_calls(lambda i: encode(results[i % len(results)]), requests, 5.0)

    def asgi(self, app: Any, targets: list[str], requests: int, seconds: float) -> list[float]:
        calls = [asgi_get(app, t) for t in targets]

        async def go() -> list[float]:
            out = []
            clock = time.perf_counter_ns
            deadline = time.perf_counter() + seconds
            for i in range(requests):
                start = clock()
                await calls[i % len(calls)]()
                out.append((clock() - start) / 1000)
                if time.perf_counter() > deadline:
                    break
            return out

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown()
        with contextlib.suppress(Exception):
            self.cached_service.close()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()
        self.repo.engine.dispose()


# =========================================================================== measuring


def summary(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(latencies, 50) / 1000, "p99_ms": percentile(latencies, 99) / 1000,
            "n": len(latencies)}


def check_http(answer: dict[str, Any], what: str) -> None:
    """Every timed request must have succeeded: a failed one would time something else."""
    bad = {k: v for k, v in answer["statuses"].items() if not k.startswith("2")}
    if bad or answer["failures"]:
        raise RuntimeError(f"{what}: non-2xx {bad}, failures {answer['failures']}")


class Rounds:
    """Samples per (side, route), one list of summaries per round; medians over the rounds."""

    def __init__(self) -> None:
        self.rounds: dict[tuple[str, str], list[dict[str, float]]] = {}

    def add(self, side: str, route: str, figures: dict[str, float]) -> None:
        self.rounds.setdefault((side, route), []).append(figures)

    def median(self, side: str, route: str) -> dict[str, float]:
        rounds = self.rounds.get((side, route), [])
        keys = rounds[0].keys() if rounds else ()
        out = {k: median([r[k] for r in rounds]) for k in keys if k != "n"}
        out["n"] = sum(r.get("n", 0) for r in rounds)
        out["rounds"] = len(rounds)
        return out


def api_paths(route: str, run_ids: list[Any]) -> list[str]:
    if route == "page1":
        return ["/workflows/runs"]
    if route == "filtered":
        return [f"/workflows/runs?{FILTER_QUERY}"]
    return [f"/workflows/runs/{rid}" for rid in run_ids]


def latency_rounds(args: argparse.Namespace, gen: LoadGenerator, api: Server, floor: Server, local: InProcess,
                   run_ids: list[Any]) -> Rounds:
    """One client. Per round and route, in turn: the floor, the API, the repository in process,
    and for the analysis the floor with a thread-pool hop, the floor encoding the route's answer
    or sending it encoded, the route's encoding in process, and the app and the floor app in
    process through ASGI."""
    out = Rounds()
    n, cap = args.requests, args.round_seconds

    def http(server: Server, paths: list[str]) -> dict[str, float]:
        loop, pool = server.cpu_split()
        answer = gen.run(base=server.base, paths=paths, concurrency=1, requests=n, seconds=cap, warmup=5)
        loop_after, pool_after = server.cpu_split()
        check_http(answer, f"{server.name} {paths[0]}")
        per = 1e6 / (len(answer["latencies_us"]) + 5)
        return {**summary(answer["latencies_us"]), "server_cpu_us": (loop_after - loop + pool_after - pool) * per,
                "loop_cpu_us": (loop_after - loop) * per, "pool_cpu_us": (pool_after - pool) * per}

    for r in range(args.rounds + 1):  # round 0 warms every cache on every side and is not kept
        keep = out if r else Rounds()
        for route in ROUTES:
            paths = api_paths(route, run_ids)
            keep.add("floor", route, http(floor, ["/floor"]))
            keep.add("api", route, http(api, paths))
            keep.add("repo", route, summary(local.repository(route, n, cap)))
            keep.add("repo cold", route, summary(local.repository_cold(route, n, cap)))
            keep.add("floor+thread", route, http(floor, ["/floor/thread"]))
            keep.add("floor+json", route, http(floor, [f"/floor/json/{route}"]))
            keep.add("floor+bytes", route, http(floor, [f"/floor/bytes/{route}"]))
            keep.add("encode", route, summary(local.encoding(route, n)))
            keep.add("api asgi", route, summary(local.asgi(local.app, paths, n, cap)))
            keep.add("api asgi cached", route, summary(local.asgi(local.cached_app, paths, n, cap)))
            keep.add("floor asgi", route, summary(local.asgi(local.floor_app, ["/floor"], n, cap)))
            keep.add("floor+thread asgi", route, summary(local.asgi(local.floor_app, ["/floor/thread"], n, cap)))
        if r:
            log(f"  latency round {r}/{args.rounds} done")
    return out


def throughput_rounds(args: argparse.Namespace, gen: LoadGenerator, api: Server, floor: Server, local: InProcess,
                      run_ids: list[Any], threads: int) -> Rounds:
    """--concurrency clients for --tput-seconds per side and route, the sides in turn: the floor,
    the API, and the repository in this process called by as many threads as the API's service
    lets do database work at once."""
    out = Rounds()

    def load(server: Server, paths: list[str], seconds: float) -> dict[str, float]:
        cpu = server.cpu_seconds()
        answer = gen.run(base=server.base, paths=paths, concurrency=args.concurrency, seconds=seconds, warmup=2)
        cpu = server.cpu_seconds() - cpu
        check_http(answer, f"{server.name} {paths[0]} x{args.concurrency}")
        done = len(answer["latencies_us"])
        return {**summary(answer["latencies_us"]), "rps": done / answer["elapsed"],
                # the server's CPU includes the warm-up requests: a small overestimate
                "server_cpu_us": cpu / (done + 2 * args.concurrency) * 1e6,
                "client_cpu_us": answer["client_cpu"] / max(done, 1) * 1e6}

    for r in range(args.rounds + 1):  # round 0, shorter, warms the threads' connections and is not kept
        keep = out if r else Rounds()
        seconds = args.tput_seconds if r else min(1.0, args.tput_seconds)
        for route in ROUTES:
            keep.add("floor", route, load(floor, ["/floor"], seconds))
            keep.add("api", route, load(api, api_paths(route, run_ids), seconds))
            keep.add("repo", route, local.repository_load(route, threads, seconds))
        if r:
            log(f"  throughput round {r}/{args.rounds} done")
    return out


# =========================================================================== SSE delivery


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def read_sse(response: Any) -> tuple[float, list[tuple[str, str, float]]]:
    """(when the headers came, [(event name, id, when it came)]) of a server-sent event stream,
    read to its end; times are wall-clock seconds, the clock the server stores times by."""
    opened = time.time()
    events: list[tuple[str, str, float]] = []
    name = ident = ""
    for line in response.iter_lines():
        if line == "":
            if name:
                events.append((name, ident, time.time()))
            name = ident = ""
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
    return opened, events


def commit_times(path: Path) -> dict[tuple[str, str, int], float]:
    """(run id, node, iteration) -> when that stage's end was committed, from the commit clock."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[(row["run_id"], row["node"], row["iteration"])] = row["t"]
    return out


def delivery(base: str, run_id: str, opened: float, events: list[tuple[str, str, float]],
             commits: Path) -> list[dict[str, float]]:
    """For each `stage.complete` event, the time from its stage's commit to its arrival.

    The commit's time is the commit clock's (the observer wfkit calls once the write is
    committed). Kept beside it, from the stored times: a stage's row is buffered and written with
    the next stage's start (or the run's end), so the next stage's ``created_at`` (or the run's
    ``completed_at``), set just before that commit, gives the delivery plus the commit itself;
    and the node's end (``created_at + duration_ms``) adds the step's bookkeeping too.
    Only stages committed after the stream opened count: earlier ones come from the history.
    """
    import httpx

    stages = httpx.get(f"{base}/workflows/runs/{run_id}/stages", timeout=30).json()
    run = httpx.get(f"{base}/workflows/runs/{run_id}", timeout=30).json()
    if run["status"] != "completed":
        raise RuntimeError(f"run {run_id} ended {run['status']}: {run.get('error_message')}")
    told = commit_times(commits)
    stages.sort(key=lambda s: s["created_at"])
    times = {}
    for k, stage in enumerate(stages):
        stored = stages[k + 1]["created_at"] if k + 1 < len(stages) else run["completed_at"]
        node_end = parse_time(stage["created_at"]) + (stage["duration_ms"] or 0) / 1000
        committed = told.get((run_id, stage["node_name"], stage["iteration"]))
        if committed is None:
            raise RuntimeError(f"the commit clock has no time for stage {stage['node_name']} of run {run_id}")
        times[stage["id"].replace("-", "") + ".end"] = (committed, parse_time(stored), node_end)
    out = []
    for name, ident, arrived in events:
        if name != "stage.complete":
            continue
        committed, stored, node_end = times[ident]
        if committed <= opened:
            continue
        out.append({"ms": (arrived - committed) * 1000, "from_stored_ms": (arrived - stored) * 1000,
                    "from_node_end_ms": (arrived - node_end) * 1000})
    return out


def naps(runs: int, nap: float, seed: int) -> list[float]:
    """Each run's nap, drawn from [nap, 2 x nap).

    The server's watcher polls every 50 ms (wfkit.api.service.POLL_SECONDS): steps that all took
    that long would keep one phase against the polls, and every delivery would be about as late
    as the first one happened to be. Naps drawn over a whole poll period spread the commits over
    its phases."""
    import random

    rng = random.Random(seed)
    return [round(nap * (1 + rng.random()), 4) for _ in range(runs)]


def sse_in_server(api: Server, runs: int, nap: float, commits: Path) -> tuple[list[dict[str, float]], list[str]]:
    """Runs the server executes itself (POST /workflows/steps/execute, streamed from the start)."""
    import httpx

    samples, created = [], []
    with httpx.Client(base_url=api.base, timeout=60) as client:
        for run_nap in naps(runs, nap, seed=1):
            with client.stream("POST", "/workflows/steps/execute", json={"params": {"nap": run_nap}}) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"POST /workflows/steps/execute: {response.status_code} {response.read()!r}")
                run_id = response.headers["x-run-id"]
                created.append(run_id)
                opened, events = read_sse(response)
            samples += [{**x, "nap_ms": run_nap * 1000} for x in delivery(api.base, run_id, opened, events, commits)]
    return samples, created


def sse_other_process(api: Server, url: str, env: dict[str, str], runs: int,
                      nap: float) -> tuple[list[dict[str, float]], list[str]]:
    """Runs executed by `wfkit run` in another process: the server sees them change by polling."""
    import httpx

    samples, created = [], []
    with httpx.Client(base_url=api.base, timeout=60) as client:
        for run_nap in naps(runs, nap, seed=2):
            proc = subprocess.Popen([WFKIT, "--database-url", url, "run", "steps", "-p", f"nap={run_nap}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            try:
                assert proc.stdout is not None
                first = proc.stdout.readline()  # "run <id> started: steps", printed once the run exists
                if not first.startswith("run "):
                    raise RuntimeError(f"wfkit run printed {first!r}: {proc.stderr.read() if proc.stderr else ''}")
                run_id = first.split()[1]
                created.append(run_id)
                with client.stream("GET", f"/workflows/runs/{run_id}/events") as response:
                    opened, events = read_sse(response)
                out, err = proc.communicate(timeout=60)
                if proc.returncode != 0:
                    raise RuntimeError(f"wfkit run exited {proc.returncode}: {err}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            samples += [{**x, "nap_ms": run_nap * 1000}
                        for x in delivery(api.base, run_id, opened, events, Path(env["WFKIT_BENCH_COMMITS"]))]
    return samples, created


def sse_summary(samples: list[dict[str, float]]) -> dict[str, float]:
    ms = [s["ms"] for s in samples]
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms) if ms else math.nan,
            "from_stored_p50_ms": percentile([s["from_stored_ms"] for s in samples], 50),
            "from_stored_p99_ms": percentile([s["from_stored_ms"] for s in samples], 99),
            "from_node_end_p50_ms": percentile([s["from_node_end_ms"] for s in samples], 50),
            "verdict": "PASS" if ms and percentile(ms, 50) < SSE_TARGET_MS else "MISS"}


# =========================================================================== soak


def soak(args: argparse.Namespace, gen: LoadGenerator, api: Server, run_ids: list[Any]) -> dict[str, Any]:
    """--clients clients for --seconds on the three routes in turn; RSS sampled every second."""
    paths = []
    for k in range(LOOKUP_IDS):
        paths += ["/workflows/runs", f"/workflows/runs?{FILTER_QUERY}", f"/workflows/runs/{run_ids[k % len(run_ids)]}"]
    start = api.status()
    samples = [{"t": 0.0, "rss_kib": start["VmRSS"], "threads": start["Threads"]}]
    gen.send(base=api.base, paths=paths, concurrency=args.clients, seconds=args.seconds, warmup=0)
    answer: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: answer.update(gen.receive()), daemon=True)
    reader.start()
    began = time.monotonic()
    while reader.is_alive():
        reader.join(1.0)
        now = api.status()
        samples.append({"t": round(time.monotonic() - began, 1), "rss_kib": now["VmRSS"], "threads": now["Threads"]})
    if not answer:
        raise RuntimeError("the load generator gave no answer to the soak")
    end = api.status()
    lat = answer["latencies_us"]
    bad = sum(v for k, v in answer["statuses"].items() if not k.startswith("2"))
    failed = sum(answer["failures"].values())
    rss = [s["rss_kib"] for s in samples]
    half = len(rss) // 2
    first_peak, second_peak = max(rss[: max(half, 1)]), max(rss[half:])
    growth = (second_peak - first_peak) / first_peak
    return {
        "clients": args.clients, "seconds": args.seconds, "requests": len(lat), "rps": len(lat) / answer["elapsed"],
        "p50_ms": percentile(lat, 50) / 1000, "p99_ms": percentile(lat, 99) / 1000, "max_ms": max(lat) / 1000,
        "non_2xx": bad, "failures": failed, "failure_kinds": answer["failures"], "statuses": answer["statuses"],
        "rss_start_mib": start["VmRSS"] / 1024, "rss_peak_mib": end["VmHWM"] / 1024, "rss_end_mib": end["VmRSS"] / 1024,
        "second_half_growth": growth, "threads_max": max(s["threads"] for s in samples), "samples": samples,
        "verdict": "PASS" if bad == 0 and failed == 0 and growth < SOAK_GROWTH_LIMIT else "MISS",
    }


# =========================================================================== one engine


def sample_ids(backend: str, url: str) -> list[Any]:
    """Run ids spread over the history (bench_repository's choice), as UUIDs."""
    import sqlalchemy as sa

    import bench_repository as rb
    from wfkit.store.repository import Repository

    if backend == "sqlite":
        raw = rb.RawSide(backend, sa.make_url(url))
    else:
        repo = Repository(url)
        raw = rb.RawSide(backend, repo.engine.url)
        repo.engine.dispose()
    try:
        run_ids, _staged = rb.sample_ids(raw)
    finally:
        raw.close()
    return run_ids[:LOOKUP_IDS]


def thread_limit(url: str) -> int:
    """How many threads the API's service lets do database work at once (wfkit.api.service)."""
    from wfkit.api.service import thread_limit as limit
    from wfkit.store.db import create_engine

    engine = create_engine(url, create_missing=False)
    try:
        return limit(engine)
    finally:
        engine.dispose()


def answers(api: Server, run_ids: list[Any], runs: int) -> dict[str, Any]:
    """The API's answer to each route, checked: the bodies the floor sends back for the analysis."""
    out = {}
    for route in ROUTES:
        path = api_paths(route, run_ids)[0]
        status, body = http_get(api.base + path, timeout=60)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        out[route] = json.loads(body)
    if out["page1"]["total"] != runs or not out["page1"]["data"]:
        raise RuntimeError(f"GET /workflows/runs: total {out['page1']['total']}, expected {runs}")
    if out["find"]["id"] != str(run_ids[0]):
        raise RuntimeError("GET /workflows/runs/{id} returned another run")
    return out


def delete_runs(api: Server, run_ids: list[str]) -> int:
    import httpx

    failed = 0
    with httpx.Client(base_url=api.base, timeout=60) as client:
        for run_id in run_ids:
            if client.delete(f"/workflows/runs/{run_id}").status_code != 204:
                failed += 1
    return failed


def bench_engine(args: argparse.Namespace, backend: str, url: str, scratch: Path, floor_module: Path,
                 gen: LoadGenerator) -> dict[str, Any]:
    env = plugin_env(scratch)
    serve = [WFKIT, "--database-url", url, "serve", "--port"]
    run_ids = sample_ids(backend, url)
    limit = thread_limit(url)
    result: dict[str, Any] = {"thread_limit": limit}
    port = free_port()
    with running(f"api-{backend}", [*serve, str(port)], env, port, "/health", scratch) as api:
        bodies = answers(api, run_ids, args.runs)
        bodies_file = scratch / f"bodies-{backend}.json"
        bodies_file.write_text(json.dumps(bodies))
        result["body_bytes"] = {route: len(json.dumps(body, separators=(",", ":"))) for route, body in bodies.items()}
        floor_port = free_port()
        floor_argv = [sys.executable, str(floor_module), str(floor_port), str(limit), str(bodies_file)]
        with running(f"floor-{backend}", floor_argv, dict(os.environ), floor_port, "/floor", scratch) as floor:
            local = InProcess(url, run_ids, floor_module, limit)
            try:
                log(f"{backend}: latency, {args.rounds} rounds of up to {args.requests} requests per side")
                result["latency"] = latency_rounds(args, gen, api, floor, local, run_ids)
                result["hops"] = local.thread_hops(limit)
                log(f"{backend}: throughput, {args.concurrency} clients, {args.rounds} rounds of "
                    f"{args.tput_seconds:g} s")
                result["throughput"] = throughput_rounds(args, gen, api, floor, local, run_ids, limit)
            finally:
                local.close()
        log(f"{backend}: SSE delivery, {args.sse_runs} runs in the server, {args.sse_runs} in other processes")
        created: list[str] = []
        try:
            own, made = sse_in_server(api, args.sse_runs, args.nap, Path(env["WFKIT_BENCH_COMMITS"]))
            created += made
            other, made = sse_other_process(api, url, env, args.sse_runs, args.nap)
            created += made
        finally:
            undeleted = delete_runs(api, created)
        if undeleted:
            log(f"{backend}: {undeleted} of the benchmark's runs could not be deleted")
        result["sse"] = {"in server": sse_summary(own), "other process": sse_summary(other),
                         "samples": {"in server": own, "other process": other}}
    port = free_port()
    log(f"{backend}: soak, {args.clients} clients for {args.seconds} s on a fresh server")
    with running(f"api-{backend}-soak", [*serve, str(port)], env, port, "/health", scratch) as api:
        result["soak"] = soak(args, gen, api, run_ids)
    return result


# =========================================================================== reporting


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]], right: set[int]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for i, row in enumerate((header, *rows)):
        print("  ".join(str(c).rjust(w) if k in right else str(c).ljust(w)
                        for k, (c, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def ms(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def report(results: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """Print the tables; return the JSON-ready figures and how many targets were missed."""
    out: dict[str, Any] = {}
    missed = 0
    print("\n## Latency, one client (medians of the rounds' p50 and p99, ms)\n")
    rows = []
    for backend, res in results.items():
        lat: Rounds = res["latency"]
        for route in ROUTES:
            for side in ("floor", "api", "repo", "repo cold"):
                m = lat.median(side, route)
                rows.append((ROUTE_LABELS[route], backend, side, ms(m["p50_ms"]), ms(m["p99_ms"]), m["n"]))
    table(("route", "engine", "side", "p50 ms", "p99 ms", "n"), rows, {3, 4, 5})

    print(f"\n## Cost model: api p50 <= floor p50 + {COST_FACTOR} x repository p50\n")
    rows = []
    for backend, res in results.items():
        lat = res["latency"]
        out.setdefault(backend, {})["cost"] = {}
        for route in ROUTES:
            api, floor, repo, cold = (lat.median(s, route)["p50_ms"] for s in ("api", "floor", "repo", "repo cold"))
            bound = floor + COST_FACTOR * repo
            verdict = "PASS" if api <= bound else "MISS"
            missed += verdict == "MISS"
            out[backend]["cost"][route] = {"api_ms": api, "floor_ms": floor, "repo_ms": repo, "bound_ms": bound,
                                           "api_over_repo": api / repo, "overhead_over_repo": (api - floor) / repo,
                                           "verdict": verdict, "repo_cold_ms": cold}
            rows.append((ROUTE_LABELS[route], backend, ms(api), ms(floor), ms(repo), f"{api / repo:.2f}x",
                         f"{(api - floor) / repo:.2f}x", ms(bound), verdict))
    table(("route", "engine", "api", "floor", "repo", "api/repo", "(api-floor)/repo", "bound", "result"), rows,
          {2, 3, 4, 5, 6, 7})

    print("\n## Where the time goes, one client (p50 ms; see bench/README.md)\n")
    print("over HTTP: api-floor = hop + repo + encode + rest. In process (ASGI: no uvicorn, socket or client):\n"
          "app rest = api - floor with a hop - repo - encode = route code + query extra, where route code is the\n"
          "app with the repository's answers cached (no database) - floor with a hop - encode. uvicorn+socket+client\n"
          "= floor over HTTP - floor in process; body = the floor sending the route's answer, encoded, - the floor.\n"
          "CPU: the server's CPU time per request, and the API's split: its event loop's thread (uvicorn, FastAPI,\n"
          "the route's code, encoding) and its thread pool (the repository call).\n")
    rows = []
    for backend, res in results.items():
        lat = res["latency"]
        out[backend]["analysis"] = {}
        for route in ROUTES:
            m = {s: lat.median(s, route)["p50_ms"] for s in
                 ("api", "floor", "repo", "encode", "floor+thread", "floor+json", "floor+bytes", "api asgi",
                  "api asgi cached", "floor asgi", "floor+thread asgi")}
            cpu = {s: lat.median(s, route)["server_cpu_us"] / 1000 for s in ("api", "floor")}
            api_loop = lat.median("api", route)["loop_cpu_us"] / 1000
            api_pool = lat.median("api", route)["pool_cpu_us"] / 1000
            extra = m["api"] - m["floor"]
            hop = m["floor+thread"] - m["floor"]
            rest = extra - hop - m["encode"] - m["repo"]
            app_rest = m["api asgi"] - m["floor+thread asgi"] - m["encode"] - m["repo"]
            # of which: the route's own code and FastAPI's handling of its parameters (no database) ...
            route_code = m["api asgi cached"] - m["floor+thread asgi"] - m["encode"]
            # ... and what the query costs beyond its own time when made from the thread pool
            query_extra = m["api asgi"] - m["api asgi cached"] - m["repo"]
            figures = {
                "api_minus_floor_ms": extra, "thread_hop_ms": hop, "repo_ms": m["repo"], "encode_ms": m["encode"],
                "rest_ms": rest, "api_asgi_ms": m["api asgi"], "floor_asgi_ms": m["floor asgi"],
                "floor_thread_asgi_ms": m["floor+thread asgi"], "app_rest_asgi_ms": app_rest,
                "api_asgi_cached_ms": m["api asgi cached"], "route_code_asgi_ms": route_code,
                "query_extra_asgi_ms": query_extra,
                "uvicorn_socket_client_ms": m["floor"] - m["floor asgi"],
                "body_bytes_minus_floor_ms": m["floor+bytes"] - m["floor"],
                "body_json_minus_floor_ms": m["floor+json"] - m["floor"],
                "api_server_cpu_ms": cpu["api"], "floor_server_cpu_ms": cpu["floor"],
                "api_loop_thread_cpu_ms": api_loop, "api_pool_threads_cpu_ms": api_pool,
            }
            out[backend]["analysis"][route] = figures
            rows.append((ROUTE_LABELS[route], backend, ms(extra), ms(hop), ms(m["repo"]), ms(m["encode"]), ms(rest),
                         ms(m["api asgi"]), ms(m["floor+thread asgi"]), ms(app_rest), ms(route_code), ms(query_extra),
                         ms(m["floor"] - m["floor asgi"]), ms(m["floor+bytes"] - m["floor"]), ms(cpu["api"]),
                         ms(api_loop), ms(api_pool), ms(cpu["floor"])))
    table(("route", "engine", "api-floor", "hop", "repo", "encode", "rest", "asgi: api", "floor+hop", "app rest",
           "route code", "query extra", "uvicorn+socket+client", "body", "api CPU", "loop", "pool", "floor CPU"), rows,
          set(range(2, 18)))
    for backend, res in results.items():
        hops = res["hops"]
        out[backend]["thread_hops"] = hops
        print(f"\n{backend}: a thread-pool hop in process costs {ms(hops['hop_noop_ms'])} ms after a call that returns "
              f"at once, {ms(hops['hop_after_2ms_block_ms'])} ms after one that blocks 2 ms")

    print("\n## Throughput (medians of the rounds); repo: the same call in this process from as many threads as the "
          "API's service uses\n")
    rows = []
    for backend, res in results.items():
        tput: Rounds = res["throughput"]
        out[backend]["throughput"] = {}
        for route in ROUTES:
            rec = {}
            for side in ("floor", "api", "repo"):
                m = tput.median(side, route)
                rec[side] = m
                label = f"repo ({res['thread_limit']} threads, in process)" if side == "repo" else side
                cpu = m["cpu_us"] if side == "repo" else m["server_cpu_us"]
                client = "" if side == "repo" else f"{m['client_cpu_us']:.0f}"
                rows.append((ROUTE_LABELS[route], backend, label, f"{m['rps']:.0f}", ms(m["p50_ms"], 2),
                             ms(m["p99_ms"], 2), f"{cpu:.0f}", client))
            out[backend]["throughput"][route] = rec
    table(("route", "engine", "side", "req/s", "p50 ms", "p99 ms", "server CPU us/req", "client CPU us/req"), rows,
          {3, 4, 5, 6, 7})

    print(f"\n## SSE delivery: stage committed -> `stage.complete` received (target p50 < {SSE_TARGET_MS:g} ms)\n")
    rows = []
    for backend, res in results.items():
        out[backend]["sse"] = res["sse"]
        for path in ("in server", "other process"):
            s = res["sse"][path]
            missed += s["verdict"] == "MISS"
            rows.append((path, backend, s["n"], ms(s["p50_ms"], 1), ms(s["p99_ms"], 1), ms(s["max_ms"], 1),
                         ms(s["from_stored_p50_ms"], 1), ms(s["from_stored_p99_ms"], 1),
                         ms(s["from_node_end_p50_ms"], 1), s["verdict"]))
    table(("run executed by", "engine", "n", "p50 ms", "p99 ms", "max ms", "p50 from stored", "p99 from stored",
           "p50 from node end", "result"), rows, {2, 3, 4, 5, 6, 7, 8})

    print("\n## Soak: memory and failures under many clients (fresh server)\n")
    rows = []
    for backend, res in results.items():
        s = res["soak"]
        out[backend]["soak"] = s
        missed += s["verdict"] == "MISS"
        rows.append((backend, s["clients"], s["seconds"], s["requests"], f"{s['rps']:.0f}", ms(s["p50_ms"], 1),
                     ms(s["p99_ms"], 1), s["non_2xx"], s["failures"], f"{s['rss_start_mib']:.0f}",
                     f"{s['rss_peak_mib']:.0f}", f"{s['rss_end_mib']:.0f}", f"{100 * s['second_half_growth']:.1f}%",
                     s["threads_max"], res["thread_limit"], s["verdict"]))
    table(("engine", "clients", "s", "requests", "req/s", "p50 ms", "p99 ms", "non-2xx", "errors", "RSS start MiB",
           "peak MiB", "end MiB", "2nd-half growth", "threads", "db threads", "result"), rows, set(range(1, 15)))
    for backend, res in results.items():
        if backend == "sqlite":
            print(f"\nSQLite: at most {res['thread_limit']} threads do database work at once, each with its own "
                  f"connection and a page cache of up to {SQLITE_CACHE_MIB} MiB: at most "
                  f"{res['thread_limit'] * SQLITE_CACHE_MIB} MiB of caches.")
        out[backend]["thread_limit"] = res["thread_limit"]
        out[backend]["body_bytes"] = res["body_bytes"]
        out[backend]["latency"] = {f"{side} | {route}": res["latency"].median(side, route)
                                   for side, route in res["latency"].rounds}
        out[backend]["throughput_rounds"] = {f"{side} | {route}": rounds
                                             for (side, route), rounds in res["throughput"].rounds.items()}
    return out, missed


# =========================================================================== main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench_api.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to seed (default 1,000,000)")
    parser.add_argument("--engines", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get("WFKIT_BENCH_POSTGRES_URL", "").strip()
                        or "postgresql://postgres@127.0.0.1:5432/postgres",
                        help="admin URL where a throwaway database is created (as bench_repository.py)")
    keep = parser.add_mutually_exclusive_group()
    keep.add_argument("--keep", action="store_true", help="keep the seeded SQLite file bench/bench_<runs>.db")
    keep.add_argument("--reuse", action="store_true", help="use bench/bench_<runs>.db if it holds the runs (seed it "
                      "otherwise); keep it")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every side (default 5)")
    parser.add_argument("--requests", type=int, default=200, help="requests per side, route and round, one client "
                        "(default 200)")
    parser.add_argument("--round-seconds", type=float, default=3.0, help="at most this long per side, route and "
                        "round, one client (default 3)")
    parser.add_argument("--concurrency", type=int, default=16, help="clients for throughput (default 16)")
    parser.add_argument("--tput-seconds", type=float, default=2.0, help="seconds per side, route and round of the "
                        "throughput test (default 2)")
    parser.add_argument("--clients", type=int, default=50, help="clients of the soak (default 50)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the soak (default 60)")
    parser.add_argument("--sse-runs", type=int, default=20, help="runs per SSE path, 4 stages each (default 20)")
    parser.add_argument("--nap", type=float, default=0.05, help="each node of an SSE run sleeps between this and twice "
                        "this many seconds (drawn per run; default 0.05)")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="the load generator: a minimal asyncio HTTP/1.1 client (default) or httpx")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="a short try: 2 rounds of 50 requests, 1 s throughput, "
                        "a 10 s soak, 5 SSE runs per path (set options still win)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    given = set(a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:]))
    args = parser.parse_args(argv)
    if args.quick:
        for option, value in (("rounds", 2), ("requests", 50), ("tput_seconds", 1.0), ("seconds", 10.0),
                              ("sse_runs", 5), ("round_seconds", 1.0)):
            if f"--{option.replace('_', '-')}" not in given:
                setattr(args, option, value)
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not args.engines or any(e not in ("sqlite", "postgresql") for e in args.engines):
        parser.error("--engines: choose from sqlite, postgresql")
    if args.runs < 1000:
        parser.error("--runs must be at least 1,000")
    if min(args.rounds, args.requests, args.concurrency, args.clients, args.sse_runs) < 1:
        parser.error("--rounds, --requests, --concurrency, --clients and --sse-runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # the load generator's process: light, no wfkit imported
        return worker_main(argv[1] if len(argv) > 1 else "raw")
    args = parse_args(argv)

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # unwinds through the clean-ups: servers, database, file

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    sys.path.insert(0, str(BENCH_DIR))
    import bench_repository as rb  # its seeding and throwaway databases
    import fastapi
    import uvicorn

    print(f"# wfkit HTTP API benchmark: {args.runs:,} runs; python {platform.python_version()}, FastAPI "
          f"{fastapi.__version__}, uvicorn {uvicorn.__version__}, {os.cpu_count()} CPUs; load generator: "
          f"{args.client}, its own process")
    print(f"# one client: {args.rounds} rounds of up to {args.requests} requests (or {args.round_seconds:g} s) per "
          f"side and route; throughput: {args.concurrency} clients, {args.tput_seconds:g} s per side and round; soak: "
          f"{args.clients} clients for {args.seconds:g} s; SSE: {args.sse_runs} runs per path, naps of {args.nap:g}-{2 * args.nap:g} s")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="wfkit-bench-api-") as tmp:
        scratch = Path(tmp)
        floor_module = scratch / "floor_app.py"
        floor_module.write_text(FLOOR_APP)
        gen = LoadGenerator(args.client)
        try:
            for backend in args.engines:
                db = (rb.sqlite_database(args.runs, args.keep, args.reuse) if backend == "sqlite"
                      else rb.postgres_database(args.postgres_url, args.runs))
                with db as url:
                    results[backend] = bench_engine(args, backend, url, scratch, floor_module, gen)
        finally:
            gen.close()
    figures, missed = report(results)
    targets = sum(len(ROUTES) + 3 for _ in results)
    print(f"\n{missed} of {targets} targets missed")
    if args.json:
        meta = {"runs": args.runs, "date": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                "python": platform.python_version(), "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
                "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({"meta": meta, "engines": figures}, indent=1, default=str))
        log(f"figures written to {args.json}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
