"""Baton answers people without write access sparingly: nothing where no run is under way, and
at most one refusal per person per issue per hour, counted in the database so that a restart
forgets none. People with write access are answered as before."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from bot.executor import JobContext
from bot.github.client import GitHubTuning
from bot.integrations import Integrations
from bot.jobs import JOBS
from bot.settings import Settings
from bot.steering import COMMAND_REFUSED
from bot.store.db import Store
from bot.store.models import Run, TimelineEvent
from tests.doubles.fixtures import REPOSITORY, as_app
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble
from tests.jobs_by_hand import deliver
from tests.support import count_rows, payload, wait_for
from tests.world import DIAMOND, World, submit

REFUSAL = "only people with write access"
ISSUE_OF_PAYLOADS = payload("issues.labeled")["issue"]["number"]


def comments_handled(engine: sa.Engine) -> int:
    return count_rows(engine, "jobs", "name = 'handle_issue_comment' AND state = 'succeeded'")


def planned(world: World, engine: sa.Engine) -> None:
    world.models.add(submit(DIAMOND))
    world.label()
    wait_for(lambda: world.run_state(engine) == "awaiting_approval" and "Plan r1" in world.status())


def test_a_stranger_on_an_issue_without_a_run_gets_no_reply(
    world: World, engine: sa.Engine
) -> None:
    world.comment("/approve-plan", sender="rita")
    world.comment("/retry", sender="rita")  # malformed, too

    wait_for(lambda: comments_handled(engine) == 2)
    assert world.bot_comments() == []


def test_a_stranger_gets_one_refusal_however_often_they_command_within_the_hour(
    world: World, engine: sa.Engine
) -> None:
    planned(world, engine)
    world.comment("/approve-plan", sender="rita")
    world.comment("/cancel", sender="rita")
    world.comment("/approve-plan r1", sender="rita")

    wait_for(lambda: comments_handled(engine) == 3)
    replies = world.replies()
    assert len(replies) == 1
    assert REFUSAL in replies[0]
    assert world.run_state(engine) == "awaiting_approval"


def test_a_strangers_malformed_command_gets_the_refusal_not_a_parse_error(
    world: World, engine: sa.Engine
) -> None:
    planned(world, engine)
    world.comment("/retry", sender="rita")

    wait_for(lambda: comments_handled(engine) == 1)
    replies = world.replies()
    assert len(replies) == 1
    assert REFUSAL in replies[0]
    assert "task id" not in replies[0]


def test_a_writers_malformed_command_is_answered_as_before(world: World, engine: sa.Engine) -> None:
    world.comment("/retry")

    reply = wait_for(world.replies)[0]
    assert "`/retry` needs a task id like `T3`" in reply


@pytest.fixture
def models() -> Iterator[ModelDouble]:
    with ModelDouble() as double:
        yield double


@pytest.fixture
def settings(settings: Settings, models: ModelDouble) -> Settings:
    return models.serving(settings)


@pytest.fixture
async def second_process(
    database_url: str, settings: Settings, github: GitHubDouble
) -> AsyncIterator[JobContext]:
    """A job context of its own on the same database: Baton after a restart."""
    store = Store(database_url)
    integrations = Integrations.from_settings(
        as_app(settings, github), GitHubTuning(write_interval=0.0)
    )
    yield JobContext(store, as_app(settings, github), None, integrations)  # type: ignore[arg-type]
    store.close()


def stranger_says(github: GitHubDouble, text: str) -> dict[str, Any]:
    made = github.add_issue_comment(REPOSITORY, ISSUE_OF_PAYLOADS, text, user="rita")
    body = copy.deepcopy(payload("issue_comment.created"))
    body["comment"] = {**body["comment"], **made}
    body["sender"]["login"] = "rita"
    return body


def refusals(github: GitHubDouble) -> list[str]:
    bodies = [c["body"] for c in github.issue_comments(REPOSITORY, ISSUE_OF_PAYLOADS)]
    return [body for body in bodies if REFUSAL in body]


async def test_refusals_are_counted_across_a_restart_and_allowed_again_after_an_hour(
    job_context: JobContext,
    second_process: JobContext,
    github: GitHubDouble,
    models: ModelDouble,
    engine: sa.Engine,
) -> None:
    github.set_permission(REPOSITORY, "rita", "read")
    models.add(submit(DIAMOND))
    await deliver(job_context, "issues.labeled", payload("issues.labeled"))
    run = await job_context.store.run(lambda session: session.exec(select(Run)).one())
    await JOBS["plan_run"](job_context, run_id=run.id)

    await deliver(job_context, "issue_comment.created", stranger_says(github, "/approve-plan"))
    assert len(refusals(github)) == 1
    await deliver(second_process, "issue_comment.created", stranger_says(github, "/cancel"))
    assert len(refusals(github)) == 1

    with Session(engine) as session:
        for event in session.exec(
            select(TimelineEvent).where(TimelineEvent.kind == COMMAND_REFUSED)
        ):
            event.created_at -= timedelta(hours=1)  # as if the refusal had been an hour ago
        session.commit()
    await deliver(second_process, "issue_comment.created", stranger_says(github, "/cancel"))
    assert len(refusals(github)) == 2
