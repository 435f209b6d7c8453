"""Running jobs: named units of work that take ids only, so any process can pick them up.

A job is written to the `jobs` table in the same transaction as the state that calls for it (an
outbox), which is why enqueueing takes a session. The local executor runs those rows itself; an
executor for many machines relays them to its queue. Job code is the same either way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sqlmodel import Session

from bot.store.models import Job, JobState
from bot.store.types import utcnow

if TYPE_CHECKING:
    from bot.integrations import Integrations
    from bot.settings import Settings
    from bot.store.db import Store

JobArg = int | str


@dataclass(frozen=True)
class JobContext:
    """What a job may use besides its ids."""

    store: Store
    settings: Settings
    executor: Executor
    integrations: Integrations


JobFunction = Callable[..., Awaitable[None]]


def enqueue(session: Session, job_name: str, *, max_attempts: int = 5, **ids: JobArg) -> Job:
    """Add a job to the caller's transaction; it becomes visible to executors on commit."""
    now = utcnow()
    job = Job(
        name=job_name,
        args=dict(ids),
        state=JobState.queued,
        max_attempts=max_attempts,
        run_after=now,
        created_at=now,
        delivery_id=_int_or_none(ids.get("delivery_id")),
    )
    session.add(job)
    return job


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) else None


class Executor(Protocol):
    """Runs queued jobs. `submit` enqueues in its own transaction; `notify` says new rows exist."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job_name: str, **ids: JobArg) -> int: ...

    def notify(self) -> None: ...
