"""The workflow registry: names to factories, thread-safe. Pure: it loads no plugins.

A workflow factory is ``factory(graph, runtime, params) -> initial_state``: it
receives a pre-configured :class:`~wfkit.graph.StateGraph`, adds nodes and
edges to it, and returns the initial state (a mapping). A workflow may declare
its params as a pydantic model; params are then validated before the factory
runs, and the factory receives the model instance instead of a dict.

    from wfkit import Registry

    registry = Registry()

    @registry.register("greet", description="Say hello")
    def greet(graph, runtime, params):
        graph.add_node("hello", lambda state: {"text": f"hello {state['who']}"})
        graph.set_entry_point("hello").set_finish_point("hello")
        return {"who": params.get("who", "world")}

The process-wide registry that installed plugins fill lives in :mod:`wfkit.plugins`
(``default_registry()``, ``register``, ``get_workflow``, ``list_workflows``). This module
imports only the standard library: listing workflows never loads SQLAlchemy or pydantic.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from wfkit.errors import (
    DuplicateWorkflowError,
    InvalidParamsError,
    RegistrationError,
    WfkitError,
    WorkflowBuildError,
    WorkflowNotFoundError,
    error_text,
)
from wfkit.formatting import shown

if TYPE_CHECKING:
    from wfkit.graph import StateGraph
    from wfkit.runtime import Runtime

Factory = Callable[["StateGraph", "Runtime", Any], Mapping[str, Any]]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MAX_NAME_LENGTH = 200
#: ``plugin`` of workflows registered from code rather than by a plugin.
LOCAL = "(local)"


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """What the registry says of one registered workflow."""

    name: str
    description: str = ""
    plugin: str = LOCAL

    def to_dict(self) -> dict[str, Any]:
        """The snake_case JSON form."""
        return asdict(self)


def check_name(name: Any) -> str:
    """``name`` if it is a valid workflow name, else :class:`RegistrationError` saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise RegistrationError(
            f"invalid workflow name {name!r}: use lowercase letters, digits, '-', '_' and '.', "
            f"starting with a letter or digit, at most {MAX_NAME_LENGTH} characters"
        )
    return name


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


_FIRST_IMPORT = threading.Lock()


