"""Run control without executing anything: cancel, force-cancel, delete, prune, and the checks before a resume.

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
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, InvalidStatusError
from wfkit.formatting import fmt_when
from wfkit.ids import parse_uuid
from wfkit.store.models import Run, RunStatus, check_transition
from wfkit.store.recorder import SqlRecorder
from wfkit.store.repository import Repository

#: What a stage killed by a process that is gone is marked with when its run is taken over.
INTERRUPTED = "interrupted: the process executing this stage stopped before it finished"


#: How many times a cancel follows a run that moves between pending and running meanwhile.
_CANCEL_TRIES = 5


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

        ``force`` ends a running run as cancelled at once, whoever holds it: for a run whose process
        is gone (it would otherwise stay ``running`` until recovered). The stage it was executing is
        recorded as failed, its lease epoch is raised (a process still executing it writes nothing
        more and stops), and the run can be resumed. Without ``force``, a run whose lease expired
        (``run.lease_expired``) has no process to stop it: the request is recorded (a recovery would
        honour it), and the caller should say that ``force`` ends it. Cancelling a finished run is an
        :class:`InvalidStatusError`. ``reason`` is stored on the run (by default: who asked, from
        where). Returns the run as it stands after.
        """
        rid = parse_uuid(run_id)
        if reason is None:
            reason = f"{'forced' if force else 'cancel requested'} by {where_from()}"
        run = self.repository.find_run(rid)
        check_transition(run.status, RunStatus.CANCELLED)
        queued = _jobs(self.engine, rid, abort=False)
        # A worker executing it hears of it at once (the queue's abort, by NOTIFY).
        abort = _jobs(self.engine, rid, abort=True)
        with SqlRecorder(self.engine) as recorder:
            # Each statement changes the run only in the status it was read in; if it moved on
            # meanwhile (a pending run started; a stopping worker handed a running one back to the
            # queue, pending again), the cancel follows it. A run that ended is not cancelled.
            for _ in range(_CANCEL_TRIES):
                if run.status is RunStatus.PENDING:
                    changed = recorder.cancel_pending(rid, reason, queued)
                elif force:
                    changed = recorder.force_cancel(rid, INTERRUPTED, reason)
                    if changed and abort is not None:
                        recorder.in_transaction(abort)
                else:
                    changed = recorder.request_cancel(rid, reason, abort)
                run = self.repository.find_run(rid)
                if changed or run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
                    break
        if not changed:  # it moved on meanwhile (it finished): say where it is now
            check_transition(run.status, RunStatus.CANCELLED)
            raise InvalidStatusError(f"run {rid} changed status {_CANCEL_TRIES} times while it was being "
                                     f"cancelled (it is {run.status.value} now): try again")
        return run

    def delete(self, run_id: uuid.UUID | str, *, force: bool = False) -> None:
        """Delete a run with its stages, decisions and checkpoint. A running run needs ``force`` (a
        process still executing it writes nothing more, and stops)."""
        rid = parse_uuid(run_id)
        self.repository.find_run(rid)  # NotFoundError if there is none
        with SqlRecorder(self.engine) as recorder:
            deleted = recorder.delete_run(rid, force=force)
        if not deleted:  # it is running (the check and the delete are one statement)
            if self.repository.lease_expired(rid):
                raise InvalidStatusError(f"run {rid} is running, but no process holds it (its lease expired): delete "
                                         f"it with `wfkit runs delete {rid} --force` (force=True)")
            raise InvalidStatusError(
                f"run {rid} is running: cancel it first (`wfkit runs cancel {rid}`), or delete it anyway with "
                f"`wfkit runs delete {rid} --force` (force=True: its process stops at its next write)"
            )

    def prune(self, *, older_than: Any, statuses: Any = None, workflow_names: Any = (), dry_run: bool = False,
              batch_size: int | None = None, progress: Any = None) -> Any:
        """Delete the finished runs that ended more than ``older_than`` ago, a batch at a time: see
        :func:`wfkit.prune_runs <wfkit.store.retention.prune_runs>`, which this calls on this
        control's database. Returns its :class:`~wfkit.store.retention.PruneResult`."""
        from wfkit.store.retention import DEFAULT_BATCH_SIZE, prune_runs

        return prune_runs(self.engine, older_than=older_than, statuses=statuses, workflow_names=workflow_names,
                          dry_run=dry_run, batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
                          progress=progress)

    def check_resume(self, run_id: uuid.UUID | str, *, force: bool = False) -> Run:
        """The run, if it may be resumed: a failed or cancelled one, a pending one, or with ``force`` a
        running one (whether its lease expired, the claim decides, by the database's clock); else
        :class:`InvalidStatusError` saying why."""
        run = self.repository.find_run(parse_uuid(run_id))
        if run.status is RunStatus.RUNNING:
            if not force:
                raise InvalidStatusError(f"run {run.id} is running, {_held(run)}")
        else:
            check_transition(run.status, RunStatus.RUNNING)
        return run

    def not_claimable(self, run_id: uuid.UUID, holder: tuple[Any, ...] | None, *, force: bool) -> Exception:
        """The error for a claim that found the run held by another process (or moved on)."""
        from wfkit.errors import NotFoundError

        if holder is None:
            return NotFoundError(f"no run with id {run_id}")
        status, owner, attempt, _epoch, expires, _reason = holder
        if status in ("running", "pending") and expires is not None:
            what = "running" if status == "running" else "pending, about to start"
            return InvalidStatusError(
                f"run {run_id} is {what}, held by {owner} (attempt {attempt}) until {fmt_when(expires)}: "
                + ("its lease is live, so it is not taken over; " if force else "")
                + f"wait for it, cancel it (`wfkit runs cancel {run_id}`), or take it over once its lease expires "
                f"(`wfkit runs resume {run_id} --force`)")
        if status == "running":
            return InvalidStatusError(f"run {run_id} is running, {_held_row(run_id, owner, expires)}")
        return InvalidStatusError(f"run {run_id} is {status} now (it changed meanwhile); not resumed")

    def interrupt_stages(self, run_id: uuid.UUID | str) -> int:
        """Mark the stages a run left ``started`` as failed with :data:`INTERRUPTED`; return how many.
        (Only a wfkit from before stage rows were written once leaves such stages: a running stage is
        now shown on its run's row, and recorded failed when its run is taken over.)"""
        rid = parse_uuid(run_id)
        with SqlRecorder(self.engine) as recorder:
            return recorder.interrupt_started_now(rid, INTERRUPTED)


def _jobs(engine: Engine, run_id: uuid.UUID, *, abort: bool) -> Any:
    """What cancels a run's jobs in the workers' queue, if the database has one (else None)."""
    from wfkit.store import queue

    if not queue.has_queue(engine):
        return None
    return queue.cancel_jobs(run_id, abort=abort)


def _held(run: Run) -> str:
    return _held_row(run.id, run.owner, run.lease_expires_at, run.lease_expired)


def _held_row(run_id: uuid.UUID, owner: str | None, expires: Any, expired: bool | None = None) -> str:
    """How a running run is held, and what to do about it, for messages."""
    if expires is None or expired:
        since = "" if expires is None else f" at {fmt_when(expires)}"
        return (f"but no process holds it (its lease expired{since}): take it over with "
                f"`wfkit runs resume {run_id} --force` (force=True), or run `wfkit runs recover`")
    return (f"held by {owner} until {fmt_when(expires)}: wait for it, cancel it (`wfkit runs cancel {run_id}`), "
            f"or take it over once its lease expires (`wfkit runs resume {run_id} --force`)")
