"""When a job gives up for good: its run ends `failed`, the issue is free for a new label, and
the issue is told why and how to start again as soon as GitHub answers.

The run is ended in the transaction that marks the job failed, so no run waits forever on a job
that will never run again, even when GitHub is down; telling the issue is a job of its own that
keeps trying for over an hour. Only plain words reach the issue: the raw error (which may hold
a provider's or GitHub's answer) stays in the job's `last_error` and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy as sa
from sqlmodel import Session, select

from bot import runs
from bot.config import RepoConfig
from bot.executor import JobArg, JobContext, enqueue
from bot.git import GitError
from bot.github.repo import GitHubError
from bot.integrations import NotConfigured
from bot.llm.types import ModelFailed
from bot.plan.render import markdown_text
from bot.planning import load_run, repo_client, show_status
from bot.sandbox import SandboxUnavailable
from bot.store.models import Run, RunState

log = logging.getLogger(__name__)

ANNOUNCE_JOB = "announce_failure"
# With the executor's backoff (30 s doubling, at most 10 min) this keeps trying for about 90 min.
ANNOUNCE_ATTEMPTS = 12
_STEPS = {
    "start_run": "start",
    "plan_run": "planning",
    "execute_run": "execution",
}
_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (GitHubError, "GitHub could not be reached or kept answering with errors"),
    (ModelFailed, "the model provider could not be reached or refused the requests"),
    (GitError, "a git operation on the repository kept failing"),
    (SandboxUnavailable, "the sandbox for repository commands is not available on Baton's host"),
    (NotConfigured, "Baton has no GitHub App credentials"),
)


def on_job_gave_up(
    connection: sa.Connection, job_name: str, args: Mapping[str, JobArg], error: BaseException
) -> None:
    """End the run the job worked for (if it still runs) and queue telling its issue; runs in
    the executor's transaction that marks the job failed."""
    with Session(bind=connection) as session:
        run_id = _run_of(session, args)
        if run_id is None:
            log.warning("job %s gave up; no run depended on it", job_name)
            return
        reason = (
            f"Baton gave up on this run's {_STEPS.get(job_name, job_name)} step after "
            f"repeated failures: {plain_cause(error)}"
        )
        if runs.fail_run(session, run_id, reason):
            enqueue(session, ANNOUNCE_JOB, run_id=run_id, max_attempts=ANNOUNCE_ATTEMPTS)
        # Bound to the executor's connection, this releases a savepoint: the executor commits.
        session.commit()


def plain_cause(error: BaseException) -> str:
    """What failed, in words fit for an issue comment: never the error's own text."""
    for kind, words in _CAUSES:
        if isinstance(error, kind):
            return words
    return "an error inside Baton (its log has the details)"


def _run_of(session: Session, args: Mapping[str, JobArg]) -> str | None:
    """The active run a job's ids point at: its `run_id`, or the run its delivery started."""
    run_id = args.get("run_id")
    if isinstance(run_id, str):
        run = session.get(Run, run_id)
        return run.id if run is not None and run.active else None
    delivery_id = args.get("delivery_id")
    if isinstance(delivery_id, int):
        query = select(Run.id).where(
            Run.trigger_delivery_id == delivery_id, sa.true() == Run.active
        )
        return session.exec(query).first()
    return None


async def announce_failure(context: JobContext, run_id: str) -> None:
    """Job: the failed run's status comment says why it stopped and how to start again."""
    run = await load_run(context, run_id)
    if run.state != RunState.failed:
        return
    label = RepoConfig.model_validate(run.config).label
    await show_status(context, run, repo_client(context, run), failure_text(run.error, label))


def failure_text(reason: str | None, label: str) -> str:
    """The status comment of a run that failed: why, and how to start a new one."""
    why = markdown_text(reason or "Baton could not go on")
    return (
        f"**Failed**: {why}.\n\n"
        f"Nothing more happens on this run. To start again, remove the label "
        f"{markdown_text(label)} from this issue and add it again."
    )
