"""What people say to a run: the label that starts it and the slash commands that steer it.

Only people with write access or more are obeyed (CONTRACT §5). Anyone else is answered
sparingly, so that Baton cannot be made to spam an issue: nothing where no run is under way (a
label from them starts none), else one short refusal per person per issue per hour, recorded as
a timeline event of the run so that a restart or a second process counts it too. A command with
bad arguments is answered only once its sender may command. A command takes effect once per
delivery: the timeline event it records in the same transaction names the delivery, and a job
run again after a crash finds that event and does not obey a second time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, select

from bot import runs
from bot.commands import Command, CommandError, parse_command
from bot.config import CONFIG_PATH, ConfigError, RepoConfig, parse_config
from bot.events import IssueCommentCreated, IssueLabeled
from bot.executor import JobContext
from bot.github.repo import RepoClient
from bot.github.scopes import PLAN, TokenScope
from bot.plan.render import render_problems
from bot.plan.schema import Plan
from bot.plan.validate import PlanSyntaxError, parse_plan_yaml
from bot.planning import (
    PLAN_REVISED,
    REVISION_REQUESTED,
    Planned,
    check_shown_plan,
    load_run,
    newest_revision,
    plan_rules,
    publish_revision,
    updated_mirror,
)
from bot.runs import lifecycle
from bot.runs.mode import (
    SINGLE_SOURCE,
    ModeChoice,
    mode_at_approval,
    mode_at_start,
    single_agent_plan,
)
from bot.runs.status import write_status
from bot.store.models import (
    PlanRevision,
    Run,
    RunMode,
    RunState,
    Task,
    TaskState,
    TimelineEvent,
)
from bot.store.types import utcnow

log = logging.getLogger(__name__)

EDIT_REFUSED = "The edited plan was not used"
TASK_COMMANDS = frozenset({"approve-task", "retry", "skip"})
# A task a person may retry or skip: it stopped, or waits for them.
STOPPED = frozenset({TaskState.escalated, TaskState.failed, TaskState.awaiting_approval})
NO_RUN = "There is no active Baton run on this issue."
NO_LONGER_WAITING = "This run no longer waits for approval."
NOT_ALLOWED = "only people with write access to this repository can {what}."
PLAN_APPROVED = "plan.approved"
MODE_CHOSEN = "run.mode"
COMMAND_REFUSED = "command.refused"
REFUSAL_INTERVAL = timedelta(hours=1)  # at most one refusal per person and issue in this time


def _repo_for(context: JobContext, installation_id: int, full_name: str) -> RepoClient:
    return context.integrations.repo_client(TokenScope(installation_id, full_name, PLAN))


async def read_config(repo: RepoClient) -> tuple[RepoConfig | None, str | None]:
    """The repository's `.github/baton.yml` from its default branch, or the problem with it."""
    try:
        # No ref: GitHub reads its default branch, which spares asking for the repository.
        return parse_config(await repo.file_at(CONFIG_PATH)), None
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
        # No run exists to refuse on: a reply would let anyone make Baton comment at will.
        log.info("label from %s, who may not start Baton, ignored", sender)
        return None

    chosen = config or RepoConfig()
    mode = mode_at_start(chosen, context.integrations.chance.random())

    def start(session: Session) -> Run | None:
        run = lifecycle.admit_run(session, event, delivery_id, chosen, problem, mode)
        if run is not None:
            session.expunge(run)
        return run

    run = await context.store.run(start)
    if run is not None and problem is not None:
        title = f"Baton cannot start: `{CONFIG_PATH}` has a problem"
        await write_status(context, run, repo, render_problems(title, [problem]))
    return run.id if run else None