@dataclass(frozen=True)
class Workflow:
    """A registered workflow: its factory, description, params model and the plugin that registered it."""

    name: str
    factory: Factory
    description: str = ""
    params_model: type | str | None = None
    plugin: str = LOCAL
    #: how many times any one node may run in one run (None: StateGraph's default); the factory may
    #: also set it, with ``graph.set_max_iterations(n)``
    max_iterations: int | None = None

    def resolve_params_model(self) -> Any:
        """The params model class; an import path (``"pkg.mod:Model"``) is imported now, on first need."""
        model = self.params_model
        if isinstance(model, str):
            import importlib

            module_name, _, attr = model.partition(":")
            try:
                obj: Any = sys.modules.get(module_name)
                if obj is None:
                    # Plugin code imported after loading is still plugin code: what it prints goes to
                    # stderr, never into a command's stdout (a --json document). One import at a time,
                    # since the stream is swapped for the whole process meanwhile.
                    with _FIRST_IMPORT, contextlib.redirect_stdout(sys.stderr):
                        obj = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as err:  # a plugin's module may raise anything while importing
                raise RegistrationError(
                    f"params model {model!r} of workflow {self.name!r} cannot be imported: "
                    f"{type(err).__name__}: {err}"
                ) from None
            if not (isinstance(obj, type) and hasattr(obj, "model_validate")):
                raise RegistrationError(
                    f"params model {model!r} of workflow {self.name!r} is not a pydantic model class"
                )
            return obj
        return model

    @property
    def info(self) -> WorkflowInfo:
        return WorkflowInfo(self.name, self.description, self.plugin)

    def validate_params(self, params: Mapping[str, Any] | None = None) -> Any:
        """``params`` checked against the params model (an instance of it), or as a plain dict.

        Raises :class:`InvalidParamsError` naming each bad field.
        """
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise InvalidParamsError(
                f"params for workflow {self.name!r} must be a mapping of names to values, got {type(params).__name__}"
            )
        from wfkit.jsontext import too_deep

        # Before the model sees them: pydantic (validating, then dumping) stops at a depth of its own
        # with a plain ValueError, and the limit is wfkit's to state.
        problem = too_deep(dict(params))
        if problem:
            raise InvalidParamsError(f"invalid params for workflow {self.name!r}: {problem}")
        if self.params_model is None:
            return dict(params)
        model = self.resolve_params_model()
        try:
            return model.model_validate(dict(params))
        except Exception as err:
            # The model's own import loaded pydantic; this module never imports it, so that the
            # registry (and `wfkit list-workflows`) stays light, as the layers contract requires.
            pydantic = sys.modules.get("pydantic")
            if pydantic is None or not isinstance(err, pydantic.ValidationError):
                raise
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(params)'}: {e['msg']}" for e in err.errors()
            )
            raise InvalidParamsError(f"invalid params for workflow {self.name!r}: {problems}") from None

    def build(
        self, params: Mapping[str, Any] | None = None, runtime: Runtime | None = None
    ) -> tuple[StateGraph, dict[str, Any]]:
        """Run the factory on a fresh graph: the validated graph and the initial state."""
        return self.build_checked(self.validate_params(params), runtime)

    def build_checked(self, checked: Any, runtime: Runtime | None = None) -> tuple[StateGraph, dict[str, Any]]:
        """Like :meth:`build`, for params that :meth:`validate_params` returned already."""
        from wfkit.graph import StateGraph
        from wfkit.runtime import Runtime

        graph = StateGraph(self.name) if self.max_iterations is None else \
            StateGraph(self.name, max_iterations=self.max_iterations)
        try:
            state = self.factory(graph, runtime if runtime is not None else Runtime(), checked)
        except WfkitError:
            raise
        except (Exception, SystemExit) as err:  # third-party code: one line, keep the cause; sys.exit included
            raise WorkflowBuildError(f"the factory of workflow {self.name!r} raised {error_text(err)}") from err
        if state is None:
            state = {}
        if not isinstance(state, Mapping):
            raise WorkflowBuildError(
                f"the factory of workflow {self.name!r} returned {type(state).__name__}: "
                "it must return the initial state, a mapping"
            )
        graph.validate()
        return graph, dict(state)


class PluginScope:
    """What one plugin registered while it loaded, what it could not (a name taken first), and
    whether it was left out (its registrations taken back, later ones refused). (A plain class, not
    a dataclass: this module loads with every command, and a dataclass costs its creation.)"""

    __slots__ = ("plugin", "added", "skipped", "abandoned")

    def __init__(self, plugin: str):
        self.plugin = plugin
        self.added: list[tuple[str, Workflow | None]] = []
        self.skipped: list[str] = []
        self.abandoned = False


