"""wfkit's schema migrations, driven from Python (and by ``wfkit db ...``).

The Alembic scripts ship inside the package (``wfkit/alembic``), so these work
from an installed wheel with no source checkout and no ``alembic.ini``.

- :func:`upgrade` / :func:`downgrade` to a revision (``head``, ``base``, ``0001``, ``-1``...)
- :func:`current`: the revision the database is at (None if never migrated)
- :func:`history`: every known revision, oldest first
- :func:`check`: the differences between the database schema and the models
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from wfkit.errors import ConfigurationError, DatabaseNotMigratedError
from wfkit.store.db import engine_for, migration_connection, translate_errors

SCRIPT_LOCATION = Path(__file__).with_name("alembic")


@dataclass(frozen=True, slots=True)
class Revision:
    """One migration: its id, what it revises, and its one-line message."""

    revision: str
    down_revision: str | None
    message: str
    is_head: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "down_revision": self.down_revision,
            "message": self.message,
            "is_head": self.is_head,
        }


def _config(connection: Any | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def _resolve(rev: str) -> str:
    """Check that ``rev`` names a known revision (or head/base/relative); clear error if not."""
    from alembic.util import CommandError

    if rev in ("head", "heads", "base") or rev.lstrip("+-").isdigit() and rev[:1] in "+-":
        return rev
    try:
        found = _script().get_revisions(rev)
    except CommandError:
        found = ()
    if not found:
        known = ", ".join(r.revision for r in history()) or "none"
        raise ConfigurationError(f"unknown revision {rev!r}: known revisions are {known} (or head, base)")
    return rev


def _run_command(engine_or_url: Engine | str | None, name: str, *args: Any, create_missing: bool = True) -> None:
    from alembic import command
    from alembic.util import CommandError

    try:
        with engine_for(engine_or_url, create_missing=create_missing) as engine, translate_errors(engine), \
                engine.connect() as conn:
            with migration_connection(conn):
                getattr(command, name)(_config(conn), *args)
                conn.commit()
    except CommandError as err:
        raise ConfigurationError(str(err).splitlines()[0]) from None


def upgrade(engine_or_url: Engine | str | None = None, revision: str = "head") -> list[str]:
    """Migrate the database up to ``revision`` (default: the newest; ``+1``: one step). Up to the
    newest on PostgreSQL, with Procrastinate installed (the ``worker`` extra), the workers' queue
    is installed or migrated too (:mod:`wfkit.store.queue`): returns what of it was applied."""
    from wfkit.store import queue

    with engine_for(engine_or_url) as engine:
        target = resolve_target(current(engine), revision, down=False)
        _run_command(engine, "upgrade", target or "base")
        return queue.upgrade(engine) if target == head() else []


def downgrade(engine_or_url: Engine | str | None = None, revision: str = "-1") -> None:
    """Migrate the database down to ``revision`` (``-1``: one step; ``base`` removes every wfkit
    table). A SQLite file that does not exist is an error, not a new empty database.
    :func:`plan_downgrade` says first what a downgrade would remove."""
    with engine_for(engine_or_url, create_missing=False) as engine:
        target = resolve_target(current(engine), revision, down=True)
        _run_command(engine, "downgrade", target or "base", create_missing=False)


def resolve_target(at: str | None, revision: str, *, down: bool) -> str | None:
    """The revision a move from ``at`` (None: base) to ``revision`` ends at (None: base): ``head``,
    ``base``, a revision, or a number of steps (``+1``, ``-2``); one line of error for a move past
    the newest revision or below base, or in the wrong direction."""
    chain = [r.revision for r in history()]
    if at is not None and at not in chain:
        raise ConfigurationError(f"the database is at revision {at!r}, which this wfkit does not know "
                                 "(a newer wfkit made it?): use that wfkit to migrate it")
    here = chain.index(at) if at is not None else -1
    spec = revision.strip()
    if spec in ("head", "heads"):
        there = len(chain) - 1
    elif spec == "base":
        there = -1
    elif spec[:1] in "+-" and spec[1:].isdigit():
        steps = int(spec)
        there = here + steps
        where = f"the database is at {at or 'base'}"
        if there > len(chain) - 1:
            raise ConfigurationError(f"{where}, and the newest revision is {chain[-1]}: "
                                     f"there is no revision {spec} from it")
        if there < -1:
            raise ConfigurationError(f"{where}: {spec} would go below base (to remove every wfkit table, "
                                     "downgrade to base)")
    else:
        there = chain.index(_resolve(spec)) if spec in chain else chain.index(_full_revision(spec))
    if down and there > here:
        raise ConfigurationError(f"revision {spec} is newer than the database's ({at or 'base'}): "
                                 "that is an upgrade (`wfkit db upgrade`)")
    if not down and there < here:
        raise ConfigurationError(f"revision {spec} is older than the database's ({at}): "
                                 "that is a downgrade (`wfkit db downgrade`)")
    return chain[there] if there >= 0 else None


def _full_revision(spec: str) -> str:
    """The revision a (possibly shortened) id names, or the unknown-revision error."""
    _resolve(spec)
    return _script().get_revision(spec).revision


@dataclass(frozen=True)
class DowngradePlan:
    """What a downgrade would do: from where to where (None: base), and what it would remove
    that holds data (one line each; empty if it removes no data)."""

    current: str | None
    target: str | None
    losses: list[str]


def plan_downgrade(engine_or_url: Engine | str | None, revision: str) -> DowngradePlan:
    """Where a downgrade to ``revision`` ends, and which of the columns and tables the migrations it
    undoes drop hold data. Each migration names what its downgrade drops (``DROPS``)."""
    with engine_for(engine_or_url, create_missing=False) as engine:
        at = current(engine)
        target = resolve_target(at, revision, down=True)
        chain = [r.revision for r in history()]
        undone = chain[(chain.index(target) + 1 if target else 0):(chain.index(at) + 1 if at else 0)]
        modules = [_script().get_revision(rev).module for rev in reversed(undone)]
        kept = {item for module in modules for item in getattr(module, "KEPT", ())}  # written elsewhere first
        drops = [item for module in modules for item in getattr(module, "DROPS", ()) if item not in kept]
        # A column whose every value is its default holds no data (a counter at 0, say).
        defaults = {item: value for module in modules for item, value in getattr(module, "DEFAULTS", {}).items()}
        losses = []
        with translate_errors(engine), engine.connect() as conn:
            for item in drops:
                table, _, column = item.partition(".")
                if column:
                    unlike = f" AND {column} <> {int(defaults[item])}" if item in defaults else ""
                    held = conn.exec_driver_sql(
                        f"SELECT count(*) FROM {table} WHERE {column} IS NOT NULL{unlike}").scalar()
                    if held:
                        losses.append(f"column {item}, which holds {held} value{'' if held == 1 else 's'}")
                else:
                    held = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
                    if held:
                        losses.append(f"table {table}, which holds {held} row{'' if held == 1 else 's'}")
    return DowngradePlan(at, target, losses)


def current(engine_or_url: Engine | str | None = None) -> str | None:
    """The revision the database is at, or None if it was never migrated (or its SQLite file does
    not exist yet: asking does not create it)."""
    from alembic.runtime.migration import MigrationContext

    try:
        with engine_for(engine_or_url, create_missing=False) as engine, translate_errors(engine), \
                engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DatabaseNotMigratedError:
        return None


def head() -> str:
    """The newest revision wfkit ships."""
    return _script().get_current_head()


def history() -> list[Revision]:
    """Every revision wfkit ships, oldest first."""
    script = _script()
    heads = set(script.get_heads())
    revs = [
        Revision(
            revision=s.revision,
            down_revision=s.down_revision if isinstance(s.down_revision, str) or s.down_revision is None else ",".join(s.down_revision),
            message=(s.doc or "").strip().splitlines()[0] if s.doc else "",
            is_head=s.revision in heads,
        )
        for s in script.walk_revisions()
    ]
    return list(reversed(revs))


def check(engine_or_url: Engine | str | None = None) -> list[Any]:
    """The differences between the database's schema and wfkit's models (empty: they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from wfkit.store.models import metadata

    with engine_for(engine_or_url, create_missing=False) as engine, translate_errors(engine), engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, metadata)
    # alembic's own bookkeeping table is not one of ours, nor are the workers' queue's tables.
    return [d for d in diffs if not _not_ours(d)]


def _not_ours(diff: Any) -> bool:
    from wfkit.store.queue import is_queue_table

    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:2]:
        table = getattr(part, "table", None)  # an index or a constraint: its table
        name = getattr(table, "name", None) if table is not None else getattr(part, "name", None)
        if name == "alembic_version" or is_queue_table(name):
            return True
    return False


def describe_diff(diff: Any) -> str:
    """One line for one difference :func:`check` found (``add_index ix_runs_status_created_at on runs``)."""
    if isinstance(diff, list):
        return "; ".join(describe_diff(d) for d in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind} {diff[1].name}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        return f"{kind} {diff[1].name} on {diff[1].table.name}"
    if kind in ("add_column", "remove_column"):
        return f"{kind} {diff[2]}.{diff[3].name}"
    if kind.startswith("modify_"):
        return f"{kind} {diff[2]}.{diff[3]}: {diff[5]!r} -> {diff[6]!r}"
    return str(kind)
