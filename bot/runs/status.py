"""The run's one status comment on its issue: rendered from the stored state alone, so any
process can write it at any time and the newest state wins; written only when it changed."""

from __future__ import annotations

import hashlib
import logging

from sqlmodel import Session, col, select

from bot.config import RepoConfig
from bot.executor import JobContext, check_fence
from bot.github.repo import RepoClient
from bot.plan.render import markdown_text, render_status
from bot.runs import lifecycle
from bot.runs.progress import approved_revisions, notices, run_progress, task_views
from bot.scheduler import blocked_for_good
from bot.store.models import Run, RunState, TimelineEvent

log = logging.getLogger(__name__)

PLANNING_STATUS = "**Planning** — reading the issue and the code."
REVISING_PLAN = "**Revising the plan** with the feedback given."


async def show_status(context: JobContext, run_id: str) -> None:
    """Job: write the run's status comment as the run stands now."""
    from bot.planning import load_run, newest_revision_text, repo_client

    run = await load_run(context, run_id)
    if run.state == RunState.awaiting_approval:
        body = await newest_revision_text(context, run)
    else:
        body = await context.store.run(lambda session: render_run(session, run, context))
    if body is not None:
        await write_status(context, run, repo_client(context, run), body)


def render_run(session: Session, run: Run, context: JobContext) -> str | None:
    """The status comment for the run's state; None when the state shows nothing of its own."""
    label = RepoConfig.model_validate(run.config).label
    if run.state == RunState.planning:
        return REVISING_PLAN if approved_or_any_revision(session, run.id) else PLANNING_STATUS
    if run.state == RunState.failed:
        return _ending_words(session, run.id) or failure_text(run.error, label)
    heading = _heading(session, run)
    if not approved_revisions(session, run.id):
        return heading  # ended before any plan was approved: there is no progress to show
    return render_status(heading, run_progress(session, run, context.settings))


def approved_or_any_revision(session: Session, run_id: str) -> bool:
    from bot.planning import newest_revision

    return newest_revision(session, run_id) is not None


def _ending_words(session: Session, run_id: str) -> str | None:
    """The words the step that ended the run left for its status, if it left any."""
    query = (
        select(TimelineEvent)
        .where(TimelineEvent.run_id == run_id, col(TimelineEvent.kind) == f"run.{RunState.failed}")
        .order_by(col(TimelineEvent.id).desc())
    )
    ended = session.exec(query).first()
    words = ended.data.get(lifecycle.STATUS_TEXT) if ended is not None else None
    return words if isinstance(words, str) else None


def _heading(session: Session, run: Run) -> str:
    pull = f"#{run.pull_request_number}"
    reason = markdown_text(run.error or "")
    if run.state == RunState.needs_human:
        return _needs_person(session, run.id)
    if run.state == RunState.pr_open:
        tests = "the tests pass" if run.tests_passed else "the tests fail on the branch"
        opened = f"**Draft pull request** {pull} is open. Every task was accepted; {tests}."
        handed = [markdown_text(said) for said in _handed_over(session, run.id)]
        return "\n\n".join([opened, *handed])
    if run.state == RunState.revising:
        newest = approved_revisions(session, run.id)[-1:]
        source = newest[0].source if newest else ""
        whose = _REVISION_TASKS.get(source, "the review's tasks")
        return f"**Executing** {whose}; the draft pull request is {pull}."
    if run.state == RunState.cancelled:
        return f"**Cancelled**: {reason}." if reason else "**Cancelled**."
    if run.state in (RunState.done, RunState.closed):
        return f"**{str(run.state).capitalize()}**: {reason}."
    approved = approved_revisions(session, run.id)
    if not approved:
        return "**Executing**"
    first = approved[0]
    by = markdown_text(first.approved_by or "")
    return f"**Executing** plan r{first.number}, approved by @{by}."


_REVISION_TASKS = {
    "ci": "tasks that fix the failing CI",
    "merge": "the merge of the default branch",
}


# What Baton says handing a failing CI or a conflict over, and what undoes it: new tasks.
_HANDED_OVER = {"ci.handed_over": "plan.from_ci", "merge.handed_over": "plan.from_merge"}


def _handed_over(session: Session, run_id: str) -> list[str]:
    """What Baton said handing work over to a person, unless new tasks of the kind came after."""
    said = []
    for handed, undone in _HANDED_OVER.items():
        query = (
            select(TimelineEvent)
            .where(TimelineEvent.run_id == run_id, col(TimelineEvent.kind).in_([handed, undone]))
            .order_by(col(TimelineEvent.id).desc())
        )
        newest = session.exec(query).first()
        if newest is not None and newest.kind == handed:
            said.append(newest.message)
    return said


def _needs_person(session: Session, run_id: str) -> str:
    views = task_views(session, run_id)
    stuck = [v.key for v in views if v.state not in ("integrated", "skipped")]
    text = (
        f"**Needs a person**: {', '.join(markdown_text(key) for key in stuck)} did not "
        "finish. Answer with `/retry Tn` or `/skip Tn`."
    )
    if blocked := blocked_for_good(views):
        text += f" Waiting on them: {', '.join(markdown_text(key) for key in blocked)}."
    said = notices(session, run_id, stuck)
    if said:
        text += "\n\n" + "\n".join(
            f"- **{markdown_text(key)}** stopped: {markdown_text(why)}" for key, why in said
        )
    return text


def failure_text(reason: str | None, label: str) -> str:
    """The status comment of a run that failed: why, and how to start a new one."""
    why = markdown_text(reason or "Baton could not go on")
    return (
        f"**Failed**: {why}.\n\n"
        f"Nothing more happens on this run. To start again, remove the label "
        f"{markdown_text(label)} from this issue and add it again."
    )


async def write_status(context: JobContext, run: Run, repo: RepoClient, body: str) -> None:
    """Create or edit the run's status comment unless it shows `body` already; remember it."""
    digest = hashlib.sha256(body.encode()).hexdigest()
    if digest == run.status_digest and run.status_comment_id is not None:
        return
    comment_id = await repo.upsert_status_comment(
        run.issue_number, run.id, body, known_id=run.status_comment_id
    )
    run.status_comment_id, run.status_digest = comment_id, digest

    def remember(session: Session) -> None:
        check_fence(session)
        current = session.get(Run, run.id)
        if current is not None:
            current.status_comment_id, current.status_digest = comment_id, digest

    await context.store.run(remember)
