"""``wfkit runs list|show|stages|decisions``: browse run history through the repository."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from wfkit.cli.common import (
    RUN_STATUSES,
    complete_statuses,
    complete_workflows,
    database_url,
    database_url_option,
    echo_json,
    fmt_time,
    fmt_value,
    json_option,
    plural,
    render_table,
    run_id_argument,
    runs,
    with_database_url,
)
from wfkit.formatting import format_ms as fmt_ms

#: How much of a run's params or result `runs show` prints at a terminal (--full: all of it).
SHOW_AT_TERMINAL = 2000


def _read(read: Callable[[Any], Any]) -> Any:
    """``read(repository)`` on a repository for the database in use, closed after (with its engine)."""
    from wfkit.store.repository import Repository

    with Repository(database_url()) as repository:
        return read(repository)


@runs.command("list")
@click.option("--workflow", "workflow_names", multiple=True, metavar="NAME", shell_complete=complete_workflows,
              help="Only runs of this workflow; repeat or comma-separate for several.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    shell_complete=complete_statuses,
    help=f"Only runs with this status; repeat or comma-separate for several ({', '.join(RUN_STATUSES)}).",
)
# Page and page size are read by the same parser as the HTTP API's query (PageRequest.from_query), so
# that both reject a bad value with the same message.
@click.option("--page", default="1", show_default=True, metavar="N", help="Page number, from 1.")
@click.option("--page-size", default=None, metavar="N", help="Runs per page (default 20, at most 100).")
@click.option(
    "--sort",
    "sorts",
    metavar="FIELDS",
    multiple=True,
    help="Fields to sort by, '-' before one for descending; comma-separate or repeat for several, the first "
    "deciding first (default -created_at). Fields: id, workflow_name, status, created_at, updated_at, started_at, "
    "completed_at.",
)
@click.option("--since", metavar="WHEN", help="Only runs created at or after WHEN: an ISO 8601 date or time "
              "(2026-12-01, 2026-12-01T08:00Z; UTC unless it says otherwise), or a time ago (7d, 12h, 30m).")
@click.option("--until", metavar="WHEN", help="Only runs created before WHEN (as --since).")
@click.option("--after", "cursor", metavar="CURSOR", help="The page after the one that printed this cursor "
              "(in place of --page: as fast at any depth as the first page).")
@click.option("--total", "total", type=click.Choice(["exact", "estimate", "none"]), default="exact",
              show_default=True, help="How to count the matching runs: estimate asks PostgreSQL's planner "
              "(SQLite counts), none spares the count.")
@click.option("--full", is_flag=True, help="With --json: each run's params and result too (left out by default).")
@json_option
@database_url_option
def runs_list(
    workflow_names: tuple[str, ...],
    statuses: tuple[str, ...],
    page: str,
    page_size: str | None,
    sorts: tuple[str, ...],
    since: str | None,
    until: str | None,
    cursor: str | None,
    total: str,
    full: bool,
    as_json: bool,
) -> None:
    """List runs, newest first, a page at a time.

    At a terminal, each id is shown short: the fewest of its first digits
    (at least 8) that no other run's id starts with, which every command
    taking a run id accepts. Into a pipe or file, and with --json, whole ids.

    Example: wfkit runs list --status failed --workflow nightly-report --since 7d

    Each page ends with the command that prints the next one (--after CURSOR).
    """
    from wfkit.store.query import PageRequest, RunFilters
    from wfkit.store.repository import SUMMARY_LEFT_OUT

    filters = RunFilters(workflow_name=workflow_names, status=statuses, since=since, until=until)
    query = {"page": page, "sort": list(sorts), **({"page_size": page_size} if page_size is not None else {})}
    request = PageRequest.from_query(query)
    fields = "full" if full and as_json else "summary"
    short = not as_json and sys.stdout.isatty()  # people read short ids; programs get whole ones

    def read(repo: Any) -> Any:
        found = repo.list_runs(request, filters, fields=fields, cursor=cursor, total=total)
        return found, repo.short_ids([run.id for run in found.data]) if short else {}

    result, short_ids = _read(read)
    if request.page_size is not None and result.page_size < request.page_size:
        click.echo(f"Note: page size limited to {result.page_size} (WFKIT_MAX_PAGE_SIZE)", err=True)
    if as_json:
        doc = result.to_dict()
        if fields == "summary":
            doc["data"] = [run.to_dict(exclude=SUMMARY_LEFT_OUT) for run in result.data]
        echo_json(doc)
        return
    if result.data:
        headers: tuple[str, ...] = ("ID", "WORKFLOW", "STATUS", "CREATED", "DURATION")
        rows = [[short_ids.get(r.id, r.id), r.workflow_name, r.status.value, fmt_time(r.created_at),
                 fmt_ms(r.duration_ms)]
                for r in result.data]
        if any(r.status.value == "running" for r in result.data):
            # who executes each running run: a worker's name leads its owner (`wfkit workers`)
            headers += ("HELD BY",)
            for row, r in zip(rows, result.data):
                row.append(r.owner or "-" if r.status.value == "running" else "")
        click.echo(render_table(headers, rows))
    elif result.total == 0 or (cursor is None and result.page == 1):
        click.echo("No runs match these filters." if filters.filtered else "No runs yet.")
    counted = "" if result.total is None else plural(result.total, "run") + (
        " (an estimate)" if result.total_kind == "estimate" else "")
    if result.page is None:  # a page by cursor: its number is not known
        footer = f"{plural(len(result.data), 'run')} after the cursor" + (f" ({counted} in all)" if counted else "")
    elif result.total_pages is None:
        footer = f"page {result.page}"
    else:
        footer = f"page {result.page} of {result.total_pages} ({counted})"
        if result.page > result.total_pages:
            footer += ": past the last page"
    click.echo(footer)
    if result.next_cursor is not None:
        click.echo(f"next page: {_next_command(result.next_cursor, filters)}", err=True)


def _next_command(cursor: str, filters: Any) -> str:
    """The command line that lists the next page: this one, with ``--after CURSOR`` for its page
    (and ``--since``/``--until`` as the times they stood for: ``7d`` means another time later)."""
    import shlex

    args = sys.argv[1:]
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--page", "--after", "--since", "--until"):
            skip = "=" not in arg and i + 1 < len(args)
            continue
        kept.append(arg)
    for name, moment in (("--since", filters.since), ("--until", filters.until)):
        if moment is not None:
            kept += [name, moment.isoformat().replace("+00:00", "Z")]
    return shlex.join(["wfkit", *kept, "--after", cursor])


@runs.command("show")
@run_id_argument
@click.option("--traceback", "with_traceback", is_flag=True,
              help="Also show the traceback of the exception that failed the run's stage, if one did.")
@json_option
@click.option("--full", is_flag=True, help=f"At a terminal, print params and result whole, however long "
              f"(else cut at {SHOW_AT_TERMINAL} characters).")
@click.option("--follow", "-f", is_flag=True, help="Follow the run live until it ends, as `wfkit runs watch` does (with --json: one "
              "event per line).")
@database_url_option
def runs_show(run_id: str, with_traceback: bool, full: bool, follow: bool, as_json: bool) -> None:
    """Show one run: status, times, params, result or error.

    RUN_ID is a whole id, an unambiguous prefix of at least 6 of its hex
    digits, or latest (the newest run).

    Example: wfkit runs show latest --traceback
    """
    if follow:
        if with_traceback or full:
            raise click.UsageError("--follow prints the run's events as they happen: it takes no --traceback or --full")
        from wfkit.cli.watch import watch

        watch(run_id, api=None, as_json=as_json, interval=None)
        return

    def read(repo: Any) -> Any:
        rid = repo.resolve_run_id(run_id)
        return repo.find_run(rid), repo.get_stages(rid) if with_traceback else [], repo.lease_expired(rid)

    run, stages, expired = _read(read)
    failed = next((s for s in reversed(stages) if s.error_traceback), None)
    if as_json:
        doc = {**run.to_dict(), "lease_expired": expired}  # by the database's clock, as claims are
        if with_traceback:
            doc["traceback"] = failed.error_traceback if failed is not None else None
        echo_json(doc)
        return
    rows = [
        ("id", run.id),
        ("workflow", run.workflow_name),
        ("status", run.status.value),
        ("created", fmt_time(run.created_at)),
        ("started", fmt_time(run.started_at)),
        ("completed", fmt_time(run.completed_at)),
        ("updated", fmt_time(run.updated_at)),
        ("duration", fmt_ms(run.duration_ms)),
        ("params", _shown(run.params, full)),
        ("result", "-" if run.result is None else _shown(run.result, full)),
    ]
    if run.attempt or run.owner:
        rows += [("owner", run.owner or "-"), ("attempt", run.attempt),
                 ("lease", with_database_url(_lease(run, expired)))]
    if run.current_node is not None:
        rows.append(("executing", f"{run.current_node} (iteration {run.current_iteration}) since "
                                  f"{fmt_time(run.current_stage_started_at)}"))
    if run.error_message:
        rows.append(("error", run.error_message))
    if run.cancel_reason:
        rows.append(("cancelled" if run.status.value == "cancelled" else "cancel asked", run.cancel_reason))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")
    if with_traceback:
        if failed is None:
            click.echo("\nNo traceback: no stage of this run failed with an exception.")
        else:
            click.echo(f"\ntraceback of {failed.node_name} (iteration {failed.iteration}):\n{failed.error_traceback}")


def _lease(run: Any, expired: bool | None) -> str:
    """A run's lease for people: held until when, or expired (no process holds it), or released."""
    from wfkit.formatting import fmt_when

    if expired is None or (run.lease_expires_at is None and not expired):
        return "released (the run is not executing)" if expired is None else "none yet (waiting for a claim)"
    if expired:
        since = f" at {fmt_when(run.lease_expires_at)}" if run.lease_expires_at else ""
        return (f"expired{since}: no process holds it; `wfkit runs recover` or "
                f"`wfkit runs resume {run.id} --force` takes it over")
    return f"held until {fmt_when(run.lease_expires_at)}"


