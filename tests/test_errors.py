import pytest

from wfkit.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseNotMigratedError,
    InvalidQueryError,
    InvalidStatusError,
    NotFoundError,
    WfkitError,
    WorkflowNotFoundError,
    http_status,
)


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (NotFoundError("x"), 404),
        (WorkflowNotFoundError("x"), 404),
        (InvalidStatusError("x"), 400),
        (InvalidQueryError("x"), 400),
        (DatabaseError("x"), 503),
        (DatabaseNotMigratedError("x"), 503),
        (ConfigurationError("x"), 500),
        (WfkitError("x"), 500),
        (RuntimeError("x"), 500),
    ],
)
def test_http_status(err, status):
    assert http_status(err) == status


def test_family():
    for cls in (NotFoundError, WorkflowNotFoundError, InvalidStatusError, InvalidQueryError, ConfigurationError,
                DatabaseError, DatabaseNotMigratedError):
        assert issubclass(cls, WfkitError)
    assert issubclass(WorkflowNotFoundError, NotFoundError)
