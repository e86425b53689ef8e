"""Add the attempt of each stage (``stages.attempt``): which execution of its run ran it.

A run resumed or taken over runs again from its checkpoint; its stages tell its attempts apart
by this number (the run's ``attempt`` when the stage began), so that a viewer can group them.
Stages written before this migration have none.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("stages.attempt",)


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("attempt")
