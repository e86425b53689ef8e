"""``wfkit runs prune``: delete the finished runs that ended long ago (see :mod:`wfkit.store.retention`)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from wfkit.cli.common import RUN_STATUSES, database_url, database_url_option, echo_json, json_option, plural, runs

#: At most one progress line per this many seconds (the first batch's is printed at once).
PROGRESS_EVERY_S = 1.0


class _Progress:
    """Prints to stderr how far the prune is, once per batch at most every PROGRESS_EVERY_S."""

    def __init__(self) -> None:
        self.last = 0.0
        self.deleted = 0

    def __call__(self, so_far: Any) -> None:
        self.deleted = so_far.deleted
        now = time.monotonic()
        if self.last and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        batches = f"{so_far.batches} batch{'' if so_far.batches == 1 else 'es'}"
        click.echo(f"deleted {so_far.deleted:,} runs so far ({batches}, {so_far.seconds:.1f} s)", err=True)


@runs.command("prune")
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete runs that ended more than AGE ago: a whole number and a unit, s, m, h, d or w "
              "(45s, 90m, 12h, 30d, 2w).")
@click.option("--status", "statuses", multiple=True, metavar="STATUS",
              help="Only runs with this status; repeat or comma-separate for several (completed, failed, cancelled; "
              "default: all three). Pending and running runs are never deleted.")
@click.option("--workflow", "workflow_names", multiple=True, metavar="NAME",
              help="Only runs of this workflow; repeat or comma-separate for several.")
@click.option("--dry-run", is_flag=True, help="Count the runs that would be deleted; delete nothing.")
@click.option("--batch-size", type=click.IntRange(min=1, max=100_000), default=None, metavar="N",
              help="Runs deleted per transaction (default 1000; each batch is one short transaction).")
@json_option
@database_url_option
def runs_prune(older_than: str, statuses: tuple[str, ...], workflow_names: tuple[str, ...], dry_run: bool,
               batch_size: int | None, as_json: bool) -> None:
    """Delete finished runs that ended long ago, with their history.

    Completed, failed and cancelled runs (or those --status names) that
    ended more than --older-than ago go, with their stages, decisions and
    checkpoints, a batch at a time: each batch is its own short
    transaction, so runs being executed meanwhile keep committing their
    steps. Pending and running runs are never deleted. Progress goes to
    stderr; stdout gets the count (--json: one JSON document). Interrupted,
    the batches done stay deleted: run it again to go on.

    Example: wfkit runs prune --older-than 30d --status completed,cancelled
    """
    from wfkit.errors import InvalidQueryError
    from wfkit.store.retention import DEFAULT_BATCH_SIZE, parse_age, prune_runs

    try:
        parse_age(older_than)  # its message, said of the option as the command line names it
    except InvalidQueryError as err:
        raise click.BadParameter(str(err).removeprefix("older_than "), param_hint="'--older-than'") from None
    for given in statuses:  # as `runs list`: the statuses this command knows, named in its help
        if not given.strip():
            raise click.BadParameter(f"is empty: give one of {', '.join(RUN_STATUSES[2:])}",
                                     param_hint="'--status'")
    progress = _Progress()
    try:
        result = prune_runs(database_url(), older_than=older_than, statuses=statuses, workflow_names=workflow_names,
                            dry_run=dry_run, batch_size=batch_size or DEFAULT_BATCH_SIZE, progress=progress)
    except KeyboardInterrupt:
        click.echo(f"Interrupted: deleted {progress.deleted:,} runs before stopping (the batch under way was rolled "
                   "back); run the same command again to go on.", err=True)
        sys.exit(1)
    if as_json:
        echo_json(result.to_dict())
        return
    which = ", ".join(result.statuses) + (f" runs of {', '.join(result.workflow_names)}" if result.workflow_names
                                          else " runs")
    cutoff = result.cutoff.strftime("%Y-%m-%d %H:%M:%SZ")
    if result.dry_run:
        click.echo(f"would delete {result.deleted:,} {which} that ended before {cutoff} (dry run: nothing deleted)")
        return
    jobs = f" and {plural(result.jobs_deleted, 'finished job')} of the workers' queue" if result.jobs_deleted else ""
    click.echo(f"deleted {result.deleted:,} {which} that ended before {cutoff}{jobs}, in "
               f"{result.batches} batch{'' if result.batches == 1 else 'es'} ({result.seconds:.1f} s)")
