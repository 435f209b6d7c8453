"""The plan object of CONTRACT §6, as `submit_plan` takes it and `/edit-plan` accepts it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIN_EFFORT, MAX_EFFORT = 1, 5

Role = Literal["implementer", "test_writer", "refactorer", "static_analyst"]


class PlanTask(BaseModel):
    """One task: a worker role's change, what it needs first, and the files it may write."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="T1, T2, ... unique within the plan")
    title: str = Field(min_length=1, max_length=120)
    role: Role
    description: str = Field(description="what to do and why")
    depends_on: list[str] = Field(default_factory=list, description="ids of tasks to finish first")
    files: list[str] = Field(default_factory=list, description="the write set; new files allowed")
    context_files: list[str] = Field(default_factory=list, description="what the worker reads")
    acceptance: str = Field(description="how a reviewer knows it is done")
    addresses: list[int] = Field(
        default_factory=list, description="ids of the pull request review comments it answers"
    )
    effort: int | None = Field(
        default=None,
        ge=MIN_EFFORT,
        le=MAX_EFFORT,
        description="how much work the task is, 1 (a few lines) to 5 (a large change); tasks on"
        " the longest chain of effort start first",
    )


class Plan(BaseModel):
    """A summary and the tasks, in any order; dependencies make the graph."""

    model_config = ConfigDict(extra="forbid")

    summary: str = Field(min_length=1, description="one paragraph")
    tasks: list[PlanTask] = Field(min_length=1)