async def steer(context: JobContext, event: IssueCommentCreated, delivery_id: int) -> None:
    """A slash command in an issue comment, obeyed if the sender may command Baton."""
    # Reading Markdown is pure Python work, too long for the event loop on a hostile comment.
    command, problem = await asyncio.to_thread(_parsed, event.comment.body)
    if command is None and problem is None:
        return
    repo = _repo_for(context, event.installation.id, event.repository.full_name)
    if command is not None:
        obeyed = await context.store.run(
            lambda session: _obeyed_by(session, event, delivery_id, command)
        )
        if obeyed is not None:
            # Obeyed before its job was cut short: the job runs again, the command does not;
            # what shows its effect was queued with the effect.
            await repo.react("+1", comment=event.comment.id)
            return
    key = f"delivery-{delivery_id}"
    if not await repo.may_command(event.sender.login):
        what = f"use `/{command.name}`" if command is not None else "command Baton"
        await _refuse(context, repo, event, delivery_id, what)
        return
    if command is None:
        await repo.reply_once(event.issue.number, key, problem or "")
        return
    run_id = await context.store.run(
        lambda session: _active_run_id(session, event.repository.id, event.issue.number)
    )
    if run_id is None:
        await repo.reply_once(event.issue.number, key, NO_RUN)
        return
    run = await load_run(context, run_id)
    answer = await _obey(context, run, repo, command, event, delivery_id)
    if answer:
        await repo.reply_once(event.issue.number, key, answer)
    else:
        await repo.react("+1", comment=event.comment.id)


def _parsed(body: str) -> tuple[Command | None, str | None]:
    """The comment's command, or what is wrong with it; (None, None) when it gives none."""
    try:
        return parse_command(body), None
    except CommandError as error:
        return None, str(error)


async def _refuse(
    context: JobContext,
    repo: RepoClient,
    event: IssueCommentCreated,
    delivery_id: int,
    what: str,
) -> None:
    """Tell someone without write access that they may not `what`, if this is their first
    refusal on the issue's active run within the hour; otherwise only log it."""
    sender = event.sender.login
    refused = await context.store.run(lambda session: _record_refusal(session, event, delivery_id))
    if not refused:
        log.info("command from %s, who may not command Baton, ignored without a reply", sender)
        return
    reply = f"@{sender}, {NOT_ALLOWED.format(what=what)}"
    await repo.reply_once(event.issue.number, f"delivery-{delivery_id}", reply)


def _record_refusal(session: Session, event: IssueCommentCreated, delivery_id: int) -> bool:
    """Record this delivery's refusal on the issue's active run; False when there is no such run
    or the sender was refused on the issue within `REFUSAL_INTERVAL` for another delivery."""
    run = runs.active_run_for_issue(session, event.repository.id, event.issue.number)
    if run is None:
        return False
    # Holding the run's row makes two commands from one person at once get one refusal.
    session.exec(select(Run).where(Run.id == run.id).with_for_update()).one()
    login = event.sender.login.lower()
    recent = (
        select(TimelineEvent)
        .join(Run, col(TimelineEvent.run_id) == col(Run.id))
        .where(
            Run.repository_id == event.repository.id,
            Run.issue_number == event.issue.number,
            TimelineEvent.kind == COMMAND_REFUSED,
            col(TimelineEvent.created_at) >= utcnow() - REFUSAL_INTERVAL,
        )
    )
    for earlier in session.exec(recent):
        if earlier.data.get("login") == login:
            # This delivery's own refusal means its job ran before and may not have replied.
            return earlier.delivery_id == delivery_id
    return runs.record_event(
        session,
        run.id,
        COMMAND_REFUSED,
        f"@{event.sender.login} may not command Baton",
        delivery_id=delivery_id,
        data={"login": login},
    )


def _active_run_id(session: Session, repository_id: int, number: int) -> str | None:
    run = runs.active_run_for_issue(session, repository_id, number)
    return run.id if run else None


def _obeyed_kind(command: Command) -> str:
    """The timeline event a command records, with its delivery, in the transaction of its effect."""
    kinds = {
        "cancel": f"run.{RunState.cancelled}",
        "approve-plan": PLAN_APPROVED,
        "revise-plan": REVISION_REQUESTED,
        "edit-plan": PLAN_REVISED,
    }
    return kinds.get(command.name, f"task.{command.name}")


