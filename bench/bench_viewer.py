"""How fast is the run viewer? Server time and browser time of its pages, at 1M runs.

Seeds N runs (bench_repository.py's helpers: the SQLite file bench/bench_<runs>.db, kept with
--keep / --reuse, and a throwaway PostgreSQL database), adds three real runs of a loop workflow
with 10, 1,000 and 10,000 stages (`wfkit run`, from a plugin declared in a temporary folder),
starts `wfkit serve` on it as a real subprocess, and measures, per engine:

  server   the time from sending a request to having the whole answer (httpx, keep-alive), p50 and
           p95 over --rounds rounds in which the pages take turns: the run list (page 1 of N runs),
           the run list filtered by status, and the run page of each loop run. Beside each page,
           the JSON the API answers for the same data (GET /workflows/runs, or the run, its
           stages and its decisions), for scale.
  browser  headless Chromium (Debian's, through Playwright): navigation start to the load event
           of each page (performance's navigation entry), and for a run page the moment its
           graph is drawn (mermaid, in the page); medians over --rounds fresh pages (the static
           files are cached after the first, as a user's browser caches them).

Target: a run page with 10,000 stages reaches its load event in under a second.

    python bench/bench_viewer.py [--runs 1000000] [--engines sqlite,postgresql] [--reuse | --keep]
        [--rounds 7] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
WFKIT = str(Path(sys.executable).with_name("wfkit"))
STAGES = (10, 1_000, 10_000)

LOOP_PLUGIN = '''\
"""bench_viewer.py's workflow: `loop` runs `work` then `check` n/2 times (n stages)."""
import wfkit
from wfkit.graph import END


