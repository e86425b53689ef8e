"""The runtime: the services a host application hands to workflow factories.

A factory receives a :class:`Runtime` and takes what it needs from it: a
logger, and named services (an HTTP client, a model, a store...) that the host
provided. Asking for a service that was not provided is a clear error naming
the ones that exist.

    runtime = Runtime(services={"mailer": SmtpMailer()})
    def factory(graph, runtime, params):
        mailer = runtime.service("mailer")
        ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from wfkit.errors import ServiceNotFoundError

_MISSING = object()


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
