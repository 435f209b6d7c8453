"""Tables for the whole life of a run: deliveries in, runs and plans, tasks and their attempts,
every tool and model call, a timeline, and the executor's jobs.

States are stored as short strings (not database enums) so later states need no type migration.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Field, SQLModel

from bot.store.types import UTCDateTime, utcnow

STATE = sa.String(24)


def _github_id(**kwargs: Any) -> Any:
    """A GitHub id: 64-bit, since comment and repository ids have outgrown 32."""
    return Field(sa_type=sa.BigInteger, **kwargs)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def _when() -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=True)


def _json_list() -> Any:
    return Field(default_factory=list, sa_type=JSON, nullable=False)


def _json_dict() -> Any:
    return Field(default_factory=dict, sa_type=JSON, nullable=False)


class Installation(SQLModel, table=True):
    """A GitHub App installation, kept current by `installation` events."""

    __tablename__ = "installations"

    id: int = _github_id(primary_key=True, sa_column_kwargs={"autoincrement": False})
    account_login: str = Field(max_length=255)
    account_type: str = Field(default="User", max_length=32)
    repository_selection: str = Field(default="selected", max_length=16)
    suspended_at: datetime | None = _when()
    deleted_at: datetime | None = _when()
    created_at: datetime = _created()
    updated_at: datetime = _created()


class InstallationRepository(SQLModel, table=True):
    """A repository an installation can reach, kept current by `installation_repositories`."""

    __tablename__ = "installation_repositories"

    id: int = _github_id(primary_key=True, sa_column_kwargs={"autoincrement": False})
    installation_id: int = _github_id(foreign_key="installations.id", index=True)
    full_name: str = Field(max_length=255)
    private: bool = False
    removed_at: datetime | None = _when()
    updated_at: datetime = _created()


class DeliveryOutcome(StrEnum):
    queued = "queued"
    ignored = "ignored"


class Delivery(SQLModel, table=True):
    """One accepted webhook delivery; the unique `delivery_id` makes a redelivery a duplicate.

    A delivery that names a `job` gets it from the database itself: a trigger (see migration
    0001) adds the `jobs` row in the same statement, so recording a delivery is one INSERT.
    """

    __tablename__ = "deliveries"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=200, unique=True)
    event: str = Field(max_length=64)
    action: str | None = Field(default=None, max_length=64)
    job: str | None = Field(default=None, max_length=64)
    installation_id: int | None = _github_id(default=None)
    repository: str | None = Field(default=None, max_length=255)
    sender: str | None = Field(default=None, max_length=255)
    outcome: str = Field(sa_type=STATE)
    reason: str | None = Field(default=None, max_length=255)
    payload: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    received_at: datetime = _created()


class RunState(StrEnum):
    planning = "planning"
    awaiting_approval = "awaiting_approval"
    executing = "executing"
    pr_open = "pr_open"
    revising = "revising"
    needs_human = "needs_human"
    done = "done"
    closed = "closed"
    failed = "failed"
    cancelled = "cancelled"


class RunMode(StrEnum):
    """Who works a run's issue: the planner's graph of tasks, or one agent with the whole issue."""

    orchestrated = "orchestrated"
    single = "single"


TERMINAL_RUN_STATES = frozenset(
    {RunState.done, RunState.closed, RunState.failed, RunState.cancelled}
)


class Run(SQLModel, table=True):
    """One issue's journey from label to draft pull request.

    `active` is true until the run ends; a partial unique index allows one active run per issue.
    """

    __tablename__ = "runs"
    __table_args__ = (
        sa.Index(
            "uq_runs_active_issue",
            "repository_id",
            "issue_number",
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    installation_id: int | None = _github_id(default=None, index=True)
    repository_id: int = _github_id()
    repository: str = Field(max_length=255)
    issue_number: int
    issue_title: str = Field(default="", max_length=1024)
    state: str = Field(default=RunState.planning, sa_type=STATE, index=True)
    active: bool = True
    mode: str = Field(default=RunMode.orchestrated, sa_type=STATE)
    # Why it has that mode: "default", "config", "command", "auto" or "baseline" (drawn at random).
    mode_reason: str = Field(default="default", max_length=16)
    trigger_delivery_id: int | None = Field(default=None, foreign_key="deliveries.id", unique=True)
    triggered_by: str | None = Field(default=None, max_length=255)
    branch: str | None = Field(default=None, max_length=255)
    base_sha: str | None = Field(default=None, max_length=64)
    head_sha: str | None = Field(default=None, max_length=64)
    status_comment_id: int | None = _github_id(default=None)
    pull_request_number: int | None = None
    check_run_id: int | None = _github_id(default=None)
    tests_passed: bool | None = None  # the repository's tests on the final branch
    status_digest: str | None = Field(default=None, max_length=64)  # of the body last shown
    config: dict[str, Any] = _json_dict()
    cost_usd: float = 0.0
    error: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()
    ended_at: datetime | None = _when()


class PlanRevision(SQLModel, table=True):
    """One revision (r1, r2, ...) of a run's plan, as proposed and, once, approved."""

    __tablename__ = "plan_revisions"
    __table_args__ = (sa.UniqueConstraint("run_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    number: int
    source: str = Field(default="planner", max_length=16)
    summary: str = ""
    plan: dict[str, Any] = _json_dict()
    problems: list[str] = _json_list()
    feedback: str | None = None
    approved_by: str | None = Field(default=None, max_length=255)
    approved_at: datetime | None = _when()
    created_at: datetime = _created()


class TaskState(StrEnum):
    pending = "pending"
    running = "running"
    reviewing = "reviewing"
    awaiting_approval = "awaiting_approval"
    accepted = "accepted"
    integrated = "integrated"
    escalated = "escalated"
    failed = "failed"
    skipped = "skipped"
    cancelled = "cancelled"


class Task(SQLModel, table=True):
    """A node of the plan graph: one worker role's job, its dependencies and its write set."""

    __tablename__ = "tasks"
    __table_args__ = (sa.UniqueConstraint("run_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    revision_id: int = Field(foreign_key="plan_revisions.id")
    key: str = Field(max_length=16)
    title: str = Field(max_length=255)
    role: str = Field(max_length=32)
    description: str = ""
    acceptance: str = ""
    depends_on: list[str] = _json_list()
    files: list[str] = _json_list()
    context_files: list[str] = _json_list()
    effort: int | None = None  # the planner's 1..5 size of the task, if it gave one
    needs_approval: bool = False
    approved_by: str | None = Field(default=None, max_length=255)
    state: str = Field(default=TaskState.pending, sa_type=STATE)
    attempts: int = 0
    commit_sha: str | None = Field(default=None, max_length=64)
    cost_usd: float = 0.0  # what its attempts and reviews cost, summed as it ends
    # What the task's next attempt is told: a review's or an integration's reason to redo it.
    feedback: str | None = None
    created_at: datetime = _created()
    updated_at: datetime = _created()


class AttemptStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    retried = "retried"
    escalated = "escalated"
    cancelled = "cancelled"


class TaskAttempt(SQLModel, table=True):
    """One worker attempt at a task, with everything CONTRACT §7 asks to be recorded."""

    __tablename__ = "task_attempts"
    __table_args__ = (sa.UniqueConstraint("task_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="tasks.id", index=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    number: int
    role: str = Field(max_length=32)
    model: str = Field(default="", max_length=255)
    input_summary: str = ""
    status: str = Field(default=AttemptStatus.running, sa_type=STATE)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    confidence: float | None = None
    summary: str | None = None
    notes: str | None = None
    work_plan: list[str] = _json_list()
    commit_sha: str | None = Field(default=None, max_length=64)
    diff_stat: dict[str, Any] = _json_dict()
    tests: dict[str, Any] = _json_dict()
    review_verdict: str | None = Field(default=None, max_length=16)
    review_feedback: str | None = None
    error: str | None = None
    started_at: datetime = _created()
    ended_at: datetime | None = _when()
    # Where it ran (many machines): the host name and the process id of the worker.
    host: str | None = Field(default=None, max_length=255)
    process: int | None = None
    wall_seconds: float | None = None


class ToolCall(SQLModel, table=True):
    """One tool call made by a model during an attempt or a planning/review step."""

    __tablename__ = "tool_calls"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    attempt_id: int | None = Field(default=None, foreign_key="task_attempts.id", index=True)
    sequence: int
    tool: str = Field(max_length=64)
    arguments: dict[str, Any] = _json_dict()
    ok: bool = True
    outcome: str = ""
    duration_ms: float = 0.0
    created_at: datetime = _created()


class ModelCall(SQLModel, table=True):
    """One request to a model provider, with its usage and cost (null cost: unknown price)."""

    __tablename__ = "model_calls"
    # The daily cap sums a day's costs before every call: read from the index alone.
    __table_args__ = (sa.Index("ix_model_calls_created_at_cost", "created_at", "cost_usd"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, foreign_key="runs.id", index=True)
    task_id: int | None = Field(default=None, foreign_key="tasks.id")
    attempt_id: int | None = Field(default=None, foreign_key="task_attempts.id", index=True)
    role: str = Field(max_length=32)
    provider: str = Field(max_length=32)
    model: str = Field(max_length=255)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    retries: int = 0
    stop_reason: str | None = Field(default=None, max_length=32)
    error: str | None = None
    created_at: datetime = _created()


class TimelineEvent(SQLModel, table=True):
    """Something that happened to a run, in order; the dashboard and status comment read these."""

    __tablename__ = "timeline_events"
    # With a delivery id, an event is recorded once however often its job runs.
    __table_args__ = (sa.UniqueConstraint("run_id", "kind", "delivery_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="runs.id", index=True)
    task_key: str | None = Field(default=None, max_length=16)
    kind: str = Field(max_length=64)
    message: str = ""
    data: dict[str, Any] = _json_dict()
    delivery_id: int | None = Field(default=None, foreign_key="deliveries.id")
    created_at: datetime = _created()


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    # Ended without finishing and never retried: a person stopped its run, or a queued copy
    # with the same queueing lock does its work.
    aborted = "aborted"


def _jobs_in(state: JobState) -> dict[str, Any]:
    """The WHERE of a partial index over jobs in `state` (a literal, so the planner can use it)."""
    condition = sa.text(f"state = '{state}'")
    return {"sqlite_where": condition, "postgresql_where": condition}


class Job(SQLModel, table=True):
    """A unit of work for the executor: a job name and the ids it works on, never whole objects.

    A job in `running` whose lease has expired belongs to a dead process and is claimed again;
    every claim increments `fence`, so the earlier holder's late writes can be refused. Jobs
    sharing a `lock` run one at a time in the order enqueued; at most one job per
    `queueing_lock` waits in the queue. Both are enforced by partial unique indexes.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index("ix_jobs_claim", "state", "run_after"),
        sa.Index(
            "uq_jobs_queueing_lock", "queueing_lock", unique=True, **_jobs_in(JobState.queued)
        ),
        sa.Index("uq_jobs_running_lock", "lock", unique=True, **_jobs_in(JobState.running)),
        # The claim asks, per candidate, whether an older job with its lock waits before it.
        sa.Index("ix_jobs_queued_lock", "lock", "id", **_jobs_in(JobState.queued)),
        # The relay (many machines) looks for queued jobs not yet handed to the queue.
        sa.Index(
            "ix_jobs_to_relay",
            "id",
            sqlite_where=sa.text("state = 'queued' AND relayed_at IS NULL"),
            postgresql_where=sa.text("state = 'queued' AND relayed_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64)
    args: dict[str, Any] = _json_dict()
    state: str = Field(
        default=JobState.queued, sa_type=STATE, sa_column_kwargs={"server_default": "queued"}
    )
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    max_attempts: int = Field(default=5, sa_column_kwargs={"server_default": "5"})
    run_after: datetime = _created()
    locked_by: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _when()
    last_error: str | None = None
    delivery_id: int | None = Field(default=None, foreign_key="deliveries.id", index=True)
    lock: str | None = Field(default=None, max_length=128)
    queueing_lock: str | None = Field(default=None, max_length=128)
    run_id: str | None = Field(default=None, max_length=32, index=True)
    fence: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    abort_requested: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = _created()
    started_at: datetime | None = _when()
    finished_at: datetime | None = _when()
    # When the job was handed to procrastinate's queue (many machines); None when not, or when
    # it was queued again since.
    relayed_at: datetime | None = _when()


class CommitBundle(SQLModel, table=True):
    """An accepted task's commit as a git bundle, so that whichever machine integrates the task
    has it (each machine mirrors the repository on its own disk). Gone once integrated."""

    __tablename__ = "commit_bundles"

    sha: str = Field(primary_key=True, max_length=64)
    run_id: str = Field(foreign_key="runs.id", max_length=32, index=True)
    task_key: str = Field(max_length=64)
    bundle: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = _created()


class WebSession(SQLModel, table=True):
    """A person signed in with GitHub: found by a digest of the cookie's secret (the secret itself
    is never stored), with the repositories they could read when they signed in."""

    __tablename__ = "web_sessions"

    id_hash: str = Field(primary_key=True, max_length=64)
    login: str = Field(max_length=64)
    repositories: list[str] = _json_list()
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
