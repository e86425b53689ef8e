"""The wfkit exception tree. Each class carries the HTTP status that answers it.

Every error wfkit raises on purpose derives from :class:`WfkitError`, so a caller can catch the
whole family with one ``except``. Messages are one line and name the bad value and what is
allowed instead. ``http_status`` is what an HTTP face answers (:func:`http_status` maps any
exception, following what a wrapped exception was raised from); the command line derives its exit
code from it: 2 for bad input (a 4xx status other than 404), 1 for the rest (not found, or a
failure), unless a class says otherwise (``exit_code``)::

    WfkitError                        500  base of the family
    +-- NotFoundError                 404  a run (or other record) that does not exist
    |   +-- WorkflowNotFoundError     404  no workflow registered under that name
    +-- InvalidStatusError            400  a status, or a status change, that is not allowed
    +-- LeaseLostError                409  this process no longer holds the run it was executing
    +-- ConflictError                 409  a request that contradicts one made before (an idempotency key reused)
    +-- AmbiguousRunIdError           409  a short run id that more than one run's id starts with
    +-- InvalidQueryError             400  a bad filter, sort, page or id (also a ValueError)
    |   +-- InvalidParamsError        400  a workflow's params fail its params model
    +-- ConfigurationError            400  a setting or argument wfkit cannot use (also a ValueError)
    +-- DatabaseError                 503  the database cannot answer
    |   +-- DatabaseNotMigratedError  503  ... because its tables are missing or old
    +-- ServerBusyError               503  a server has no room for another run now (try again later)
    +-- RegistrationError             500  a workflow cannot be registered (also a ValueError)
    |   +-- DuplicateWorkflowError    500  ... because its name is taken
    +-- WorkflowBuildError            400  a workflow's factory failed on the params it was given
    +-- StateNotSerializableError     500  a state holds a value JSON cannot represent
    +-- CheckpointError               500  a stored checkpoint cannot be read
    +-- ServiceNotFoundError          500  a factory asked the runtime for a missing service (also a KeyError)
    +-- GraphError                    500  a graph built or walked wrongly
        +-- GraphValidationError      500  ... the problems StateGraph.validate() found
        +-- MaxIterationsError        500  ... a node visited more than max_iterations times
        +-- RouteError                500  ... no edge leaving a node could be chosen (a predicate raised)
        |   +-- NoRouteError          500  ... no edge leaving a node holds
        +-- NodeError                 500  ... a node raised or returned a non-mapping

ConfigurationError is bad input: its values come from whoever runs wfkit (a flag, an
environment variable, an argument). A service checks its settings when it starts, so that
none of them reaches a request.

Outside the family, :class:`Interrupted` (a ``KeyboardInterrupt``) is what wfkit's command line
raises when SIGTERM or SIGHUP arrives, so that a run ends as it does on Ctrl-C.

Standard library only.
"""

from __future__ import annotations


class WfkitError(Exception):
    """Base class of every error wfkit raises on purpose."""

    #: The HTTP status that answers this error (subclasses say theirs).
    http_status: int = 500
    #: The command line's exit code for it, where its HTTP status does not say it (None: derived).
    exit_code: int | None = None


class NotFoundError(WfkitError):
    """A record (a run, say) that was asked for does not exist."""

    http_status = 404


class WorkflowNotFoundError(NotFoundError):
    """No workflow is registered under the name that was asked for."""


class InvalidStatusError(WfkitError):
    """A status value or status transition that is not allowed."""

    http_status = 400


class LeaseLostError(WfkitError):
    """The run this process was executing was taken over by another process (its lease had
    expired), or ended by a forced cancel: this process wrote nothing more and stopped. Not a
    bad request (a conflict), and for the command line a failure (exit code 1)."""

    http_status = 409
    exit_code = 1


class ConflictError(WfkitError):
    """A request that contradicts one made before: an idempotency key given again with another
    workflow or other params."""

    http_status = 409


class AmbiguousRunIdError(WfkitError):
    """A short run id (a prefix of a run's id) that more than one run's id starts with: the message
    names a few of them (``.candidates``: their ids, newest first), and a longer prefix picks one.

    409, not 400: the same prefix was valid, and will be again, depending on which runs the
    database holds; the request is well formed, the database's state makes it ambiguous. For the
    command line it is bad input all the same (exit code 2)."""

    http_status = 409

    def __init__(self, message: str, candidates: tuple[object, ...] = ()):
        super().__init__(message)
        self.candidates = tuple(candidates)

    def __reduce__(self):
        return (type(self), (str(self), self.candidates))


class InvalidQueryError(WfkitError, ValueError):
    """A bad filter, sort, page or id value: the message names it and what is allowed."""

    http_status = 400


class ConfigurationError(WfkitError, ValueError):
    """A setting (from a flag, an environment variable or an argument) has a value wfkit cannot use."""

    http_status = 400


class DatabaseError(WfkitError):
    """The database could not answer: unreachable, or not in the shape wfkit expects."""

    http_status = 503


class DatabaseNotMigratedError(DatabaseError):
    """The database exists but its tables have not been created by ``wfkit db upgrade``."""


class ServerBusyError(WfkitError):
    """A server cannot take another run now (it executes as many as its connections allow, or it is
    stopping): the same request succeeds later, or on another server."""

    http_status = 503


