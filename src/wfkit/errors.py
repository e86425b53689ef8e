"""The wfkit exception family and its mapping to HTTP status codes.

Every error wfkit raises on purpose derives from :class:`WfkitError`, so a
caller can catch the whole family with one ``except``. Messages are one line
and name the bad value and what is allowed instead.
"""

from __future__ import annotations


class WfkitError(Exception):
    """Base class of every error wfkit raises on purpose."""


class NotFoundError(WfkitError):
    """A record (a run, say) that was asked for does not exist."""


class WorkflowNotFoundError(NotFoundError):
    """No workflow is registered under the name that was asked for."""


class InvalidStatusError(WfkitError):
    """A status value or status transition that is not allowed."""


class InvalidQueryError(WfkitError, ValueError):
    """A bad filter, sort, page or id value: the message names it and what is allowed."""


class ConfigurationError(WfkitError, ValueError):
    """A setting (from a flag or an environment variable) has a value wfkit cannot use."""


class DatabaseError(WfkitError):
    """The database could not answer: unreachable, or not in the shape wfkit expects."""


class DatabaseNotMigratedError(DatabaseError):
    """The database exists but its tables have not been created by ``wfkit db upgrade``."""


_HTTP_STATUS: tuple[tuple[type[WfkitError], int], ...] = (
    (NotFoundError, 404),  # WorkflowNotFoundError is a NotFoundError
    (InvalidStatusError, 400),
    (InvalidQueryError, 400),
    (DatabaseError, 503),
)


def http_status(err: BaseException) -> int:
    """The HTTP status code that answers ``err``: 404, 400, 503, else 500."""
    for cls, status in _HTTP_STATUS:
        if isinstance(err, cls):
            return status
    return 500
