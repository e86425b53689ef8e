"""``wfkit run`` and ``wfkit runs resume|recover|cancel|delete``: execute workflows, with progress as it happens."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from wfkit.cli.common import (
    cli,
    complete_workflows,
    database_url,
    database_url_option,
    durability_option,
    echo_json,
    json_option,
    params_options,
    run_id_argument,
    runs,
    silence_stdout,
    warn_plugin_failures,
    wfkit_command,
    with_database_url,
)
from wfkit.cli.params import parse_params, text_fields_of
from wfkit.errors import WfkitError

#: The signals that stop a run as Ctrl-C does (containers, systemd and Kubernetes send SIGTERM;
#: a closed terminal SIGHUP), with the reason stored on the run.
STOP_SIGNALS = {"SIGTERM": "terminated by SIGTERM", "SIGHUP": "hung up (SIGHUP)"}


class _Progress:
    """Prints each event of a run as one line, as it happens. A stdout whose reader went away
    (``| head``) is not the run's failure: printing stops, the run goes on."""

    def __init__(self, to_stderr: bool):
        self.to_stderr = to_stderr
        self.run_id: Any = None
        self.closed = False

    def on_event(self, event: Any) -> None:
        from wfkit.events import RunStarted, describe

        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        self.echo(describe(event), err=self.to_stderr)

    def echo(self, text: str, err: bool = False) -> None:
        if self.closed and not err:
            return
        try:
            click.echo(text, err=err)
        except BrokenPipeError:
            if err:
                raise
            self.closed = True
            silence_stdout()


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`wfkit.errors.Interrupted` where Ctrl-C raises
    KeyboardInterrupt, so that the run ends cancelled, resumable, as on Ctrl-C. A second one while
    the run is being ended is ignored (the first is being honoured)."""
    from wfkit.errors import Interrupted

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        for other in installed:
            signal.signal(other, signal.SIG_IGN)
        raise Interrupted(name, STOP_SIGNALS[name])

    installed = {getattr(signal, name): None for name in STOP_SIGNALS if hasattr(signal, name)}
    for signum in installed:
        installed[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


def _executor(progress: _Progress | None, durability: str | None) -> Any:
    from wfkit.executor import Executor

    return Executor(database_url(), observers=[progress] if progress is not None else [],
                    durability=None if durability is None else durability.lower())


def _finish(run: Any, as_json: bool, progress: _Progress) -> None:
    """Print the finished run; exit 0 if it completed, else 1."""
    if as_json:
        progress.echo(json.dumps(run.to_dict(), indent=2, ensure_ascii=False))
    else:
        progress.echo(f"status: {run.status.value}")
        if run.result is not None:
            progress.echo(f"result: {json.dumps(run.result, ensure_ascii=False, sort_keys=True)}")
        if run.error_message:
            progress.echo(f"error: {run.error_message}")
        if run.status.value in ("failed", "cancelled"):
            click.echo(f"Resume it with: {wfkit_command('runs', 'resume', str(run.id))}", err=True)
    sys.exit(0 if run.status.value == "completed" else 1)


def _failed_midway(err: Exception, progress: _Progress, executor: Any) -> None:
    """The run could not go on (the database failed under it, say): the error, and how the run
    stands, in one line; exit 1."""
    from wfkit.errors import WfkitError

    from wfkit.errors import LeaseLostError

    if isinstance(err, LeaseLostError):  # another process holds the run now: nothing of ours to say
        click.echo(f"Error: {err}", err=True)
        sys.exit(1)
    rid = progress.run_id
    try:
        status = executor.repository.find_run(rid).status.value
    except WfkitError:
        status = None
    if status == "running" or status is None:
        how = f"it may still say running: {_recoverable(executor)}"
    else:
        how = f"it ended {status}: resume it with `{wfkit_command('runs', 'resume', str(rid))}`"
    click.echo(f"Error: {with_database_url(str(err))} (run {rid}: {how})", err=True)
    sys.exit(1)


def _recoverable(executor: Any) -> str:
    """What to do about a run this process could not end (its database failed under it)."""
    return (f"once its lease expires (within {executor.lease_seconds:g} s) and the database answers, "
            f"`{wfkit_command('runs', 'recover')}` finishes it from its checkpoint")


def _interrupted(err: KeyboardInterrupt, progress: _Progress, executor: Any, as_json: bool) -> None:
    """After Ctrl-C or a stop signal: say how the run stands and how to go on; with --json, stdout
    still gets the run as it ended. Exit 1 after Ctrl-C, 128 + the signal's number after a signal."""
    from wfkit.errors import Interrupted, WfkitError

    name = err.signal_name if isinstance(err, Interrupted) else "Ctrl-C"
    code = 128 + getattr(signal, name) if isinstance(err, Interrupted) else 1
    rid = progress.run_id
    if rid is None:
        click.echo("Interrupted: no run was created." if name == "Ctrl-C" else f"Interrupted ({name}): no run was "
                   "created.", err=True)
        sys.exit(code)
    try:
        run = executor.repository.find_run(rid)
    except WfkitError as read_err:
        click.echo(f"Run {rid} was interrupted ({name}), and how it ended could not be read: {read_err}. "
                   f"See it with: {wfkit_command('runs', 'show', str(rid))}", err=True)
        sys.exit(code)
    if run.status.value == "running":  # the run could not be ended (the database failed meanwhile)
        click.echo(f"Run {rid} was interrupted ({name}) but could not be ended: it still says running; "
                   f"{_recoverable(executor)}.", err=True)
    else:
        click.echo(f"Run {rid} {run.status.value} ({name}). "
                   f"Resume it with: {wfkit_command('runs', 'resume', str(rid))}", err=True)
    if as_json:
        progress.echo(json.dumps(run.to_dict(), indent=2, ensure_ascii=False))
    sys.exit(code)


