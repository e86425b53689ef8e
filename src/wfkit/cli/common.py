"""What every command shares: the root group and the ``runs`` group, options, errors, rendering."""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from wfkit.errors import ConfigurationError, WfkitError

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
_URL_KEY = "wfkit.database_url"
# Click 8.2+ raises this (a UsageError) for a group called without a command; older Clicks print help.
_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def exit_code_for(err: WfkitError) -> int:
    """The exit code of a wfkit error, from its HTTP status: 2 for bad input (a 4xx status other
    than 404: a bad value, or a status change that is not allowed), 1 for everything else (not
    found, or a failure)."""
    if err.exit_code is not None:
        return err.exit_code
    status = err.http_status
    return 2 if 400 <= status < 500 and status != 404 else 1


class WfkitGroup(click.Group):
    """A group that turns wfkit errors into one stderr line and an exit code.

    ``lazy`` maps command names to the module of this package that defines them: the module is
    imported only when the command is used (or help lists it), so a command loads only its own.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            importlib.import_module(f"wfkit.cli.{self.lazy[cmd_name]}")  # its decorators register it here
        return super().get_command(ctx, cmd_name)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """As Click's, but a usage error (a bad option, value or argument) is one line on stderr,
        like every other error, instead of the usage, a hint and the error."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _NO_ARGS_IS_HELP as err:  # a group called bare: its help, as Click shows it
            err.show()
            sys.exit(err.exit_code)
        except click.UsageError as err:
            hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
            click.echo(f"Error: {err.format_message()}{hint}", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            err.show()
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:  # the reader of stdout went away (`| head`): stop as other tools do
            silence_stdout()
            sys.exit(128 + 13)  # as if killed by SIGPIPE
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WfkitError as err:
            click.echo(f"Error: {with_database_url(str(err))}", err=True)
            ctx.exit(exit_code_for(err))


def _remember_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    if not value.strip():
        raise click.BadParameter("is empty: give a database URL, or leave the option out to use "
                                 "WFKIT_DATABASE_URL or the default database", param_hint="'--database-url'")
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


def wfkit_command(*args: str) -> str:
    """A next step to print, copy-pasteable: ``wfkit ARGS``, with the ``--database-url`` this command
    was given, if one was (its password masked), so that it reaches the same database."""
    import shlex

    from wfkit.formatting import mask_password

    ctx = click.get_current_context(silent=True)
    url = ctx.meta.get(_URL_KEY) if ctx is not None else None
    prefix = ["wfkit", "--database-url", shlex.quote(mask_password(url))] if url else ["wfkit"]
    return " ".join([*prefix, *(shlex.quote(arg) for arg in args)])


def with_database_url(message: str) -> str:
    """``message`` with each `wfkit ...` command it suggests given this command's ``--database-url``."""
    if "`wfkit " not in message:
        return message
    return message.replace("`wfkit ", "`" + wfkit_command() + " ")


def silence_stdout() -> None:
    """Send what is still written to stdout nowhere: its reader is gone, and a last flush at exit
    would otherwise print a BrokenPipeError of its own."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass


def database_url() -> str | None:
    """The ``--database-url`` given (None: the library resolves the environment and the default).
    An in-memory SQLite database, from either, is refused: it would live for this command only."""
    from wfkit.store.db import is_in_memory, resolve_database_url

    given = click.get_current_context().meta.get(_URL_KEY)
    resolved = resolve_database_url(given)
    try:
        in_memory = is_in_memory(resolved)
    except Exception:  # not a URL at all: the library says so, in its own words
        in_memory = False
    if in_memory:
        raise ConfigurationError(
            f"{resolved!r} is an in-memory SQLite database, which lives only as long as one command: "
            "give a file instead, such as sqlite:///wfkit.db")
    return given


# --------------------------------------------------------------------------- run ids and shell completion
#
# Completion is Click's own (``_WFKIT_COMPLETE=bash_source wfkit``, see README). What it offers is
# computed here, when the shell asks: nothing heavy is imported before then, and a completion never
# prints an error into the shell (on any failure it offers nothing).

#: How many runs a completion of a run id offers (the newest that match).
COMPLETE_RUNS = 20


class RunIdType(click.ParamType):
    """A run id as typed: a whole id, a prefix of at least 6 hex digits, or ``latest``. The text is
    kept as given: the command resolves it (``Repository.resolve_run_id``) on the database it
    uses, once its ``--database-url`` is known. Completes with the newest runs' short ids."""

    name = "run_id"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "RUN_ID"

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        return complete_run_ids(ctx, incomplete)


RUN_ID = RunIdType()


def run_id_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``RUN_ID``: a whole id, an unambiguous prefix of at least 6 hex digits, or ``latest``."""
    return click.argument("run_id", type=RUN_ID)(fn)


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """Nothing printed, and no warning shown, while a completion is computed: the shell reads stdout."""
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def complete_run_ids(ctx: click.Context, incomplete: str) -> list[Any]:
    """``latest`` and the newest runs whose id starts with ``incomplete``, as short ids (each with its
    workflow, status and creation time for shells that show them), from the database in use."""
    from click.shell_completion import CompletionItem

    typed = incomplete.strip().lower()
    items = [CompletionItem("latest", help="the newest run")] if "latest".startswith(typed) else []
    try:
        with _quietly():
            from wfkit.store.repository import Repository

            with Repository(ctx.meta.get(_URL_KEY)) as repository:
                matches = repository.match_run_ids(typed, limit=COMPLETE_RUNS)
                short = repository.short_ids([m.id for m in matches])
    except Exception:  # no database, not migrated, unreachable: nothing to offer
        return items
    for match in matches:
        text = short[match.id]
        if len(typed) > len(text) or not text.startswith(typed):  # typed further, or without dashes
            text = str(match.id) if str(match.id).startswith(typed) else match.id.hex
        items.append(CompletionItem(text, help=f"{match.workflow_name}, {match.status}, created "
                                               f"{fmt_time(match.created_at)}"))
    return items


def complete_workflows(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """The registered workflows whose name starts with ``incomplete`` (the last of a comma-separated
    list, for options that take several)."""
    from click.shell_completion import CompletionItem

    done, _, last = incomplete.rpartition(",") if param.multiple else ("", "", incomplete)
    try:
        with _quietly():
            from wfkit.plugins import list_workflows

            infos = list_workflows()
    except Exception:
        return []
    head = f"{done}," if done else ""
    return [CompletionItem(head + info.name, help=info.description.split("\n")[0] or None)
            for info in infos if info.name.startswith(last)]


def complete_statuses(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """The run statuses that start with the last of a comma-separated list (those not given yet)."""
    from click.shell_completion import CompletionItem

    done, _, last = incomplete.rpartition(",")
    given = {s.strip().lower() for s in done.split(",")} if done else set()
    head = f"{done}," if done else ""
    return [CompletionItem(head + status) for status in RUN_STATUSES
            if status.startswith(last.strip().lower()) and status not in given]


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


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@click.group(
    cls=WfkitGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    lazy={"list-workflows": "workflows", "plugins": "workflows", "graph": "workflows", "run": "execute",
          "submit": "execute", "worker": "worker", "workers": "worker", "db": "db",
          "serve": "serve"},
)
@click.version_option(package_name="wfkit", prog_name="wfkit")
@database_url_option
def cli() -> None:
    """wfkit: stateful workflows whose history lives in SQL.

    Configuration: --database-url, else WFKIT_DATABASE_URL, else a SQLite file
    in your user data directory. WFKIT_DEFAULT_PAGE_SIZE and WFKIT_MAX_PAGE_SIZE
    set listing page sizes (20 and 100 by default).

    Example: wfkit run text-pipeline -p text="Hello, world" && wfkit runs list
    """


@cli.group(cls=WfkitGroup, lazy={
    "list": "browse", "show": "browse", "stages": "browse", "decisions": "browse", "watch": "watch",
    "resume": "execute", "cancel": "execute", "delete": "execute", "recover": "execute", "prune": "retention",
})
def runs() -> None:
    """Browse, watch, cancel, resume and prune runs.

    RUN_ID is a whole id, a prefix of at least 6 of its hex digits that
    no other run's id starts with, or latest (the newest run).

    \b
    list       runs, newest first, a page at a time (filters, sort, --json)
    show       one run: status, times, owner and lease, params, result or error
    stages     a run's stages (node executions), oldest first
    decisions  a run's routing decisions, oldest first
    watch      follow a run live, stage by stage, until it ends
    cancel     stop a run before its next node (--force: end it now)
    resume     continue a failed or cancelled run from its checkpoint
    recover    resume every run whose process died (its lease expired)
    delete     remove a run with its stages, decisions and checkpoint
    prune      delete finished runs that ended long ago (--older-than 30d), in batches

    Example: wfkit runs list --status failed
    """


def params_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--params-json", metavar="JSON", default=None,
        help="The workflow's params as one JSON object; @FILE reads it from a file, - from standard input.",
    )(fn)
    return click.option(
        "-p",
        "--param",
        "param_pairs",
        multiple=True,
        metavar="KEY=VALUE",
        help="One param (repeatable); VALUE is read as JSON if it parses (3, true, [1,2]), else as text "
        "(always as text for a param the workflow declares as text). "
        "It overrides the same key of --params-json; of two -p with one key, the last wins.",
    )(fn)


def durability_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--durability", type=click.Choice(["sync", "async"], case_sensitive=False), default=None,
        help="sync (default, or $WFKIT_DURABILITY): each step is on disk before the next node runs, and survives "
        "a crash of the database server or the machine; async: faster, survives a killed process, but a crash "
        "of the server or machine may lose the last fraction of a second of steps (their nodes run again on "
        "resume).",
    )(fn)


def warn_plugin_failures() -> None:
    from wfkit.plugins import plugin_report

    for message in plugin_report().messages():
        click.echo(f"Warning: {message}", err=True)
