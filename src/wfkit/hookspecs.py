"""The hooks a wfkit plugin may implement: the contract with plugin authors.

A plugin is a module named by an entry point in the group ``wfkit``, in the
plugin package's ``pyproject.toml``::

    [project.entry-points.wfkit]
    my-workflows = "my_package.wfkit_plugin"

The module implements hooks with the ``wfkit.hookimpl`` marker (or
``pluggy.HookimplMarker("wfkit")``, which is the same thing)::

    import wfkit

    @wfkit.hookimpl
    def wfkit_register_workflows(registry):
        registry.register("my-flow", my_factory, "What my flow does")

``wfkit_register_workflows`` is called once per process, the first time the
default registry is used (``wfkit list-workflows``,
``wfkit.get_workflow(...)``); ``wfkit_observers`` once per executor
made without a registry of its own (``Executor(url)``). Each plugin is called on its own, in a
thread of its own: if its module fails to import, exits, or its ``wfkit_register_workflows``
raises (anything, SystemExit and KeyboardInterrupt too) or does not return within
``WFKIT_PLUGIN_TIMEOUT`` seconds (10), that plugin is skipped (its registrations undone) and
the failure is reported by ``wfkit plugins``; if its ``wfkit_observers`` raises or hangs, that
is logged and its observers are left out. What a plugin prints while loading goes to stderr.
The other plugins load as usual.
The entry point's name is the plugin's name; ``WFKIT_LOAD_PLUGINS`` (a
comma-separated list of plugin or distribution names) limits which load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from wfkit.registry import Registry

PROJECT = "wfkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def wfkit_register_workflows(registry: Registry) -> None:
    """Register this plugin's workflows.

    Called once, when plugins load, with the registry to fill. Call
    ``registry.register(name, factory, description, params=Model)`` (or use
    ``@registry.register(name)`` as a decorator) for each workflow. Names are
    lowercase letters, digits, ``-``, ``_`` and ``.``. A name another plugin
    registered already is skipped (the first plugin, by entry-point name, keeps
    it; ``wfkit plugins`` reports it), and this plugin's other workflows register
    as usual; registering one name twice from this plugin raises
    ``DuplicateWorkflowError``, which makes the plugin fail to load.
    The return value is ignored.
    """


@hookspec
def wfkit_observers() -> list[Any] | None:
    """Return observers to attach to every run an executor with the default registry executes.

    Called once per executor made without a registry of its own
    (``Executor(url)``). Return an observer (an object with
    ``on_event(event)``, see ``wfkit.events``), a list of them, or None.
    Observers are isolated: one that raises while handling an event is logged
    and the run goes on. A hook that raises, or returns anything else, is
    logged and skipped.
    """
