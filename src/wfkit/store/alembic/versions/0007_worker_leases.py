"""Add the lease of a worker (``workers.lease_seconds``): how long it may be silent and still be alive.

Each worker refreshes its heartbeat a few times per lease, and its own lease may differ from that
of whoever lists the workers (``WFKIT_LEASE_SECONDS`` is set per process): ``wfkit workers`` says
a worker is live while it was heard from within its own lease. Rows written before this migration
have none; they are judged by the lease of the process that lists them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("workers.lease_seconds",)


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("lease_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("lease_seconds")