def _drive(go: Callable[[], Any], progress: _Progress, executor: Any, as_json: bool) -> None:
    """Execute (``go``) with stop signals taken as Ctrl-C, then report how the run ended and exit."""
    from wfkit.errors import LeaseLostError

    try:
        with _stopping_on_signals():
            run = go()
    except KeyboardInterrupt as err:
        _interrupted(err, progress, executor, as_json)
    except WfkitError as err:
        if progress.run_id is None and not isinstance(err, LeaseLostError):  # nothing recorded: the plain error
            raise
        _failed_midway(err, progress, executor)
    _finish(run, as_json, progress)


@cli.command("run")
@click.argument("name", shell_complete=complete_workflows)
@params_options
@durability_option
@json_option
@database_url_option
def run_cmd(name: str, param_pairs: tuple[str, ...], params_json: str | None, durability: str | None,
            as_json: bool) -> None:
    """Run workflow NAME, printing stages and decisions.

    Each stage and decision is printed as it happens. Exit code 0 when the run completes, 1 when it fails or is cancelled. Ctrl-C,
    SIGTERM and SIGHUP cancel the run cleanly (exit 1, 143, 129); `wfkit runs
    resume ID` continues it.
    With --json, stdout holds only the final run (progress goes to stderr).

    Example: wfkit run text-pipeline -p text="Hello, world"
    """
    from wfkit.plugins import get_workflow

    params = parse_params(param_pairs, params_json, text_fields_of(get_workflow(name)))
    progress = _Progress(to_stderr=as_json)
    executor = _executor(progress, durability)
    warn_plugin_failures()
    _drive(lambda: executor.execute(name, params), progress, executor, as_json)


@cli.command("submit")
@click.argument("name", shell_complete=complete_workflows)
@params_options
@click.option("--queue", default=None, metavar="QUEUE", help="The workers' queue to put it in (default: wfkit).")
@click.option("--idempotency-key", default=None, metavar="KEY",
              help="A retried submit with the same key prints the run the first one made.")
