"""The shapes of the API's JSON, for its OpenAPI document (the routes answer with the records' own
``to_dict()``; these say what that is, field for field, so that clients can be generated from it
and the tests can check every answer against it)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatusName = Literal["pending", "running", "completed", "failed", "cancelled"]
StageStatusName = Literal["started", "completed", "failed"]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSummary(_Shape):
    """A run, as a listing shows it: without its params and result (``?fields=full`` adds them)."""

    id: uuid.UUID
    workflow_name: str
    status: RunStatusName
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    cancel_requested_at: datetime | None
    cancel_reason: str | None
    owner: str | None = Field(description="who holds (or last held) the run: host, pid and a random id")
    attempt: int = Field(description="how many times the run was claimed (each resume or takeover adds one)")
    lease_epoch: int = Field(description="the fencing number: grows by one at every claim")
    lease_expires_at: datetime | None
    current_stage_id: uuid.UUID | None
    current_node: str | None = Field(description="the node being executed, if any")
    current_iteration: int | None
    current_stage_started_at: datetime | None
    idempotency_key: str | None
    lease_expired: bool | None = Field(description="for a pending or running run: whether no process holds it")


class RunOut(RunSummary):
    """A run, whole."""

    params: dict[str, Any]
    result: Any = None


class RunListing(_Shape):
    """One page of runs."""

    data: list[RunOut | RunSummary]
    total: int | None = Field(description="how many runs match (None with total=none); total_kind says how it was "
                                          "counted")
    page: int | None = Field(description="the page's number (None for a page asked for by cursor)")
    page_size: int
    total_pages: int | None
    total_kind: Literal["exact", "estimate", "none"] = Field(
        description="'exact' (counted), 'estimate' (PostgreSQL's planner) or 'none' (not counted)")
    next_cursor: str | None = Field(description="where the next page starts (pass it as cursor=); None on the last "
                                                "page")


class StageOut(_Shape):
    """One node execution."""

    id: uuid.UUID
    run_id: uuid.UUID
    node_name: str
    iteration: int
    status: StageStatusName
    input_snapshot: Any = None
    input_from: uuid.UUID | None
    output_snapshot: Any = None
    duration_ms: float | None
    error_message: str | None
    error_traceback: str | None
    created_at: datetime
    attempt: int | None = Field(description="the run's attempt that executed it (None: written before wfkit "
                                            "recorded it)")
    output_unchanged: list[str] | None = Field(
        default=None, description="the keys of output_snapshot whose values the stage's input held already, as they "
                                  "were (stored once, in the input: output_snapshot has them all); None: none")


class DecisionOut(_Shape):
    """One routing choice."""

    id: uuid.UUID
    run_id: uuid.UUID
    from_node: str
    to_node: str | None
    predicate_name: str | None
    predicate_result: bool
    reason: str | None
    created_at: datetime


class WorkflowOut(_Shape):
    """A registered workflow."""

    name: str
    description: str
    plugin: str


class WorkflowDetail(WorkflowOut):
    """A registered workflow, with its params' JSON Schema when it declares a params model."""

    params_schema: dict[str, Any] | None


class GraphOut(_Shape):
    """The graph a workflow builds: as JSON (an edge to END has ``to_node`` null) and as mermaid."""

    graph: dict[str, Any]
    mermaid: str


class RunRequest(BaseModel):
    """The body of a request that creates a run."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(default_factory=dict)


class PruneOut(_Shape):
    """What a prune did (``DELETE /workflows/runs``), or with ``dry_run`` would do."""

    deleted: int = Field(description="runs deleted (a dry run: runs that would be)")
    dry_run: bool
    cutoff: datetime = Field(description="runs that ended before this, by the database's clock, were pruned")
    statuses: list[RunStatusName]
    workflow_names: list[str] = Field(description="the workflows pruned (empty: all)")
    batches: int = Field(description="transactions committed, each deleting a batch of runs")
    jobs_deleted: int = Field(description="finished jobs of the workers' queue deleted with their runs")
    seconds: float


class Health(_Shape):
    """The server can reach its database, migrated to the revision it needs."""

    status: Literal["ok"]
    revision: str
