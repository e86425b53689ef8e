"""Plugin discovery: entry points in the group ``wfkit``, driven by pluggy.

:func:`load_plugins` imports every plugin module named by an entry point in
the group ``wfkit`` (sorted by entry-point name, so the outcome does not
depend on install order), registers it with a pluggy plugin manager checked
against :mod:`wfkit.hookspecs`, and calls its ``wfkit_register_workflows``
hook on its own. A plugin that fails to import, implements an unknown hook,
or whose hook raises is skipped, its registrations undone; the failure is
kept in its :class:`PluginInfo` and the others load as usual.

``WFKIT_LOAD_PLUGINS`` limits which plugins load: a comma-separated list of
entry-point names or distribution names; empty means none; unset means all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from wfkit import hookspecs
from wfkit.errors import error_text
from wfkit.registry import Registry, default_registry

GROUP = "wfkit"
LOAD_PLUGINS_ENV = "WFKIT_LOAD_PLUGINS"


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
        return out + self.warnings


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


def load_plugins(
    registry: Registry,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    environ: Mapping[str, str] | None = None,
) -> PluginReport:
    """Load every allowed plugin into ``registry``; never raises for a broken plugin."""
    pm = plugin_manager or make_plugin_manager()
    allowed = selected_plugins(environ)
    report = PluginReport()
    seen: set[str] = set()
    found = sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value))
    for ep in found:
        if ep.name in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(ep.name)
        info = _info(ep)
        report.plugins.append(info)
        if allowed is not None and not ({_normalize(info.name), _normalize(info.distribution or "")} & allowed):
            continue
        _load_one(pm, registry, ep, info)
    if allowed is not None:
        known = {_normalize(p.name) for p in report.plugins} | {_normalize(p.distribution or "") for p in report.plugins}
        for name in sorted(allowed - known):
            report.warnings.append(f"{LOAD_PLUGINS_ENV} names {name!r}, but no installed plugin has that name")
    return report


def _load_one(pm: pluggy.PluginManager, registry: Registry, ep: EntryPoint, info: PluginInfo) -> None:
    try:
        plugin = ep.load()
    except BaseException as err:  # a plugin must never take the host down, whatever it raises
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        info.error = f"failed to import {ep.value}: {error_text(err)}"
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
    impls = [i for i in pm.hook.wfkit_register_workflows.get_hookimpls() if i.plugin is plugin]
    try:
        with registry.plugin_scope(ep.name):
            for impl in impls:
                impl.function(**{arg: registry for arg in impl.argnames})
    except Exception as err:
        pm.unregister(plugin)
        info.error = f"hook wfkit_register_workflows raised {error_text(err)}"
        return
    info.workflows = [w.name for w in registry.list() if w.plugin == ep.name]
    info.loaded = True


def _known_hooks(pm: pluggy.PluginManager) -> list[str]:
    return sorted(
        name for name in dir(pm.hook) if name.startswith("wfkit_") and getattr(pm.hook, name).has_spec()
    )


_default_pm: pluggy.PluginManager | None = None
_default_report: PluginReport | None = None


def load_default(registry: Registry) -> None:
    """Load the installed plugins into the default registry (called once, by ``default_registry()``)."""
    global _default_pm, _default_report
    pm = make_plugin_manager()
    _default_report = load_plugins(registry, plugin_manager=pm)
    _default_pm = pm


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
