"""Run control without executing anything: cancel, force-cancel, delete, and the checks before a resume.

It needs only the database, no registry and no graph: ``wfkit runs cancel`` and ``wfkit runs
delete`` use it directly, and so can any service that manages runs it does not execute. The
:class:`~wfkit.executor.Executor` uses it too, adding what only the executing process can do
(stopping its own runs at once).

    from wfkit.executor import RunControl            # or wfkit.RunControl
    control = RunControl("postgresql://wfkit@db.internal/wfkit")
    control.cancel(run_id)            # a running run stops before its next node, wherever it runs
"""

from __future__ import annotations

import getpass
import os
import socket
import uuid

from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, InvalidStatusError
from wfkit.ids import parse_uuid
from wfkit.store.models import Run, RunStatus, check_transition
from wfkit.store.recorder import SqlRecorder
from wfkit.store.repository import Repository

#: What a stage killed by a process that is gone is marked with when its run is taken over.
INTERRUPTED = "interrupted: the process executing this stage stopped before it finished"


def where_from() -> str:
    """Who is asking, from where: ``user on host (pid N)``, for the reasons stored on runs."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name for this uid (a container, say)
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "an unknown user"
    return f"{user} on {socket.gethostname()} (pid {os.getpid()})"


class RunControl:
    """Changes a run's status from outside the process executing it (if any).

    ``database``: an engine, a URL, or None for the configured default (it must be migrated).
    ``repository``: a repository to read through instead (the executor shares its own).
    Use it as a context manager, or call :meth:`close`, to close what it opened.
    """

    def __init__(self, database: Engine | str | None = None, *, repository: Repository | None = None):
        if database is not None and repository is not None:
            raise ConfigurationError("RunControl takes a database or a repository to read through, not both")
        self._own_repository = repository is None
        self.repository = repository if repository is not None else Repository(database)
        self.engine = self.repository.engine

    def close(self) -> None:
        """Close the repository (and engine) this made; one handed in stays open."""
        if self._own_repository:
            self.repository.close()

    def __enter__(self) -> RunControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cancel(self, run_id: uuid.UUID | str, *, force: bool = False, reason: str | None = None) -> Run:
        """Cancel a run: a pending one at once; a running one before its next node (from any process).

        ``force`` ends a running run as cancelled at once, for a run whose process is gone (it would
        otherwise stay ``running``); the stage it left started is marked failed, and the run can be
        resumed. Should its process still be alive, it stops before its next node (or, in its last
        node, completes: its result is kept). Cancelling a finished run is an
        :class:`InvalidStatusError`. ``reason`` is stored on the run (by default: who asked, from
        where). Returns the run as it stands after.
        """
        rid = parse_uuid(run_id)
        if reason is None:
            reason = f"{'forced' if force else 'cancel requested'} by {where_from()}"
        run = self.repository.find_run(rid)
        check_transition(run.status, RunStatus.CANCELLED)
        with SqlRecorder(self.engine) as recorder:
            changed = False
            if run.status is RunStatus.PENDING:  # at once; unless it started meanwhile: then as a running run
                changed = recorder.finish_run(rid, RunStatus.CANCELLED, cancel_reason=reason,
                                              from_status=RunStatus.PENDING) is not None
            if not changed:
                changed = (recorder.force_cancel(rid, INTERRUPTED, reason) if force
                           else recorder.request_cancel(rid, reason))
        now = self.repository.find_run(rid)
        if not changed:  # it moved on meanwhile (it finished): say where it is now
            check_transition(now.status, RunStatus.CANCELLED)
        return now

    def delete(self, run_id: uuid.UUID | str, *, force: bool = False) -> None:
        """Delete a run with its stages, decisions and checkpoint. A running run needs ``force``."""
        rid = parse_uuid(run_id)
        self.repository.find_run(rid)  # NotFoundError if there is none
        with SqlRecorder(self.engine) as recorder:
            deleted = recorder.delete_run(rid, force=force)
        if not deleted:  # it is running (the check and the delete are one statement)
            raise InvalidStatusError(
                f"run {rid} is running: cancel it first (`wfkit runs cancel {rid}`), or, if its process is gone, "
                f"delete it anyway with `wfkit runs delete {rid} --force` (force=True)"
            )

    def check_resume(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """The run, if it may be resumed: a failed or cancelled one, or with ``force`` a running one
        (whose process is gone); else :class:`InvalidStatusError` saying why."""
        run = self.repository.find_run(parse_uuid(run_id))
        if run.status is RunStatus.RUNNING:
            if not force:
                raise InvalidStatusError(
                    f"run {run.id} is running: if no process is executing it any more (it was killed), "
                    f"take it over with `wfkit runs resume {run.id} --force` (force=True)"
                )
        else:
            check_transition(run.status, RunStatus.RUNNING)
        return run

    def interrupt_stages(self, run_id: uuid.UUID | str) -> int:
        """Mark the stages a run left ``started`` (its process died, or their end was not written) as
        failed with :data:`INTERRUPTED`; return how many. For a run about to be resumed, after
        :meth:`check_resume`: a run still executing somewhere would have its live stage marked too."""
        rid = parse_uuid(run_id)
        with SqlRecorder(self.engine) as recorder:
            return recorder.interrupt_stages(rid, INTERRUPTED)
