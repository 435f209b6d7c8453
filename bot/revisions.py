"""A person's review of a Baton pull request becomes a new plan revision, approved by that
review: the orchestrator turns the review's comments into tasks that continue the run's
numbering, and each comment is answered in its own thread by the commit that addressed it."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from bot import runs
from bot.codebase.tools import read_only_tools
from bot.config import RepoConfig
from bot.events import PullRequestRef, PullRequestReviewSubmitted
from bot.executor import JobContext
from bot.github.repo import RepoClient, Review
from bot.github.scopes import READ_REVIEW
from bot.github.untrusted import UntrustedFence, prepare_untrusted
from bot.llm.agent import Agent, AgentFailed, Finisher, Limits
from bot.llm.budget import BudgetExceeded
from bot.llm.types import ModelFailed
from bot.plan.render import plan_yaml
from bot.plan.schema import Plan
from bot.plan.validate import PlanRules, check_plan
from bot.planning import (
    PLANNER_SYSTEM,
    load_run,
    newest_revision,
    plan_rules,
    planner_documents,
    planner_model,
    repo_client,
    updated_mirror,
)
from bot.runs import lifecycle
from bot.runs.pull_requests import run_of_pull_request
from bot.store.models import PlanRevision, Run, RunState, Task, TimelineEvent
from bot.store.types import utcnow
from bot.task_rows import add_task_rows

log = logging.getLogger(__name__)

ACTED_ON = frozenset({"changes_requested", "commented"})
REPLIED = "review.replied"
REVIEW_PLANNER = (
    PLANNER_SYSTEM
    + """
This time a person reviewed the pull request the plan produced. Turn their review comments into
new tasks that fix what they ask. Number the new tasks from {first} on. A new task may depend
only on other new tasks (the earlier ones are done and on the branch). List in each task's
`addresses` the ids of the review comments it answers; every comment needs one task.
"""
)


async def revise_from_review(
    context: JobContext, event: PullRequestReviewSubmitted, delivery_id: int
) -> None:
    """A submitted review on a run's pull request from someone with write access: new tasks."""
    state = (event.review.state or "").lower()
    run_id = await context.store.run(
        lambda session: _run_for(session, event.repository.id, event.pull_request)
    )
    if run_id is None or state not in ACTED_ON:
        return
    run = await load_run(context, run_id)
    repo = repo_client(context, run, READ_REVIEW)
    if not await repo.may_command(event.sender.login):
        log.info("review by %s, who may not command Baton, ignored", event.sender.login)
        return
    if await _already_planned(context, run.id, event.review.id):
        return
    review = await repo.review(event.pull_request.number, event.review.id)
    if not review.comments:
        return
    try:
        plan = await _plan_review(context, run, review)
    except (AgentFailed, ModelFailed, BudgetExceeded) as failure:
        # A budget would refuse the job again: retrying it gains nothing.
        log.warning("review %s could not be planned: %s", review.id, failure)
        return
    await _approve(context, run.id, plan, review)


def _run_for(session: Session, repository_id: int, pull_request: PullRequestRef) -> str | None:
    run = run_of_pull_request(session, repository_id, pull_request)
    return run.id if run is not None and run.active else None


async def _already_planned(context: JobContext, run_id: str, review_id: int) -> bool:
    def planned(session: Session) -> bool:
        query = select(PlanRevision).where(
            PlanRevision.run_id == run_id, PlanRevision.feedback == _review_key(review_id)
        )
        return session.exec(query).first() is not None

    return await context.store.run(planned)


def _review_key(review_id: int) -> str:
    return f"review {review_id}"


async def _plan_review(context: JobContext, run: Run, review: Review) -> Plan:
    prompt = await _review_prompt(context, run.id, review)
    return await plan_new_tasks(context, run, REVIEW_PLANNER, prompt, _answers_every(review))


