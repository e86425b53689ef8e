"""Paging at any depth: a page by cursor against a page by number, and what the total costs, at 1M runs.

Listings of 20 runs, newest first (the default sort), unfiltered and filtered by status, on a
seeded database of ``--runs`` runs (bench_repository.py's seed; ``--reuse`` keeps the SQLite file
between runs of the scripts), on SQLite and PostgreSQL:

  page 1              list_runs(page=1)
  offset, deep        list_runs(page=N) where the page starts at --depth runs (500,000)
  cursor, deep        list_runs(cursor=C), C the next_cursor of the page that ends there

each with total="none" (what a client paging through by cursor asks), and page 1 with each
total: "exact" (a COUNT over every matching run), "estimate" (PostgreSQL's planner; SQLite has
none and counts) and "none". The cases take turns, round after round; medians of --rounds.

Target (issue 15): a deep page by cursor costs the same as a shallow one: the page at depth
500,000 within 1.5x of the page after page 1, both by cursor (both are index range scans of 21
entries). Page 1 by number is printed beside them: a cursor page also decodes its cursor (30 us).

    python bench/bench_paging.py [--runs 1000000] [--depth 500000] [--rounds 31] [--engines sqlite,postgresql]
                                 [--reuse] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "src"))
sys.path.insert(0, str(BENCH_DIR))

import bench_repository as rb  # noqa: E402

from wfkit.store.repository import Repository  # noqa: E402

PAGE = 20


def cases(repo: Repository, depth: int, status: str | None) -> dict[str, dict[str, object]]:
    """The listing calls to time, as keyword arguments of list_runs."""
    filters = {"status": status} if status else {}
    deep_page = depth // PAGE + 1
    # The cursor that starts at the same depth: the next_cursor of the page before (read once).
    before = repo.list_runs(page=deep_page - 1, page_size=PAGE, total="none", fields="summary", **filters)
    assert before.next_cursor is not None, "the listing is shorter than --depth"
    first = repo.list_runs(page=1, page_size=PAGE, total="none", fields="summary", **filters)
    return {
        "page 1": dict(page=1, total="none", **filters),
        "cursor, page 2": dict(cursor=first.next_cursor, total="none", **filters),
        f"offset, depth {depth:,}": dict(page=deep_page, total="none", **filters),
        f"cursor, depth {depth:,}": dict(cursor=before.next_cursor, total="none", **filters),
        "page 1, total exact": dict(page=1, total="exact", **filters),
        "page 1, total estimate": dict(page=1, total="estimate", **filters),
    }


def measure(repo: Repository, calls: dict[str, dict[str, object]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, kwargs in calls.items():  # in turns
            t0 = time.perf_counter()
            page = repo.list_runs(page_size=PAGE, fields="summary", **kwargs)
            times[name].append((time.perf_counter() - t0) * 1000)
            assert len(page.data) == PAGE
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--depth", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--reuse", action="store_true", help="keep and reuse the seeded SQLite file")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WFKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    misses = 0
    print(f"# paging at {args.runs:,} runs, pages of {PAGE}, medians of {args.rounds} rounds (ms)\n")
    for engine in args.engines.split(","):
        db = (rb.sqlite_database(args.runs, False, args.reuse) if engine == "sqlite"
              else rb.postgres_database(args.postgres_url, args.runs))
        with db as url:
            with Repository(url) as repo:
                if engine == "postgresql":
                    with repo.engine.connect() as conn:  # the planner's statistics, as autovacuum would make them
                        conn.exec_driver_sql("ANALYZE runs")
                        conn.commit()
                for status in (None, "completed"):
                    matching = repo.list_runs(page_size=1, total="exact", fields="summary",
                                              **({"status": status} if status else {})).total
                    depth = min(args.depth, matching // 2 // PAGE * PAGE)
                    calls = cases(repo, depth, status)
                    medians = measure(repo, calls, args.rounds)
                    exact = repo.list_runs(page_size=PAGE, total="exact", fields="summary",
                                           **({"status": status} if status else {})).total
                    estimate = repo.list_runs(page_size=PAGE, total="estimate", fields="summary",
                                              **({"status": status} if status else {}))
                    print(f"## {engine}, {'all runs' if status is None else f'status={status}'} "
                          f"({exact:,} match; estimate {estimate.total:,}, {estimate.total_kind})\n")
                    print("| listing | ms | x page 1 |")
                    print("|---|---:|---:|")
                    first = medians["page 1"]
                    for name, ms in medians.items():
                        print(f"| {name} | {ms:.2f} | {ms / first:.2f} |")
                    deep, shallow = medians[f"cursor, depth {depth:,}"], medians["cursor, page 2"]
                    ok = deep <= 1.5 * shallow
                    misses += not ok
                    print(f"\ncursor at depth {depth:,} within 1.5x of the cursor at page 2: "
                          f"{'PASS' if ok else 'MISS'} ({deep / shallow:.2f}x; {deep / first:.2f}x page 1)\n")
    print("target: a deep page by cursor costs what page 1 costs:", "PASS" if not misses else f"MISS ({misses})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
