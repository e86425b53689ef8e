"""Add the keys a stage's node returned unchanged (``stages.output_unchanged``).

A node that returns the whole state (``{**state, "n": n + 1}``) would otherwise store the whole state
again at every step: a 1,000-step loop over a 100 KB state, 100 MB. Now a stage's row stores only
the updates whose values changed, and names the others here; the repository fills them in from the
stage's input. Stages written before this migration have none (their outputs are whole).

The downgrade writes those values back into each stage's ``output_snapshot`` first, so that the
wfkit before it shows every stage's output whole.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the downgrade drops (`wfkit db downgrade` says which of them hold data before it runs).
DROPS = ("stages.output_unchanged",)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("output_unchanged", JSON, nullable=True))


def downgrade() -> None:
    _write_outputs_out()
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("output_unchanged")


def _write_outputs_out() -> None:
    """Every stage that names unchanged keys gets their values (from its input) written into its
    output, a run at a time."""
    bind = op.get_bind()
    stages = sa.table("stages", sa.column("id", sa.Uuid()), sa.column("run_id", sa.Uuid()),
                      sa.column("input_snapshot", sa.JSON()), sa.column("output_snapshot", sa.JSON()),
                      sa.column("input_from", sa.Uuid()), sa.column("output_unchanged", sa.JSON()),
                      sa.column("created_at", sa.DateTime(timezone=True)))
    runs = bind.execute(sa.select(stages.c.run_id).where(stages.c.output_unchanged.is_not(None)).distinct()).scalars()
    for run_id in list(runs):
        rows = bind.execute(sa.select(stages.c.id, stages.c.input_snapshot, stages.c.output_snapshot,
                                      stages.c.input_from, stages.c.output_unchanged)
                            .where(stages.c.run_id == run_id)).all()
        inputs = {row.id: row.input_snapshot for row in rows}
        outputs = {row.id: row.output_snapshot for row in rows}
        refs = {row.id: row.input_from for row in rows}

        def input_of(stage_id: object) -> dict | None:
            # Back along the references to a stage whose input is stored, then forward (no recursion).
            chain, at = [], stage_id
            while inputs.get(at) is None and refs.get(at) is not None and at not in chain:
                chain.append(at)
                at = refs[at]
            for later in reversed(chain):
                before = refs[later]
                if isinstance(inputs.get(before), dict):
                    inputs[later] = {**inputs[before], **(outputs.get(before) or {})}
            found = inputs.get(stage_id)
            return found if isinstance(found, dict) else None

        for row in rows:
            state = input_of(row.id) if row.output_unchanged else None
            if state is not None and isinstance(row.output_snapshot, dict):
                whole = {**{key: state[key] for key in row.output_unchanged if key in state}, **row.output_snapshot}
                outputs[row.id] = whole
                bind.execute(stages.update().where(stages.c.id == row.id).values(output_snapshot=whole))
