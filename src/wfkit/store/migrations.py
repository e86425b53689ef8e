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


def upgrade(engine_or_url: Engine | str | None = None, revision: str = "head") -> None:
    """Migrate the database up to ``revision`` (default: the newest)."""
    _run_command(engine_or_url, "upgrade", _resolve(revision))


def downgrade(engine_or_url: Engine | str | None = None, revision: str = "-1") -> None:
    """Migrate the database down to ``revision`` (``base`` removes every wfkit table). A SQLite
    file that does not exist is an error, not a new empty database."""
    _run_command(engine_or_url, "downgrade", _resolve(revision), create_missing=False)


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
    # alembic's own bookkeeping table is not one of ours.
    return [d for d in diffs if not _is_alembic_version(d)]


def _is_alembic_version(diff: Any) -> bool:
    item = diff[0] if isinstance(diff, list) else diff
    return any(getattr(part, "name", None) == "alembic_version" for part in item[1:2])


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
