"""Jobs run directly: starting a run, keeping installations current, noting comments."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlmodel import select

from bot.executor import JobContext
from bot.jobs import JOBS
from bot.store.models import Installation, InstallationRepository, Run, TimelineEvent
from tests.jobs_by_hand import deliver
from tests.support import payload

WIDGETS = "octo-org/widgets"


@pytest.fixture
def context(job_context: JobContext) -> JobContext:
    return job_context


async def all_of(context: JobContext, model: Any) -> list[Any]:
    return list(await context.store.run(lambda session: session.exec(select(model)).all()))


async def test_labelling_with_baton_records_a_planning_run_and_a_timeline_event(
    context: JobContext,
) -> None:
    delivery_id = await deliver(context, "issues.labeled")

    [run] = await all_of(context, Run)
    [event] = await all_of(context, TimelineEvent)
    body = payload("issues.labeled")
    assert (run.state, run.active, run.repository, run.issue_number) == (
        "planning",
        True,
        WIDGETS,
        body["issue"]["number"],
    )
    assert run.trigger_delivery_id == delivery_id
    assert run.triggered_by == body["sender"]["login"]
    assert run.branch == f"baton/issue-{body['issue']['number']}"
    assert (event.run_id, event.kind, event.delivery_id) == (run.id, "run.started", delivery_id)


async def test_running_the_same_job_twice_starts_one_run(context: JobContext) -> None:
    delivery_id = await deliver(context, "issues.labeled")

    await JOBS["start_run"](context, delivery_id=delivery_id)

    assert len(await all_of(context, Run)) == 1
    assert len(await all_of(context, TimelineEvent)) == 1


async def test_a_second_label_event_while_a_run_is_active_starts_nothing(
    context: JobContext,
) -> None:
    await deliver(context, "issues.labeled")
    again = copy.deepcopy(payload("issues.labeled"))
    again["sender"]["login"] = "bob"

    await deliver(context, "issues.labeled", again)

    [run] = await all_of(context, Run)
    assert run.triggered_by != "bob"


async def test_other_labels_start_nothing(context: JobContext) -> None:
    body = copy.deepcopy(payload("issues.labeled"))
    body["label"]["name"] = "bug"

    await deliver(context, "issues.labeled", body)

    assert await all_of(context, Run) == []


async def test_installation_created_then_deleted(context: JobContext) -> None:
    await deliver(context, "installation.created")
    [installation] = await all_of(context, Installation)
    repositories = await all_of(context, InstallationRepository)
    assert installation.id == payload("installation.created")["installation"]["id"]
    assert installation.account_login == "octo-org"
    assert installation.deleted_at is None
    assert sorted(r.full_name for r in repositories) == ["octo-org/gadgets", WIDGETS]

    await deliver(context, "installation.deleted")

    [installation] = await all_of(context, Installation)
    assert installation.deleted_at is not None
    assert all(r.removed_at is not None for r in await all_of(context, InstallationRepository))


async def test_installation_repositories_added_and_removed(context: JobContext) -> None:
    await deliver(context, "installation.created")
    added = payload("installation_repositories.added")["repositories_added"]
    removed = payload("installation_repositories.removed")["repositories_removed"]

    await deliver(context, "installation_repositories.added")
    await deliver(context, "installation_repositories.removed")

    current = {
        r.full_name for r in await all_of(context, InstallationRepository) if r.removed_at is None
    }
    expected = ({"octo-org/gadgets", WIDGETS} | {r["full_name"] for r in added}) - {
        r["full_name"] for r in removed
    }
    assert current == expected


async def test_a_comment_on_an_issue_with_a_run_is_noted_once(context: JobContext) -> None:
    await deliver(context, "issues.labeled")
    delivery_id = await deliver(context, "issue_comment.created")
    await JOBS["handle_issue_comment"](context, delivery_id=delivery_id)

    kinds = [event.kind for event in await all_of(context, TimelineEvent)]
    assert kinds == ["run.started", "comment.received"]


async def test_a_comment_on_an_issue_without_a_run_changes_nothing(context: JobContext) -> None:
    await deliver(context, "issue_comment.created")

    assert await all_of(context, TimelineEvent) == []