def _obeyed_by(
    session: Session, event: IssueCommentCreated, delivery_id: int, command: Command
) -> str | None:
    """The run on which this delivery's command took effect, if it did."""
    query = (
        select(Run.id)
        .join(TimelineEvent, col(TimelineEvent.run_id) == col(Run.id))
        .where(
            Run.repository_id == event.repository.id,
            Run.issue_number == event.issue.number,
            TimelineEvent.kind == _obeyed_kind(command),
            TimelineEvent.delivery_id == delivery_id,
        )
    )
    return session.exec(query).first()


async def _obey(
    context: JobContext,
    run: Run,
    repo: RepoClient,
    command: Command,
    event: IssueCommentCreated,
    delivery_id: int,
) -> str | None:
    """Carry out the command; a reply when it cannot be, None when it was."""
    sender = event.sender.login
    if command.name == "cancel":
        reason = f"cancelled by @{sender}"
        await context.store.run(
            lambda session: lifecycle.end_run(
                session, run.id, RunState.cancelled, reason, delivery_id=delivery_id
            )
        )
        return None
    if command.name in TASK_COMMANDS:
        return await _steer_task(context, run, command, sender, delivery_id)
    if run.state != RunState.awaiting_approval:
        return (
            f"`/{command.name}` applies while a plan waits for approval; this run is {run.state}."
        )
    if command.name == "approve-plan":
        return await _approve(context, run, repo, command, event, delivery_id)
    if command.name == "revise-plan":
        return await _revise(context, run, repo, command, delivery_id)
    return await _edit(context, run, repo, command, delivery_id)


async def _approve(
    context: JobContext,
    run: Run,
    repo: RepoClient,
    command: Command,
    event: IssueCommentCreated,
    delivery_id: int,
) -> str | None:
    written_at = event.comment.created_at or datetime.now(UTC)
    sender = event.sender.login
    issue_body = await _body_for_one_agent(run, repo, asked_single=command.single)

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
        current = session.get(Run, run.id)
        if current is None or current.state != RunState.awaiting_approval:
            return NO_LONGER_WAITING
        started = ModeChoice(RunMode(current.mode), current.mode_reason)
        config = RepoConfig.model_validate(current.config)
        plan = Plan.model_validate(newest.plan)
        choice = mode_at_approval(started, config, plan, asked_single=command.single)
        message = f"r{newest.number} approved by @{sender}"
        if choice.mode == RunMode.single:
            message += f", worked by one agent as r{newest.number + 1}"
        if runs.record_event(session, run.id, PLAN_APPROVED, message, delivery_id=delivery_id):
            approved = newest
            if choice.mode == RunMode.single:
                approved = _single_agent_revision(
                    session, current, plan, newest.number + 1, issue_body
                )
            approved.approved_by, approved.approved_at = sender, utcnow()
            current.mode, current.mode_reason = choice.mode, choice.reason
            runs.record_event(session, run.id, MODE_CHOSEN, f"{choice.mode} ({choice.reason})")
            session.flush()
            lifecycle.move_run(
                session, run.id, RunState.awaiting_approval, RunState.executing, message
            )
        return None

    return await context.store.run(approve)


async def _body_for_one_agent(run: Run, repo: RepoClient, *, asked_single: bool) -> str:
    """The issue's body when this approval may hand the run to one agent; read before the
    approval's transaction, so no GitHub call happens inside it. Empty when no agent needs it."""
    config = RepoConfig.model_validate(run.config)
    if not (asked_single or run.mode == RunMode.single or config.mode in {"single", "auto"}):
        return ""
    return (await repo.issue(run.issue_number)).body


def _single_agent_revision(
    session: Session, run: Run, plan: Plan, number: int, issue_body: str
) -> PlanRevision:
    """The revision one agent works: the whole issue as one task, after the approved plan."""
    single = single_agent_plan(plan, run.issue_number, run.issue_title, issue_body)
    revision = PlanRevision(
        run_id=run.id,
        number=number,
        source=SINGLE_SOURCE,
        summary=single.summary,
        plan=single.model_dump(),
        created_at=utcnow(),
    )
    session.add(revision)
    return revision