async def plan_new_tasks(
    context: JobContext,
    run: Run,
    system: str,
    prompt: str,
    more_checks: Callable[[Plan], Sequence[str]] = lambda plan: (),
) -> Plan:
    """New tasks for a run whose plan is done, planned by the orchestrator at the branch's head
    with the planner's tools; `system` is formatted with `max_tasks` and `first`, the first
    new task's id. The plan's checks, new numbers and `more_checks` must hold."""
    config = RepoConfig.model_validate(run.config)
    first = await context.store.run(lambda session: next_task_number(session, run.id))
    mirror = await updated_mirror(context, run, READ_REVIEW)
    head = run.head_sha or run.base_sha or ""
    worktree = await mirror.add_worktree(run.id, "added-plan", head)
    try:
        checks = _new_tasks_checked(await mirror.files_at(head), plan_rules(config), first)
        agent = Agent(
            await planner_model(context, run, config),
            system.format(max_tasks=config.max_tasks, first=f"T{first}"),
            read_only_tools(worktree.path),
            [
                Finisher(
                    "submit_plan",
                    "Submit the new tasks.",
                    Plan,
                    lambda plan: [*checks(plan), *more_checks(plan)],
                )
            ],
            # The instructions as the default branch had them, not as a worker left them.
            context=await planner_documents(worktree, run.base_sha or head),
            limits=Limits(max_turns=30),
        )
        finished = await agent.run(prompt)
    finally:
        await worktree.remove()
    return Plan.model_validate(finished.value.model_dump())


def _new_tasks_checked(
    files: list[str], rules: PlanRules, first: int
) -> Callable[[Plan], list[str]]:
    def problems(plan: Plan) -> list[str]:
        found = list(check_plan(plan, files, rules).errors)
        for task in plan.tasks:
            number = task_number(task.id)
            if number is not None and number < first:
                found.append(f"{task.id}: new tasks are numbered from T{first} on")
        return found

    return problems


def _answers_every(review: Review) -> Callable[[Plan], Sequence[str]]:
    wanted = {comment.id for comment in review.comments}

    def problems(plan: Plan) -> list[str]:
        found = []
        answered = {comment for task in plan.tasks for comment in task.addresses}
        for missing in sorted(wanted - answered):
            found.append(f"review comment {missing} is addressed by no task (`addresses`)")
        for unknown in sorted(answered - wanted):
            found.append(f"review comment {unknown} is not part of this review")
        return found

    return problems


def task_number(task_id: str) -> int | None:
    matched = re.fullmatch(r"T(\d+)", task_id)
    return int(matched.group(1)) if matched else None


def next_task_number(session: Session, run_id: str) -> int:
    """One past the highest task number of the run's tasks and of every revision's plan."""
    keys = list(session.exec(select(Task.key).where(Task.run_id == run_id)).all())
    for revision in session.exec(select(PlanRevision).where(PlanRevision.run_id == run_id)):
        keys += [task.id for task in Plan.model_validate(revision.plan).tasks]
    numbers = [number for key in keys if (number := task_number(key)) is not None]
    return max(numbers, default=0) + 1


async def _review_prompt(context: JobContext, run_id: str, review: Review) -> str:
    def previous(session: Session) -> str:
        latest = newest_revision(session, run_id)
        return plan_yaml(Plan.model_validate(latest.plan)) if latest else ""

    # Reading Markdown is pure Python work, too long for the event loop on hostile comments.
    return await asyncio.to_thread(review_planner_prompt, await context.store.run(previous), review)


def review_planner_prompt(previous: str, review: Review) -> str:
    """The plan so far and the review with each of its comments (id, path and line kept for
    `addresses`), every part fenced as untrusted text."""
    fence = UntrustedFence()
    parts = [
        "The plan so far, as YAML:",
        fence.wrap("previous-plan", previous),
        "The review and its comments, as written on GitHub:",
        fence.wrap("review", prepare_untrusted(review.body, 5_000), author=review.author),
    ]
    parts += [
        fence.wrap(
            "review-comment",
            prepare_untrusted(comment.body),
            id=comment.id,
            path=comment.path,
            line=comment.line or "",
        )
        for comment in review.comments
    ]
    return "\n".join(parts)


async def _approve(context: JobContext, run_id: str, plan: Plan, review: Review) -> None:
    def approve(session: Session) -> None:
        added = Added("review", _review_key(review.id), review.author, "plan.from_review")
        add_revision(session, run_id, plan, added, f"from the review by @{review.author}")

    await context.store.run(approve)