class Registry:
    """A thread-safe map of workflow names to :class:`Workflow` s."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._workflows: dict[str, Workflow] = {}
        self._local = threading.local()
        #: what an unknown name's error adds when no workflow is registered
        self.empty_hint = "no workflows are registered (install a plugin package, see `wfkit plugins`)"

    # -- registering

    def register(
        self,
        name: str,
        factory: Factory | None = None,
        description: str | None = None,
        *,
        params: type | str | None = None,
        max_iterations: int | None = None,
        replace: bool = False,
    ) -> Any:
        """Register ``factory`` under ``name``; without a factory, return a decorator that does.

        ``description`` defaults to the first line of the factory's docstring;
        ``params`` is an optional pydantic model for the workflow's params, or
        its import path (``"pkg.module:Model"``) so that merely listing
        workflows does not import pydantic. ``max_iterations`` bounds how many
        times any one node may run in one run (default 100).
        A name that is taken is an error naming both sources, unless ``replace=True``.
        """
        if factory is None:

            def decorator(fn: Factory) -> Factory:
                self.register(name, fn, description, params=params, max_iterations=max_iterations, replace=replace)
                return fn

            return decorator
        check_name(name)
        if max_iterations is not None and (isinstance(max_iterations, bool) or not isinstance(max_iterations, int)
                                           or max_iterations < 1):
            raise RegistrationError(f"max_iterations of workflow {name!r} must be a whole number of at least 1, "
                                    f"got {max_iterations!r}")
        if not callable(factory):
            raise RegistrationError(f"the factory of workflow {name!r} must be callable, got {type(factory).__name__}")
        if params is not None and not (
            (isinstance(params, type) and hasattr(params, "model_validate"))
            or (isinstance(params, str) and re.match(r"^[\w.]+:[\w.]+$", params))
        ):
            raise RegistrationError(
                f"params of workflow {name!r} must be a pydantic model class or its import path "
                f"('package.module:Model'), got {params!r}"
            )
        scope: PluginScope | None = getattr(self._local, "scope", None)
        plugin = scope.plugin if scope is not None else LOCAL
        if scope is not None and scope.abandoned:
            raise RegistrationError(f"plugin {plugin!r} was left out (it took too long to load): "
                                    f"workflow {name!r} is not registered")
        workflow = Workflow(
            name=name,
            factory=factory,
            description=_first_line(description if description is not None else factory.__doc__),
            params_model=params,
            plugin=plugin,
            max_iterations=max_iterations,
        )
        with self._lock:
            existing = self._workflows.get(name)
            if existing is not None and not replace:
                if scope is not None and existing.plugin != plugin:
                    # Another plugin has the name: only this workflow is skipped (the first plugin, by
                    # entry-point name, keeps it); the plugin's other workflows register as usual.
                    scope.skipped.append(f"workflow {name!r} (plugin {existing.plugin!r} registered it first, "
                                         f"and keeps it)" if existing.plugin != LOCAL else
                                         f"workflow {name!r} (registered first by {_source(existing)})")
                    return existing
                raise DuplicateWorkflowError(
                    f"workflow {name!r} is already registered by {_source(existing)}; "
                    f"{_source(workflow)} cannot register it again (pass replace=True to replace it)"
                )
            self._workflows[name] = workflow
            if scope is not None:
                scope.added.append((name, existing))
        return workflow

    def unregister(self, name: str) -> None:
        """Remove a workflow; :class:`WorkflowNotFoundError` if there is none by that name."""
        with self._lock:
            if self._workflows.pop(name, None) is None:
                raise self._not_found(name)

    @contextlib.contextmanager
    def plugin_scope(self, plugin: str | PluginScope) -> Iterator[PluginScope]:
        """Registrations made inside (by this thread) are attributed to the plugin and undone if the
        block raises; a name another plugin registered first is skipped (``scope.skipped``) instead
        of failing the whole plugin.

        Used by the plugin loader so that a plugin whose hook fails leaves nothing half-registered.
        """
        scope = plugin if isinstance(plugin, PluginScope) else PluginScope(plugin)
        self._local.scope = scope
        try:
            yield scope
        except BaseException:
            self.undo(scope)
            raise
        finally:
            self._local.scope = None

    def undo(self, scope: PluginScope, *, abandon: bool = False) -> None:
        """Take back what a plugin registered in ``scope`` (from any thread); with ``abandon``, later
        registrations in it are refused too (a plugin left out while its code still runs)."""
        with self._lock:
            scope.abandoned = scope.abandoned or abandon
            for name, previous in reversed(scope.added):
                if previous is None:
                    self._workflows.pop(name, None)
                else:
                    self._workflows[name] = previous
            scope.added.clear()

    # -- looking up

    def get(self, name: str) -> Workflow:
        """The workflow registered as ``name``, or :class:`WorkflowNotFoundError` with close matches."""
        with self._lock:
            found = self._workflows.get(name)
        if found is None:
            raise self._not_found(name)
        return found

    def list(self) -> list[WorkflowInfo]:
        """Every registered workflow, sorted by name."""
        with self._lock:
            workflows = sorted(self._workflows.values(), key=lambda w: w.name)
        return [w.info for w in workflows]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._workflows)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._workflows

    def __len__(self) -> int:
        with self._lock:
            return len(self._workflows)

    def _not_found(self, name: str) -> WorkflowNotFoundError:
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?"
        elif names:
            hint = f"; registered workflows: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
        else:
            hint = f"; {self.empty_hint}"
        return WorkflowNotFoundError(f"no workflow named {shown(name)}{hint}")


def _source(workflow: Workflow) -> str:
    if workflow.plugin != LOCAL:
        return f"plugin {workflow.plugin!r}"
    module = getattr(workflow.factory, "__module__", None) or "?"
    qualname = getattr(workflow.factory, "__qualname__", None) or repr(workflow.factory)
    return f"{module}.{qualname}"
