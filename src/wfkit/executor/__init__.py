"""The executor: where the engine and the store meet.

- :mod:`wfkit.executor.executor`: :class:`Executor`, which creates, walks and finishes runs.
- :mod:`wfkit.executor.run_loop`: one run's bookkeeping around each step.
- :mod:`wfkit.executor.checkpoints`: the checkpoint format (a walk's snapshot as stored).
- :mod:`wfkit.executor.control`: cancel, force-cancel, delete and resume checks (database only).
"""

from wfkit.executor.executor import Executor

__all__ = ["Executor"]