@json_option
@database_url_option
def submit_cmd(name: str, param_pairs: tuple[str, ...], params_json: str | None, queue: str | None,
               idempotency_key: str | None, as_json: bool) -> None:
    """Hand a run of workflow NAME to the workers; print its id.

    The run is created pending together with its job (one transaction); a
    `wfkit worker` on any machine executes it. Needs PostgreSQL and the worker
    extra. With --json, the run as JSON.

    Example: wfkit submit text-pipeline -p text="Hello, world"
    """
    from wfkit.executor import Executor
    from wfkit.plugins import get_workflow

    params = parse_params(param_pairs, params_json, text_fields_of(get_workflow(name)))
    with Executor(database_url()) as executor:
        run_id = executor.submit(name, params, idempotency_key=idempotency_key, queue=queue)
        if as_json:
            click.echo(json.dumps(executor.repository.find_run(run_id).to_dict(), indent=2, ensure_ascii=False))
        else:
            click.echo(str(run_id))


@runs.command("resume")
@run_id_argument
@click.option("--force", is_flag=True,
              help="Take over a 'running' run whose lease expired (its process died or stalled); one whose lease "
              "is live is refused.")
@click.option("--submit", is_flag=True,
              help="Hand the resume to the workers (`wfkit worker`, PostgreSQL) and exit at once, instead of "
              "running it here.")
@click.option("--queue", default=None, metavar="QUEUE",
              help="With --submit: the workers' queue to put it in (default: wfkit).")
@durability_option
@json_option
@database_url_option
def runs_resume(run_id: str, force: bool, submit: bool, queue: str | None, durability: str | None,
                as_json: bool) -> None:
    """Continue a failed or cancelled run from its checkpoint.

    Completed nodes are not run again: the run goes on from the last
    checkpoint, with the state it had there. A run another process holds is
    refused, naming it (exit 2). With --submit, a worker continues it: the
    run is pending until one takes it, and its id is printed.

    Example: wfkit runs resume 123e4567-e89b-12d3-a456-426614174000
    """
    if queue is not None and not submit:
        raise click.UsageError("--queue goes with --submit (the workers' queue to resume the run in)")
    if submit:
        if force:
            raise click.UsageError("--force and --submit do not go together: the workers' recovery takes over "
                                   "runs whose lease expired")
        from wfkit.executor import Executor

        with Executor(database_url()) as executor:
            run = executor.submit_resume(executor.repository.resolve_run_id(run_id), queue=queue)
            click.echo(json.dumps(run.to_dict(), indent=2, ensure_ascii=False) if as_json else str(run.id))
        return
    progress = _Progress(to_stderr=as_json)
    executor = _executor(progress, durability)
    rid = executor.repository.resolve_run_id(run_id)
    _drive(lambda: executor.resume(rid, force=force), progress, executor, as_json)


@runs.command("recover")
@click.option("--workflow", "workflow_names", multiple=True, metavar="NAME", shell_complete=complete_workflows,
              help="Only runs of this workflow (comma-separate or repeat for several).")
@click.option("--concurrency", type=click.IntRange(min=1, max=8), default=1, show_default=True,
              help="How many runs to resume at once, each in a thread of its own (at most 8: each holds one of "
              "the connection pool's).")
