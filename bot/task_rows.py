"""Task rows for an approved plan revision: one per planned task, made once."""

from __future__ import annotations

from sqlmodel import Session

from bot.config import RepoConfig
from bot.plan.schema import Plan, PlanTask
from bot.plan.validate import writes_protected
from bot.store.models import PlanRevision, Task


def add_task_rows(
    session: Session,
    run_id: str,
    revision: PlanRevision,
    config: RepoConfig,
    existing: dict[str, Task],
) -> None:
    """Rows for the revision's tasks that have none yet (added to `existing` too)."""
    for planned in Plan.model_validate(revision.plan).tasks:
        if planned.id not in existing:
            row = _task_row(run_id, revision, planned, config)
            session.add(row)
            existing[planned.id] = row


def _task_row(run_id: str, revision: PlanRevision, planned: PlanTask, config: RepoConfig) -> Task:
    return Task(
        run_id=run_id,
        revision_id=revision.id or 0,
        key=planned.id,
        title=planned.title,
        role=planned.role,
        description=planned.description,
        acceptance=planned.acceptance,
        depends_on=planned.depends_on,
        files=planned.files,
        context_files=planned.context_files,
        effort=planned.effort,
        needs_approval=writes_protected(planned, config.protected_paths),
    )
