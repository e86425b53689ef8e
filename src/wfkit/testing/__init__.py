"""Testing workflows: a pytest plugin and assertions on a run's history.

wfkit ships a pytest plugin (the ``pytest11`` entry point ``wfkit``, module
:mod:`wfkit.testing.plugin`): wherever wfkit is installed, a test may ask for

- ``wfkit_database``: a migrated throwaway database (:class:`ThrowawayDatabase`: ``.url``,
  ``.backend``, ``.engine``, ``.repository``), a SQLite file in the test's ``tmp_path``, or a
  PostgreSQL database with a random name, dropped after the test, when ``WFKIT_TEST_POSTGRES_URL``
  names a server;
- ``wfkit_registry``: a fresh :class:`~wfkit.Registry` with the installed plugins loaded, or only
  those a ``@pytest.mark.wfkit_plugins("name", ...)`` marker names;
- ``wfkit_executor``: an :class:`~wfkit.Executor` on those two, closed after the test;
- ``wfkit_database_factory``: the session's :class:`ThrowawayDatabases`, for more databases.

:func:`assert_path` and :func:`assert_decisions` check what a run did, as stored.

This package is imported when pytest starts; it imports neither SQLAlchemy nor pydantic until a
fixture or helper is used.
"""

from wfkit.testing.asserts import assert_decisions, assert_path
from wfkit.testing.databases import POSTGRES_URL_ENV, ThrowawayDatabase, ThrowawayDatabases, current_database

__all__ = [
    "POSTGRES_URL_ENV",
    "ThrowawayDatabase",
    "ThrowawayDatabases",
    "assert_decisions",
    "assert_path",
    "current_database",
]
