"""Plugins: entry points in the group ``wfkit``, driven by pluggy, and the default registry they fill.

:func:`load_plugins` imports every plugin module named by an entry point in
the group ``wfkit`` (sorted by entry-point name, so the outcome does not
depend on install order), registers it with a pluggy plugin manager checked
against :mod:`wfkit.hookspecs`, and calls its ``wfkit_register_workflows``
hook on its own. A plugin that fails to import, implements an unknown hook,
or whose hook raises is skipped, its registrations undone; the failure is
kept in its :class:`PluginInfo` and the others load as usual.

The default registry (:func:`default_registry`, and the module-level
:func:`register`, :func:`get_workflow`, :func:`list_workflows`) loads the
installed plugins once, on first lookup; :func:`plugin_observers` collects the
observers they contribute. Every hook is called through :func:`call_each`: one
plugin at a time, so that one plugin's failure is its own.

``WFKIT_LOAD_PLUGINS`` limits which plugins load: a comma-separated list of
entry-point names or distribution names; empty means none; unset means all.

A plugin cannot take a command down: each one loads in a thread of its own, within
``WFKIT_PLUGIN_TIMEOUT`` seconds (default 10; one that takes longer is left out and its
registrations taken back); ``SystemExit``, ``KeyboardInterrupt`` or any other exception its code
raises is its failure, not the command's (Ctrl-C pressed by the user still stops the command);
what it prints while loading goes to stderr, never into a command's stdout.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from wfkit import hookspecs
from wfkit.errors import ConfigurationError, RegistrationError, error_text
from wfkit.registry import PluginScope, Registry, Workflow, WorkflowInfo

if TYPE_CHECKING:
    from wfkit.events import Observer

GROUP = "wfkit"
LOAD_PLUGINS_ENV = "WFKIT_LOAD_PLUGINS"
PLUGIN_TIMEOUT_ENV = "WFKIT_PLUGIN_TIMEOUT"
#: Seconds a plugin may take to import and register its workflows.
DEFAULT_PLUGIN_TIMEOUT = 10.0


@dataclass
class PluginInfo:
    """One plugin: where it comes from, what it provides, and whether it loaded."""

    name: str
    distribution: str | None
    version: str | None
    module: str
    hooks: list[str] = field(default_factory=list)
    workflows: list[str] = field(default_factory=list)
    loaded: bool = False
    error: str | None = None
    #: workflows it could not register: another plugin had the name first
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"{self.name!r}{dist}"


@dataclass
class PluginReport:
    """The outcome of loading plugins: every plugin found, and warnings about the selection."""

    plugins: list[PluginInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def messages(self) -> list[str]:
        """One line per problem, fit for stderr."""
        out = [f"plugin {p.label} was skipped: {p.error}" for p in self.failed]
        out += [f"plugin {p.label} could not register {item}" for p in self.plugins for item in p.skipped]
        return out + self.warnings


def _as_exception(err: BaseException) -> Exception:
    """A plugin's BaseException (SystemExit, say) as an Exception that can be reported."""
    if isinstance(err, Exception):
        return err
    wrapped = RuntimeError(f"raised {error_text(err)}")
    wrapped.__cause__ = err
    return wrapped


class HookCall:
    """What one plugin's implementation of a hook did: returned ``result``, or raised ``error``.
    (A plain class: this module loads with `wfkit list-workflows`, which must start fast.)"""

    __slots__ = ("plugin", "result", "error")

    def __init__(self, plugin: str, result: Any = None, error: Exception | None = None):
        self.plugin, self.result, self.error = plugin, result, error


