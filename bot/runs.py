"""The life of a run. Each step loads state, does one thing and writes state in one transaction."""

from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.config import RepoConfig
from bot.events import IssueLabeled
from bot.executor import enqueue
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import (
    AttemptStatus,
    Run,
    RunState,
    Task,
    TaskAttempt,
    TaskState,
    TimelineEvent,
)
from bot.store.types import utcnow

log = logging.getLogger(__name__)

# Queued when a run ends; `bot.retention` removes the run's worktrees and pinned commits.
CLEAR_RUN_JOB = "clear_run_files"

# The label when `.github/baton.yml` cannot be read (CONTRACT §4 default).
DEFAULT_LABEL = "baton"


def new_run_id() -> str:
    """A short, unguessable id; it appears in the status comment marker and commit trailers."""
    return uuid.uuid4().hex[:16]


def start_run(
    session: Session,
    event: IssueLabeled,
    delivery_row_id: int,
    config: RepoConfig,
    problem: str | None = None,
) -> Run | None:
    """Record a new run for a labelled issue: `planning`, or `failed` when its config has a
    `problem`; None if nothing should start.

    Idempotent: the run's unique trigger delivery, and the one-active-run-per-issue index,
    make a repeated call (a job run again after a crash) insert nothing.
    """
    now = utcnow()
    run_id = new_run_id()
    row = {
        "id": run_id,
        "installation_id": event.installation.id,
        "repository_id": event.repository.id,
        "repository": event.repository.full_name,
        "issue_number": event.issue.number,
        "issue_title": event.issue.title[:1024],
        "state": RunState.failed if problem else RunState.planning,
        "active": problem is None,
        "error": problem,
        "trigger_delivery_id": delivery_row_id,
        "triggered_by": event.sender.login,
        "branch": run_branch(
            session, config.branch_prefix, event.repository.id, event.issue.number
        ),
        "config": config.model_dump(mode="json"),
        "cost_usd": 0.0,
        "created_at": now,
        "updated_at": now,
    }
    if not insert_ignoring_conflicts(session, Run, [row]):
        log.info("no new run: this delivery already started one, or the issue has an active run")
        return None
    outcome = f"cannot start: {problem}" if problem else "planning"
    record_event(
        session,
        run_id,
        "run.started",
        f"@{event.sender.login} labelled #{event.issue.number}; {outcome}",
        delivery_id=delivery_row_id,
    )
    return session.get(Run, run_id)


def run_branch(session: Session, prefix: str, repository_id: int, issue_number: int) -> str:
    """`{prefix}issue-{n}` for an issue's first run, then `-2`, `-3`, …: a new run never pushes
    to an earlier run's branch (CONTRACT §5)."""
    earlier = session.exec(
        select(sa.func.count())
        .select_from(Run)
        .where(Run.repository_id == repository_id, Run.issue_number == issue_number)
    ).one()
    suffix = f"-{earlier + 1}" if earlier else ""
    return f"{prefix}issue-{issue_number}{suffix}"


def end_run_in(
    session: Session,
    run_id: str,
    state: RunState,
    reason: str,
    *,
    delivery_id: int | None = None,
) -> bool:
    """The run stops for good and its issue may be labelled again; False when it had ended
    already. The timeline event names the delivery that ended it, if one did."""
    run = session.get(Run, run_id)
    if run is None or not run.active:
        return False
    run.state, run.active, run.error = state, False, reason
    run.ended_at = run.updated_at = utcnow()
    record_event(session, run_id, f"run.{state}", reason, delivery_id=delivery_id)
    enqueue(session, CLEAR_RUN_JOB, run_id=run_id)  # its worktrees go at once
    return True


def fail_run(session: Session, run_id: str, reason: str) -> bool:
    """End the run `failed` with its unfinished tasks and attempts closed, as when the job
    driving it gave up; False when it had ended already."""
    if not end_run_in(session, run_id, RunState.failed, reason):
        return False
    unfinished = select(Task).where(
        Task.run_id == run_id,
        col(Task.state).not_in([TaskState.integrated, TaskState.skipped]),
    )
    for task in session.exec(unfinished):
        task.state, task.updated_at = TaskState.cancelled, utcnow()
    running = select(TaskAttempt).where(
        TaskAttempt.run_id == run_id, TaskAttempt.status == AttemptStatus.running
    )
    for attempt in session.exec(running):
        attempt.status, attempt.error = AttemptStatus.failed, "the run failed"
        attempt.ended_at = utcnow()
    return True


def record_event(
    session: Session,
    run_id: str,
    kind: str,
    message: str,
    *,
    delivery_id: int | None = None,
    task_key: str | None = None,
    data: dict[str, object] | None = None,
) -> bool:
    """Add a timeline event; with a delivery id, a second copy of the same event is not added."""
    row = {
        "run_id": run_id,
        "kind": kind,
        "message": message,
        "delivery_id": delivery_id,
        "task_key": task_key,
        "data": data or {},
        "created_at": utcnow(),
    }
    return bool(insert_ignoring_conflicts(session, TimelineEvent, [row]))


def active_run_for_issue(session: Session, repository_id: int, issue_number: int) -> Run | None:
    """The issue's run that has not ended, if any."""
    query = select(Run).where(
        Run.repository_id == repository_id,
        Run.issue_number == issue_number,
        sa.true() == Run.active,
    )
    return session.exec(query).first()


def run_for_pull_request(session: Session, repository_id: int, number: int) -> Run | None:
    """The newest run whose draft pull request is `number`."""
    query = (
        select(Run)
        .where(Run.repository_id == repository_id, Run.pull_request_number == number)
        .order_by(sa.desc(Run.created_at))  # type: ignore[call-overload]
    )
    return session.exec(query).first()
