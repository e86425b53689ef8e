"""Kill -9 at random instants, then recover: does every run end as an uninterrupted one would?

For each engine, many times: a process executes a run of ``steps`` (eight nodes in a line, each
sleeping a little and appending to the state) and is killed with SIGKILL at a random instant
(while it starts, creates the run, runs a node, commits a step, ends the run). Then, once the
leases have expired, one ``Executor.recover()`` takes every run left behind over. Checked for
every run: it completed; no (node, iteration) completed twice; its result equals an
uninterrupted run's; its decisions are the eight of an uninterrupted run. The test suite does
the same a few times per engine (tests/cli/test_ownership.py); this does it as often as asked.

    python bench/crash_recovery.py [--kills 60] [--engines sqlite,postgresql] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

NODES = [f"s{i}" for i in range(8)]
LEASE = 1.0

WORKFLOW = """
import time
from wfkit.registry import Registry

NODES = {nodes!r}


def steps(graph, runtime, params):
    def make(node):
        def work(state):
            time.sleep(0.02)
            return {{"count": state["count"] + 1, "log": [*state["log"], node]}}
        return work

    for node in NODES:
        graph.add_node(node, make(node))
    graph.set_entry_point(NODES[0])
    for a, b in zip(NODES, NODES[1:]):
        graph.add_edge(a, b)
    graph.set_finish_point(NODES[-1])
    return {{"count": 0, "log": []}}


def registry():
    reg = Registry()
    reg.register("steps", steps)
    return reg
"""

RUN = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from crash_workflow import registry
from wfkit.executor import Executor
Executor(sys.argv[3], registry=registry(), lease_seconds={lease}).execute("steps")
"""


def one_engine(url: str, kills: int, rng: random.Random, scratch: Path) -> tuple[int, int, list[str]]:
    """Kill ``kills`` runs on ``url``, recover, check; return (runs found, runs recovered, problems)."""
    from crash_workflow import registry  # type: ignore[import-not-found]

    from wfkit.executor import Executor
    from wfkit.store import migrations
    from wfkit.store.models import StageStatus
    from wfkit.store.repository import Repository

    migrations.upgrade(url)
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", RUN.format(lease=LEASE), str(SRC), str(scratch), url],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.25, 0.9))  # the interpreter and wfkit load in ~0.3 s; a run takes ~0.2 s
        proc.kill()
        proc.wait()
    time.sleep(LEASE + 0.5)
    executor = Executor(url, registry=registry(), lease_seconds=LEASE)
    recovered = executor.recover(concurrency=2)
    problems = [f"run {r.run_id}: not recovered: {r.error}" for r in recovered if r.error is not None]
    repo = Repository(url)
    expected = {"count": len(NODES), "log": NODES}
    runs = list(repo.list_runs(page_size=100).data)
    page = 2
    while len(runs) < repo.list_runs().total:
        runs += repo.list_runs(page=page, page_size=100).data
        page += 1
    for run in runs:
        if run.status.value != "completed" or run.result != expected:
            problems.append(f"run {run.id}: {run.status.value}, result {run.result}")
            continue
        done = [(s.node_name, s.iteration) for s in repo.get_stages(run.id) if s.status is StageStatus.COMPLETED]
        if done != [(node, 1) for node in NODES]:
            problems.append(f"run {run.id}: completed stages {done}")
        decisions = [(d.from_node, d.to_node) for d in repo.get_decisions(run.id)]
        if decisions != [*zip(NODES, NODES[1:]), (NODES[-1], None)]:
            problems.append(f"run {run.id}: decisions {decisions}")
    executor.close()
    repo.close()
    return len(runs), len(recovered), problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=60, help="SIGKILLs per engine")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: a throwaway database is created there and dropped after")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        (scratch / "crash_workflow.py").write_text(WORKFLOW.format(nodes=NODES))
        sys.path.insert(0, str(scratch))
        for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
            if engine == "sqlite":
                url, drop = f"sqlite:///{scratch / 'crash.db'}", None
            else:
                import psycopg

                admin = args.postgres_url.replace("postgresql+psycopg://", "postgresql://")
                name = f"wfkit_crash_{uuid.uuid4().hex[:8]}"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                url, drop = admin.rsplit("/", 1)[0] + "/" + name, (admin, name)
            try:
                t0 = time.monotonic()
                found, recovered, problems = one_engine(url, args.kills, rng, scratch)
                print(f"{engine}: {args.kills} kills, {found} runs recorded, {recovered} recovered, "
                      f"{len(problems)} problems ({time.monotonic() - t0:.0f} s, seed {seed})")
                for problem in problems:
                    print(f"  {problem}")
                ok = ok and not problems
            finally:
                if drop is not None:
                    import psycopg

                    with psycopg.connect(drop[0], autocommit=True) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{drop[1]}" WITH (FORCE)')
    print("PASS" if ok else "MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
