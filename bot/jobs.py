"""The jobs Baton runs, by name. Each takes ids only and is safe to run more than once."""

from __future__ import annotations

import logging
from typing import TypeVar

from pydantic import BaseModel
from sqlmodel import Session

from bot import (
    ci,
    installations,
    labels,
    merges,
    planning,
    retention,
    revisions,
    runs,
    steering,
)
from bot.events import (
    CheckSuiteCompleted,
    InstallationEvent,
    InstallationRepositoriesEvent,
    IssueCommentCreated,
    IssueLabeled,
    PullRequestClosed,
    PullRequestReviewSubmitted,
    PushEvent,
)
from bot.executor import JobContext, JobFunction
from bot.logs import log_context
from bot.runs import advance, attempt, finish, integration, lifecycle, pull_requests, status
from bot.store.models import Delivery

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=BaseModel)


class MissingDelivery(LookupError):
    """The delivery a job refers to is not in the store."""


def load_event(session: Session, delivery_id: int, model: type[EventT]) -> EventT:
    """The fields of the delivery that the job reads, as `model`."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.payload is None:
        raise MissingDelivery(f"delivery {delivery_id} has no stored payload")
    return model.model_validate_json(delivery.payload)


async def start_run(context: JobContext, delivery_id: int) -> None:
    """`issues.labeled`: start a run when the label is the repository's and the sender may."""
    event = await context.store.run(lambda session: load_event(session, delivery_id, IssueLabeled))
    run_id = await steering.admit(context, event, delivery_id)
    if run_id is not None:
        with log_context(run_id=run_id):
            log.info("run started")


async def handle_issue_comment(context: JobContext, delivery_id: int) -> None:
    """`issue_comment.created`: noted on the issue's active run, then obeyed if a command."""

    def step(session: Session) -> IssueCommentCreated:
        event = load_event(session, delivery_id, IssueCommentCreated)
        run = runs.active_run_for_issue(session, event.repository.id, event.issue.number)
        if run is not None:
            runs.record_event(
                session,
                run.id,
                "comment.received",
                f"@{event.sender.login} commented",
                delivery_id=delivery_id,
                data={"comment_id": event.comment.id},
            )
        return event

    event = await context.store.run(step)
    await steering.steer(context, event, delivery_id)


async def handle_review(context: JobContext, delivery_id: int) -> None:
    """`pull_request_review.submitted`: noted on the run that owns the PR, then its comments
    become a new plan revision when the reviewer may command Baton."""

    def step(session: Session) -> PullRequestReviewSubmitted:
        event = load_event(session, delivery_id, PullRequestReviewSubmitted)
        run = pull_requests.run_of_pull_request(session, event.repository.id, event.pull_request)
        if run is not None:
            runs.record_event(
                session,
                run.id,
                "review.received",
                f"@{event.sender.login} submitted a review ({event.review.state})",
                delivery_id=delivery_id,
                data={"review_id": event.review.id},
            )
        return event

    event = await context.store.run(step)
    await revisions.revise_from_review(context, event, delivery_id)


async def handle_pull_request_closed(context: JobContext, delivery_id: int) -> None:
    """`pull_request.closed`: a run's pull request was merged or closed, so the run ends."""
    event = await context.store.run(
        lambda session: load_event(session, delivery_id, PullRequestClosed)
    )
    await pull_requests.pull_request_closed(context, event, delivery_id)


async def handle_check_suite(context: JobContext, delivery_id: int) -> None:
    """`check_suite.completed`: a CI's failure on a run's pull request is run again, fixed
    by new tasks, or handed to a person."""
    event = await context.store.run(
        lambda session: load_event(session, delivery_id, CheckSuiteCompleted)
    )
    await ci.check_suite_completed(context, event)


async def handle_push(context: JobContext, delivery_id: int) -> None:
    """`push`: when it moved the default branch, open runs that now conflict get a merge."""
    event = await context.store.run(lambda session: load_event(session, delivery_id, PushEvent))
    await merges.default_branch_pushed(context, event)


async def sync_installation(context: JobContext, delivery_id: int) -> None:
    """`installation.*`: keep the installations table current; a new installation's
    repositories get the trigger label."""

    def step(session: Session) -> None:
        event = load_event(session, delivery_id, InstallationEvent)
        installations.apply_installation_event(session, event)
        if event.action == "created":
            labels.queue_trigger_labels(session, event.repositories or [])

    await context.store.run(step)
    await retention.forget_uninstalled_mirrors(context)


async def sync_installation_repositories(context: JobContext, delivery_id: int) -> None:
    """`installation_repositories.*`: keep the installation's repositories current; added ones
    get the trigger label."""

    def step(session: Session) -> None:
        event = load_event(session, delivery_id, InstallationRepositoriesEvent)
        installations.apply_repositories_event(session, event)
        labels.queue_trigger_labels(session, event.repositories_added)

    await context.store.run(step)
    await retention.forget_uninstalled_mirrors(context)


JOBS: dict[str, JobFunction] = {
    "start_run": start_run,
    lifecycle.PLAN_JOB: planning.plan_run,
    lifecycle.ADVANCE_JOB: advance.advance_run,
    "execute_run": advance.resume_earlier_run,
    lifecycle.ATTEMPT_JOB: attempt.attempt_task,
    lifecycle.INTEGRATE_JOB: integration.integrate_task,
    lifecycle.FINISH_JOB: finish.finish_run,
    lifecycle.STATUS_JOB: status.show_status,
    "handle_issue_comment": handle_issue_comment,
    "handle_review": handle_review,
    "handle_pull_request_closed": handle_pull_request_closed,
    "handle_check_suite": handle_check_suite,
    "handle_push": handle_push,
    "sync_installation": sync_installation,
    "sync_installation_repositories": sync_installation_repositories,
    labels.LABEL_JOB: labels.create_trigger_label,
    retention.PRUNE_JOB: retention.prune_records,
    lifecycle.CLEAR_RUN_JOB: retention.clear_run_files,
}
