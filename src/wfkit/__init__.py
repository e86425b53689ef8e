"""wfkit: a plugin-based kit for stateful workflows that keep their history in SQL.

The public API is the table below, importable from here and loaded lazily (PEP 562): ``import
wfkit`` costs almost nothing, and SQLAlchemy or pydantic are imported only when a name that
needs them (``wfkit.Repository``, ``wfkit.Run``...) is first used. Beside this module, the stable
import paths are ``wfkit.graph``, ``wfkit.events``, ``wfkit.executor``, ``wfkit.hookspecs``,
``wfkit.errors`` and ``wfkit.testing`` (assertions for tests, and the pytest plugin's fixtures);
everything else (``wfkit.store``, ``wfkit.plugins``, ``wfkit.cli``...) is how wfkit works inside,
and may change between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it (the one table; a test checks it, and the imports
#: for type checkers below, against what ``wfkit.<name>`` serves)
_EXPORTS: dict[str, str] = {
    # errors (light)
    "AmbiguousRunIdError": "wfkit.errors",
    "CheckpointError": "wfkit.errors",
    "ConfigurationError": "wfkit.errors",
    "ConflictError": "wfkit.errors",
    "DatabaseError": "wfkit.errors",
    "DatabaseNotMigratedError": "wfkit.errors",
    "DuplicateWorkflowError": "wfkit.errors",
    "GraphError": "wfkit.errors",
    "GraphValidationError": "wfkit.errors",
    "InvalidParamsError": "wfkit.errors",
    "InvalidQueryError": "wfkit.errors",
    "InvalidStatusError": "wfkit.errors",
    "LeaseLostError": "wfkit.errors",
    "MaxIterationsError": "wfkit.errors",
    "NoRouteError": "wfkit.errors",
    "NodeError": "wfkit.errors",
    "NotFoundError": "wfkit.errors",
    "RegistrationError": "wfkit.errors",
    "RouteError": "wfkit.errors",
    "ServerBusyError": "wfkit.errors",
    "ServiceNotFoundError": "wfkit.errors",
    "StateNotSerializableError": "wfkit.errors",
    "WfkitError": "wfkit.errors",
    "WorkflowBuildError": "wfkit.errors",
    "WorkflowNotFoundError": "wfkit.errors",
    "http_status": "wfkit.errors",
    # workflows and plugins (light: no SQLAlchemy, no pydantic)
    "END": "wfkit.graph",
    "Registry": "wfkit.registry",
    "Runtime": "wfkit.runtime",
    "StateGraph": "wfkit.graph",
    "Workflow": "wfkit.registry",
    "WorkflowInfo": "wfkit.registry",
    "default_registry": "wfkit.plugins",
    "get_workflow": "wfkit.plugins",
    "hookimpl": "wfkit.hookspecs",
    "list_workflows": "wfkit.plugins",
    "register": "wfkit.plugins",
    # run history: tables, statuses, queries, the read-only repository
    "Checkpoint": "wfkit.store.models",
    "Decision": "wfkit.store.models",
    "PageRequest": "wfkit.store.query",
    "PageResult": "wfkit.store.query",
    "PaginationConfig": "wfkit.store.query",
    "Repository": "wfkit.store.repository",
    "Run": "wfkit.store.models",
    "RunFilters": "wfkit.store.query",
    "RunStatus": "wfkit.store.models",
    "SortField": "wfkit.store.query",
    "Stage": "wfkit.store.models",
    "StageStatus": "wfkit.store.models",
    "can_transition": "wfkit.store.models",
    "create_engine": "wfkit.store.db",
    # retention: the write side beside the read-only repository
    "PruneResult": "wfkit.store.retention",
    "prune_runs": "wfkit.store.retention",
    # executing and controlling runs
    "Executor": "wfkit.executor",
    "RunControl": "wfkit.executor",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wfkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return list(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from wfkit.errors import (
        AmbiguousRunIdError,
        CheckpointError,
        ConfigurationError,
        ConflictError,
        DatabaseError,
        DatabaseNotMigratedError,
        DuplicateWorkflowError,
        GraphError,
        GraphValidationError,
        InvalidParamsError,
        InvalidQueryError,
        InvalidStatusError,
        LeaseLostError,
        MaxIterationsError,
        NodeError,
        NoRouteError,
        NotFoundError,
        RegistrationError,
        RouteError,
        ServerBusyError,
        ServiceNotFoundError,
        StateNotSerializableError,
        WfkitError,
        WorkflowBuildError,
        WorkflowNotFoundError,
        http_status,
    )
    from wfkit.executor import Executor, RunControl
    from wfkit.graph import END, StateGraph
    from wfkit.hookspecs import hookimpl
    from wfkit.plugins import default_registry, get_workflow, list_workflows, register
    from wfkit.registry import Registry, Workflow, WorkflowInfo
    from wfkit.runtime import Runtime
    from wfkit.store.db import create_engine
    from wfkit.store.models import Checkpoint, Decision, Run, RunStatus, Stage, StageStatus, can_transition
    from wfkit.store.query import PageRequest, PageResult, PaginationConfig, RunFilters, SortField
    from wfkit.store.repository import Repository
    from wfkit.store.retention import PruneResult, prune_runs