def call_each(pm: pluggy.PluginManager, hook: str, *, only: object = None,
              around: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
              timeout: float | None = None, **kwargs: Any) -> list[HookCall]:
    """Call ``hook`` on each plugin that implements it (or on the plugin object ``only``), one at a
    time, with the ``kwargs`` each implementation asks for.

    Whatever one implementation raises (SystemExit too) is kept in its :class:`HookCall` and the
    others are called as usual: a plugin's failure never reaches the host or the other plugins.
    ``around``, if given, makes a context manager entered around each call, with the plugin's name
    (the registry's ``plugin_scope``, which undoes the registrations of a call that raised). With
    ``timeout``, each call runs in a thread of its own, and one that has not returned after that
    many seconds is reported as a failure and left behind.
    """
    calls = []
    for impl in getattr(pm.hook, hook).get_hookimpls():
        if only is not None and impl.plugin is not only:
            continue

        def call(impl: Any = impl) -> HookCall:
            scope = around(impl.plugin_name) if around is not None else contextlib.nullcontext()
            try:
                with scope:
                    return HookCall(impl.plugin_name, impl.function(**{arg: kwargs[arg] for arg in impl.argnames}))
            except KeyboardInterrupt:
                if timeout is None:
                    raise  # in this thread it may be the user's Ctrl-C: the command stops
                return HookCall(impl.plugin_name, error=_as_exception(KeyboardInterrupt()))
            except BaseException as err:  # a plugin may raise anything, SystemExit too: reported, never fatal
                return HookCall(impl.plugin_name, error=_as_exception(err))

        if timeout is None:
            calls.append(call())
            continue
        finished = _within(call, timeout)
        calls.append(finished if finished is not None else HookCall(impl.plugin_name, error=TimeoutError(
            f"{hook}() did not return within {timeout:g} s ({PLUGIN_TIMEOUT_ENV})")))
    return calls


def _within(work: Callable[[], Any], timeout: float) -> Any:
    """``work()`` in a thread of its own (its prints go to stderr): its result, or None if it has not
    returned after ``timeout`` seconds (it is left running; the user's Ctrl-C still reaches the
    main thread, which only waits)."""
    box: list[Any] = []

    def run() -> None:
        _PluginThreads.current.add(threading.get_ident())
        box.append(work())

    thread = threading.Thread(target=run, name="wfkit-plugin-hook", daemon=True)
    with _stdout_to_stderr_in(_PluginThreads.current):
        thread.start()
        thread.join(timeout)
    return box[0] if box else None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def selected_plugins(environ: Mapping[str, str] | None = None) -> set[str] | None:
    """The names ``WFKIT_LOAD_PLUGINS`` allows (normalized), or None when it is unset (all load)."""
    env = os.environ if environ is None else environ
    raw = env.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {_normalize(part.strip()) for part in raw.split(",") if part.strip()}


def _info(ep: EntryPoint) -> PluginInfo:
    dist = getattr(ep, "dist", None)
    return PluginInfo(
        name=ep.name,
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
        module=ep.value,
    )


