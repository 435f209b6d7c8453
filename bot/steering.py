"""What people say to a run: the label that starts it and the slash commands that steer it.

Only people with write access or more are obeyed (CONTRACT §5); anyone else gets a short reply,
posted once per delivery however often the job runs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from bot import runs
from bot.commands import Command, CommandError, parse_command
from bot.config import CONFIG_PATH, ConfigError, RepoConfig, parse_config
from bot.events import IssueCommentCreated, IssueLabeled
from bot.executor import JobContext, enqueue
from bot.github.repo import RepoClient
from bot.plan.render import render_problems
from bot.plan.validate import PlanSyntaxError, check_plan, parse_plan_yaml
from bot.planning import (
    REVISION_REQUESTED,
    Planned,
    end_run,
    load_run,
    newest_revision,
    plan_rules,
    publish_revision,
    show_status,
    updated_mirror,
)
from bot.store.models import PlanRevision, Run, RunState, Task, TaskState
from bot.store.types import utcnow

log = logging.getLogger(__name__)

EDIT_REFUSED = "The edited plan was not used"
TASK_COMMANDS = frozenset({"approve-task", "retry", "skip"})
# A task a person may retry or skip: it stopped, or waits for them.
STOPPED = frozenset({TaskState.escalated, TaskState.failed, TaskState.awaiting_approval})
NO_RUN = "There is no active Baton run on this issue."
NOT_ALLOWED = "only people with write access to this repository can {what}."


def _repo_for(context: JobContext, installation_id: int, full_name: str) -> RepoClient:
    github = context.integrations.require_github()
    return RepoClient(github.installation(installation_id), full_name)


async def read_config(repo: RepoClient) -> tuple[RepoConfig | None, str | None]:
    """The repository's `.github/baton.yml` from its default branch, or the problem with it."""
    repository = await repo.repository()
    try:
        return parse_config(await repo.file_at(CONFIG_PATH, repository.default_branch)), None
    except ConfigError as error:
        return None, str(error)


async def admit(context: JobContext, event: IssueLabeled, delivery_id: int) -> str | None:
    """`issues.labeled`: start a run if the label is the repository's and the sender may; its id."""
    repo = _repo_for(context, event.installation.id, event.repository.full_name)
    config, problem = await read_config(repo)
    label = config.label if config else runs.DEFAULT_LABEL
    if event.label.name != label:
        log.info("label %r is not this repository's label %r", event.label.name, label)
        return None
    sender = event.sender.login
    if not await repo.may_command(sender):
        reply = f"@{sender}, {NOT_ALLOWED.format(what='start Baton')}"
        await repo.reply_once(event.issue.number, f"delivery-{delivery_id}", reply)
        return None

    def start(session: Session) -> Run | None:
        run = runs.start_run(session, event, delivery_id, config or RepoConfig(), problem)
        if run is not None and problem is None:
            enqueue(session, "plan_run", run_id=run.id)
        if run is not None:
            session.expunge(run)
        return run

    run = await context.store.run(start)
    if run is not None and problem is not None:
        title = f"Baton cannot start: `{CONFIG_PATH}` has a problem"
        await show_status(context, run, repo, render_problems(title, [problem]))
    return run.id if run else None


async def steer(context: JobContext, event: IssueCommentCreated, delivery_id: int) -> None:
    """A slash command in an issue comment, obeyed if the sender may command Baton."""
    try:
        command = parse_command(event.comment.body)
    except CommandError as error:
        repo = _repo_for(context, event.installation.id, event.repository.full_name)
        await repo.reply_once(event.issue.number, f"delivery-{delivery_id}", str(error))
        return
    if command is None:
        return
    repo = _repo_for(context, event.installation.id, event.repository.full_name)
    key = f"delivery-{delivery_id}"
    sender = event.sender.login
    if not await repo.may_command(sender):
        what = f"use `/{command.name}`"
        await repo.reply_once(
            event.issue.number, key, f"@{sender}, {NOT_ALLOWED.format(what=what)}"
        )
        return
    run_id = await context.store.run(
        lambda session: _active_run_id(session, event.repository.id, event.issue.number)
    )
    if run_id is None:
        await repo.reply_once(
            event.issue.number, key, "There is no active Baton run on this issue."
        )
        return
    run = await load_run(context, run_id)
    answer = await _obey(context, run, repo, command, event)
    if answer:
        await repo.reply_once(event.issue.number, key, answer)
    else:
        await repo.react("+1", comment=event.comment.id)


def _active_run_id(session: Session, repository_id: int, number: int) -> str | None:
    run = runs.active_run_for_issue(session, repository_id, number)
    return run.id if run else None