@dataclass(frozen=True)
class Added:
    """Where an added revision comes from: its source, its key (no second one for the same
    cause), who approved it, and the kind of its timeline event."""

    source: str
    key: str
    approved_by: str | None
    event: str


def add_revision(
    session: Session, run_id: str, plan: Plan, added: Added, why: str
) -> dict[str, Task] | None:
    """`plan` as the run's next, approved revision, its tasks made and started at once; the
    run's tasks by key, or None when the run has ended."""
    latest = newest_revision(session, run_id)
    number = (latest.number if latest else 0) + 1
    session.add(
        PlanRevision(
            run_id=run_id,
            number=number,
            source=added.source,
            summary=plan.summary,
            plan=plan.model_dump(),
            feedback=added.key,
            approved_by=added.approved_by,
            approved_at=utcnow(),
            created_at=utcnow(),
        )
    )
    run = session.get(Run, run_id)
    if run is None or not run.active:
        return None
    runs.record_event(session, run_id, added.event, f"r{number} {why}")
    session.flush()
    existing = {t.key: t for t in session.exec(select(Task).where(Task.run_id == run_id))}
    revision = newest_revision(session, run_id)
    assert revision is not None
    add_task_rows(session, run_id, revision, RepoConfig.model_validate(run.config), existing)
    session.flush()
    carry_on(session, run)
    return existing


def added_so_far(session: Session, run_id: str, source: str, key: str) -> tuple[int, bool]:
    """How many revisions from `source` the run has, and whether one has the key `key`."""
    query = select(PlanRevision).where(PlanRevision.run_id == run_id, PlanRevision.source == source)
    revisions = list(session.exec(query))
    return len(revisions), any(revision.feedback == key for revision in revisions)


def plan_approver(session: Session, run_id: str) -> str | None:
    """Who approved the run's first approved plan revision: what later revisions stand on."""
    query = (
        select(PlanRevision.approved_by)
        .where(PlanRevision.run_id == run_id, col(PlanRevision.approved_by).is_not(None))
        .order_by(col(PlanRevision.number))
    )
    return session.exec(query).first()


def carry_on(session: Session, run: Run) -> None:
    """The review's tasks run now, whatever step the run is at: a run at work picks them up,
    one that waits for people starts revising."""
    state = RunState(run.state)
    if state in (RunState.executing, RunState.revising):
        lifecycle.wake(session, run.id)
    elif state == RunState.pr_open:
        lifecycle.move_run(session, run.id, state, RunState.revising, "a review's tasks")
    elif state == RunState.needs_human:
        again = RunState.revising if run.pull_request_number else RunState.executing
        lifecycle.move_run(session, run.id, state, again, "a review's tasks")


async def answer_review_comments(
    context: JobContext, run_id: str, repo: RepoClient, pull_number: int
) -> None:
    """Reply in each addressed comment's thread with the commit of the task that addressed it."""

    def pending(session: Session) -> list[tuple[int, str, str]]:
        replied = {
            int(event.data.get("comment_id", 0))
            for event in session.exec(
                select(TimelineEvent).where(
                    TimelineEvent.run_id == run_id, TimelineEvent.kind == REPLIED
                )
            )
        }
        commits = {
            task.key: task.commit_sha
            for task in session.exec(select(Task).where(Task.run_id == run_id))
            if task.commit_sha
        }
        reviewed = select(PlanRevision).where(
            PlanRevision.run_id == run_id, col(PlanRevision.source) == "review"
        )
        answers = []
        for revision in session.exec(reviewed):
            for task in Plan.model_validate(revision.plan).tasks:
                sha = commits.get(task.id)
                answers += [(c, task.id, sha) for c in task.addresses if sha and c not in replied]
        return answers

    for comment_id, key, sha in await context.store.run(pending):
        text = f"Addressed in {sha[:12]} ({key})."
        # Keyed by run and comment: a reply posted by a process that died before recording it
        # is found in the thread, not posted again.
        await repo.reply_to_review_comment(pull_number, comment_id, f"{run_id}:{comment_id}", text)
        await context.store.run(_replied(run_id, comment_id, text))


def _replied(run_id: str, comment_id: int, text: str) -> Callable[[Session], bool]:
    def record(session: Session) -> bool:
        return runs.record_event(session, run_id, REPLIED, text, data={"comment_id": comment_id})

    return record
