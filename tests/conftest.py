"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from ``WFKIT_TEST_POSTGRES_URL`` (an admin URL such as
``postgresql://postgres@127.0.0.1:5432/postgres``; ``.ci/run`` sets it). Each
test session creates throwaway databases with random names there and drops
them at the end. If the variable is set but the server cannot be reached, the
PostgreSQL tests fail. If it is unset, they are skipped on a developer's
machine and fail in CI (``CI`` set), where PostgreSQL is part of the contract.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa

from wfkit.plugins import load_plugins
from wfkit.registry import Registry
from wfkit.store import migrations
from wfkit.store.db import create_engine
from wfkit.store.models import TABLES
from wfkit.store.repository import Repository

PG_ENV = "WFKIT_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def _pg_admin_url() -> str:
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must run every database test on PostgreSQL too")
        # Reason: a contributor without PostgreSQL still runs the SQLite half.
        pytest.skip(f"set {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/postgres) to run on PostgreSQL")
    return url


class Databases:
    """Creates throwaway databases (a SQLite file, or a PostgreSQL database with a random name)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.pg_created: list[tuple[str, str]] = []

    def new(self, backend: str) -> str:
        name = f"wfkit_test_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / (name + '.db')}"
        admin = sa.make_url(_pg_admin_url()).set(drivername="postgresql+psycopg")
        _on_server(admin, f'CREATE DATABASE "{name}"')
        self.pg_created.append((admin.render_as_string(hide_password=False), name))
        return admin.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        for admin, name in self.pg_created:
            _on_server(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _on_server(admin_url: Any, statement: str) -> None:
    """One statement outside a transaction (CREATE / DROP DATABASE), on a connection of its own."""
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def empty_url(backend: str, databases: Databases) -> str:
    """A new, empty database of its own (for migration tests)."""
    return databases.new(backend)


@pytest.fixture(scope="session")
def migrated_url(backend: str, databases: Databases) -> str:
    url = databases.new(backend)
    migrations.upgrade(url)
    return url


@pytest.fixture
def db_url(migrated_url: str) -> str:
    """A migrated database with every wfkit table emptied before the test."""
    engine = create_engine(migrated_url)
    try:
        with engine.begin() as conn:
            for table in reversed(TABLES):
                conn.execute(sa.delete(table.__table__))
    finally:
        engine.dispose()
    return migrated_url


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def repo(engine: sa.Engine) -> Repository:
    return Repository(engine)


@pytest.fixture
def pg_url(databases: Databases) -> str:
    """A migrated PostgreSQL database of its own, for what only PostgreSQL has (server processes)."""
    url = databases.new("postgresql")
    migrations.upgrade(url)
    return url


@pytest.fixture
def sqlite_url(databases: Databases) -> str:
    """A migrated SQLite database of its own, for what only SQLite does (statement-by-statement steps)."""
    url = databases.new("sqlite")
    migrations.upgrade(url)
    return url


@pytest.fixture
def new_database(backend: str, databases: Databases) -> Callable[[], str]:
    """Make more empty databases of the current backend."""
    return lambda: databases.new(backend)


PLUGIN_PACKAGES = Path(__file__).parent / "plugin_packages"
PLUGIN_TEMPLATE = Path(__file__).parents[1] / "examples" / "wfkit-plugin-template"


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture plugin packages (and the plugin template), each built as a wheel and
    pip-installed into a directory of its own: put one on PYTHONPATH to have it installed."""
    tmp = tmp_path_factory.mktemp("plugins")
    sources = {p.name: p for p in sorted(PLUGIN_PACKAGES.iterdir()) if (p / "pyproject.toml").exists()}
    sources["template"] = PLUGIN_TEMPLATE
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         *map(str, sources.values())],
        check=True, capture_output=True,
    )
    targets = {}
    for name in sources:
        pattern = "my_workflows-*.whl" if name == "template" else f"wfkit_test_{name.replace('-', '_')}-*.whl"
        wheel = next((tmp / "dist").glob(pattern))
        target = tmp / "site" / name
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
            check=True, capture_output=True,
        )
        targets[name] = target
    return targets


@pytest.fixture(scope="session")
def samples() -> Registry:
    """A registry with the sample workflows (plugins/wfkit-samples, installed in the test environment)."""
    registry = Registry()
    report = load_plugins(registry, environ={"WFKIT_LOAD_PLUGINS": "samples"})
    assert [p.name for p in report.plugins if p.loaded] == ["samples"], report.messages()
    return registry


# --------------------------------------------------------------------------- running the command line

#: The installed console script of the environment the tests run in.
WFKIT = str(Path(sys.executable).with_name("wfkit"))


class CliResult(NamedTuple):
    """What a command did, in the shape of ``subprocess.CompletedProcess`` whichever way it ran."""

    returncode: int
    stdout: str
    stderr: str


class WfkitCli:
    """Runs ``wfkit`` for a test, with the caller's ``WFKIT_*`` settings removed and ``env`` set.

    :meth:`run` and :meth:`start` run the real console script in a subprocess (for exit codes,
    signals, entry points: what only a process shows); :meth:`invoke` runs it in this process
    through Click's ``CliRunner``, for tests that only read what a command prints. ``url=`` is short
    for ``WFKIT_DATABASE_URL``.
    """

    def __init__(self, env: dict[str, str] | None = None):
        self.env = dict(env or {})

    def using(self, **env: str) -> WfkitCli:
        """The same runner with more settings."""
        return WfkitCli({**self.env, **env})

    def environ(self, url: str | None = None, env: dict[str, str] | None = None) -> dict[str, str]:
        """The whole environment a subprocess gets."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("WFKIT_")}
        environ.update(self.env)
        if url:
            environ["WFKIT_DATABASE_URL"] = url
        environ.update(env or {})
        return environ

    def run(self, *args: str, url: str | None = None, env: dict[str, str] | None = None, timeout: float = 60,
            **popen: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WFKIT, *args], capture_output=True, text=True, env=self.environ(url, env),
                              timeout=timeout, **popen)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([WFKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.environ())

    def python(self, *args: str, url: str | None = None, env: dict[str, str] | None = None,
               timeout: float = 60, **popen: Any) -> subprocess.CompletedProcess[str]:
        """``python ARGS`` (``-c code``, ``-m module``, a script) in the same environment as :meth:`run`."""
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=self.environ(url, env),
                              timeout=timeout, **popen)

    def invoke(self, *args: str, url: str | None = None, env: dict[str, str] | None = None) -> CliResult:
        from click.testing import CliRunner

        from wfkit.cli import cli

        changes: dict[str, str | None] = {k: None for k in os.environ if k.startswith("WFKIT_")}
        changes.update(self.env)
        if url:
            changes["WFKIT_DATABASE_URL"] = url
        changes.update(env or {})
        result = CliRunner().invoke(cli, list(args), prog_name="wfkit", env=changes)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a traceback a user would have seen: the test fails with it
        return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def wfkit_cli() -> WfkitCli:
    return WfkitCli()


@pytest.fixture
def steps_cli(wfkit_cli: WfkitCli, db_url: str, installed_plugins: dict[str, Path], tmp_path: Path) -> WfkitCli:
    """``wfkit`` with the fixture plugin ``steps`` installed, on the test's database; its markers in
    ``tmp_path / "markers"``."""
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    return wfkit_cli.using(PYTHONPATH=str(installed_plugins["steps"]), WFKIT_DATABASE_URL=db_url,
                           WFKIT_LOAD_PLUGINS="steps", WFKIT_TEST_MARKERS=str(markers))
