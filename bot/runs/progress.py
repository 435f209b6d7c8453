"""A run as it stands, read from the store: the tasks as the scheduler sees them, and the plan,
tasks and spend as the status comment and the pull request show them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from bot.config import RepoConfig
from bot.llm.recording import run_total, task_spend
from bot.llm.registry import model_name_for
from bot.plan.render import Finding, RunProgress, TaskProgress, mode_text
from bot.plan.schema import Plan, PlanTask
from bot.scheduler import TaskView, effort_estimate
from bot.settings import Settings
from bot.store.models import (
    AttemptStatus,
    PlanRevision,
    Run,
    Task,
    TaskAttempt,
    TaskState,
    TimelineEvent,
)


def chosen_models(config: RepoConfig) -> dict[str, str]:
    return config.models.model_dump(exclude_none=True)


def task_views(session: Session, run_id: str) -> list[TaskView]:
    tasks = session.exec(select(Task).where(Task.run_id == run_id).order_by(col(Task.id)))
    return [
        TaskView(
            t.key,
            t.state,
            tuple(t.depends_on),
            tuple(t.files),
            t.needs_approval,
            effort_estimate(t.effort),
        )
        for t in tasks
    ]


def task_row(session: Session, run_id: str, key: str) -> Task:
    return session.exec(select(Task).where(Task.run_id == run_id, Task.key == key)).one()


def approved_revisions(session: Session, run_id: str) -> Sequence[PlanRevision]:
    """The run's approved plan revisions, oldest first: together they are its plan."""
    query = (
        select(PlanRevision)
        .where(PlanRevision.run_id == run_id, col(PlanRevision.approved_by).is_not(None))
        .order_by(col(PlanRevision.number))
    )
    return session.exec(query).all()


def final_plan(approved: Sequence[Plan]) -> Plan:
    """The approved revisions as the one plan carried out: every summary, and each task once,
    from the first revision that has it (as its task row was made)."""
    tasks: dict[str, PlanTask] = {}
    for plan in approved:
        for task in plan.tasks:
            tasks.setdefault(task.id, task)
    summary = "\n\n".join(plan.summary for plan in approved)
    return Plan(summary=summary, tasks=list(tasks.values()))


def run_progress(session: Session, run: Run, settings: Settings) -> RunProgress:
    """The run's plan (its approved revisions as one), every task as it stands, the spend."""
    revisions = approved_revisions(session, run.id)
    spent, unpriced = run_total(session, run.id)
    return RunProgress(
        plan=final_plan([Plan.model_validate(revision.plan) for revision in revisions]),
        revisions=[revision.number for revision in revisions],
        tasks=_task_progress(session, run, settings),
        tokens=spent.tokens,
        usd=spent.usd,
        unpriced_calls=unpriced,
        worked_by=mode_text(run.mode, run.mode_reason),
    )


def _task_progress(session: Session, run: Run, settings: Settings) -> list[TaskProgress]:
    """Each task with its state, spend, attempts, and the models its attempts recorded
    (the configured one before any has)."""
    configured = chosen_models(RepoConfig.model_validate(run.config))
    used: dict[int, list[str]] = {}
    for attempt in session.exec(
        select(TaskAttempt).where(TaskAttempt.run_id == run.id).order_by(col(TaskAttempt.number))
    ):
        models = used.setdefault(attempt.task_id, [])
        if attempt.model and attempt.model not in models:
            models.append(attempt.model)
    rows = []
    for task in session.exec(select(Task).where(Task.run_id == run.id).order_by(col(Task.id))):
        spend = task_spend(session, task.id or 0)
        models = used.get(task.id or 0) or [model_name_for(task.role, settings, configured)]
        rows.append(
            TaskProgress(
                key=task.key,
                title=task.title,
                state=str(task.state),
                role=task.role,
                model=", ".join(models),
                tokens=spend.tokens,
                usd=spend.usd,
                attempts=task.attempts,
            )
        )
    return rows


def findings(session: Session, run_id: str) -> list[Finding]:
    """What each accepted static analyst reported; its task adds no commit, so the pull request
    is where its findings go."""
    analysts = session.exec(
        select(Task)
        .where(
            Task.run_id == run_id,
            Task.role == "static_analyst",
            Task.state == TaskState.integrated,
        )
        .order_by(col(Task.id))
    )
    found = []
    for task in analysts:
        accepted = session.exec(
            select(TaskAttempt)
            .where(
                TaskAttempt.task_id == task.id,
                TaskAttempt.status == AttemptStatus.succeeded,
                TaskAttempt.review_verdict == "accept",
            )
            .order_by(col(TaskAttempt.number).desc())
        ).first()
        if accepted is not None:
            said = [accepted.summary or "", accepted.notes or ""]
            text = "\n\n".join(part.strip() for part in said if part.strip())
            found.append(Finding(task.key, task.title, text))
    return found


def notices(session: Session, run_id: str, keys: Sequence[str]) -> list[tuple[str, str]]:
    """Why each of `keys` stopped, where its last state change left words for the issue."""
    found = []
    for key in keys:
        query = (
            select(TimelineEvent)
            .where(
                TimelineEvent.run_id == run_id,
                TimelineEvent.task_key == key,
                col(TimelineEvent.kind).startswith("task."),
                col(TimelineEvent.kind) != "task.cancelled",
            )
            .order_by(col(TimelineEvent.id).desc())
        )
        last = session.exec(query).first()
        if last is not None and last.data.get("notice"):
            found.append((key, last.message))
    return found
