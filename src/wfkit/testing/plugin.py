"""wfkit's pytest plugin: fixtures for testing workflows on a real database.

Registered as the ``pytest11`` entry point ``wfkit``, so pytest loads it wherever wfkit is
installed (``-p no:wfkit`` turns it off). Its fixtures, all named ``wfkit_*``:

``wfkit_database``
    A migrated throwaway database for the test (:class:`~wfkit.testing.ThrowawayDatabase`: ``.url``,
    ``.backend``, ``.engine``, ``.repository``): a SQLite file in the test's ``tmp_path``, or, when
    ``WFKIT_TEST_POSTGRES_URL`` names a PostgreSQL server (an admin URL), a database with a random
    name there, dropped when the test ends. A server named but unreachable fails the test.
``wfkit_registry``
    A fresh :class:`~wfkit.Registry` with the installed plugins loaded (as ``WFKIT_LOAD_PLUGINS``
    allows), or only those named by ``@pytest.mark.wfkit_plugins("my-workflows", ...)`` (entry-point
    or distribution names; a named plugin that fails to load fails the test; no names: no plugins).
    Tests may ``wfkit_registry.register(...)`` workflows of their own.
``wfkit_executor``
    An :class:`~wfkit.Executor` on ``wfkit_database`` and ``wfkit_registry`` (with the observers its
    plugins contribute), closed after the test.
``wfkit_database_factory``
    The session's :class:`~wfkit.testing.ThrowawayDatabases`: ``.new(directory)`` makes another.

pytest imports this module at start-up in every project where wfkit is installed, wfkit's own
test suite included: it imports no SQLAlchemy, pydantic or store module until a fixture runs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pluggy

    from wfkit.executor import Executor
    from wfkit.registry import Registry
    from wfkit.testing.databases import ThrowawayDatabase, ThrowawayDatabases

#: The plugin manager that loaded a test's ``wfkit_registry``: its plugins' observers join the executor.
_PLUGIN_MANAGER = pytest.StashKey["pluggy.PluginManager"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "wfkit_plugins(*names): the wfkit plugins the wfkit_registry fixture loads (entry-point or "
        "distribution names; none: no plugins)",
    )


@pytest.fixture(scope="session")
def wfkit_database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayDatabases]:
    """Makes the throwaway databases of the session (on PostgreSQL when ``WFKIT_TEST_POSTGRES_URL``
    is set) and drops what is left of them at its end."""
    from wfkit.testing.databases import ThrowawayDatabases

    factory = ThrowawayDatabases(tmp_path_factory.mktemp("wfkit"))
    yield factory
    factory.close()


@pytest.fixture
def wfkit_database(wfkit_database_factory: ThrowawayDatabases, tmp_path: os.PathLike[str]) -> Iterator[ThrowawayDatabase]:
    """A migrated, empty database of the test's own, dropped (PostgreSQL) or left in ``tmp_path``
    (SQLite) after it."""
    from wfkit.errors import WfkitError

    try:
        database = wfkit_database_factory.new(tmp_path)
    except WfkitError as err:
        pytest.fail(f"wfkit_database: {err}", pytrace=False)
    with database:
        yield database


@pytest.fixture
def wfkit_registry(request: pytest.FixtureRequest) -> Registry:
    """A fresh registry with the installed plugins, or the ones ``@pytest.mark.wfkit_plugins`` names."""
    from wfkit.plugins import LOAD_PLUGINS_ENV, load_plugins, make_plugin_manager
    from wfkit.registry import Registry

    registry = Registry()
    pm = make_plugin_manager()
    marker = request.node.get_closest_marker("wfkit_plugins")
    if marker is None:
        report = load_plugins(registry, plugin_manager=pm)
        for message in report.messages():  # another installed plugin's trouble is not this test's failure
            warnings.warn(f"wfkit_registry: {message}", stacklevel=2)
    else:
        names = marker.args
        if marker.kwargs or not all(isinstance(name, str) and name.strip() and "," not in name for name in names):
            pytest.fail(f"@pytest.mark.wfkit_plugins takes plugin names, such as wfkit_plugins('my-workflows'), "
                        f"got {marker}", pytrace=False)
        report = load_plugins(registry, plugin_manager=pm,
                              environ={**os.environ, LOAD_PLUGINS_ENV: ",".join(n.strip() for n in names)})
        installed = ", ".join(p.name for p in report.plugins) or "none"
        # The selection is the marker's, not the environment's: say so, with what is installed.
        problems = [f"@pytest.mark.wfkit_plugins{message.removeprefix(LOAD_PLUGINS_ENV)} (installed: {installed})"
                    if message.startswith(LOAD_PLUGINS_ENV) else message for message in report.messages()]
        if problems:
            pytest.fail("wfkit_registry: " + "; ".join(problems), pytrace=False)
    request.node.stash[_PLUGIN_MANAGER] = pm
    return registry


@pytest.fixture
def wfkit_executor(request: pytest.FixtureRequest, wfkit_database: ThrowawayDatabase,
                   wfkit_registry: Registry) -> Iterator[Executor]:
    """An executor on the test's database and registry; closed after the test (it waits for the runs
    it started in threads)."""
    from wfkit.executor import Executor
    from wfkit.plugins import plugin_observers

    pm = request.node.stash.get(_PLUGIN_MANAGER, None)  # None: a wfkit_registry fixture of the test's own
    observers = plugin_observers(pm) if pm is not None else []
    executor = Executor(wfkit_database.engine, registry=wfkit_registry, observers=observers)
    yield executor
    executor.close()
