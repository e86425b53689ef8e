"""wfkit: a plugin-based kit for stateful workflows that keep their history in SQL.

The public API is importable from here, loaded lazily (PEP 562): ``import
wfkit`` costs almost nothing, and SQLAlchemy is imported only when a name
that needs it (``wfkit.Repository``, ``wfkit.Run``...) is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors (light)
    "WfkitError": "wfkit.errors",
    "NotFoundError": "wfkit.errors",
    "WorkflowNotFoundError": "wfkit.errors",
    "InvalidStatusError": "wfkit.errors",
    "InvalidQueryError": "wfkit.errors",
    "ConfigurationError": "wfkit.errors",
    "DatabaseError": "wfkit.errors",
    "DatabaseNotMigratedError": "wfkit.errors",
    "http_status": "wfkit.errors",
    # workflows and plugins (light: no SQLAlchemy, no pydantic)
    "WorkflowInfo": "wfkit.registry",
    "Workflow": "wfkit.registry",
    "Registry": "wfkit.registry",
    "register": "wfkit.plugins",
    "get_workflow": "wfkit.plugins",
    "list_workflows": "wfkit.plugins",
    "default_registry": "wfkit.plugins",
    "Runtime": "wfkit.runtime",
    "StateGraph": "wfkit.graph",
    "END": "wfkit.graph",
    "hookimpl": "wfkit.hookspecs",
    "hookspec": "wfkit.hookspecs",
    "InvalidParamsError": "wfkit.errors",
    "RegistrationError": "wfkit.errors",
    "DuplicateWorkflowError": "wfkit.errors",
    "ServiceNotFoundError": "wfkit.errors",
    "WorkflowBuildError": "wfkit.errors",
    "GraphError": "wfkit.errors",
    "GraphValidationError": "wfkit.errors",
    # models
    "Run": "wfkit.store.models",
    "Stage": "wfkit.store.models",
    "Decision": "wfkit.store.models",
    "Checkpoint": "wfkit.store.models",
    "RunStatus": "wfkit.store.models",
    "StageStatus": "wfkit.store.models",
    "RUN_TRANSITIONS": "wfkit.store.models",
    "check_transition": "wfkit.store.models",
    "can_transition": "wfkit.store.models",
    # queries
    "PageRequest": "wfkit.store.query",
    "PageResult": "wfkit.store.query",
    "PaginationConfig": "wfkit.store.query",
    "RunFilters": "wfkit.store.query",
    "SortField": "wfkit.store.query",
    "parse_sort": "wfkit.store.query",
    # database
    "create_engine": "wfkit.store.db",
    "Repository": "wfkit.store.repository",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wfkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from wfkit.store.db import create_engine
    from wfkit.errors import (
        ConfigurationError,
        DatabaseError,
        DatabaseNotMigratedError,
        DuplicateWorkflowError,
        InvalidParamsError,
        RegistrationError,
        GraphError,
        GraphValidationError,
        ServiceNotFoundError,
        WorkflowBuildError,
        InvalidQueryError,
        InvalidStatusError,
        NotFoundError,
        WfkitError,
        WorkflowNotFoundError,
        http_status,
    )
    from wfkit.store.models import (
        RUN_TRANSITIONS,
        Checkpoint,
        Decision,
        Run,
        RunStatus,
        Stage,
        StageStatus,
        can_transition,
        check_transition,
    )
    from wfkit.store.query import PageRequest, PageResult, PaginationConfig, RunFilters, SortField, parse_sort
    from wfkit.graph import END, StateGraph
    from wfkit.hookspecs import hookimpl, hookspec
    from wfkit.plugins import default_registry, get_workflow, list_workflows, register
    from wfkit.registry import Registry, Workflow, WorkflowInfo
    from wfkit.runtime import Runtime
    from wfkit.store.repository import Repository
