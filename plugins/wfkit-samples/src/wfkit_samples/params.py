"""Params models of the sample workflows (imported only when a workflow is built)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = "The quick brown fox jumps over the lazy dog. The dog sleeps."


class ReviewParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = "workflow engines"
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    max_rounds: int = Field(default=5, ge=1, le=50)


class BranchingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    priority: Literal["express", "standard"] = "standard"
    items: int = Field(default=3, ge=1, le=1000)
