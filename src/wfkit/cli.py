"""The ``wfkit`` command line: parse, call the library, print.

Heavy modules (SQLAlchemy, SQLModel, Alembic, pydantic) are imported inside
the commands that need them, so ``wfkit --help`` stays fast.

Errors from the library become one line on stderr: exit code 2 for bad input
(a bad status, sort field, id, revision or setting), 1 for everything else
(not found, database unreachable or not migrated).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import click

from wfkit.errors import ConfigurationError, InvalidQueryError, InvalidStatusError, WfkitError
from wfkit.formatting import format_ms as fmt_ms

BAD_INPUT_ERRORS = (InvalidQueryError, InvalidStatusError, ConfigurationError)
RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
_URL_KEY = "wfkit.database_url"


def exit_code_for(err: WfkitError) -> int:
    """2 for bad input, 1 for everything else."""
    return 2 if isinstance(err, BAD_INPUT_ERRORS) else 1


class WfkitGroup(click.Group):
    """A group that turns wfkit errors into one stderr line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WfkitError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(exit_code_for(err))


def _remember_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        ctx.meta[_URL_KEY] = value


def database_url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--database-url``, accepted before or after the subcommand (the later one wins)."""
    return click.option(
        "--database-url",
        metavar="URL",
        expose_value=False,
        callback=_remember_url,
        help="Database URL (default: $WFKIT_DATABASE_URL, else the per-user SQLite file; see `wfkit db path`).",
    )(fn)


def _database_url() -> str | None:
    return click.get_current_context().meta.get(_URL_KEY)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")(fn)


# --------------------------------------------------------------------------- rendering


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def fmt_value(value: Any, width: int = 60) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows under headers, each column as wide as its widest cell."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------- commands


@click.group(cls=WfkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wfkit", prog_name="wfkit")
@database_url_option
def cli() -> None:
    """wfkit: stateful workflows whose history lives in SQL.

    Configuration: --database-url, else WFKIT_DATABASE_URL, else a SQLite file
    in your user data directory. WFKIT_DEFAULT_PAGE_SIZE and WFKIT_MAX_PAGE_SIZE
    set listing page sizes (20 and 100 by default).
    """


@cli.group(cls=WfkitGroup)
def runs() -> None:
    """Browse run history: list runs, show one, its stages and decisions."""


def _repository() -> Any:
    from wfkit.repository import Repository

    return Repository(_database_url())


@runs.command("list")
@click.option("--workflow", "workflow_name", metavar="NAME", help="Only runs of this workflow.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATUS",
    help=f"Only runs with this status; repeat or comma-separate for several ({', '.join(RUN_STATUSES)}).",
)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True, help="Page number, from 1.")
@click.option(
    "--page-size", type=click.IntRange(min=1), default=None, help="Runs per page (default 20, at most 100)."
)
@click.option(
    "--sort",
    metavar="FIELDS",
    default=None,
    help="Comma-separated fields, '-' for descending (default -created_at). "
    "Fields: id, workflow_name, status, created_at, updated_at, started_at, completed_at.",
)
@json_option
@database_url_option
def runs_list(
    workflow_name: str | None,
    statuses: tuple[str, ...],
    page: int,
    page_size: int | None,
    sort: str | None,
    as_json: bool,
) -> None:
    """List runs, newest first, a page at a time."""
    from wfkit.query import PageRequest, RunFilters

    filters = RunFilters(workflow_name=workflow_name, status=statuses)
    request = PageRequest(page=page, page_size=page_size, sort=sort)
    result = _repository().list_runs(request, filters)
    if as_json:
        echo_json(result.to_dict())
        return
    if result.data:
        click.echo(
            render_table(
                ("ID", "WORKFLOW", "STATUS", "CREATED", "DURATION"),
                (
                    (r.id, r.workflow_name, r.status.value, fmt_time(r.created_at), fmt_ms(r.duration_ms))
                    for r in result.data
                ),
            )
        )
    elif result.total == 0:
        filtered = filters.workflow_name is not None or filters.status
        click.echo("No runs match these filters." if filtered else "No runs yet.")
    footer = f"page {result.page} of {result.total_pages} ({_plural(result.total, 'run')})"
    if result.page > result.total_pages:
        footer += ": past the last page"
    click.echo(footer)


@runs.command("show")
@click.argument("run_id")
@json_option
@database_url_option
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run: status, times, params, result or error."""
    run = _repository().find_run(run_id)
    if as_json:
        echo_json(run.to_dict())
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
        ("params", json.dumps(run.params, ensure_ascii=False, sort_keys=True)),
        ("result", "-" if run.result is None else json.dumps(run.result, ensure_ascii=False, sort_keys=True)),
    ]
    if run.error_message:
        rows.append(("error", run.error_message))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@runs.command("stages")
