"""Add the lease of a run (owner, attempt, lease_epoch, lease_expires_at), the stage it is executing, and stage inputs by reference.

A run being executed is held by one process, its owner, until ``lease_expires_at`` (by the
database's clock); every claim raises ``lease_epoch`` by one, and every write of the run's history
is made only while the epoch is still the one its writer claimed (fencing). The stage being
executed is shown on the run's row (``current_*``): its row in ``stages`` is written once, when it
ends.

A stage may store its input as a reference (``stages.input_from``): the stage whose end state it
started from, so that a step does not write its whole input state again. ``ix_stages_node_name`` is
dropped: no read looks stages up by node alone (every read of stages is by run), and each index
entry is written at every step.

On PostgreSQL, the rows of ``runs`` and ``checkpoints`` are rewritten at every step: a fill factor
of 80 leaves room on their pages for the new versions (HOT updates, which write no index entry).
On SQLite the runs table is rebuilt so that params and result stay its last columns (see 0003).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import uuid
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
DROPS = (*(f"runs.{column}" for column in COLUMNS), "stages.input_from")
#: Dropped columns whose values hold no data when they are these (a downgrade asks only about the rest).
DEFAULTS = {"runs.attempt": 0, "runs.lease_epoch": 0}
#: Dropped columns whose data the downgrade writes elsewhere first (no loss to ask about).
KEPT = ("stages.input_from", "runs.current_stage_id", "runs.current_node", "runs.current_iteration",
        "runs.current_stage_started_at")
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
    with op.batch_alter_table("stages") as batch:
        batch.add_column(sa.Column("input_from", sa.Uuid(), nullable=True))
        batch.drop_index("ix_stages_node_name")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("runs", recreate="always", partial_reordering=[SQLITE_RUN_COLUMNS]):
            pass
    else:
        op.execute(f"ALTER TABLE runs SET (fillfactor = {FILLFACTOR})")
        op.execute(f"ALTER TABLE checkpoints SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    _write_inputs_out()
    _checkpoints_back_to_format_2()
    _current_stages_back_to_rows()
    if op.get_bind().dialect.name != "sqlite":
        op.execute("ALTER TABLE runs RESET (fillfactor)")
        op.execute("ALTER TABLE checkpoints RESET (fillfactor)")
    with op.batch_alter_table("stages") as batch:
        batch.drop_column("input_from")
        batch.create_index("ix_stages_node_name", ["node_name"])
    with op.batch_alter_table("runs") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)


def _write_inputs_out() -> None:
    """Before ``input_from`` goes, every stage that refers to another for its input gets that input
    written in full (the earlier schema has no other place for it), a run at a time."""
    bind = op.get_bind()
    stages = sa.table("stages", sa.column("id", sa.Uuid()), sa.column("run_id", sa.Uuid()),
                      sa.column("input_snapshot", sa.JSON()), sa.column("output_snapshot", sa.JSON()),
                      sa.column("input_from", sa.Uuid()), sa.column("created_at", sa.DateTime(timezone=True)))
    runs = bind.execute(sa.select(stages.c.run_id).where(stages.c.input_from.is_not(None)).distinct()).scalars()
    for run_id in list(runs):
        rows = bind.execute(sa.select(stages.c.id, stages.c.input_snapshot, stages.c.output_snapshot,
                                      stages.c.input_from).where(stages.c.run_id == run_id)
                            .order_by(stages.c.created_at, stages.c.id)).all()
        inputs = {row.id: row.input_snapshot for row in rows}
        outputs = {row.id: row.output_snapshot for row in rows}
        refs = {row.id: row.input_from for row in rows}
        for row in rows:
            # Follow the references back to a stage whose input is known, then fill them in forward (no
            # recursion: a run may have any number of steps; no reliance on the order of start times).
            chain, at = [], row.id
            while inputs.get(at) is None and refs.get(at) is not None and at not in chain:
                chain.append(at)
                at = refs[at]
            for stage_id in reversed(chain):
                before = refs[stage_id]
                inputs[stage_id] = {**(inputs.get(before) or {}), **(outputs.get(before) or {})}
                bind.execute(stages.update().where(stages.c.id == stage_id).values(input_snapshot=inputs[stage_id]))


def _checkpoints_back_to_format_2() -> None:
    """0003's wfkit reads checkpoints in formats 1 and 2, which hold the state: one that names a
    stage gets that stage's end state; the mark of a run's start goes (0003 starts such a run from
    its beginning, as it does with no checkpoint)."""
    bind = op.get_bind()
    checkpoints = sa.table("checkpoints", sa.column("run_id", sa.Uuid()), sa.column("state_data", sa.JSON()))
    stages = sa.table("stages", sa.column("id", sa.Uuid()), sa.column("input_snapshot", sa.JSON()),
                      sa.column("output_snapshot", sa.JSON()))
    for run_id, data in bind.execute(sa.select(checkpoints.c.run_id, checkpoints.c.state_data)).all():
        if not isinstance(data, dict) or data.get("format") != 3:
            continue
        if data.get("start"):
            bind.execute(checkpoints.delete().where(checkpoints.c.run_id == run_id))
            continue
        rest = {k: v for k, v in data.items() if k not in ("stage", "format")}
        if "stage" in data:
            row = bind.execute(sa.select(stages.c.input_snapshot, stages.c.output_snapshot)
                               .where(stages.c.id == uuid.UUID(str(data["stage"])))).first()
            if row is None or not isinstance(row[0], dict):
                bind.execute(checkpoints.delete().where(checkpoints.c.run_id == run_id))  # nothing to resume from
                continue
            rest["state"] = {**row[0], **(row[1] or {})}
        bind.execute(checkpoints.update().where(checkpoints.c.run_id == run_id)
                     .values(state_data={**rest, "format": 2}))


def _current_stages_back_to_rows() -> None:
    """0003 shows the stage a run is executing as a row of its own, ``started``: one for each run
    whose row names one (with the checkpoint's state as its input, when that is where it began)."""
    bind = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.Uuid()), sa.column("current_stage_id", sa.Uuid()),
                    sa.column("current_node", sa.String()), sa.column("current_iteration", sa.Integer()),
                    sa.column("current_stage_started_at", sa.DateTime(timezone=True)))
    checkpoints = sa.table("checkpoints", sa.column("run_id", sa.Uuid()), sa.column("state_data", sa.JSON()))
    stages = sa.table("stages", sa.column("id", sa.Uuid()), sa.column("run_id", sa.Uuid()),
                      sa.column("node_name", sa.String()), sa.column("iteration", sa.Integer()),
                      sa.column("status", sa.String()), sa.column("input_snapshot", sa.JSON()),
                      sa.column("created_at", sa.DateTime(timezone=True)))
    rows = bind.execute(sa.select(runs.c.id, runs.c.current_stage_id, runs.c.current_node, runs.c.current_iteration,
                                  runs.c.current_stage_started_at).where(runs.c.current_stage_id.is_not(None))).all()
    for run_id, stage_id, node, iteration, started_at in rows:
        data = bind.execute(sa.select(checkpoints.c.state_data).where(checkpoints.c.run_id == run_id)).scalar()
        began_there = isinstance(data, dict) and data.get("next_node") == node and \
            (data.get("counters") or {}).get(node, 0) + 1 == iteration
        bind.execute(stages.insert().values(
            id=stage_id, run_id=run_id, node_name=node, iteration=iteration, status="started",
            input_snapshot=data.get("state") if began_there else None, created_at=started_at))
