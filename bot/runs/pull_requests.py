"""What happens to a run's pull request on GitHub: closing it (merged or not) ends the run, and
the issue may then be labelled again for a new run on a new branch."""

from __future__ import annotations

import logging

from sqlmodel import Session

from bot.events import PullRequestClosed, PullRequestRef
from bot.executor import JobContext
from bot.github.repo import CheckConclusion, GitHubError
from bot.github.scopes import EXECUTE
from bot.planning import load_run, repo_client
from bot.runs import lifecycle, run_for_branch, run_for_pull_request
from bot.store.models import Run, RunState

log = logging.getLogger(__name__)


def run_of_pull_request(
    session: Session, repository_id: int, pull_request: PullRequestRef
) -> Run | None:
    """The run a pull request belongs to: by its recorded number, else by its head branch (a
    run that has just opened it may not have recorded the number yet)."""
    run = run_for_pull_request(session, repository_id, pull_request.number)
    if run is None and pull_request.head is not None:
        run = run_for_branch(session, repository_id, pull_request.head.ref)
    return run


async def pull_request_closed(
    context: JobContext, event: PullRequestClosed, delivery_id: int
) -> None:
    """`pull_request.closed`: the run whose pull request it is ends, `done` when merged."""
    pull = event.pull_request

    def end(session: Session) -> str | None:
        run = run_of_pull_request(session, event.repository.id, pull)
        if run is None or not run.active:
            return None
        if run.pull_request_number is None:
            run.pull_request_number = pull.number
        by = f"@{event.sender.login}"
        if pull.merged:
            state, reason = RunState.done, f"the pull request #{pull.number} was merged by {by}"
        else:
            state, reason = RunState.closed, f"the pull request #{pull.number} was closed by {by}"
        ended = lifecycle.end_run(session, run.id, state, reason, delivery_id=delivery_id)
        return run.id if ended else None

    run_id = await context.store.run(end)
    if run_id is not None:
        await _tell_check_run(context, run_id)


async def _tell_check_run(context: JobContext, run_id: str) -> None:
    """The run's check run says how the run ended (best effort: the status comment says so too)."""
    run = await load_run(context, run_id)
    if run.check_run_id is None:
        return
    summary = f"The run ended: {run.error}."
    conclusion: CheckConclusion = "success" if run.state == RunState.done else "neutral"
    try:
        await repo_client(context, run, EXECUTE).update_check_run(
            run.check_run_id, "completed", "Baton", summary, conclusion=conclusion
        )
    except GitHubError as error:
        log.warning("the check run of run %s was not updated: %s", run_id, error)
