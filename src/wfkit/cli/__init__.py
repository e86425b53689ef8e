"""The ``wfkit`` command line: parse, call the library, print.

Heavy modules (SQLAlchemy, SQLModel, Alembic, pydantic) are imported inside
the commands that need them, so ``wfkit --help`` stays fast.

Errors from the library become one line on stderr, with an exit code derived
from the error's HTTP status (``wfkit.errors``): 2 for bad input (a bad status,
sort field, id, revision or setting), 1 for everything else (not found,
database unreachable or not migrated).
"""

from __future__ import annotations

# The commands live in browse.py, execute.py, workflows.py and db.py: each is imported when one of
# its commands is used (see WfkitGroup's ``lazy``), so a command loads only what it needs.
from wfkit.cli.common import cli

__all__ = ["cli", "main"]


def main() -> None:
    """The console script's entry point."""
    import logging

    # SQLAlchemy's pool logs the failed reset of a broken connection (a terminated server process,
    # say) with a long traceback; the command reports the failure itself, in one line.
    logging.getLogger("sqlalchemy.pool").addHandler(logging.NullHandler())
    cli(prog_name="wfkit")