async def _obey(
    context: JobContext, run: Run, repo: RepoClient, command: Command, event: IssueCommentCreated
) -> str | None:
    """Carry out the command; a reply when it cannot be, None when it was."""
    if command.name == "cancel":
        await end_run(context, run, repo, RunState.cancelled, f"cancelled by @{event.sender.login}")
        await show_status(context, run, repo, f"**Cancelled** by @{event.sender.login}.")
        return None
    if command.name in TASK_COMMANDS:
        return await _steer_task(context, run, command, event.sender.login)
    if run.state != RunState.awaiting_approval:
        return (
            f"`/{command.name}` applies while a plan waits for approval; this run is {run.state}."
        )
    if command.name == "approve-plan":
        return await _approve(context, run, repo, command, event)
    if command.name == "revise-plan":
        return await _revise(context, run, repo, command)
    return await _edit(context, run, repo, command)


async def _approve(
    context: JobContext, run: Run, repo: RepoClient, command: Command, event: IssueCommentCreated
) -> str | None:
    written_at = event.comment.created_at or datetime.now(UTC)
    sender = event.sender.login

    def approve(session: Session) -> str | None:
        newest = newest_revision(session, run.id)
        if newest is None:
            return "There is no plan to approve yet."
        wanted = command.revision or _newest_before(session, run.id, written_at) or newest.number
        if wanted != newest.number:
            return (
                f"r{wanted} is not the newest plan: r{newest.number} is. "
                f"Approve it with `/approve-plan r{newest.number}`."
            )
        newest.approved_by, newest.approved_at = sender, utcnow()
        current = session.get(Run, run.id)
        if current is None or current.state != RunState.awaiting_approval:
            return "This run no longer waits for approval."
        current.state, current.updated_at = RunState.executing, utcnow()
        runs.record_event(
            session, run.id, "plan.approved", f"r{newest.number} approved by @{sender}"
        )
        enqueue(session, "execute_run", run_id=run.id)
        return None

    refusal = await context.store.run(approve)
    if refusal is None:
        await show_status(context, run, repo, f"**Plan approved** by @{sender}; executing.")
    return refusal


def _newest_before(session: Session, run_id: str, moment: datetime) -> int | None:
    """The newest revision that existed when the comment was written."""
    query = (
        select(PlanRevision.number)
        .where(PlanRevision.run_id == run_id, col(PlanRevision.created_at) <= moment)
        .order_by(col(PlanRevision.number).desc())
    )
    return session.exec(query).first()


async def _revise(context: JobContext, run: Run, repo: RepoClient, command: Command) -> str | None:
    if not command.text.strip():
        return "`/revise-plan` needs feedback after it: what should the plan change?"

    def request(session: Session) -> None:
        current = session.get(Run, run.id)
        if current is None:
            return
        current.state, current.updated_at = RunState.planning, utcnow()
        runs.record_event(
            session,
            run.id,
            REVISION_REQUESTED,
            "plan revision requested",
            data={"feedback": command.text},
        )
        enqueue(session, "plan_run", run_id=run.id)

    await context.store.run(request)
    await show_status(context, run, repo, "**Revising the plan** with the feedback given.")
    return None


async def _edit(context: JobContext, run: Run, repo: RepoClient, command: Command) -> str | None:
    try:
        plan = parse_plan_yaml(command.plan_yaml or "")
    except PlanSyntaxError as error:
        return render_problems(EDIT_REFUSED, error.problems)
    config = RepoConfig.model_validate(run.config)
    mirror = await updated_mirror(context, run)
    files = await mirror.files_at(run.base_sha or (await repo.repository()).default_branch)
    rules = plan_rules(config)
    check = check_plan(plan, files, rules)
    if check.errors:
        return render_problems(EDIT_REFUSED, check.errors)
    await publish_revision(context, run, repo, config, Planned(plan, check), source="edit")
    return None


async def _steer_task(context: JobContext, run: Run, command: Command, sender: str) -> str | None:
    """`/approve-task`, `/retry` and `/skip` on one task of an executing run."""
    if run.state not in (RunState.executing, RunState.needs_human):
        return f"`/{command.name}` applies while the plan's tasks run; the run is {run.state}."

    def steer(session: Session) -> str | None:
        task = session.exec(
            select(Task).where(Task.run_id == run.id, Task.key == command.task_id)
        ).first()
        if task is None:
            return f"This run has no task {command.task_id}."
        if command.name == "approve-task":
            task.approved_by = sender
        elif task.state not in STOPPED:
            return f"{task.key} is {task.state}; `/{command.name}` applies to a stopped task."
        else:
            task.state = TaskState.pending if command.name == "retry" else TaskState.skipped
            task.approved_by = None  # a retried change is new work: it needs approving again
        task.updated_at = utcnow()
        runs.record_event(session, run.id, f"task.{command.name}", f"@{sender}", task_key=task.key)
        _resume(session, run.id)
        return None

    return await context.store.run(steer)


def _resume(session: Session, run_id: str) -> None:
    """A run parked for a person executes again."""
    current = session.get(Run, run_id)
    if current is not None and current.state == RunState.needs_human:
        current.state, current.updated_at = RunState.executing, utcnow()
        enqueue(session, "execute_run", run_id=run_id)