@click.argument("run_id")
@json_option
@database_url_option
def runs_stages(run_id: str, as_json: bool) -> None:
    """List a run's stages (node executions), oldest first."""
    stages = _repository().get_stages(run_id)
    if as_json:
        echo_json([s.to_dict() for s in stages])
        return
    if not stages:
        click.echo("This run has no stages yet.")
        return
    click.echo(
        render_table(
            ("NODE", "ITER", "STATUS", "DURATION", "STARTED", "OUTPUT / ERROR"),
            (
                (
                    s.node_name,
                    s.iteration,
                    s.status.value,
                    fmt_ms(s.duration_ms),
                    fmt_time(s.created_at),
                    fmt_value(s.error_message or s.output_snapshot),
                )
                for s in stages
            ),
        )
    )


@runs.command("decisions")
@click.argument("run_id")
@json_option
@database_url_option
def runs_decisions(run_id: str, as_json: bool) -> None:
    """List a run's routing decisions, oldest first."""
    decisions = _repository().get_decisions(run_id)
    if as_json:
        echo_json([d.to_dict() for d in decisions])
        return
    if not decisions:
        click.echo("This run has no decisions yet.")
        return
    click.echo(
        render_table(
            ("FROM", "TO", "PREDICATE", "RESULT", "AT", "REASON"),
            (
                (
                    d.from_node,
                    d.to_node or "END",
                    d.predicate_name or "-",
                    str(d.predicate_result).lower(),
                    fmt_time(d.created_at),
                    fmt_value(d.reason),
                )
                for d in decisions
            ),
        )
    )


# --------------------------------------------------------------------------- workflows and plugins


def parse_params(pairs: Sequence[str], params_json: str | None) -> dict[str, Any]:
    """``--params-json`` then ``-p key=value`` pairs (values are JSON if they parse, else strings)."""
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except json.JSONDecodeError as err:
            raise click.BadParameter(f"not valid JSON ({err.msg} at position {err.pos})", param_hint="'--params-json'")
        if not isinstance(loaded, dict):
            raise click.BadParameter(
                f"must be a JSON object, got {type(loaded).__name__}", param_hint="'--params-json'"
            )
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="'-p' / '--param'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip()] = value
    return params


def params_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--params-json", metavar="JSON", default=None, help="The workflow's params as one JSON object."
    )(fn)
    return click.option(
        "-p",
        "--param",
        "param_pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="One param (repeatable); VALUE is read as JSON if it parses (3, true, [1,2]), else as text.",
    )(fn)


def _warn_plugin_failures() -> None:
    from wfkit.plugins import plugin_report

    for message in plugin_report().messages():
        click.echo(f"Warning: {message}", err=True)


