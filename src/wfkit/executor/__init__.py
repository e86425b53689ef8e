"""The executor: where the engine and the store meet.

- :mod:`wfkit.executor.executor`: :class:`Executor`, which creates, walks and finishes runs.
- :mod:`wfkit.executor.run_loop`: one run's bookkeeping around each step.
- :mod:`wfkit.executor.checkpoints`: the checkpoint format (a walk's snapshot as stored).
- :mod:`wfkit.executor.control`: :class:`RunControl`: cancel, force-cancel, delete and resume
  checks, with the database only.

``Executor`` and ``RunControl`` are importable from here. They load on first use (PEP 562), so
that ``wfkit runs cancel``, which needs run control only, does not load the executor, the graph
engine or the plugin machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Executor", "RunControl"]
_HOMES = {"Executor": "wfkit.executor.executor", "RunControl": "wfkit.executor.control"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'wfkit.executor' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


if TYPE_CHECKING:
    from wfkit.executor.control import RunControl
    from wfkit.executor.executor import Executor
