"""The exception tree: each class's HTTP status, the exit codes derived from it, and the tree
that errors.py's docstring draws."""

import inspect
import re

import pytest

from wfkit import errors
from wfkit.cli.common import exit_code_for
from wfkit.errors import (
    CheckpointError,
    ConfigurationError,
    DatabaseError,
    DatabaseNotMigratedError,
    GraphError,
    InvalidParamsError,
    InvalidQueryError,
    InvalidStatusError,
    LeaseLostError,
    NotFoundError,
    RegistrationError,
    WfkitError,
    WorkflowNotFoundError,
    http_status,
)


@pytest.mark.parametrize(
    ("err", "status", "exit_code"),
    [
        (NotFoundError("x"), 404, 1),
        (WorkflowNotFoundError("x"), 404, 1),
        (InvalidStatusError("x"), 400, 2),
        (InvalidQueryError("x"), 400, 2),
        (LeaseLostError("x"), 409, 1),  # a conflict, not bad input: this process lost its run
        (InvalidParamsError("x"), 400, 2),
        (ConfigurationError("x"), 400, 2),
        (DatabaseError("x"), 503, 1),
        (DatabaseNotMigratedError("x"), 503, 1),
        (RegistrationError("x"), 500, 1),
        (CheckpointError("x"), 500, 1),
        (GraphError("x"), 500, 1),
        (WfkitError("x"), 500, 1),
    ],
)
def test_http_status_and_exit_code(err, status, exit_code):
    assert err.http_status == http_status(err) == status
    assert exit_code_for(err) == exit_code


def test_anything_else_is_a_500():
    assert http_status(RuntimeError("x")) == 500


def _raised(make):
    try:
        make()
    except Exception as err:
        return err
    raise AssertionError("nothing raised")


def test_a_wrapped_wfkit_error_keeps_its_status():
    def wrapped_from():
        try:
            raise NotFoundError("no run")
        except NotFoundError as err:
            raise RuntimeError("the service failed") from err

    def failed_while_handling():
        try:
            raise InvalidQueryError("bad page")
        except InvalidQueryError:
            raise KeyError("a bug in the handler")  # noqa: B904 - the implicit context is the point

    def wrapped_twice():
        try:
            wrapped_from()
        except RuntimeError as err:
            raise ValueError("outer") from err

    def context_suppressed():
        try:
            raise NotFoundError("no run")
        except NotFoundError:
            raise RuntimeError("unrelated") from None

    assert http_status(_raised(wrapped_from)) == 404
    assert http_status(_raised(failed_while_handling)) == 500  # not a wrapping: a bug of its own
    assert http_status(_raised(wrapped_twice)) == 404
    assert http_status(_raised(context_suppressed)) == 500


def test_a_cause_chain_that_loops_ends():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert http_status(a) == 500


def _error_classes() -> dict[str, type]:
    return {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, WfkitError) and cls.__module__ == errors.__name__}


def test_the_docstring_draws_the_tree_as_it_is():
    """Every class once, under its parent, with its status: a new class or status changes the docstring too."""
    drawn: dict[str, tuple[str | None, int]] = {}
    parents: list[tuple[int, str]] = []  # (column, name) of the open branches
    for line in errors.__doc__.splitlines():
        m = re.match(r"^(\s*[|+\- ]*?)(\w+Error)\s+(\d{3})\s", line)
        if not m:
            continue
        column, name, status = len(m.group(1)), m.group(2), int(m.group(3))
        while parents and parents[-1][0] >= column:
            parents.pop()
        drawn[name] = (parents[-1][1] if parents else None, status)
        parents.append((column, name))
    classes = _error_classes()
    assert sorted(drawn) == sorted(classes)
    for name, cls in classes.items():
        parent = next((base.__name__ for base in cls.__bases__ if issubclass(base, WfkitError)), None)
        assert drawn[name] == (parent, cls.http_status), name