def _newest_before(session: Session, run_id: str, moment: datetime) -> int | None:
    """The newest revision that existed when the comment was written."""
    query = (
        select(PlanRevision.number)
        .where(PlanRevision.run_id == run_id, col(PlanRevision.created_at) <= moment)
        .order_by(col(PlanRevision.number).desc())
    )
    return session.exec(query).first()


async def _revise(
    context: JobContext, run: Run, repo: RepoClient, command: Command, delivery_id: int
) -> str | None:
    if not command.text.strip():
        return "`/revise-plan` needs feedback after it: what should the plan change?"

    def request(session: Session) -> str | None:
        current = session.get(Run, run.id)
        # Checked again here: a /cancel or an approval may have landed since `_obey` looked.
        if current is None or current.state != RunState.awaiting_approval:
            return NO_LONGER_WAITING
        if runs.record_event(
            session,
            run.id,
            REVISION_REQUESTED,
            "plan revision requested",
            delivery_id=delivery_id,
            data={"feedback": command.text},
        ):
            lifecycle.move_run(session, run.id, RunState.awaiting_approval, RunState.planning)
        return None

    return await context.store.run(request)


async def _edit(
    context: JobContext, run: Run, repo: RepoClient, command: Command, delivery_id: int
) -> str | None:
    try:
        plan = parse_plan_yaml(command.plan_yaml or "")
    except PlanSyntaxError as error:
        return render_problems(EDIT_REFUSED, error.problems)
    config = RepoConfig.model_validate(run.config)
    mirror = await updated_mirror(context, run)
    files = await mirror.files_at(run.base_sha or (await repo.repository()).default_branch)
    check = check_shown_plan(plan, files, plan_rules(config))
    if check.errors:
        return render_problems(EDIT_REFUSED, check.errors)
    planned = Planned(plan, check)
    number = await publish_revision(
        context,
        run,
        config,
        planned,
        source="edit",
        delivery_id=delivery_id,
        only_while_waiting=True,
    )
    # Checked again as it was stored: an approval or a /cancel may have landed meanwhile.
    return NO_LONGER_WAITING if number is None else None


async def _steer_task(
    context: JobContext, run: Run, command: Command, sender: str, delivery_id: int
) -> str | None:
    """`/approve-task`, `/retry` and `/skip` on one task of an executing run."""
    if run.state not in (RunState.executing, RunState.revising, RunState.needs_human):
        return f"`/{command.name}` applies while the plan's tasks run; the run is {run.state}."

    def steer(session: Session) -> str | None:
        task = session.exec(
            select(Task).where(Task.run_id == run.id, Task.key == command.task_id)
        ).first()
        if task is None:
            return f"This run has no task {command.task_id}."
        if command.name == "approve-task" and task.state != TaskState.awaiting_approval:
            # An approval is for work a person has seen: none waits yet, or it is in already.
            return (
                f"{task.key} is {task.state}; `/approve-task` applies once its accepted change "
                "waits for approval."
            )
        if command.name != "approve-task" and task.state not in STOPPED:
            return f"{task.key} is {task.state}; `/{command.name}` applies to a stopped task."
        kind = _obeyed_kind(command)
        if not runs.record_event(
            session, run.id, kind, f"@{sender}", delivery_id=delivery_id, task_key=task.key
        ):
            return None
        if command.name == "approve-task":
            task.approved_by = sender
            new = TaskState.accepted
        else:
            task.approved_by = None  # a retried change is new work: it needs approving again
            new = TaskState.pending if command.name == "retry" else TaskState.skipped
        session.flush()
        lifecycle.move_task(session, run.id, task.key, TaskState(task.state), new, f"@{sender}")
        _resume(session, run.id)
        return None

    return await context.store.run(steer)


def _resume(session: Session, run_id: str) -> None:
    """A run parked for a person goes on: executing, or revising once its pull request is up."""
    current = session.get(Run, run_id)
    if current is not None and current.state == RunState.needs_human:
        again = RunState.revising if current.pull_request_number else RunState.executing
        lifecycle.move_run(session, run_id, RunState.needs_human, again, "a person answered")
