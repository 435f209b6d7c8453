"""Jobs run by hand, one at a time, against the store and the GitHub double, as the executor
would run them: for tests of what one job does, and what it does when run again."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bot.events import decide
from bot.executor import JobContext
from bot.github.client import GitHubTuning
from bot.integrations import Integrations
from bot.jobs import JOBS
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import Delivery, Job, JobState
from bot.store.types import utcnow
from tests.doubles.fixtures import as_app
from tests.doubles.github import GitHubDouble
from tests.support import payload


@pytest.fixture
async def job_context(
    database_url: str, settings: Settings, github: GitHubDouble
) -> AsyncIterator[JobContext]:
    """A job's context: the store, and Baton talking to the GitHub double as the App."""
    store = Store(database_url)
    configured = as_app(settings, github)
    integrations = Integrations.from_settings(configured, GitHubTuning(write_interval=0.0))
    yield JobContext(store, configured, None, integrations)  # type: ignore[arg-type]
    store.close()


async def deliver(context: JobContext, name: str, body: dict[str, Any] | None = None) -> int:
    """Store a delivery as the endpoint would and run the job it routes to; returns its row id.
    `name` is `event.action`; without `body`, the recorded payload of that name is sent."""
    data = json.dumps(body if body is not None else payload(name)).encode()
    event, _, action = name.partition(".")
    decision = decide(event, data)
    assert decision.job is not None

    def add(session: Session) -> int:
        row = Delivery(
            delivery_id=f"{name}-{uuid.uuid4()}",
            event=event,
            action=action,
            outcome="queued",
            payload=decision.fields,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id

    delivery_id = await context.store.run(add)
    await JOBS[decision.job](context, delivery_id=delivery_id)
    return delivery_id


async def run_queued(context: JobContext, *names: str) -> list[str]:
    """Run the queued jobs named `names`, oldest first, as an executor would, until none is
    left (a job may queue more); each is marked succeeded. Returns the names run, in order."""
    done: list[str] = []
    while True:
        job = await context.store.run(lambda session: _next_queued(session, names))
        if job is None:
            return done
        job_id, name, args = job
        await JOBS[name](context, **args)
        await context.store.run(partial(_settle, job_id=job_id))
        done.append(name)


def _next_queued(
    session: Session, names: tuple[str, ...]
) -> tuple[int, str, dict[str, Any]] | None:
    query = (
        select(Job)
        .where(Job.state == JobState.queued, col(Job.name).in_(names))
        .order_by(col(Job.id))
    )
    job = session.exec(query).first()
    return None if job is None else (job.id or 0, job.name, dict(job.args))


def _settle(session: Session, *, job_id: int) -> None:
    job = session.get(Job, job_id)
    assert job is not None
    job.state, job.finished_at = JobState.succeeded, utcnow()
