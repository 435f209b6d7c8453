"""The embedded executor: jobs from the database, run in this process with bounded concurrency.

Claiming a job takes a lease that a heartbeat keeps renewing; a job whose lease ran out belongs to
a process that died, and is claimed again. Jobs must therefore be idempotent. A failing job is
retried with exponential backoff up to its `max_attempts`, then left `failed` with its last error;
`on_gave_up` is told in the same transaction, so what depended on the job never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.executor import JobArg, JobContext, JobFunction, enqueue
from bot.integrations import Integrations
from bot.logs import log_context
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import Job, JobState
from bot.store.types import utcnow

log = logging.getLogger(__name__)
JOBS: sa.Table = Job.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claimed:
    id: int
    name: str
    args: dict[str, JobArg]
    attempts: int
    max_attempts: int


@dataclass(frozen=True)
class ExecutorTuning:
    """Timings of the local executor; the defaults suit production, tests shorten them."""

    concurrency: int = 4
    lease_seconds: float = 60.0
    poll_seconds: float = 2.0
    # Failures are mostly GitHub or a provider being down or rate limiting: wait minutes, not
    # seconds, before the last try (30 s doubling: about 4 to 7.5 minutes over five attempts).
    backoff_base_seconds: float = 30.0
    backoff_cap_seconds: float = 600.0
    # While webhook deliveries stream in, claiming waits for a quiet moment, at most this long.
    yield_seconds: float = 1.0
    quiet_seconds: float = 0.02
    # Housekeeping jobs (retention) run this often, the first time a minute after start.
    housekeeping_seconds: float = 6 * 3600.0
    housekeeping_delay_seconds: float = 60.0


# Told, inside the transaction that marks a job failed for good, which job gave up and why.
GaveUp = Callable[[Connection, str, Mapping[str, JobArg], BaseException], None]


class LocalExecutor:
    """Runs jobs from the `jobs` table inside this process."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        functions: Mapping[str, JobFunction],
        metrics: Metrics,
        tuning: ExecutorTuning | None = None,
        busy_elsewhere: Callable[[float], bool] | None = None,
        integrations: Integrations | None = None,
        on_gave_up: GaveUp | None = None,
        housekeeping: Sequence[str] = (),
    ) -> None:
        self.worker_id = f"local-{uuid.uuid4().hex[:12]}"
        self._store = store
        self._functions = dict(functions)
        self._metrics = metrics
        self._tuning = tuning or ExecutorTuning(
            concurrency=settings.job_concurrency, lease_seconds=settings.job_lease_seconds
        )
        self._context = JobContext(
            store=store,
            settings=settings,
            executor=self,
            integrations=integrations or Integrations.from_settings(settings),
        )
        self._busy_elsewhere = busy_elsewhere
        self._on_gave_up = on_gave_up
        self._housekeeping = tuple(housekeeping)
        self._wake = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._succeeded: list[int] = []
        self._loops: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loops = [
            asyncio.create_task(self._dispatch_forever(), name="executor-dispatch"),
            asyncio.create_task(self._heartbeat_forever(), name="executor-heartbeat"),
            *(
                asyncio.create_task(self._housekeeping_forever(name), name=f"executor-{name}")
                for name in self._housekeeping
            ),
        ]

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop claiming, give running jobs a grace period, then hand the rest back to the queue."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        running = list(self._running.values())
        if running:
            await asyncio.wait(running, timeout=grace_seconds)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._store.run_connection(self._record_successes)
        await self._store.run_connection(self._release_mine)

    def notify(self) -> None:
        """New jobs were committed; safe to call from any thread."""
        if self._loop is None or self._loop.is_closed():
            return
        if _running_loop() is self._loop:
            self._wake.set()  # on the loop already: no need to wake it through its pipe
        else:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def submit(self, job_name: str, **ids: JobArg) -> int:
        def write(session: Any) -> int:
            job = enqueue(session, job_name, **ids)  # type: ignore[arg-type]
            session.flush()
            assert job.id is not None
            return job.id

        job_id = await self._store.run(write)
        self.notify()
        return job_id

    async def _dispatch_forever(self) -> None:
        while True:
            await self._yield_to_urgent_work()
            self._wake.clear()
            free = self._tuning.concurrency - len(self._running)
            try:
                claimed = await self._store.run_connection(
                    partial(self._settle_and_claim, limit=free)
                )
            except Exception:
                log.exception("could not claim jobs; trying again shortly")
                claimed = []
            for job in claimed:
                self._running[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            if not claimed or len(self._running) >= self._tuning.concurrency:
                await self._sleep_until_woken()

    async def _yield_to_urgent_work(self) -> None:
        """Answering GitHub comes first: jobs are durable and can wait, a delivery left
        unanswered for 10 s counts as failed. The wait is bounded, so jobs always progress."""
        if self._busy_elsewhere is None:
            return
        quiet = self._tuning.quiet_seconds
        for _ in range(int(self._tuning.yield_seconds / quiet)):
            if not self._busy_elsewhere(quiet):
                return
            await asyncio.sleep(quiet)

    async def _sleep_until_woken(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the event is set, and stop() would then wait for this loop forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._tuning.poll_seconds):
                await self._wake.wait()

    def _settle_and_claim(self, connection: Connection, limit: int) -> list[Claimed]:
        # Successes are recorded with the next claim, one commit for many jobs; a crash before
        # that runs those jobs again, which jobs are written to allow.
        self._record_successes(connection)
        return self._claim(connection, limit)

    def _claim(self, connection: Connection, limit: int) -> list[Claimed]:
        now = utcnow()
        # Two claims rather than one OR: each then walks ix_jobs_claim in order and stops at
        # `limit`, where an OR made the database gather and sort the whole backlog every time.
        abandoned = sa.and_(JOBS.c.state == JobState.running, JOBS.c.lease_expires_at < now)
        claimed = self._claim_where(connection, abandoned, limit, now)
        due = sa.and_(JOBS.c.state == JobState.queued, JOBS.c.run_after <= now)
        claimed += self._claim_where(connection, due, limit - len(claimed), now)
        return sorted(claimed, key=lambda job: job.id)

    def _claim_where(
        self, connection: Connection, condition: sa.ColumnElement[bool], limit: int, now: datetime
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        order = (JOBS.c.run_after, JOBS.c.id)
        candidates = sa.select(JOBS.c.id).where(condition).order_by(*order).limit(limit)
        if connection.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        claim = (
            sa.update(JOBS)
            .where(JOBS.c.id.in_(candidates.scalar_subquery()))
            .values(
                state=JobState.running,
                locked_by=self.worker_id,
                lease_expires_at=now + timedelta(seconds=self._tuning.lease_seconds),
                attempts=JOBS.c.attempts + 1,
                started_at=now,
            )
            .returning(JOBS.c.id, JOBS.c.name, JOBS.c.args, JOBS.c.attempts, JOBS.c.max_attempts)
        )
        return [Claimed(*row) for row in connection.execute(claim)]

    async def _run(self, job: Claimed) -> None:
        started = time.perf_counter()
        outcome = "succeeded"
        with log_context(job_id=job.id):
            try:
                await self._call(job)
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception as error:
                outcome = "failed"
                log.exception(
                    "job %s failed (attempt %d of %d)", job.name, job.attempts, job.max_attempts
                )
                await self._store.run_connection(
                    partial(self._record_failure, job=job, error=error)
                )
            else:
                self._succeeded.append(job.id)
            finally:
                elapsed = time.perf_counter() - started
                self._metrics.job_duration.labels(job.name, outcome).observe(elapsed)
                self._running.pop(job.id, None)
                self._wake.set()

    async def _call(self, job: Claimed) -> None:
        if job.attempts > job.max_attempts:
            raise _GiveUp(f"job {job.name} was claimed {job.attempts} times; its holders died")
        function = self._functions.get(job.name)
        if function is None:
            raise _GiveUp(f"no job named {job.name!r} is registered with this executor")
        await function(self._context, **job.args)

    def _record_successes(self, connection: Connection) -> None:
        succeeded, self._succeeded = self._succeeded, []
        if not succeeded:
            return
        # Only the holder of the lease settles a job; one reclaimed after expiry is not ours.
        connection.execute(
            sa.update(JOBS)
            .where(JOBS.c.id.in_(succeeded), JOBS.c.locked_by == self.worker_id)
            .values(
                state=JobState.succeeded,
                finished_at=utcnow(),
                locked_by=None,
                lease_expires_at=None,
                last_error=None,
            )
        )

    def _record_failure(self, connection: Connection, job: Claimed, error: Exception) -> None:
        final = isinstance(error, _GiveUp) or job.attempts >= job.max_attempts
        now = utcnow()
        values: dict[str, Any] = {
            "locked_by": None,
            "lease_expires_at": None,
            "last_error": f"{type(error).__name__}: {error}"[:4000],
        }
        if final:
            values |= {"state": JobState.failed, "finished_at": now}
        else:
            values |= {"state": JobState.queued, "run_after": now + self._backoff(job.attempts)}
        settled = connection.execute(self._mine(job.id).values(**values)).rowcount
        if final and settled:
            self._tell_gave_up(connection, job, error)

    def _tell_gave_up(self, connection: Connection, job: Claimed, error: Exception) -> None:
        if self._on_gave_up is None:
            return
        try:
            # A savepoint: if telling fails, the job is still recorded as failed for good.
            with connection.begin_nested():
                self._on_gave_up(connection, job.name, job.args, error)
        except Exception:
            log.exception("job %s gave up, and what depended on it could not be told", job.name)

    def _backoff(self, attempts: int) -> timedelta:
        base = self._tuning.backoff_base_seconds * 2 ** (attempts - 1)
        delay = min(base, self._tuning.backoff_cap_seconds) * random.uniform(0.5, 1.0)
        return timedelta(seconds=delay)

    def _mine(self, job_id: int) -> sa.Update:
        # Only the holder of the lease may settle a job; a job reclaimed after expiry is not ours.
        return sa.update(JOBS).where(JOBS.c.id == job_id, JOBS.c.locked_by == self.worker_id)

    async def _housekeeping_forever(self, job_name: str) -> None:
        await asyncio.sleep(self._tuning.housekeeping_delay_seconds)
        while True:
            try:
                await self._store.run_connection(partial(_enqueue_unless_pending, name=job_name))
                self.notify()
            except Exception:
                log.exception("could not queue the housekeeping job %s", job_name)
            await asyncio.sleep(self._tuning.housekeeping_seconds)

    async def _heartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tuning.lease_seconds / 3)
            if self._running:
                await self._store.run_connection(self._renew_leases)

    def _renew_leases(self, connection: Connection) -> None:
        expires = utcnow() + timedelta(seconds=self._tuning.lease_seconds)
        connection.execute(
            sa.update(JOBS)
            .where(JOBS.c.locked_by == self.worker_id, JOBS.c.state == JobState.running)
            .values(lease_expires_at=expires)
        )

    def _release_mine(self, connection: Connection) -> None:
        # A job interrupted by shutdown is not its fault: give it back without spending an attempt.
        connection.execute(
            sa.update(JOBS)
            .where(JOBS.c.locked_by == self.worker_id, JOBS.c.state == JobState.running)
            .values(
                state=JobState.queued,
                locked_by=None,
                lease_expires_at=None,
                attempts=JOBS.c.attempts - 1,
                run_after=utcnow(),
            )
        )


def _enqueue_unless_pending(connection: Connection, name: str) -> None:
    """Queue job `name` unless a copy is queued or running already (several processes may ask)."""
    pending = sa.select(sa.func.count()).where(
        JOBS.c.name == name, JOBS.c.state.in_([JobState.queued, JobState.running])
    )
    if connection.execute(pending).scalar_one() == 0:
        now = utcnow()
        connection.execute(
            sa.insert(JOBS).values(
                name=name, args={}, state=JobState.queued, run_after=now, created_at=now
            )
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _GiveUp(Exception):
    """A job failure that retrying cannot fix."""
