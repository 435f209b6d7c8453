"""Running jobs: named units of work that take ids only, so any process can pick them up.

A job is written to the `jobs` table in the same transaction as the state that calls for it (an
outbox), which is why enqueueing takes a session. The local executor runs those rows itself; an
executor for many machines relays them to its queue. Job code is the same either way.

Jobs sharing a `lock` run one at a time, oldest first; a `queueing_lock` keeps one copy waiting.
A job whose lease lapsed may be claimed again elsewhere: before writes that must not land late,
a job calls `check_fence` in the same transaction. `request_abort` stops a run's jobs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import sqlalchemy as sa
from sqlmodel import Session

from bot.github.pacing import BEFORE_WRITE
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import Job, JobState
from bot.store.types import utcnow

if TYPE_CHECKING:
    from bot.integrations import Integrations
    from bot.settings import Settings
    from bot.store.db import Store

log = logging.getLogger(__name__)
JOBS: sa.Table = Job.__table__  # type: ignore[attr-defined]

JobArg = int | str
T = TypeVar("T")


@dataclass(frozen=True)
class JobContext:
    """What a job may use besides its ids."""

    store: Store
    settings: Settings
    executor: Executor
    integrations: Integrations


JobFunction = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class JobFence:
    """The claim a running job holds: its id and the `fence` its claim wrote."""

    job_id: int
    token: int


# Set by the executor in the task that runs a job; Store.run carries it into its thread.
JOB_FENCE: ContextVar[JobFence | None] = ContextVar("job_fence", default=None)


class Fenced(Exception):
    """The job's claim was taken over by another process: this holder must not write any more."""


def hold_claim(store: Store, fence: JobFence) -> None:
    """The current task runs the job whose claim is `fence`: `check_fence` checks that claim,
    and every GitHub write checks it first, so a taken-over holder writes nothing late."""
    JOB_FENCE.set(fence)
    BEFORE_WRITE.set(partial(store.run, check_fence))


def enqueue(
    session: Session | sa.Connection,
    job_name: str,
    *,
    max_attempts: int = 5,
    lock: str | None = None,
    queueing_lock: str | None = None,
    delay_seconds: float = 0.0,
    **ids: JobArg,
) -> int | None:
    """Add a job to the caller's transaction; executors see it on commit. Returns its id, or None
    when a job with the same `queueing_lock` is queued already (it does this work).

    Jobs sharing a `lock` run one at a time, in the order enqueued. A conflict leaves the
    caller's transaction intact: the INSERT skips it rather than failing.
    """
    now = utcnow()
    row = {
        "name": job_name,
        "args": dict(ids),
        "state": JobState.queued,
        "max_attempts": max_attempts,
        "run_after": now + timedelta(seconds=delay_seconds),
        "created_at": now,
        "delivery_id": _of_type(int, ids.get("delivery_id")),
        "run_id": _of_type(str, ids.get("run_id")),
        "lock": lock,
        "queueing_lock": queueing_lock,
    }
    inserted = insert_ignoring_conflicts(session, Job, [row])
    return next(iter(inserted), None)


def _of_type(kind: type[T], value: Any) -> T | None:
    return value if isinstance(value, kind) else None


def _rowcount(connection: Session | sa.Connection, statement: sa.Update) -> int:
    result = cast(sa.CursorResult[Any], connection.execute(statement))
    return result.rowcount


def check_fence(connection: Session | sa.Connection) -> None:
    """Inside a job, raise `Fenced` unless this process still holds the job's claim; outside
    one, do nothing. Call it in the transaction whose writes must not land late: it row-locks
    the job (PostgreSQL) or takes the write lock (SQLite) until that transaction commits, so a
    takeover cannot slip in between the check and the commit."""
    fence = JOB_FENCE.get()
    if fence is None:
        return
    held = sa.update(JOBS).where(
        JOBS.c.id == fence.job_id,
        JOBS.c.fence == fence.token,
        JOBS.c.state == JobState.running,
    )
    if _rowcount(connection, held.values(fence=JOBS.c.fence)):
        return
    name = connection.execute(sa.select(JOBS.c.name).where(JOBS.c.id == fence.job_id)).scalar()
    log.warning("late write rejected: job %d (%s) was taken over", fence.job_id, name)
    raise Fenced(f"job {fence.job_id} ({name}) was taken over by another process")


def request_abort(connection: Session | sa.Connection, run_id: str) -> int:
    """Stop run `run_id`'s jobs: queued ones end `aborted` now, running ones are asked to stop
    (their executor cancels them within its abort poll). Returns how many jobs were touched.
    Called inside a job, it spares that job: it is the one stopping the run."""
    of_run = JOBS.c.run_id == run_id
    fence = JOB_FENCE.get()
    if fence is not None:
        of_run &= JOBS.c.id != fence.job_id
    asked = sa.update(JOBS).where(of_run, JOBS.c.state == JobState.running)
    ended = sa.update(JOBS).where(of_run, JOBS.c.state == JobState.queued)
    return _rowcount(connection, asked.values(abort_requested=True)) + _rowcount(
        connection,
        ended.values(state=JobState.aborted, abort_requested=True, finished_at=utcnow()),
    )


class Executor(Protocol):
    """Runs queued jobs. `submit` enqueues in its own transaction; `notify` says new rows exist."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job_name: str, **ids: JobArg) -> int: ...

    def notify(self) -> None: ...
