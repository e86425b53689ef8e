"""The public API: the one table in wfkit/__init__.py, what ``wfkit.<name>`` serves, and the
import paths plugin authors and services use."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import wfkit

INIT = Path(wfkit.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module, from the ``if TYPE_CHECKING:`` block of wfkit/__init__.py."""
    tree = ast.parse(INIT.read_text())
    [block] = [node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"]
    return {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}


def test_all_is_the_table_sorted():
    assert wfkit.__all__ == ["__version__", *sorted(wfkit._EXPORTS)]
    assert set(wfkit.__all__) <= set(dir(wfkit))


def test_every_name_is_served_from_the_module_the_table_names():
    for name, module in wfkit._EXPORTS.items():
        value = getattr(wfkit, name)
        assert getattr(sys.modules[module], name) is value, name


def test_the_imports_for_type_checkers_are_the_table():
    assert _type_checking_imports() == wfkit._EXPORTS


def test_internals_are_not_public():
    for name in ("RUN_TRANSITIONS", "parse_sort", "check_transition", "hookspec", "row_loader", "SqlRecorder"):
        assert name not in wfkit.__all__
        try:
            getattr(wfkit, name)
        except AttributeError as err:
            assert f"module 'wfkit' has no attribute {name!r}" in str(err)
        else:
            raise AssertionError(f"wfkit.{name} should not exist")


def test_the_import_paths_plugin_authors_and_services_use():
    from wfkit.executor import Executor
    from wfkit.graph import END, StateGraph

    assert wfkit.Executor is Executor and wfkit.END is END == "__end__" and wfkit.StateGraph is StateGraph
    assert callable(wfkit.hookimpl) and wfkit.Registry().list() == []
    assert wfkit.PageRequest(page=2).page == 2 and wfkit.RunFilters(status="failed").status == (wfkit.RunStatus.FAILED,)
    assert wfkit.Repository.__module__ == "wfkit.store.repository"


def test_importing_wfkit_and_its_light_names_loads_no_sqlalchemy_nor_pydantic(wfkit_cli):
    code = (
        "import sys, wfkit\n"
        "from wfkit import END, Registry, Runtime, StateGraph, WfkitError, hookimpl, list_workflows, http_status\n"
        "import wfkit.graph, wfkit.registry, wfkit.plugins, wfkit.events\n"
        "print([m for m in ('sqlalchemy', 'sqlmodel', 'alembic', 'pydantic') if m in sys.modules])"
    )
    out = wfkit_cli.python("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