@cli.command("list-workflows")
@json_option
def list_workflows_cmd(as_json: bool) -> None:
    """List the workflows that installed plugins register."""
    from wfkit.registry import list_workflows

    workflows = list_workflows()
    _warn_plugin_failures()
    if as_json:
        echo_json([w.to_dict() for w in workflows])
        return
    if not workflows:
        click.echo(
            "No workflows are registered.\n"
            "Install a package that ships wfkit workflows (for example: pip install ./plugins/wfkit-samples),\n"
            "or write one: a module with a `wfkit_register_workflows(registry)` hook, named by an entry point\n"
            "in the group 'wfkit' (see examples/wfkit-plugin-template). `wfkit plugins` shows what was found."
        )
        return
    click.echo(render_table(("NAME", "DESCRIPTION", "PLUGIN"), ((w.name, w.description, w.plugin) for w in workflows)))


@cli.command("plugins")
@json_option
def plugins_cmd(as_json: bool) -> None:
    """List the installed plugins: distribution, hooks, workflows, and errors."""
    from wfkit.plugins import plugin_report

    report = plugin_report()
    if as_json:
        echo_json({"plugins": [p.to_dict() for p in report.plugins], "warnings": report.warnings})
        return
    for message in report.warnings:
        click.echo(f"Warning: {message}", err=True)
    if not report.plugins:
        click.echo("No plugins are installed (entry-point group 'wfkit').")
        return
    for p in report.plugins:
        state = "loaded" if p.loaded else ("FAILED" if p.error else "not loaded (WFKIT_LOAD_PLUGINS)")
        click.echo(f"{p.name}: {state}")
        click.echo(f"  distribution  {p.distribution or '-'} {p.version or ''}".rstrip())
        click.echo(f"  module        {p.module}")
        click.echo(f"  hooks         {', '.join(p.hooks) or '-'}")
        click.echo(f"  workflows     {', '.join(p.workflows) or '-'}")
        if p.error:
            click.echo(f"  error         {p.error}")


@cli.command("graph")
@click.argument("name")
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "json"]), default="mermaid", show_default=True,
    help="Output format.",
)
@params_options
def graph_cmd(name: str, fmt: str, param_pairs: tuple[str, ...], params_json: str | None) -> None:
    """Show the graph that workflow NAME builds (with default params, or those given)."""
    from wfkit.registry import get_workflow

    params = parse_params(param_pairs, params_json)
    workflow = get_workflow(name)
    _warn_plugin_failures()
    graph, _state = workflow.build(params)
    if fmt == "json":
        echo_json(graph.to_dict())
    else:
        click.echo(graph.to_mermaid())


# --------------------------------------------------------------------------- executing


class _Progress:
    """Prints each event of a run as one line, as it happens."""

    def __init__(self, err: bool):
        self.err = err
        self.run_id: Any = None

    def on_event(self, event: Any) -> None:
        from wfkit.events import RunStarted, describe

        if isinstance(event, RunStarted):
            self.run_id = event.run_id
        click.echo(describe(event), err=self.err)


def _executor(progress: _Progress) -> Any:
    from wfkit.executor import Executor

    return Executor(_database_url(), observers=[progress])


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


def _interrupted(progress: _Progress) -> None:
    if progress.run_id is not None:
        click.echo(f"Run {progress.run_id} cancelled (Ctrl-C). Resume it with: wfkit runs resume {progress.run_id}",
                   err=True)
    else:
        click.echo("Interrupted.", err=True)
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
    progress = _Progress(err=as_json)
    executor = _executor(progress)
    _warn_plugin_failures()
    try:
        run = executor.execute(name, params)
    except KeyboardInterrupt:
        _interrupted(progress)
    _finish(run, as_json)


@runs.command("resume")
@click.argument("run_id")
@click.option("--force", is_flag=True, help="Take over a run left 'running' by a process that is gone.")
@json_option
@database_url_option
def runs_resume(run_id: str, force: bool, as_json: bool) -> None:
    """Continue a failed or cancelled run from its last checkpoint (completed nodes are not re-run)."""
    progress = _Progress(err=as_json)
    executor = _executor(progress)
    try:
        run = executor.resume(run_id, force=force)
    except KeyboardInterrupt:
        _interrupted(progress)
    _finish(run, as_json)


