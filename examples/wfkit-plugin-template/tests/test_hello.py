"""The hello workflow, executed for real: wfkit's pytest plugin gives each test a migrated
throwaway database (SQLite; PostgreSQL when WFKIT_TEST_POSTGRES_URL names a server), a registry
with this package's plugin loaded as installed (through its entry point), and an executor on both.

    pip install -e ".[test]" && pytest
"""

import pytest
from wfkit.graph import END
from wfkit.testing import assert_decisions, assert_path

# Only this package's plugin, found through the entry point in pyproject.toml: a test then fails if
# the entry point is wrong, and other installed plugins cannot change what it sees.
pytestmark = pytest.mark.wfkit_plugins("my-workflows")


def test_the_plugin_registers_hello(wfkit_registry):
    assert wfkit_registry.names() == ["hello"]
    assert wfkit_registry.get("hello").info.description == "Greet someone, loudly if asked."


def test_a_quiet_greeting_ends_after_greet(wfkit_executor):
    run = wfkit_executor.execute("hello", {"name": "Ada"})
    assert run.status == "completed"
    assert run.result["text"] == "Hello, Ada!"
    assert_path(run, ["greet"])
    # wants_shouting did not hold: the unconditional edge to the end was taken
    assert_decisions(run, [("greet", END, None)])


def test_a_loud_greeting_is_shouted(wfkit_executor):
    run = wfkit_executor.execute("hello", {"name": "Ada", "loud": True})
    assert run.result["text"] == "HELLO, ADA!"
    assert_path(run, ["greet", "shout"])
    assert_decisions(run, [("greet", "shout", "wants_shouting", True), ("shout", END)])


def test_the_history_is_in_the_database(wfkit_executor, wfkit_database):
    run = wfkit_executor.execute("hello", {"loud": True})
    stages = wfkit_database.repository.get_stages(run.id)
    assert [stage.output_snapshot["text"] for stage in stages] == ["Hello, world!", "HELLO, WORLD!"]