def make_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def plugin_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``WFKIT_PLUGIN_TIMEOUT``: seconds a plugin may take to load (unset or empty: 10)."""
    env = os.environ if environ is None else environ
    raw = env.get(PLUGIN_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_PLUGIN_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise ConfigurationError(f"{PLUGIN_TIMEOUT_ENV} must be a number of seconds above 0, got {raw!r}")
    return value


def load_plugins(
    registry: Registry,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    environ: Mapping[str, str] | None = None,
) -> PluginReport:
    """Load every allowed plugin into ``registry``; never raises for a broken plugin."""
    pm = plugin_manager or make_plugin_manager()
    allowed = selected_plugins(environ)
    timeout = plugin_timeout(environ)
    report = PluginReport()
    seen: set[str] = set()
    found = sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value))
    with _stdout_to_stderr_in(_PluginThreads.current):
        for ep in found:
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            info = _info(ep)
            report.plugins.append(info)
            if allowed is not None and not ({_normalize(info.name), _normalize(info.distribution or "")} & allowed):
                continue
            _load_in_a_thread(pm, registry, ep, info, timeout)
    if allowed is not None:
        known = {_normalize(p.name) for p in report.plugins} | {_normalize(p.distribution or "") for p in report.plugins}
        for name in sorted(allowed - known):
            report.warnings.append(f"{LOAD_PLUGINS_ENV} names {name!r}, but no installed plugin has that name")
    if allowed == set() and report.plugins:
        # An unknown workflow then says why there are none, not to install what is installed.
        registry.empty_hint = loading_turned_off(report)
    return report


def loading_turned_off(report: PluginReport) -> str:
    """What to say when ``WFKIT_LOAD_PLUGINS`` is set and empty while plugins are installed."""
    installed = ", ".join(p.name for p in report.plugins)
    return (f"plugin loading is turned off ({LOAD_PLUGINS_ENV} is set, and empty); installed plugins: {installed}. "
            f"Unset {LOAD_PLUGINS_ENV} to load them all, or name the ones to load")


class _PluginThreads:
    """The threads that run plugin code while plugins load (what they print goes to stderr)."""

    current: set[int] = set()


def _load_in_a_thread(pm: pluggy.PluginManager, registry: Registry, ep: EntryPoint, info: PluginInfo,
                      timeout: float) -> None:
    """Load one plugin in a thread of its own, given ``timeout`` seconds; one that takes longer is
    left out (what it registered is taken back, what it registers later refused). Waiting here,
    the main thread still receives the user's Ctrl-C."""
    scope = PluginScope(ep.name)
    lock = threading.Lock()  # the loader and a late thread do not both touch pm and info
    done = threading.Event()

    def work() -> None:
        _PluginThreads.current.add(threading.get_ident())
        try:
            _load_one(pm, registry, ep, info, scope, lock)
        except BaseException as err:  # nothing a plugin raises may leave this thread unreported
            with lock:
                if not scope.abandoned:
                    registry.undo(scope)
                    if pm.get_plugin(ep.name) is not None:
                        pm.unregister(name=ep.name)
                    info.error = f"failed while loading: {error_text(err)}"
        finally:
            done.set()

    thread = threading.Thread(target=work, name=f"wfkit-plugin-{ep.name}", daemon=True)
    thread.start()
    if done.wait(timeout):
        return
    with lock:
        registry.undo(scope, abandon=True)
        if pm.get_plugin(ep.name) is not None:
            pm.unregister(name=ep.name)
        info.hooks, info.workflows, info.loaded = [], [], False
        info.error = (f"did not finish loading within {timeout:g} s ({PLUGIN_TIMEOUT_ENV}): left out, "
                      "its workflows not registered")


def _load_one(pm: pluggy.PluginManager, registry: Registry, ep: EntryPoint, info: PluginInfo,
              scope: PluginScope, lock: threading.Lock) -> None:
    try:
        plugin = ep.load()
    except BaseException as err:  # a plugin must never take the host down, whatever it raises
        info.error = f"failed to import {ep.value}: {error_text(err)}"
        return
    with lock:
        if scope.abandoned:
            return
        try:
            pm.register(plugin, name=ep.name)
        except Exception as err:
            info.error = f"invalid plugin: {error_text(err)}"
            return
        callers = pm.get_hookcallers(plugin) or []
        info.hooks = sorted(c.name for c in callers)
        unknown = [c.name for c in callers if not c.has_spec()]
        if unknown:
            pm.unregister(plugin)
            info.error = f"implements unknown hook(s) {', '.join(unknown)}; known hooks: {', '.join(_known_hooks(pm))}"
            return
    calls = call_each(pm, "wfkit_register_workflows", only=plugin, timeout=None,
                      around=lambda _name: registry.plugin_scope(scope), registry=registry)
    failed = next((call.error for call in calls if call.error is not None), None)
    with lock:
        if scope.abandoned:
            return
        if failed is not None:
            pm.unregister(plugin)
            info.error = f"hook wfkit_register_workflows raised {error_text(failed)}"
            return
        info.workflows = [w.name for w in registry.list() if w.plugin == ep.name]
        info.skipped = list(scope.skipped)
        info.loaded = True


@contextlib.contextmanager
def _stdout_to_stderr_in(threads: set[int]) -> Iterator[None]:
    """While plugins load, what their threads print goes to stderr: a plugin's output must never mix
    into a command's stdout (a --json document, say). A plugin thread left running keeps the routing."""
    real = sys.stdout
    routed = _RoutedStdout(real, threads)
    sys.stdout = routed
    try:
        yield
    finally:
        still_running = [t for t in threading.enumerate() if t.ident in threads and t.is_alive()]
        if not still_running and sys.stdout is routed:
            sys.stdout = real
        if not still_running:
            threads.clear()