def _shown(value: Any, full: bool) -> str:
    """A JSON value for `runs show`: whole into a pipe or file, cut at a terminal unless ``full``."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if full or len(text) <= SHOW_AT_TERMINAL or not sys.stdout.isatty():
        return text
    return f"{text[:SHOW_AT_TERMINAL]}... ({len(text) - SHOW_AT_TERMINAL:,} more characters: --full prints them)"


def _echo_related(items: list[Any], as_json: bool, empty: str, headers: tuple[str, ...],
                  row: Callable[[Any], tuple[Any, ...]]) -> None:
    """A run's stages or decisions: JSON, a table, or a line saying there are none."""
    if as_json:
        echo_json([item.to_dict() for item in items])
    elif not items:
        click.echo(empty)
    else:
        click.echo(render_table(headers, (row(item) for item in items)))


@runs.command("stages")
@run_id_argument
@click.option("-v", "--verbose", is_flag=True, help="Show the traceback of each stage that failed with one.")
@json_option
@database_url_option
def runs_stages(run_id: str, verbose: bool, as_json: bool) -> None:
    """List a run's stages (node executions), oldest first.

    Example: wfkit runs stages 0194a3b2-7c1 -v
    """
    stages = _read(lambda repo: repo.get_stages(repo.resolve_run_id(run_id)))
    _echo_related(
        stages, as_json, "This run has no stages yet.",
        ("NODE", "ITER", "STATUS", "DURATION", "STARTED", "OUTPUT / ERROR"),
        lambda s: (s.node_name, s.iteration, s.status.value, fmt_ms(s.duration_ms), fmt_time(s.created_at),
                   fmt_value(s.error_message or s.output_snapshot)),
    )
    if verbose and not as_json:
        for stage in stages:
            if stage.error_traceback:
                click.echo(f"\n{stage.node_name} (iteration {stage.iteration}) failed:\n{stage.error_traceback}")


@runs.command("decisions")
@run_id_argument
@json_option
@database_url_option
def runs_decisions(run_id: str, as_json: bool) -> None:
    """List a run's routing decisions, oldest first.

    Example: wfkit runs decisions 123e4567-e89b-12d3-a456-426614174000 --json
    """
    _echo_related(
        _read(lambda repo: repo.get_decisions(repo.resolve_run_id(run_id))), as_json, "This run has no decisions yet.",
        ("FROM", "TO", "PREDICATE", "RESULT", "AT", "REASON"),
        lambda d: (d.from_node, d.to_node or ("END" if d.predicate_result else "(no route)"), d.predicate_name or "-",
                   str(d.predicate_result).lower(),
                   fmt_time(d.created_at), fmt_value(d.reason)),
    )
