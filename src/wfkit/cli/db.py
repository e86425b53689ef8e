"""``wfkit db ...``: create and migrate the database (Alembic migrations shipped in the package)."""

from __future__ import annotations

import sys

import click

from wfkit.cli.common import (
    WfkitGroup,
    cli,
    database_url,
    database_url_option,
    echo_json,
    json_option,
    render_table,
    wfkit_command,
    with_database_url,
)


@cli.group(cls=WfkitGroup)
def db() -> None:
    """Create and migrate the database schema.

    Example: wfkit db upgrade
    """


def _where() -> str:
    from wfkit.store.db import display_url, normalize_url, resolve_database_url

    written = resolve_database_url(database_url())
    normalize_url(written)  # a bad URL is an error here too
    return display_url(written)


@db.command("upgrade")
@click.argument("revision", default="head")
@database_url_option
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head).

    REVISION is a revision id, head (the newest), or +N steps. Creates the
    database (a SQLite file) and its tables if needed.

    Example: wfkit db upgrade --database-url postgresql://localhost/wfkit
    """
    from wfkit.store import migrations

    before = migrations.current(database_url())
    queued = migrations.upgrade(database_url(), revision)
    _report_move("upgraded", before, migrations.current(database_url()))
    _report_queue(queued)


def _report_queue(applied: list[str]) -> None:
    from wfkit.store import queue

    if queue.WHOLE_SCHEMA in applied:  # with wfkit's index on it
        click.echo(f"installed the workers' queue (Procrastinate {queue.version()})")
    elif applied:
        click.echo(f"migrated the workers' queue to Procrastinate {queue.version()}: {', '.join(applied)}")


def _report_move(verb: str, before: str | None, after: str | None) -> None:
    if before == after:
        click.echo(f"{_where()} is already at revision {after or 'base'}")
    else:
        click.echo(f"{verb} {_where()} from {before or 'base'} to {after or 'base'}")


@db.command("downgrade")
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Confirm a downgrade that removes data (to base: every wfkit table).")
@database_url_option
def db_downgrade(revision: str, yes: bool) -> None:
    """Migrate the database down to REVISION.

    REVISION is a revision id, base (no tables), or -N steps.

    A downgrade that ends at base (however it is spelled: base, -2...) removes every wfkit table;
    one that drops a column or table holding data says what first. Either asks at a terminal,
    and elsewhere needs --yes.

    Example: wfkit db downgrade -- -1
    """
    from wfkit.store import migrations

    plan = migrations.plan_downgrade(database_url(), revision)
    removes = (["every wfkit table, and all the run history in them"] if plan.target is None and plan.current
               else plan.losses)
    if removes and not yes:
        what = "; ".join(removes)
        if not sys.stdin.isatty():
            # The whole command, --yes before the revision: after "--" (as a -N revision needs) it
            # would be taken as a second revision.
            again = wfkit_command("db", "downgrade", "--yes", *(["--"] if revision.startswith("-") else []), revision)
            raise click.UsageError(f"this downgrade of {_where()} to {plan.target or 'base'} removes {what}: "
                                   f"confirm with `{again}`")
        if not click.confirm(f"Downgrading {_where()} to {plan.target or 'base'} removes {what}. Go on?",
                             default=False, err=True):
            click.echo("nothing changed", err=True)
            sys.exit(1)
    migrations.downgrade(database_url(), plan.target or "base")
    _report_move("downgraded", plan.current, migrations.current(database_url()))


@db.command("current")
@json_option
@database_url_option
def db_current(as_json: bool) -> None:
    """Show the revision the database is at.

    Example: wfkit db current --json
    """
    from wfkit.store import migrations

    rev, head = migrations.current(database_url()), migrations.head()
    if as_json:
        echo_json({"database_url": _where(), "current": rev, "head": head, "up_to_date": rev == head})
        return
    if rev is None:
        click.echo(with_database_url(f"{_where()}: not migrated (run `wfkit db upgrade`)"))
    else:
        click.echo(with_database_url(
            f"{_where()}: {rev}" + (" (head)" if rev == head else f" (head is {head}: run `wfkit db upgrade`)")))


@db.command("history")
@json_option
def db_history(as_json: bool) -> None:
    """List the migrations wfkit ships, oldest first.

    Example: wfkit db history
    """
    from wfkit.store import migrations

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
    """Compare the database's schema with wfkit's models.

    On PostgreSQL with the worker extra installed, check the workers' queue
    (Procrastinate's tables) too. Exit 0 if all match; else list the
    differences and exit 1.

    Example: wfkit db check
    """
    from wfkit.store import migrations

    if migrations.current(database_url()) is None:
        click.echo(with_database_url(f"{_where()}: not migrated (run `wfkit db upgrade`)"), err=True)
        sys.exit(1)
    from wfkit.store import queue

    diffs = migrations.check(database_url())
    waiting = queue.state(database_url())  # None on SQLite: no queue there
    queue_ok = waiting is None or waiting.version is None or waiting.up_to_date
    if not diffs and queue_ok:
        click.echo(f"{_where()} matches wfkit's models" + (
            f" and Procrastinate {waiting.version}'s queue" if waiting is not None and waiting.version else ""))
        return
    if diffs:
        click.echo(f"{_where()} differs from wfkit's models:", err=True)
        for diff in diffs:
            click.echo(f"  {migrations.describe_diff(diff)}", err=True)
    if not queue_ok:
        assert waiting is not None
        missing = ("is not installed" if not waiting.installed else
                   f"lacks {len(waiting.pending)} of Procrastinate {waiting.version}'s migrations "
                   f"({', '.join(waiting.pending)})")
        click.echo(f"{_where()}: the workers' queue {missing}: run `wfkit db upgrade`", err=True)
    sys.exit(1)


@db.command("path")
@database_url_option
def db_path() -> None:
    """Print the database URL in use.

    From --database-url, else WFKIT_DATABASE_URL, else the per-user SQLite
    file; a password is shown as ***.

    Example: WFKIT_DATABASE_URL=sqlite:///runs.db wfkit db path
    """
    click.echo(_where())