@durability_option
@json_option
@database_url_option
def runs_recover(workflow_names: tuple[str, ...], concurrency: int, durability: str | None, as_json: bool) -> None:
    """Resume every run whose process is gone (its lease expired).

    Each such run is taken over and finished from its checkpoint, here, one
    after another (or --concurrency at a time). For one machine, run it at
    start-up (a systemd unit, a service's entry point). Exit code 0 when every
    run recovered completed (or there was none), 1 otherwise.

    Example: wfkit runs recover --workflow review-loop
    """
    from wfkit.store.query import parse_workflow_names

    executor = _executor(_Progress(to_stderr=True) if not as_json else None, durability)
    warn_plugin_failures()
    try:
        with _stopping_on_signals():
            recovered = executor.recover(parse_workflow_names(workflow_names), concurrency=concurrency)
    except KeyboardInterrupt as err:
        from wfkit.errors import Interrupted

        name = err.signal_name if isinstance(err, Interrupted) else "Ctrl-C"
        click.echo(f"Interrupted ({name}): the runs being recovered stopped before their next node, cancelled and "
                   f"resumable; the others were not touched. Go on with: {wfkit_command('runs', 'recover')}",
                   err=True)
        sys.exit(128 + getattr(signal, name) if isinstance(err, Interrupted) else 1)
    ok = all(r.run is not None and r.run.status.value == "completed" for r in recovered)
    if as_json:
        echo_json([{"run_id": str(r.run_id), "status": r.run.status.value if r.run else None,
                    "run": r.run.to_dict() if r.run else None, "error": str(r.error) if r.error else None}
                   for r in recovered])
    elif not recovered:
        click.echo("No run to recover: no run's lease has expired.")
    else:
        for r in recovered:
            if r.run is not None:
                line = f"run {r.run_id} ({r.run.workflow_name}): {r.run.status.value}"
                click.echo(line + (f": {r.run.error_message}" if r.run.error_message else ""))
            else:
                click.echo(f"run {r.run_id}: not recovered: {with_database_url(str(r.error))}")
        done = sum(1 for r in recovered if r.run is not None and r.run.status.value == "completed")
        click.echo(f"recovered {done} of {len(recovered)} run{'' if len(recovered) == 1 else 's'}")
    sys.exit(0 if ok else 1)


@runs.command("cancel")
@run_id_argument
@click.option("--force", is_flag=True,
              help="End a 'running' run as cancelled now, whoever holds it (its process, if alive, writes nothing "
              "more and stops).")
@json_option
@database_url_option
def runs_cancel(run_id: str, force: bool, as_json: bool) -> None:
    """Cancel a run, from any terminal.

    A pending run is cancelled at once; a running one stops before its next
    node (a run in its last node completes). --force ends a running run now,
    for when its process is gone or stuck.

    Example: wfkit runs cancel 123e4567-e89b-12d3-a456-426614174000
    """
    from wfkit.executor import RunControl
    from wfkit.executor.control import where_from
    from wfkit.formatting import fmt_when

    command = f"`wfkit runs cancel{' --force' if force else ''}`"
    with RunControl(database_url()) as control:
        rid = control.repository.resolve_run_id(run_id)
        run = control.cancel(rid, force=force, reason=f"{'forced' if force else 'cancel requested'} "
                                                      f"with {command} by {where_from()}")
        expired = control.repository.lease_expired(run.id)  # by the database's clock, as claims are
    if as_json:
        echo_json({**run.to_dict(), "lease_expired": expired})
    elif run.status.value == "cancelled":
        click.echo(f"run {run.id} cancelled")
    elif expired:
        since = f" at {fmt_when(run.lease_expires_at)}" if run.lease_expires_at else ""
        click.echo(f"cancel requested, but no process holds run {run.id} (its lease expired{since}): nothing is "
                   "executing it to stop.")
        click.echo(f"End it now with: {wfkit_command('runs', 'cancel', str(run.id), '--force')}")
    else:
        click.echo(f"cancel requested: {run.owner} stops run {run.id} before its next node "
                   "(a run in its last node completes).")


@runs.command("delete")
@run_id_argument
@click.option("--force", is_flag=True, help="Delete even a run that is 'running' (its process is gone).")
@database_url_option
def runs_delete(run_id: str, force: bool) -> None:
    """Delete a run with its stages, decisions and checkpoint.

    Example: wfkit runs delete 123e4567-e89b-12d3-a456-426614174000
    """
    from wfkit.executor import RunControl

    with RunControl(database_url()) as control:
        rid = control.repository.resolve_run_id(run_id)
        control.delete(rid, force=force)
    click.echo(f"deleted run {rid}")
