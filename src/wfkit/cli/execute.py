"""``wfkit run`` and ``wfkit runs resume|cancel|delete``: execute workflows, with progress as it happens."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from wfkit.cli.common import (
    cli,
    database_url,
    database_url_option,
    echo_json,
    json_option,
    params_options,
    parse_params,
    runs,
    warn_plugin_failures,
)


class _Progress:
    """Prints each event of a run as one line, as it happens."""

    def __init__(self, to_stderr: bool):
        self.to_stderr = to_stderr
        self.run_id: Any = None

    def on_event(self, event: Any) -> None:
        from wfkit.events import RunStarted, describe

        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        click.echo(describe(event), err=self.to_stderr)


def _executor(progress: _Progress) -> Any:
    from wfkit.executor import Executor

    return Executor(database_url(), observers=[progress])


def _finish(run: Any, as_json: bool) -> None:
    """Print the finished run; exit 0 if it completed, else 1."""
    if as_json:
        echo_json(run.to_dict())
    else:
        click.echo(f"status: {run.status.value}")
        if run.result is not None:
            click.echo(f"result: {json.dumps(run.result, ensure_ascii=False, sort_keys=True)}")
        if run.error_message:
            click.echo(f"error: {run.error_message}")
        if run.status.value in ("failed", "cancelled"):
            click.echo(f"Resume it with: wfkit runs resume {run.id}", err=True)
    sys.exit(0 if run.status.value == "completed" else 1)


def _interrupted(progress: _Progress, executor: Any, as_json: bool) -> None:
    """After Ctrl-C: say how to resume; with --json, stdout still gets the run as it ended."""
    if progress.run_id is None:
        click.echo("Interrupted.", err=True)
        sys.exit(1)
    click.echo(f"Run {progress.run_id} cancelled (Ctrl-C). Resume it with: wfkit runs resume {progress.run_id}",
               err=True)
    if as_json:
        echo_json(executor.repository.find_run(progress.run_id).to_dict())
    sys.exit(1)


@cli.command("run")
@click.argument("name")
@params_options
@json_option
@database_url_option
def run_cmd(name: str, param_pairs: tuple[str, ...], params_json: str | None, as_json: bool) -> None:
    """Run workflow NAME, printing each stage and decision as it happens.

    Exit code 0 when the run completes, 1 when it fails or is cancelled.
    Ctrl-C cancels the run cleanly; `wfkit runs resume ID` continues it.
    With --json, stdout holds only the final run (progress goes to stderr).
    """
    params = parse_params(param_pairs, params_json)
    progress = _Progress(to_stderr=as_json)
    executor = _executor(progress)
    warn_plugin_failures()
    try:
        run = executor.execute(name, params)
    except KeyboardInterrupt:
        _interrupted(progress, executor, as_json)
    _finish(run, as_json)


@runs.command("resume")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Take over a run left 'running' by a process that is gone.")
@json_option
@database_url_option
def runs_resume(run_id: str, force: bool, as_json: bool) -> None:
    """Continue a failed or cancelled run from its last checkpoint (completed nodes are not re-run)."""
    progress = _Progress(to_stderr=as_json)
    executor = _executor(progress)
    try:
        run = executor.resume(run_id, force=force)
    except KeyboardInterrupt:
        _interrupted(progress, executor, as_json)
    _finish(run, as_json)


@runs.command("cancel")
@click.argument("run_id")
@click.option("--force", is_flag=True,
              help="End a 'running' run as cancelled now, without waiting for its process (use when it is gone).")
@json_option
@database_url_option
def runs_cancel(run_id: str, force: bool, as_json: bool) -> None:
    """Cancel a run: a pending one at once, a running one before its next node (from any terminal)."""
    from wfkit.executor import RunControl
    from wfkit.executor.control import where_from

    command = f"`wfkit runs cancel{' --force' if force else ''}`"
    with RunControl(database_url()) as control:
        run = control.cancel(run_id, force=force, reason=f"{'forced' if force else 'cancel requested'} "
                                                         f"with {command} by {where_from()}")
    if as_json:
        echo_json(run.to_dict())
    elif run.status.value == "cancelled":
        click.echo(f"run {run.id} cancelled")
    else:
        click.echo(f"cancel requested: run {run.id} stops before its next node")


@runs.command("delete")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Delete even a run that is 'running' (its process is gone).")
@database_url_option
def runs_delete(run_id: str, force: bool) -> None:
    """Delete a run with its stages, decisions and checkpoint."""
    from wfkit.executor import RunControl

    with RunControl(database_url()) as control:
        control.delete(run_id, force=force)
    click.echo(f"deleted run {run_id}")
