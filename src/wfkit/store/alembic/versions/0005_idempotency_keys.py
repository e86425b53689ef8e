"""Add runs.idempotency_key: a request retried with the same key gets the same run.

A client that creates a run (the HTTP API's ``POST /workflows/{name}/runs`` with an
``Idempotency-Key`` header, ``Executor.start(..., idempotency_key=...)``) and does not learn the
answer (a timeout, a dropped connection) may ask again with the same key: the run is created once.
The key is unique across runs (any number of runs have none). On SQLite the runs table is rebuilt
so that params and result stay its last columns (see 0003).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("runs.idempotency_key",)
#: The order of the runs table's columns on SQLite: the large ones last.
SQLITE_RUN_COLUMNS = ("id", "workflow_name", "status", "error_message", "started_at", "completed_at", "created_at",
                      "updated_at", "cancel_requested_at", "cancel_reason", "owner", "attempt", "lease_epoch",
                      "lease_expires_at", "current_stage_id", "current_node", "current_iteration",
                      "current_stage_started_at", "idempotency_key", "params", "result")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("runs", recreate="always", partial_reordering=[SQLITE_RUN_COLUMNS]):
            pass
    op.create_index("ix_runs_idempotency_key", "runs", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_runs_idempotency_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("idempotency_key")
