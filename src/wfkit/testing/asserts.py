"""Assertions on a run's history, for workflow authors' tests.

    from wfkit.testing import assert_decisions, assert_path

    run = wfkit_executor.execute("triage", {"text": "the server is down"})
    assert_path(run, ["classify", "escalate", "answer"])
    assert_decisions(run, [("classify", "escalate", "is_urgent", True), ("escalate", "answer"), ("answer", END)])
    # END from wfkit.graph (or None): where the run ended

Both read what was stored (the stages and decisions in the database), not what the executor
returned: a test then checks what a resume, the viewer or ``wfkit runs stages`` would see. The run
is a :class:`~wfkit.Run` or its id; the database is the test's ``wfkit_database`` unless
``database=`` names another (an ``Executor``, a ``Repository``, a ``ThrowawayDatabase``, an engine
or a URL). A mismatch fails with both sides and where they part; each helper returns what it read
(the stages, the decisions), for further checks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wfkit.errors import ConfigurationError, NotFoundError
from wfkit.ids import parse_uuid
from wfkit.testing.databases import current_database

if TYPE_CHECKING:
    from wfkit.store.models import Decision, Run, Stage
    from wfkit.store.repository import Repository

def assert_path(run: Run | uuid.UUID | str, expected: Sequence[str], *, database: Any = None) -> list[Stage]:
    """Assert that ``run`` executed exactly the nodes ``expected``, in this order (one name per
    stage: a node run twice appears twice, and a stage that failed or is still running counts).
    Returns the run's stages (without their snapshots)."""
    __tracebackhide__ = True
    if isinstance(expected, str) or not isinstance(expected, Sequence) or \
            not all(isinstance(name, str) for name in expected):
        raise ConfigurationError(f"assert_path expects the path as a list of node names, got {expected!r}")
    with _reading(run, database, "assert_path") as (found, repository):
        stages = repository.get_stages(found.id, fields="summary")
    actual = [stage.node_name for stage in stages]
    if actual == list(expected):
        return stages
    shown = [stage.node_name + ("" if _value(stage.status) == "completed" else f" [{_value(stage.status)}]")
             for stage in stages]
    step = next(i for i in range(max(len(actual), len(expected)))
                if i >= len(actual) or i >= len(expected) or actual[i] != expected[i])
    if step >= len(actual):
        where = f"expected {expected[step]!r}, but the run executed no more nodes"
    elif step >= len(expected):
        where = f"the expected path ends, but the run went on to {actual[step]!r}"
    else:
        where = f"expected {expected[step]!r}, the run executed {actual[step]!r}"
    raise AssertionError("\n".join([
        f"{_describe(found)} took another path:",
        f"  expected: {_arrows(list(expected))}",
        f"  actual:   {_arrows(shown)}",
        f"  they part at step {step + 1}: {where}",
        *_ending(found),
    ]))


def assert_decisions(run: Run | uuid.UUID | str, expected: Sequence[Sequence[Any]], *,
                     database: Any = None) -> list[Decision]:
    """Assert that ``run`` made exactly the routing decisions ``expected``, in this order. Each is
    ``(from_node, to_node)``, ``(from_node, to_node, predicate_name)`` or ``(from_node, to_node,
    predicate_name, predicate_result)``: only the fields given are compared. ``to_node`` is
    ``END`` (or None) for the end; ``predicate_name`` is None for an edge without a predicate.
    Returns the run's decisions."""
    __tracebackhide__ = True
    wanted = _expected_decisions(expected)
    with _reading(run, database, "assert_decisions") as (found, repository):
        decisions = repository.get_decisions(found.id)
    actual = [(d.from_node, d.to_node, d.predicate_name, d.predicate_result) for d in decisions]
    if len(actual) == len(wanted) and all(a[:len(w)] == w for a, w in zip(actual, wanted)):
        return decisions
    step = next(i for i in range(max(len(actual), len(wanted)))
                if i >= len(actual) or i >= len(wanted) or actual[i][:len(wanted[i])] != wanted[i])
    if step >= len(actual):
        where = f"expected {_decision(wanted[step])}, but the run made no more decisions"
    elif step >= len(wanted):
        where = f"the expected decisions end, but the run went on: {_decision(actual[step][:2])}"
    else:  # both sides in the expected one's terms
        where = f"expected {_decision(wanted[step])}, the run decided {_decision(actual[step][:len(wanted[step])])}"
    lines = [f"{_describe(found)} made other decisions:", "  expected:"]
    lines += [f"    {i}. {_decision(w)}" for i, w in enumerate(wanted, 1)] or ["    (none)"]
    lines += ["  actual:"]  # the stored reason names the predicate and how it came out
    lines += [f"    {i}. {_decision(a[:2])}" + (f"  ({d.reason})" if d.reason else "")
              for i, (a, d) in enumerate(zip(actual, decisions), 1)] or ["    (none)"]
    lines += [f"  they part at decision {step + 1}: {where}", *_ending(found)]
    raise AssertionError("\n".join(lines))


