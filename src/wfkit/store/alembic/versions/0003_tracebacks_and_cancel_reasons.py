"""Add stages.error_traceback and runs.cancel_reason: why a stage failed, why a run was cancelled.

On SQLite, the runs table is also rebuilt with params and result as its last columns: SQLite reads
a row's columns in order, walking through the pages of any large value before them, so a listing
that reads no params or results (the default) then reads no page of them either.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("runs.cancel_reason", "stages.error_traceback")
#: The order of the runs table's columns on SQLite: the ones a listing reads first, the large ones last.
SQLITE_RUN_COLUMNS = ("id", "workflow_name", "status", "error_message", "started_at", "completed_at", "created_at",
                      "updated_at", "cancel_requested_at", "cancel_reason", "params", "result")


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("error_traceback", sa.Text(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("cancel_reason", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("runs", recreate="always", partial_reordering=[SQLITE_RUN_COLUMNS]):
            pass


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("cancel_reason")
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("error_traceback")
