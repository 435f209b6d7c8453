"""When a job gives up for good: its run ends `failed`, the issue is free for a new label, and
the issue is told why and how to start again as soon as GitHub answers.

The run is ended in the transaction that marks the job failed, so no run waits forever on a job
that will never run again, even when GitHub is down; the status comment that tells the issue is
a job of its own that keeps trying for over an hour. Only plain words reach the issue: the raw
error (which may hold a provider's or GitHub's answer) stays in the job's `last_error` and the
log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import sqlalchemy as sa
from sqlmodel import Session, select

from bot.executor import JobArg
from bot.git import GitError
from bot.github.repo import GitHubError
from bot.integrations import NotConfigured
from bot.llm.types import ModelFailed
from bot.runs import lifecycle
from bot.sandbox import SandboxUnavailable
from bot.store.models import Run, RunState

log = logging.getLogger(__name__)

_STEPS = {
    "start_run": "start",
    lifecycle.PLAN_JOB: "planning",
    lifecycle.ADVANCE_JOB: "scheduling",
    lifecycle.ATTEMPT_JOB: "task attempt",
    lifecycle.INTEGRATE_JOB: "integration",
    lifecycle.FINISH_JOB: "pull request",
    lifecycle.STATUS_JOB: "planning",  # it ends a run only while showing the plan
}
# A status comment that cannot be written ends the run only while it is what the run waits on:
# a plan nobody can see is a plan nobody can approve.
_STATUS_MATTERS = frozenset({RunState.planning, RunState.awaiting_approval})
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
    if job_name not in _STEPS:
        log.warning("job %s gave up; the run it served goes on without it", job_name)
        return
    with Session(bind=connection) as session:
        run_id = _run_of(session, args)
        if run_id is None:
            log.warning("job %s gave up; no run depended on it", job_name)
            return
        run = session.get(Run, run_id)
        if (
            job_name == lifecycle.STATUS_JOB
            and run is not None
            and run.state not in _STATUS_MATTERS
        ):
            log.warning("the status of run %s could not be shown; the run goes on", run_id)
            return
        reason = (
            f"Baton gave up on this run's {_STEPS.get(job_name, job_name)} step after "
            f"repeated failures: {plain_cause(error)}"
        )
        lifecycle.end_run(session, run_id, RunState.failed, reason)
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
