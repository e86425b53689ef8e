"""Add the workers table: the ``wfkit worker`` processes sharing a PostgreSQL database.

Each worker writes its row when it starts (its id is the owner its runs are held by), refreshes
``last_heartbeat`` while it runs and deletes the row when it stops; ``wfkit workers`` lists the
live ones with the runs each holds (``runs.owner``). The table exists on SQLite too, empty: a
schema that differs by engine would make every migration twice as hard to reason about.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("workers",)

# Frozen copies of the column types (see 0001).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("queues", JSON, nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("last_heartbeat", TIMESTAMP, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