@runs.command("cancel")
@click.argument("run_id")
@json_option
@database_url_option
def runs_cancel(run_id: str, as_json: bool) -> None:
    """Cancel a run: a pending one at once, a running one before its next node (from any terminal)."""
    from wfkit.executor import Executor
    from wfkit.registry import Registry

    run = Executor(_database_url(), registry=Registry()).cancel(run_id)
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
    from wfkit.executor import Executor
    from wfkit.registry import Registry

    Executor(_database_url(), registry=Registry()).delete(run_id, force=force)
    click.echo(f"deleted run {run_id}")


# --------------------------------------------------------------------------- db


@cli.group(cls=WfkitGroup)
def db() -> None:
    """Create and migrate the database schema."""


def _where() -> str:
    from wfkit.db import display_url, normalize_url, resolve_database_url

    return display_url(normalize_url(resolve_database_url(_database_url())))


@db.command("upgrade")
@click.argument("revision", default="head")
@database_url_option
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head, the newest).

    Creates the database (a SQLite file) and its tables if needed.
    """
    from wfkit import migrations

    before = migrations.current(_database_url())
    migrations.upgrade(_database_url(), revision)
    after = migrations.current(_database_url())
    if before == after:
        click.echo(f"{_where()} is already at revision {after or 'base'}")
    else:
        click.echo(f"upgraded {_where()} from {before or 'base'} to {after or 'base'}")


@db.command("downgrade")
@click.argument("revision")
@database_url_option
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' removes every wfkit table and its data)."""
    from wfkit import migrations

    before = migrations.current(_database_url())
    migrations.downgrade(_database_url(), revision)
    after = migrations.current(_database_url())
    click.echo(f"downgraded {_where()} from {before or 'base'} to {after or 'base'}")


@db.command("current")
@json_option
@database_url_option
def db_current(as_json: bool) -> None:
    """Show the revision the database is at."""
    from wfkit import migrations

    rev, head = migrations.current(_database_url()), migrations.head()
    if as_json:
        echo_json({"database_url": _where(), "current": rev, "head": head, "up_to_date": rev == head})
        return
    if rev is None:
        click.echo(f"{_where()}: not migrated (run `wfkit db upgrade`)")
    else:
        click.echo(f"{_where()}: {rev}" + (" (head)" if rev == head else f" (head is {head}: run `wfkit db upgrade`)"))


@db.command("history")
@json_option
def db_history(as_json: bool) -> None:
    """List the migrations wfkit ships, oldest first."""
    from wfkit import migrations

    revs = migrations.history()
    if as_json:
        echo_json([r.to_dict() for r in revs])
        return
    click.echo(
        render_table(
            ("REVISION", "REVISES", "MESSAGE"),
            ((r.revision + (" (head)" if r.is_head else ""), r.down_revision or "base", r.message) for r in revs),
        )
    )


@db.command("check")
@database_url_option
def db_check() -> None:
    """Compare the database's schema with wfkit's models; exit 1 if they differ."""
    from wfkit import migrations

    if migrations.current(_database_url()) is None:
        click.echo(f"{_where()}: not migrated (run `wfkit db upgrade`)", err=True)
        sys.exit(1)
    diffs = migrations.check(_database_url())
    if not diffs:
        click.echo(f"{_where()} matches wfkit's models")
        return
    click.echo(f"{_where()} differs from wfkit's models:", err=True)
    for diff in diffs:
        click.echo(f"  {migrations.describe_diff(diff)}", err=True)
    sys.exit(1)


@db.command("path")
@database_url_option
def db_path() -> None:
    """Print the database URL in use (from --database-url, WFKIT_DATABASE_URL or the default)."""
    click.echo(_where())


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="wfkit")


if __name__ == "__main__":
    main()
