"""The layers of DESIGN.md hold: the import-linter contracts in pyproject.toml are kept, and the
import graph has one circle only, made by imports for type hints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
#: The one circle allowed: the walker names StateGraph in its type hints, StateGraph makes walkers.
TYPE_HINT_CIRCLE = {"wfkit.graph.state_graph", "wfkit.graph.walker"}


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and " kept" in out.stdout


def circles(graph: grimp.ImportGraph) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.find_modules_directly_imported_by(target)))))
                    break
                if target in on_stack:
                    low[module] = min(low[module], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[module])
                if low[module] == index[module]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == module:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def test_one_import_circle_and_that_one_for_type_hints_only():
    everything = grimp.build_graph("wfkit", cache_dir=None)
    assert circles(everything) == [TYPE_HINT_CIRCLE]
    running = grimp.build_graph("wfkit", exclude_type_checking_imports=True, cache_dir=None)
    assert circles(running) == []


def test_the_circle_finder_finds_circles():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.e", "p.e2"), ("p.e2", "p.e")]:
        graph.add_import(importer=a, imported=b)
    assert sorted(map(sorted, circles(graph))) == [["p.a", "p.b", "p.c"], ["p.e", "p.e2"]]