class _RoutedStdout:
    """A stdout that sends the writes of the given threads to stderr, and the others on."""

    def __init__(self, stream: Any, threads: set[int]):
        self._stream, self._threads = stream, threads

    def _target(self) -> Any:
        return sys.stderr if threading.get_ident() in self._threads else self._stream

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _known_hooks(pm: pluggy.PluginManager) -> list[str]:
    return sorted(
        name for name in dir(pm.hook) if name.startswith("wfkit_") and getattr(pm.hook, name).has_spec()
    )


# --------------------------------------------------------------------------- the default registry

_default = Registry()
_default_pm: pluggy.PluginManager | None = None
_default_report: PluginReport | None = None
_loading = threading.local()
_load_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry, with the installed plugins loaded (once, on first call)."""
    global _default_pm, _default_report
    if _default_report is None:
        if getattr(_loading, "active", False) or threading.get_ident() in _PluginThreads.current:
            raise RegistrationError(
                "a plugin used the default registry while plugins were loading; "
                "register through the `registry` argument of wfkit_register_workflows instead"
            )
        with _load_lock:
            if _default_report is None:
                pm = make_plugin_manager()
                _loading.active = True
                try:
                    report = load_plugins(_default, plugin_manager=pm)
                finally:
                    _loading.active = False
                _default_pm, _default_report = pm, report
    return _default


#: Register a workflow in the default registry (also usable as a decorator): ``Registry.register``.
register = _default.register


def get_workflow(name: str) -> Workflow:
    """The workflow ``name`` from the default registry (plugins loaded)."""
    return default_registry().get(name)


def list_workflows() -> list[WorkflowInfo]:
    """Every workflow in the default registry (plugins loaded), sorted by name."""
    return default_registry().list()


def plugin_report() -> PluginReport:
    """What happened when the default registry loaded the installed plugins (loading them if needed)."""
    default_registry()
    assert _default_report is not None
    return _default_report


def plugin_manager() -> pluggy.PluginManager:
    """The pluggy manager of the default registry's plugins (for calling hooks added later)."""
    default_registry()
    assert _default_pm is not None
    return _default_pm


def plugin_observers(pm: pluggy.PluginManager | None = None) -> list[Observer]:
    """The observers that installed plugins contribute through ``wfkit_observers()``; a hook that
    raises or returns something else is logged (with its traceback) and its observers left out.
    ``pm``: the plugins of another :func:`load_plugins` call (default: the default registry's)."""
    import logging  # here, not at the top: `wfkit list-workflows` loads this module and never logs

    log = logging.getLogger("wfkit.plugins")
    found: list[Observer] = []
    for call in call_each(pm or plugin_manager(), "wfkit_observers", timeout=plugin_timeout()):
        problem = call.error
        if problem is None:
            try:
                given = _observer_list(call.result)
            except Exception as err:  # not a list, or an iterable that raises: the plugin's failure
                problem = err
        if problem is not None:
            # A time-out says it all; anything else gets its traceback (the plugin's author needs it).
            timed_out = isinstance(problem, TimeoutError)
            log.error("plugin %r: its observers are skipped: %s", call.plugin,
                      str(problem) if timed_out else f"wfkit_observers() raised, or returned neither an observer, "
                      f"a list of them, nor None: {error_text(problem)}", exc_info=None if timed_out else problem)
            continue
        for observer in given:
            if hasattr(observer, "on_event"):
                found.append(observer)
            else:
                log.error("plugin %r: wfkit_observers() returned %r, which has no on_event(event); skipped",
                          call.plugin, observer)
    return found


def _observer_list(result: Any) -> list[Any]:
    """What a ``wfkit_observers()`` hook returned, as a list (TypeError if it is not one, an observer or None)."""
    if result is None:
        return []
    if hasattr(result, "on_event"):
        return [result]
    return list(result)
