"""Real ``wfkit worker`` processes for tests: short leases and recovery intervals, the ``steps``
fixture plugin, one PostgreSQL database; every process left is killed after the test."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WFKIT, WfkitCli
from wfkit.store.repository import Repository

LEASE = "2"  # seconds: a dead worker's run is taken over within lease + recovery interval + a little
RECOVERY = "0.5"
FINAL = ("completed", "failed", "cancelled")


class Workers:
    """Starts ``wfkit worker`` processes (and ``wfkit`` commands) for one test, with the ``steps``
    plugin, on one PostgreSQL database; every process left is killed at the end."""

    def __init__(self, url: str, plugins: Path, markers: Path, **env: str):
        self.url, self.markers = url, markers
        self.cli = WfkitCli({"PYTHONPATH": str(plugins), "WFKIT_LOAD_PLUGINS": "steps",
                             "WFKIT_TEST_MARKERS": str(markers), "WFKIT_LEASE_SECONDS": LEASE,
                             "WFKIT_RECOVERY_SECONDS": RECOVERY, **env})
        self.procs: list[subprocess.Popen[str]] = []
        self.repo = Repository(url)

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([WFKIT, "worker", "--name", name, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.cli.environ(self.url, env))
        self.procs.append(proc)
        return proc

    def wfkit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli.run(*args, url=self.url)

    def submit(self, **params: Any) -> str:
        out = self.wfkit("submit", "steps", "--params-json", json.dumps(params))
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def run(self, run_id: str) -> Any:
        return self.repo.find_run(run_id)

    def wait(self, what: Callable[[], Any], seconds: float = 30, every: float = 0.05) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            value = what()
            if value:
                return value
            assert time.monotonic() < deadline, f"gave up waiting after {seconds} s"
            time.sleep(every)

    def ended(self, *run_ids: str, seconds: float = 30) -> list[Any]:
        return self.wait(lambda: (runs := [self.run(r) for r in run_ids]) and
                         all(run.status.value in FINAL for run in runs) and runs, seconds)

    def stop(self, proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=timeout)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        self.repo.close()


@pytest.fixture
def workers(pg_url: str, installed_plugins: dict[str, Path], tmp_path: Path) -> Iterator[Workers]:
    """A :class:`Workers` on a new PostgreSQL database (markers in ``tmp_path / "markers"``, the
    folder the API tests' servers use too)."""
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    pool = Workers(pg_url, installed_plugins["steps"], markers)
    try:
        yield pool
    finally:
        pool.close()