def loop(graph, runtime, params):
    rounds = max(1, int(params.get("stages", 10)) // 2)
    graph.add_node("work", lambda s: {"i": s["i"] + 1, "note": f"round {s['i'] + 1}"})
    graph.add_node("check", lambda s: {"checked": s["i"]})
    graph.set_entry_point("work")
    graph.add_edge("work", "check")
    graph.add_edge("check", "work", when=lambda s: s["i"] < rounds, name="more_rounds")
    graph.add_edge("check", END)
    return {"i": 0, "payload": "x" * 200}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("loop", loop, description="work and check, n/2 times", max_iterations=100_000)
'''


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def plugin_env(scratch: Path) -> dict[str, str]:
    from bench_api import declare_plugin

    site = scratch / "site"
    declare_plugin(site, "wfkit_bench_loop", "benchloop = wfkit_bench_loop")
    (site / "wfkit_bench_loop.py").write_text(LOOP_PLUGIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WFKIT_")}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", WFKIT_LOAD_PLUGINS="benchloop,samples")
    return env


def loop_runs(url: str, env: dict[str, str]) -> dict[int, str]:
    ids = {}
    for stages in STAGES:
        started = time.perf_counter()
        out = subprocess.run([WFKIT, "run", "loop", "-p", f"stages={stages}", "--durability", "async", "--json"],
                             capture_output=True, text=True, env={**env, "WFKIT_DATABASE_URL": url}, check=False)
        if out.returncode != 0:
            raise SystemExit(f"wfkit run loop failed: {out.stderr}")
        ids[stages] = json.loads(out.stdout)["id"]
        log(f"a run of {stages:,} stages in {time.perf_counter() - started:.1f} s")
    return ids


def delete_runs(url: str, env: dict[str, str], ids: dict[int, str]) -> None:
    for run_id in ids.values():  # a kept SQLite file holds exactly N runs again
        subprocess.run([WFKIT, "runs", "delete", run_id], capture_output=True, env={**env, "WFKIT_DATABASE_URL": url},
                       check=False)


class Serve:
    def __init__(self, url: str, env: dict[str, str]):
        from bench_api import free_port

        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([WFKIT, "serve", "--port", str(self.port)], env={**env, "WFKIT_DATABASE_URL": url},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import httpx

        self.client = httpx.Client(base_url=self.base, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("wfkit serve did not start")
            time.sleep(0.1)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(30)


def pages(ids: dict[int, str]) -> dict[str, tuple[str, list[str]]]:
    """Each page measured: its path, and the API's JSON for the same data."""
    out = {"run list": ("/", ["/workflows/runs"]),
           "run list, failed": ("/?status=failed", ["/workflows/runs?status=failed"])}
    for stages, run_id in ids.items():
        api = f"/workflows/runs/{run_id}"
        out[f"run, {stages:,} stages"] = (f"/runs/{run_id}", [api, f"{api}/stages", f"{api}/decisions"])
    return out


def server_times(serve: Serve, measured: dict[str, tuple[str, list[str]]], rounds: int) -> dict[str, Any]:
    times: dict[str, dict[str, list[float]]] = {name: {"page": [], "api": [], "bytes": []} for name in measured}
    for _ in range(rounds):  # the pages take turns: the machine's noise falls on all of them
        for name, (path, api_paths) in measured.items():
            started = time.perf_counter()
            answer = serve.client.get(path)
            times[name]["page"].append(time.perf_counter() - started)
            assert answer.status_code == 200, (path, answer.status_code)
            times[name]["bytes"].append(len(answer.content))
            started = time.perf_counter()
            for api in api_paths:
                assert serve.client.get(api).status_code == 200
            times[name]["api"].append(time.perf_counter() - started)
    return {name: {"p50": statistics.median(t["page"]) * 1000, "p95": percentile(t["page"], 95) * 1000,
                   "api_p50": statistics.median(t["api"]) * 1000, "kb": statistics.median(t["bytes"]) / 1024}
            for name, t in times.items()}


def browser_times(serve: Serve, measured: dict[str, tuple[str, list[str]]], rounds: int,
                  chromium: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, list[float]]] = {name: {"load": [], "graph": []} for name in measured}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context()  # one context: its cache keeps the static files, as a user's does
        warm = context.new_page()
        warm.goto(serve.base + measured["run, 10 stages"][0], wait_until="load")
        warm.close()
        for _ in range(rounds):
            for name, (path, _api) in measured.items():
                page = context.new_page()
                page.goto(serve.base + path, wait_until="load")
                nav = page.evaluate("() => { const n = performance.getEntriesByType('navigation')[0];"
                                    " return [n.startTime, n.loadEventEnd]; }")
                out[name]["load"].append(nav[1] - nav[0])
                if path.startswith("/runs/"):
                    page.wait_for_selector("pre.mermaid svg", timeout=30000)
                    out[name]["graph"].append(page.evaluate("() => performance.now()") - nav[0])
                page.close()
        browser.close()
    return {name: {"load_p50": statistics.median(t["load"]),
                   "graph_p50": statistics.median(t["graph"]) if t["graph"] else None} for name, t in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--postgres-url", default=os.environ.get("WFKIT_TEST_POSTGRES_URL",
                                                                  "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--chromium", default=os.environ.get("WFKIT_TEST_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(BENCH_DIR))
    import bench_repository as rb

    print(f"# wfkit viewer benchmark: {args.runs:,} runs; python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{args.rounds} rounds")
    missed = 0
    with tempfile.TemporaryDirectory(prefix="wfkit-bench-viewer-") as tmp:
        env = plugin_env(Path(tmp))
        for backend in args.engines.split(","):
            db = (rb.sqlite_database(args.runs, args.keep, args.reuse) if backend == "sqlite"
                  else rb.postgres_database(args.postgres_url, args.runs))
            with db as url:
                ids = loop_runs(url, env)
                serve = Serve(url, env)
                try:
                    measured = pages(ids)
                    server = server_times(serve, measured, args.rounds)
                    browser = browser_times(serve, measured, args.rounds, args.chromium)
                finally:
                    serve.close()
                    delete_runs(url, env, ids)
            print(f"\n## {backend}\n")
            print("| page | server p50 | server p95 | the API's JSON, p50 | size | browser: load event | graph drawn |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for name in measured:
                s, b = server[name], browser[name]
                graph = f"{b['graph_p50']:.0f} ms" if b["graph_p50"] is not None else ""
                print(f"| {name} | {s['p50']:.1f} ms | {s['p95']:.1f} ms | {s['api_p50']:.1f} ms | {s['kb']:.0f} kB | "
                      f"{b['load_p50']:.0f} ms | {graph} |")
            load = browser["run, 10,000 stages"]["load_p50"]
            verdict = "pass" if load < 1000 else "MISSED"
            missed += load >= 1000
            print(f"\ntarget: a run page with 10,000 stages loads in under 1 s: {load:.0f} ms, {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
