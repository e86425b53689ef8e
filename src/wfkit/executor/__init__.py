"""The executor: where the engine and the store meet (see :mod:`wfkit.executor.executor`).

Its names load on first use, so that importing a light part of the package (its checkpoint
format) does not load the database layer.
"""

from typing import Any

__all__ = ["CHECKPOINT_FORMAT", "INTERRUPTED", "Executor", "dumps_state"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from wfkit.executor import executor

        return getattr(executor, name)
    raise AttributeError(f"module 'wfkit.executor' has no attribute {name!r}")
