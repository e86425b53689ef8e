"""How fast does the command line start? `wfkit list-workflows` and `wfkit --help` against raw floors.

Measures the median wall time (over --repeat rounds, after a warm-up) of:
  - python -c pass                                   (the interpreter alone)
  - python -c "import click, pluggy" + an entry-point scan of the group 'wfkit'  (the floor)
  - wfkit --help
  - wfkit list-workflows                             (with whatever plugins are installed)
and checks that list-workflows imports none of sqlalchemy, sqlmodel, alembic, pydantic.
The commands take turns (each round runs each once), so that the machine's drift over the
seconds of a run falls on all of them alike.

Targets: list-workflows under 0.15 s median, and within 1.5x of the floor.

    python bench/bench_cli.py [--repeat 30] [--against OTHER_VENV/bin]

--against measures another installation's floor and commands in the same turns (an older
checkout's virtual environment, say) and prints how this one compares: a before/after figure
taken on the same stretch of the machine.

The commands run with Python's bytecode cache on (PYTHONDONTWRITEBYTECODE removed), as an
installed wfkit runs: otherwise every start would compile wfkit's sources again, and the figure
would measure the size of the source rather than the work of starting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
WFKIT = str(Path(PY).with_name("wfkit"))
FLOOR = "import click, pluggy\nfrom importlib.metadata import entry_points\nentry_points(group='wfkit')"
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "pydantic")


#: The environment the commands run in: bytecode caching on, as for an installed wfkit.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def median_seconds(commands: list[list[str]], repeat: int) -> list[float]:
    """The median wall time of each command, the commands taking turns ``repeat`` times."""
    for cmd in commands:
        subprocess.run(cmd, capture_output=True, check=True, env=ENV)  # warm the OS caches, write the bytecode
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(repeat):
        for cmd, seen in zip(commands, times):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True, env=ENV)
            seen.append(time.perf_counter() - start)
    return [statistics.median(seen) for seen in times]


def heavy_modules_loaded() -> list[str]:
    code = (
        "import sys\nfrom wfkit.cli import cli\n"
        "try:\n    cli(['list-workflows'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("HEAVY:"))
    return [m for m in line.removeprefix("HEAVY:").split(",") if m]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--against", type=Path, metavar="BIN",
                        help="another installation's bin directory (its python and wfkit) to measure in the same turns")
    args = parser.parse_args()

    commands = [
        ("python -c pass", [PY, "-c", "pass"]),
        ("floor: import click, pluggy + entry-point scan", [PY, "-c", FLOOR]),
        ("wfkit --help", [WFKIT, "--help"]),
        ("wfkit list-workflows", [WFKIT, "list-workflows"]),
    ]
    if args.against is not None:
        other_py, other_wfkit = str(args.against / "python"), str(args.against / "wfkit")
        commands += [
            ("against: floor", [other_py, "-c", FLOOR]),
            ("against: wfkit --help", [other_wfkit, "--help"]),
            ("against: wfkit list-workflows", [other_wfkit, "list-workflows"]),
        ]
    medians = median_seconds([cmd for _, cmd in commands], args.repeat)
    rows = [(name, seconds) for (name, _), seconds in zip(commands, medians)]
    floor = rows[1][1]
    print(f"{'command':50} {'median ms':>10} {'x floor':>8}")
    for name, seconds in rows:
        print(f"{name:50} {seconds * 1000:10.1f} {seconds / floor:8.2f}")
    listing = rows[3][1]
    if args.against is not None:
        other_floor, other_listing = rows[4][1], rows[6][1]
        print(f"list-workflows: {listing / floor:.2f}x of its floor here, {other_listing / other_floor:.2f}x "
              f"against; here / against: {listing / other_listing:.2f}x")
    heavy = heavy_modules_loaded()
    checks = [
        ("list-workflows median under 150 ms", listing < 0.150),
        ("list-workflows within 1.5x of the floor", listing / floor <= 1.5),
        (f"list-workflows imports none of {', '.join(HEAVY)} (loaded: {', '.join(heavy) or 'none'})", not heavy),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
