"""The `attempt_task` step: one worker attempt at one task, then the orchestrator's review of it.

The review's verdict moves the task on: accepted (to integration, or to a person first when it
touches protected paths), sent back (the next attempt is a job of its own, told why), or
stopped. A failure of Baton's own (GitHub, git, a model, a budget) stops the task, not the run.
"""

from __future__ import annotations

import asyncio
import logging

from sqlmodel import Session, col, select

from bot.attempts import stamp_end
from bot.codebase.tools import read_only_tools
from bot.executor import JobContext, check_fence
from bot.git import GitError
from bot.github.repo import GitHubError
from bot.llm.agent import AgentFailed
from bot.llm.budget import BudgetExceeded
from bot.llm.types import ModelFailed
from bot.merges import merged_in
from bot.planning import load_run
from bot.review import ReviewVerdict, review
from bot.runs import lifecycle
from bot.runs.advance import WORKING
from bot.runs.progress import task_row
from bot.runs.secret_check import secrets_added
from bot.runs.workspace import Workspace, open_workspace, sandbox_limits
from bot.sandbox import SandboxUnavailable
from bot.secrets import ScanFailed, SecretFinding, describe_findings, find_in_lines, lines_of
from bot.store.models import AttemptStatus, CommitBundle, Task, TaskAttempt, TaskState
from bot.workers.attempt import AttemptPlan, AttemptResult, WorkerAttempt, describe_task
from bot.workers.roles import FinishInput

log = logging.getLogger(__name__)

# A worker this unsure of its own work goes to a person instead of the reviewer.
CONFIDENCE_FLOOR = 0.5
UNDER_WAY = (TaskState.running, TaskState.reviewing)
SECRETS = "the secret check"


async def attempt_task(context: JobContext, run_id: str, task_key: str) -> None:
    """Job: one attempt at a running task and its review."""
    run = await load_run(context, run_id)
    task = await context.store.run(lambda session: _detached(session, run_id, task_key))
    if run.state not in WORKING or task.state not in UNDER_WAY:
        return
    if task.state == TaskState.reviewing:
        # A process died while reviewing: the work it reviewed is not on record, so redo it.
        await _move(context, task, TaskState.running, "interrupted in review: it starts again")
        return
    try:
        await _attempt(context, run_id, task)
    except BudgetExceeded as exceeded:
        await _stop(context, task, TaskState.escalated, f"budget: {exceeded}", notice=True)
    except (
        GitError,
        GitHubError,
        AgentFailed,
        ModelFailed,
        SandboxUnavailable,
        ScanFailed,
    ) as error:  # a change the secret check could not read is stopped, never reviewed
        log.warning("task %s stopped: %s", task.key, error)
        await _stop(context, task, TaskState.failed, str(error))


async def _attempt(context: JobContext, run_id: str, task: Task) -> None:
    workspace = await open_workspace(context, run_id)
    number = await context.store.run(lambda session: _count_attempt(session, task))
    result = await _worker(workspace, task).run(
        AttemptPlan(
            run_id,
            task.id or 0,
            describe_task(task),
            number,
            workspace.head,
            task.feedback,
            # The run's base commit holds no worker's change: only there may setup reach out.
            setup_network=workspace.head == workspace.run.base_sha,
            run_base_sha=workspace.run.base_sha,
        )
    )
    stopped = _stopped(result)
    if stopped is not None:
        state, reason, notice = stopped
        await _stop(context, task, state, reason, notice=notice)
        return
    assert result.finish is not None
    await _move(context, task, TaskState.reviewing, "", old=TaskState.running)
    # Checked before the review: a secret must not reach the reviewer's prompt either.
    findings = await _secrets_in(workspace, task, result, result.finish)
    if findings:
        secret = ReviewVerdict(verdict="revise", feedback=describe_findings(findings))
        await context.store.run(
            lambda session: _verdict(session, workspace, task, result, secret, None, SECRETS)
        )
        return
    verdict = await _review(workspace, task, result, result.finish)
    bundle = await _bundled(workspace, task, result, verdict)
    await context.store.run(
        lambda session: _verdict(session, workspace, task, result, verdict, bundle)
    )


async def _secrets_in(
    workspace: Workspace, task: Task, result: AttemptResult, finish: FinishInput
) -> list[SecretFinding]:
    """Secrets in the attempt's commit (its added lines and message) or in what it said."""
    said = [*lines_of("(summary)", finish.summary), *lines_of("(notes)", finish.notes or "")]
    findings = await asyncio.to_thread(find_in_lines, said)
    if result.commit_sha is not None:
        theirs = await workspace.context.store.run(lambda session: merged_in(session, task))
        mirror, base = workspace.mirror, workspace.head
        findings += await secrets_added(mirror, base, result.commit_sha, theirs)
    return findings


async def _bundled(
    workspace: Workspace, task: Task, result: AttemptResult, verdict: ReviewVerdict
) -> CommitBundle | None:
    """An accepted commit as a bundle, for whichever machine integrates it."""
    if verdict.verdict != "accept" or result.commit_sha is None:
        return None
    data = await workspace.mirror.bundle(workspace.run.id, task.key, workspace.head)
    return CommitBundle(
        sha=result.commit_sha, run_id=workspace.run.id, task_key=task.key, bundle=data
    )


