"""The life of a run: `lifecycle` holds its states and their changes, and the steps a run goes
through each have a module here. This module holds what they all read: ids, branches, events."""

from __future__ import annotations

import logging
import uuid

import sqlalchemy as sa
from sqlmodel import Session, select

from bot.store.db import insert_ignoring_conflicts
from bot.store.models import Run, TimelineEvent
from bot.store.types import utcnow

log = logging.getLogger(__name__)

# The label when `.github/baton.yml` cannot be read (CONTRACT §4 default).
DEFAULT_LABEL = "baton"


def new_run_id() -> str:
    """A short, unguessable id; it appears in the status comment marker and commit trailers."""
    return uuid.uuid4().hex[:16]


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


def run_for_branch(session: Session, repository_id: int, branch: str) -> Run | None:
    """The run that pushes to `branch`: a pull request's head names its run even before the
    run has recorded the pull request's number."""
    query = select(Run).where(Run.repository_id == repository_id, Run.branch == branch)
    return session.exec(query).first()


def run_for_pull_request(session: Session, repository_id: int, number: int) -> Run | None:
    """The newest run whose draft pull request is `number`."""
    query = (
        select(Run)
        .where(Run.repository_id == repository_id, Run.pull_request_number == number)
        .order_by(sa.desc(Run.created_at))  # type: ignore[call-overload]
    )
    return session.exec(query).first()
