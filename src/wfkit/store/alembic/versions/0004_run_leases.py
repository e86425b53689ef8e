"""Add the lease of a run (owner, attempt, lease_epoch, lease_expires_at) and the stage it is executing.

A run being executed is held by one process, its owner, until ``lease_expires_at`` (by the
database's clock); every claim raises ``lease_epoch`` by one, and every write of the run's history
is made only while the epoch is still the one its writer claimed (fencing). The stage being
executed is shown on the run's row (``current_*``): its row in ``stages`` is written once, when it
ends.

On PostgreSQL, the rows of ``runs`` and ``checkpoints`` are rewritten at every step: a fill factor
of 80 leaves room on their pages for the new versions (HOT updates, which write no index entry).
On SQLite the runs table is rebuilt so that params and result stay its last columns (see 0003).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The columns this migration adds to runs (what its downgrade drops).
COLUMNS = ("owner", "attempt", "lease_epoch", "lease_expires_at", "current_stage_id", "current_node",
           "current_iteration", "current_stage_started_at")
#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = tuple(f"runs.{column}" for column in COLUMNS)
#: Dropped columns whose values hold no data when they are these (a downgrade asks only about the rest).
DEFAULTS = {"runs.attempt": 0, "runs.lease_epoch": 0}
#: The order of the runs table's columns on SQLite: the large ones last.
SQLITE_RUN_COLUMNS = ("id", "workflow_name", "status", "error_message", "started_at", "completed_at", "created_at",
                      "updated_at", "cancel_requested_at", "cancel_reason", *COLUMNS, "params", "result")
FILLFACTOR = 80


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("current_stage_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("current_node", sa.String(200), nullable=True))
        batch.add_column(sa.Column("current_iteration", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("current_stage_started_at", sa.DateTime(timezone=True), nullable=True))
    # Runs that had started count as attempted once; their leases are unknown (expired: no process
    # written before leases existed can still be renewing one).
    op.execute("UPDATE runs SET attempt = 1 WHERE started_at IS NOT NULL")
    with op.batch_alter_table("runs") as batch:  # the defaults were for the rows already there
        batch.alter_column("attempt", server_default=None)
        batch.alter_column("lease_epoch", server_default=None)
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("runs", recreate="always", partial_reordering=[SQLITE_RUN_COLUMNS]):
            pass
    else:
        op.execute(f"ALTER TABLE runs SET (fillfactor = {FILLFACTOR})")
        op.execute(f"ALTER TABLE checkpoints SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE runs RESET (fillfactor)")
        op.execute("ALTER TABLE checkpoints RESET (fillfactor)")
    with op.batch_alter_table("runs") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