class InvalidParamsError(InvalidQueryError):
    """A workflow's params are malformed or fail its params model: the message names the field."""


class RegistrationError(WfkitError, ValueError):
    """A workflow cannot be registered: a bad name, a bad factory, or a name already taken."""


class DuplicateWorkflowError(RegistrationError):
    """A workflow name is already registered (by the source the message names)."""


class WorkflowBuildError(WfkitError):
    """A workflow's factory failed to build its graph (it raised, or returned no initial state).

    Factories check their params as they build, so that an HTTP client is answered 400 with the
    factory's message (the command line's exit code stays 1: the factory may be what is wrong)."""

    http_status = 400
    exit_code = 1


class CheckpointError(WfkitError):
    """A run's stored checkpoint cannot be used: written in a format this wfkit does not read, or damaged."""


class StateNotSerializableError(WfkitError):
    """A workflow's state (or a node's output) holds a value JSON cannot represent: the message names the key."""


class ServiceNotFoundError(WfkitError, KeyError):
    """A workflow asked the runtime for a service it was not given."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# --- the workflow graph engine (wfkit.graph) ---------------------------------
# These define __reduce__ so they survive pickling (to a worker process and back).


class GraphError(WfkitError):
    """A workflow graph is built or walked wrongly (an unknown node, a predicate that raised...)."""


class GraphValidationError(GraphError):
    """A graph failed :meth:`StateGraph.validate`; ``.problems`` lists every problem, one line each."""

    def __init__(self, problems: list[str], graph_name: str | None = None):
        self.problems = list(problems)
        self.graph_name = graph_name
        what = "graph" if graph_name is None else f"graph {graph_name!r}"
        count = len(self.problems)
        super().__init__(f"{what} is invalid ({count} problem{'' if count == 1 else 's'}): "
                         + "; ".join(self.problems))

    def __reduce__(self):
        return (type(self), (self.problems, self.graph_name))


class MaxIterationsError(GraphError):
    """A node was about to be visited more than the graph's ``max_iterations`` times in one run."""

    def __init__(self, node: str, limit: int):
        self.node = node
        self.limit = limit
        super().__init__(f"node {node!r} would run more than max_iterations={limit} times in one run; "
                         "fix the loop's exit condition, or allow more: registry.register(..., max_iterations=N), "
                         "or graph.set_max_iterations(N) in the factory")

    def __reduce__(self):
        return (type(self), (self.node, self.limit))


class RouteError(GraphError):
    """No edge leaving a node could be chosen, after the node itself completed: ``.node``; a predicate
    that raised is ``.predicate`` (its exception is the ``__cause__``)."""

    def __init__(self, node: str, message: str, predicate: str | None = None):
        self.node = node
        self.predicate = predicate
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.node, str(self), self.predicate))


class NoRouteError(RouteError):
    """No edge leaving a node could be taken: every predicate tried was false (``.tried`` names them)."""

    def __init__(self, node: str, tried: list[str]):
        self.tried = list(tried)
        names = ", ".join(self.tried) if self.tried else "none (the node has no outgoing edges)"
        super().__init__(node, f"no edge from node {node!r} holds; predicates tried: {names}; "
                               "add an unconditional edge last as the fallback", self.tried[-1] if self.tried else None)

    def __reduce__(self):
        return (type(self), (self.node, self.tried))


class NodeError(GraphError):
    """A node raised, or returned something other than a mapping or None.

    ``.node`` and ``.iteration`` say which visit failed; the node's own exception,
    if any, is the ``__cause__``.
    """

    def __init__(self, node: str, iteration: int, detail: str):
        self.node = node
        self.iteration = iteration
        self.detail = detail
        super().__init__(f"node {node!r} (iteration {iteration}) {detail}")

    def __reduce__(self):
        return (type(self), (self.node, self.iteration, self.detail))


class Interrupted(KeyboardInterrupt):
    """A signal that asks the process to stop (SIGTERM, SIGHUP), raised where Ctrl-C raises
    ``KeyboardInterrupt``, so that everything that handles Ctrl-C handles it too."""

    def __init__(self, signal_name: str, reason: str):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.reason = reason


# --------------------------------------------------------------------------- helpers


def error_text(err: BaseException) -> str:
    """``"TypeName: the message"`` on one line (its lines joined; just the type name if there is
    none). ``SystemExit`` says what it is: code that called ``sys.exit``."""
    if isinstance(err, SystemExit):
        return f"called sys.exit({err.code!r})"
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def http_status(err: BaseException) -> int:
    """The HTTP status code that answers ``err``: the ``http_status`` of the first
    :class:`WfkitError` in its chain of causes (``err`` itself, then what it was raised ``from``), so
    that a service wrapping a wfkit error keeps its status; 500 if there is none."""
    found = wfkit_error_in(err)
    return found.http_status if found is not None else 500


def wfkit_error_in(err: BaseException) -> WfkitError | None:
    """The first :class:`WfkitError` among ``err`` and its causes (``raise ... from``); None if there
    is none. An error raised while handling another, without ``from``, is not a wrapping of it: a
    bug in an ``except NotFoundError:`` block is a 500, not the 404 it happened to interrupt."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, WfkitError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None