def _stopped(result: AttemptResult) -> tuple[TaskState, str | None, bool] | None:
    if result.status == AttemptStatus.escalated:
        return TaskState.escalated, result.error, True  # only a budget escalates an attempt
    if result.status != AttemptStatus.succeeded or result.finish is None:
        return TaskState.failed, result.error, False
    if result.finish.confidence < CONFIDENCE_FLOOR:
        return (
            TaskState.escalated,
            f"the worker's confidence was {result.finish.confidence:.2f}",
            False,
        )
    return None


def _verdict(
    session: Session,
    workspace: Workspace,
    task: Task,
    result: AttemptResult,
    verdict: ReviewVerdict,
    bundle: CommitBundle | None,
    sent_back_by: str = "the review",
) -> None:
    """Record the review and move the task as it says, in one transaction."""
    check_fence(session)
    if bundle is not None:
        session.merge(bundle)
    attempt = session.get(TaskAttempt, result.attempt_id)
    assert attempt is not None
    attempt.review_verdict, attempt.review_feedback = verdict.verdict, verdict.feedback
    run_id, key, rounds = workspace.run.id, task.key, workspace.config.review_rounds
    if verdict.verdict == "escalate":
        lifecycle.move_task(
            session, run_id, key, TaskState.reviewing, TaskState.escalated, verdict.feedback
        )
    elif verdict.verdict == "revise" and review_round(session, attempt) < rounds:
        attempt.status = AttemptStatus.retried
        lifecycle.move_task(
            session,
            run_id,
            key,
            TaskState.reviewing,
            TaskState.running,
            f"sent back by {sent_back_by}",
            feedback=verdict.feedback,
        )
    elif verdict.verdict == "revise":
        attempt.status = AttemptStatus.failed
        reason = f"not accepted after {rounds} rounds"
        lifecycle.move_task(session, run_id, key, TaskState.reviewing, TaskState.failed, reason)
    else:
        gated = task_row(session, run_id, key).needs_approval
        then = TaskState.awaiting_approval if gated else TaskState.accepted
        lifecycle.move_task(
            session, run_id, key, TaskState.reviewing, then, "accepted by the review"
        )


def review_round(session: Session, attempt: TaskAttempt) -> int:
    """Which round of review this attempt is: one more than the attempts just before it that
    the review sent back (a `/retry` or an accepted attempt starts the count again)."""
    earlier = session.exec(
        select(TaskAttempt.status)
        .where(TaskAttempt.task_id == attempt.task_id, TaskAttempt.number < attempt.number)
        .order_by(col(TaskAttempt.number).desc())
    ).all()
    sent_back = 0
    for status in earlier:
        if status != AttemptStatus.retried:
            break
        sent_back += 1
    return sent_back + 1


async def _review(
    workspace: Workspace, task: Task, result: AttemptResult, finish: FinishInput
) -> ReviewVerdict:
    base = workspace.head
    worktree = await workspace.mirror.add_worktree(
        workspace.run.id, f"{task.key}-review", result.commit_sha or base
    )
    try:
        diff = await worktree.diff_from(base)
        tests = await workspace.tests_on(worktree.path)
        model = await workspace.model(task, result.attempt_id, reviewer=True)
        tools = read_only_tools(worktree.path)
        return await review(model, tools, describe_task(task), finish, diff, tests)
    except (AgentFailed, ModelFailed) as failure:
        return ReviewVerdict(verdict="escalate", feedback=f"the review could not finish: {failure}")
    finally:
        await worktree.remove()


def _worker(workspace: Workspace, task: Task) -> WorkerAttempt:
    settings = workspace.context.settings
    return WorkerAttempt(
        workspace.context.store,
        workspace.mirror,
        workspace.commands,
        lambda attempt_id: workspace.model(task, attempt_id),
        ticket=workspace.run.issue_title,
        sandbox_limits=sandbox_limits(settings),
        toolchains=settings.sandbox_toolchains,
        setup_outputs=workspace.setup_outputs,
        open_prs=workspace.repo.open_pull_requests,
    )


def _count_attempt(session: Session, task: Task) -> int:
    """The number of the attempt about to start; an attempt a dead process left open is closed."""
    check_fence(session)
    row = session.get(Task, task.id)
    assert row is not None
    left_open = select(TaskAttempt).where(
        TaskAttempt.task_id == task.id, col(TaskAttempt.status) == AttemptStatus.running
    )
    for attempt in session.exec(left_open):
        attempt.status, attempt.error = AttemptStatus.failed, "interrupted: the process stopped"
        stamp_end(attempt)
    row.attempts += 1
    row.approved_by = None  # new work: an approval was for the change a person saw
    return row.attempts


def _detached(session: Session, run_id: str, key: str) -> Task:
    task = task_row(session, run_id, key)
    session.expunge(task)
    return task


async def _move(
    context: JobContext, task: Task, new: TaskState, message: str, *, old: TaskState | None = None
) -> None:
    await context.store.run(
        lambda session: lifecycle.move_task(
            session, task.run_id, task.key, old or TaskState(task.state), new, message
        )
    )


async def _stop(
    context: JobContext, task: Task, new: TaskState, reason: str | None, *, notice: bool = False
) -> None:
    """The task ends `new` from whichever step of its attempt it had reached."""
    await context.store.run(
        lambda session: lifecycle.move_task(
            session, task.run_id, task.key, UNDER_WAY, new, reason or str(new), notice=notice
        )
    )
