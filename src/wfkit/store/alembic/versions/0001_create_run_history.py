"""Create the run history tables: runs, stages, decisions, checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("checkpoints", "decisions", "stages", "runs")

# Frozen copies of the column types as they were at this revision: a migration
# must not change meaning when the models change later.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
NAME = sa.String(200)
STATUS = sa.String(16)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("workflow_name", NAME, nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_runs_created_at", "runs", ["created_at", "id"])
    op.create_index("ix_runs_status_created_at", "runs", ["status", "created_at", "id"])
    op.create_index("ix_runs_workflow_name_created_at", "runs", ["workflow_name", "created_at", "id"])
    op.create_index(
        "ix_runs_workflow_name_status_created_at", "runs", ["workflow_name", "status", "created_at", "id"]
    )

    op.create_table(
        "stages",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("run_id", sa.Uuid(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("node_name", NAME, nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("input_snapshot", JSON, nullable=True),
        sa.Column("output_snapshot", JSON, nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_stages_run_id_created_at", "stages", ["run_id", "created_at", "id"])
    op.create_index("ix_stages_node_name", "stages", ["node_name"])

    op.create_table(
        "decisions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("run_id", sa.Uuid(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("from_node", NAME, nullable=False),
        sa.Column("to_node", NAME, nullable=True),
        sa.Column("predicate_name", NAME, nullable=True),
        sa.Column("predicate_result", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_decisions_run_id_created_at", "decisions", ["run_id", "created_at", "id"])

    op.create_table(
        "checkpoints",
        sa.Column("run_id", sa.Uuid(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("state_data", JSON, nullable=False),
        sa.Column("checkpoint_node", NAME, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("checkpoints")
    op.drop_index("ix_decisions_run_id_created_at", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_stages_node_name", table_name="stages")
    op.drop_index("ix_stages_run_id_created_at", table_name="stages")
    op.drop_table("stages")
    op.drop_index("ix_runs_workflow_name_status_created_at", table_name="runs")
    op.drop_index("ix_runs_workflow_name_created_at", table_name="runs")
    op.drop_index("ix_runs_status_created_at", table_name="runs")
    op.drop_index("ix_runs_created_at", table_name="runs")
    op.drop_table("runs")
