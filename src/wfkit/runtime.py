"""The runtime: the services a host application hands to workflow factories.

A factory receives a :class:`Runtime` and takes what it needs from it: a
logger, and named services (an HTTP client, a model, a store...) that the host
provided. Asking for a service that was not provided is a clear error naming
the ones that exist.

    runtime = Runtime(services={"mailer": SmtpMailer()})
    def factory(graph, runtime, params):
        mailer = runtime.service("mailer")
        ...

While a node runs under an executor, the runtime also says which execution it is
part of, so that a node can make its own side effects safe to repeat (a node
interrupted by a crash runs again when its run resumes):

- :attr:`Runtime.idempotency_key`: the same for a run, node and iteration across
  every attempt (``"<run id>:<node>:<iteration>"``): pass it to a payment API,
  or use it as a unique key of the row the node writes, and a repeated execution
  is recognised as the same one;
- :attr:`Runtime.fencing_token`: the run's lease epoch, which grows at every
  claim: a store that keeps the highest token it has seen and refuses writes
  with a lower one is safe from a process that lost the run but does not know
  it yet.

Both are None outside a node (in the factory, or in a walk with no executor).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any, NamedTuple

from wfkit.errors import ServiceNotFoundError

_MISSING = object()


class NodeExecution(NamedTuple):
    """The node being executed in this context: run, node, iteration, attempt and fencing token.
    (A named tuple: one is made for every step.)"""

    run_id: uuid.UUID
    node: str
    iteration: int
    attempt: int
    fencing_token: int

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.node}:{self.iteration}"


# A context variable, not an attribute: one runtime serves every run of an executor, in threads
# and tasks at once; each node sees its own execution (a task copies the context it starts in).
_EXECUTION: ContextVar[NodeExecution | None] = ContextVar("wfkit_node_execution", default=None)


@contextlib.contextmanager
def executing(execution: NodeExecution) -> Iterator[None]:
    """Within this block (and tasks started in it), :class:`Runtime` reports ``execution``."""
    token = _EXECUTION.set(execution)
    try:
        yield
    finally:
        _EXECUTION.reset(token)


def set_execution(execution: NodeExecution | None) -> None:
    """Set the node execution of the current context (the executor's hot path: no block to leave)."""
    _EXECUTION.set(execution)


class Runtime(Mapping[str, Any]):
    """Named services plus a logger. Read-only once made; :meth:`with_services` makes a new one."""

    def __init__(self, services: Mapping[str, Any] | None = None, *, logger: logging.Logger | None = None):
        self._services: dict[str, Any] = dict(services or {})
        self.logger: logging.Logger = logger or logging.getLogger("wfkit.workflow")

    def service(self, name: str, default: Any = _MISSING) -> Any:
        """The service called ``name``; without a ``default``, a missing one is :class:`ServiceNotFoundError`."""
        try:
            return self._services[name]
        except KeyError:
            if default is not _MISSING:
                return default
            available = ", ".join(sorted(self._services)) or "none"
            raise ServiceNotFoundError(f"no service named {name!r} in the runtime; available services: {available}") from None

    @property
    def execution(self) -> NodeExecution | None:
        """The node execution this code runs in (None outside a node)."""
        return _EXECUTION.get()

    @property
    def fencing_token(self) -> int | None:
        """The lease epoch of the run whose node is executing: it grows at every claim of the run, so
        a higher token is a later holder (None outside a node)."""
        execution = _EXECUTION.get()
        return None if execution is None else execution.fencing_token

    @property
    def idempotency_key(self) -> str | None:
        """A key stable for this run, node and iteration across attempts (None outside a node)."""
        execution = _EXECUTION.get()
        return None if execution is None else execution.idempotency_key

    def __getitem__(self, name: str) -> Any:
        return self.service(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._services)

    def __len__(self) -> int:
        return len(self._services)

    def with_services(self, **services: Any) -> Runtime:
        """A new runtime with these services added (or replaced), and the same logger."""
        return Runtime({**self._services, **services}, logger=self.logger)

    def __repr__(self) -> str:
        return f"Runtime(services={sorted(self._services)}, logger={self.logger.name!r})"