# --------------------------------------------------------------------------- reading the run


class _reading:
    """The run (read again, as stored) and a repository to read its history from; a repository
    this made from an engine or URL is closed at the end."""

    def __init__(self, run: Any, database: Any, helper: str):
        self.run, self.database, self.helper = run, database, helper
        self.own: Repository | None = None

    def __enter__(self) -> tuple[Run, Repository]:
        __tracebackhide__ = True
        run_id = parse_uuid(getattr(self.run, "id", self.run))
        repository = self._repository()
        try:
            return repository.find_run(run_id), repository
        except NotFoundError as err:
            self.__exit__()
            raise NotFoundError(f"{err} in {repository!r}: if the run is in another database, "
                                f"name it with {self.helper}(..., database=...)") from None

    def __exit__(self, *exc: object) -> None:
        if self.own is not None:
            self.own.close()
            self.own = None

    def _repository(self) -> Repository:
        database = self.database if self.database is not None else current_database()
        if database is None:
            raise ConfigurationError(
                f"{self.helper} cannot tell which database holds the run: use the wfkit_database fixture "
                "(or wfkit_executor), or pass database= (an Executor, a Repository or a database URL)")
        repository = getattr(database, "repository", None)
        if repository is not None:  # a ThrowawayDatabase, an Executor
            return repository
        if callable(getattr(database, "get_stages", None)):  # a Repository
            return database
        from sqlalchemy.engine import Engine

        if isinstance(database, (str, Engine)):
            from wfkit.store.repository import Repository

            self.own = Repository(database)
            return self.own
        raise ConfigurationError(f"{self.helper}: database= must be an Executor, a Repository, a ThrowawayDatabase, "
                                 f"an engine or a database URL, got {type(database).__name__}")


# --------------------------------------------------------------------------- saying it


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _describe(run: Run) -> str:
    return f"run {run.id} of {run.workflow_name!r} ({_value(run.status)})"


def _ending(run: Run) -> list[str]:
    """A line saying why the run ended, when it did not complete."""
    if run.error_message:
        return [f"  the run {_value(run.status)}: {run.error_message}"]
    if run.cancel_reason:
        return [f"  the run was cancelled: {run.cancel_reason}"]
    return []


def _arrows(names: list[str]) -> str:
    return " -> ".join(names) if names else "(no nodes)"


def _expected_decisions(expected: Any) -> list[tuple[Any, ...]]:
    """``expected`` as tuples, the end spelled None as stored; one line of error for a bad one."""
    if isinstance(expected, str) or not isinstance(expected, Sequence):
        raise ConfigurationError(f"assert_decisions expects a list of decisions such as [('classify', 'escalate')], "
                                 f"got {expected!r}")
    from wfkit.graph import END  # a decision to the end is stored with to_node None; either may be written

    out = []
    for item in expected:
        if isinstance(item, str) or not isinstance(item, Sequence) or not 2 <= len(item) <= 4 \
                or not isinstance(item[0], str) or not (item[1] is None or isinstance(item[1], str)) \
                or (len(item) > 2 and not (item[2] is None or isinstance(item[2], str))) \
                or (len(item) > 3 and not isinstance(item[3], bool)):
            raise ConfigurationError(
                f"assert_decisions: {item!r} is not a decision: expected (from_node, to_node), "
                "(from_node, to_node, predicate_name) or (from_node, to_node, predicate_name, predicate_result)")
        item = tuple(item)
        out.append((item[0], None if item[1] == END else item[1], *item[2:]))
    return out


def _decision(item: tuple[Any, ...]) -> str:
    text = f"{item[0]} -> {'END' if item[1] is None else item[1]}"
    if len(item) == 3:
        text += f" (when {item[2]})" if item[2] is not None else " (no predicate)"
    elif len(item) == 4:
        text += f" (when {item[2]}: {item[3]})" if item[2] is not None else " (no predicate)"
    return text
