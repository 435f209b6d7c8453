"""The embedded executor: jobs from the database, run in this process with bounded concurrency.

Claiming a job takes a lease that a heartbeat keeps renewing; a job whose lease ran out belongs to
a process that died, and is claimed again. Jobs must therefore be idempotent. Every claim bumps
the job's fence, so only the newest holder settles it (see `bot.executor.check_fence` for the
job's own writes). A failing job is retried with exponential backoff up to its `max_attempts`,
then left `failed` with its last error; `on_gave_up` is told in the same transaction, so what
depended on the job never waits for it. Jobs sharing a lock run one at a time, oldest first; a
job whose run was aborted is cancelled and ends `aborted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.executor import (
    JOB_FENCE,
    Fenced,
    JobArg,
    JobContext,
    JobFence,
    JobFunction,
    enqueue,
    hold_claim,
)
from bot.integrations import Integrations
from bot.logs import log_context
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import Job, JobState
from bot.store.types import utcnow
from bot.tracing import step_span

log = logging.getLogger(__name__)
JOBS: sa.Table = Job.__table__  # type: ignore[attr-defined]
SUPERSEDED = "superseded: a copy with the same queueing lock is queued and does this work"

# A claimed job: its id and the fence its claim wrote.
JobKey = tuple[int, int]


@dataclass(frozen=True)
class Claimed:
    id: int
    name: str
    args: dict[str, JobArg]
    attempts: int
    max_attempts: int
    fence: int
    abort_requested: bool

    @property
    def key(self) -> JobKey:
        return (self.id, self.fence)


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
    # How often running jobs are checked for an abort request.
    abort_poll_seconds: float = 1.0


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
        long_jobs: Sequence[str] = (),
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
        # Long jobs (worker attempts) run in a lane of their own, as many as the global cap on
        # worker tasks allows: however many are under way, the short steps always have slots.
        self._long_jobs = frozenset(long_jobs)
        self._long_concurrency = settings.max_parallel
        self._wake = asyncio.Event()
        self._running: dict[JobKey, asyncio.Task[None]] = {}
        self._long_running: set[int] = set()  # ids of the long jobs among them
        # The job functions' own tasks, while they run: what an abort cancels.
        self._calls: dict[JobKey, asyncio.Task[None]] = {}
        self._aborting: set[JobKey] = set()
        self._succeeded: list[JobKey] = []
        self._loops: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loops = [
            asyncio.create_task(loop(), name=name) for name, loop in self._background_loops()
        ]

    def _background_loops(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The executor's background loops, by name."""
        return [
            ("executor-dispatch", self._dispatch_forever),
            ("executor-heartbeat", self._heartbeat_forever),
            ("executor-aborts", self._watch_aborts_forever),
            *(
                (f"executor-{name}", partial(self._housekeeping_forever, name))
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
            job_id = enqueue(session, job_name, **ids)  # type: ignore[arg-type]
            assert job_id is not None  # only a queueing lock drops a job
            return job_id

        job_id = await self._store.run(write)
        self.notify()
        return job_id

    async def _dispatch_forever(self) -> None:
        while True:
            await self._yield_to_urgent_work()
            self._wake.clear()
            free = self._free_slots()
            try:
                claimed = await self._store.run_connection(
                    partial(self._settle_and_claim, free=free)
                )
            except Exception:
                log.exception("could not claim jobs; trying again shortly")
                claimed = []
            for job in claimed:
                self._cancel_earlier_claims(job.id)
                self._running[job.key] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            if not claimed or not any(self._free_slots()):
                await self._sleep_until_woken()

    def _free_slots(self) -> tuple[int, int]:
        """Free slots for short steps and for long jobs."""
        long = sum(key[0] in self._long_running for key in self._running)
        short = len(self._running) - long
        return self._tuning.concurrency - short, self._long_concurrency - long

    def _cancel_earlier_claims(self, job_id: int) -> None:
        # This process claimed its own job again after its lease lapsed: the older run is fenced
        # out, and running both would only have them trip over each other.
        for (running_id, _), task in self._running.items():
            if running_id == job_id:
                task.cancel()

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

    def _settle_and_claim(self, connection: Connection, free: tuple[int, int]) -> list[Claimed]:
        # Successes are recorded with the next claim, one commit for many jobs; a crash before
        # that runs those jobs again, which jobs are written to allow.
        self._record_successes(connection)
        short, long = free
        if not self._long_jobs:
            return self._claim(connection, short, sa.true())
        named = JOBS.c.name.in_(sorted(self._long_jobs))
        claimed = self._claim(connection, short, sa.not_(named))
        claimed += self._claim(connection, long, named)
        self._long_running.update(job.id for job in claimed if job.name in self._long_jobs)
        return sorted(claimed, key=lambda job: job.id)

    def _claim(
        self, connection: Connection, limit: int, lane: sa.ColumnElement[bool]
    ) -> list[Claimed]:
        now = utcnow()
        # Two claims rather than one OR: each then walks ix_jobs_claim in order and stops at
        # `limit`, where an OR made the database gather and sort the whole backlog every time.
        # Abandoned jobs go first: one holding a lock then keeps it, ahead of the lock's queue.
        abandoned = sa.and_(JOBS.c.state == JobState.running, JOBS.c.lease_expires_at < now, lane)
        claimed = self._claim_where(connection, abandoned, limit, now)
        due = sa.and_(
            JOBS.c.state == JobState.queued, JOBS.c.run_after <= now, _lock_is_free(now), lane
        )
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
            candidates = candidates.with_for_update(skip_locked=True, of=JOBS)
        claim = (
            sa.update(JOBS)
            .where(JOBS.c.id.in_(candidates.scalar_subquery()))
            .values(
                state=JobState.running,
                locked_by=self.worker_id,
                lease_expires_at=now + timedelta(seconds=self._tuning.lease_seconds),
                attempts=JOBS.c.attempts + 1,
                fence=JOBS.c.fence + 1,
                started_at=now,
            )
            .returning(
                JOBS.c.id,
                JOBS.c.name,
                JOBS.c.args,
                JOBS.c.attempts,
                JOBS.c.max_attempts,
                JOBS.c.fence,
                JOBS.c.abort_requested,
            )
        )
        # Another process may have started a job with the same lock since this one looked; the
        # unique index refuses the second, and looking again sees the first.
        for _ in range(3):
            rows = _unless_conflict(connection, claim)
            if rows is not None:
                return [Claimed(*tuple(row)) for row in rows]
            log.info("another process took a lock this claim wanted; claiming again")
        return []

    async def _run(self, job: Claimed) -> None:
        # This task's own context: the job's work, and Store.run threads, carry its claim.
        hold_claim(self._store, JobFence(job_id=job.id, token=job.fence))
        started = time.perf_counter()
        outcome = "cancelled"
        with log_context(job_id=job.id):
            try:
                outcome = await self._outcome(job)
            finally:
                elapsed = time.perf_counter() - started
                self._metrics.job_duration.labels(job.name, outcome).observe(elapsed)
                self._running.pop(job.key, None)
                if not any(key[0] == job.id for key in self._running):
                    self._long_running.discard(job.id)
                self._aborting.discard(job.key)
                self._wake.set()

    async def _outcome(self, job: Claimed) -> str:
        """Run the job and settle it; what happened, for the metrics."""
        if job.abort_requested:  # asked for while it waited to be tried again
            return await self._abort(job)
        call = asyncio.create_task(self._call(job), name=f"job-{job.id}-call")
        self._calls[job.key] = call
        try:
            await call
        except asyncio.CancelledError:
            # An abort cancels the call alone; stop() cancels this task, and that goes on up.
            if not call.cancelled() or job.key not in self._aborting:
                raise
            return await self._abort(job)
        except Fenced:
            log.warning("job %s was taken over by another process; this run of it ends", job.name)
            return "fenced"
        except Exception as error:
            log.exception(
                "job %s failed (attempt %d of %d)", job.name, job.attempts, job.max_attempts
            )
            await self._store.run_connection(partial(self._record_failure, job=job, error=error))
            return "failed"
        finally:
            self._calls.pop(job.key, None)
        self._succeeded.append(job.key)
        return "succeeded"

    async def _abort(self, job: Claimed) -> str:
        log.info("job %s aborted: its run was stopped", job.name)
        ended = self._mine(job).values(
            state=JobState.aborted, finished_at=utcnow(), locked_by=None, lease_expires_at=None
        )
        await self._store.run_connection(lambda connection: connection.execute(ended))
        return "aborted"

    async def _call(self, job: Claimed) -> None:
        if job.attempts > job.max_attempts:
            raise _GiveUp(f"job {job.name} was claimed {job.attempts} times; its holders died")
        function = self._functions.get(job.name)
        if function is None:
            raise _GiveUp(f"no job named {job.name!r} is registered with this executor")
        with step_span(job.name, job.id, job.attempts, job.args.get("run_id")):
            await function(self._context, **job.args)

    def _record_successes(self, connection: Connection) -> None:
        succeeded, self._succeeded = self._succeeded, []
        if not succeeded:
            return
        held = self._held(sa.bindparam("job_id"), sa.bindparam("token"))
        settle = sa.update(JOBS).where(held)
        connection.execute(
            settle.values(
                state=JobState.succeeded,
                finished_at=utcnow(),
                locked_by=None,
                lease_expires_at=None,
                last_error=None,
            ),
            [{"job_id": job_id, "token": token} for job_id, token in succeeded],
        )

    def _record_failure(self, connection: Connection, job: Claimed, error: Exception) -> None:
        now = utcnow()
        last_error = f"{type(error).__name__}: {error}"[:4000]
        if not isinstance(error, _GiveUp) and job.attempts < job.max_attempts:
            retry = {"run_after": now + self._backoff(job.attempts), "last_error": last_error}
            _back_to_queue(connection, self._held(job.id, job.fence), retry)
            return
        failed = self._mine(job).values(
            state=JobState.failed,
            finished_at=now,
            locked_by=None,
            lease_expires_at=None,
            last_error=last_error,
        )
        if connection.execute(failed).rowcount:
            self._tell_gave_up(connection, job, error)

    def _tell_gave_up(self, connection: Connection, job: Claimed, error: Exception) -> None:
        if self._on_gave_up is None:
            return
        # The job is no longer running: what is told is written as the executor's, unfenced.
        unfenced = JOB_FENCE.set(None)
        try:
            # A savepoint: if telling fails, the job is still recorded as failed for good.
            with connection.begin_nested():
                self._on_gave_up(connection, job.name, job.args, error)
        except Exception:
            log.exception("job %s gave up, and what depended on it could not be told", job.name)
        finally:
            JOB_FENCE.reset(unfenced)

    def _backoff(self, attempts: int) -> timedelta:
        base = self._tuning.backoff_base_seconds * 2 ** (attempts - 1)
        delay = min(base, self._tuning.backoff_cap_seconds) * random.uniform(0.5, 1.0)
        return timedelta(seconds=delay)

    def _held(self, job_id: Any, fence: Any) -> sa.ColumnElement[bool]:
        """Job `job_id` still runs on the claim that wrote `fence`, made by this executor."""
        return sa.and_(
            JOBS.c.id == job_id,
            JOBS.c.fence == fence,
            JOBS.c.locked_by == self.worker_id,
            JOBS.c.state == JobState.running,
        )

    def _mine(self, job: Claimed) -> sa.Update:
        # Only the holder of the claim settles a job; one claimed again after expiry is not ours,
        # even when this process claimed it again (the fence moved on).
        return sa.update(JOBS).where(self._held(job.id, job.fence))

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
            if not self._running:
                continue
            try:
                await self._store.run_connection(self._renew_leases)
            except Exception:
                # A lapsed lease costs a takeover, which fences make safe; a dead heartbeat
                # would cost one for every job from now on.
                log.exception("could not renew the leases of running jobs; trying again")

    def _renew_leases(self, connection: Connection) -> None:
        expires = utcnow() + timedelta(seconds=self._tuning.lease_seconds)
        connection.execute(
            sa.update(JOBS)
            .where(JOBS.c.locked_by == self.worker_id, JOBS.c.state == JobState.running)
            .values(lease_expires_at=expires)
        )

    async def _watch_aborts_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tuning.abort_poll_seconds)
            if not self._calls:
                continue
            try:
                asked = await self._store.run_connection(
                    partial(self._abort_requested, keys=list(self._calls))
                )
            except Exception:
                log.exception("could not look for aborted jobs; looking again shortly")
                continue
            for key in asked:
                call = self._calls.get(key)
                if call is not None:
                    self._aborting.add(key)
                    call.cancel()

    def _abort_requested(self, connection: Connection, keys: list[JobKey]) -> list[JobKey]:
        """Which of these running jobs were asked to stop."""
        asked = sa.select(JOBS.c.id, JOBS.c.fence).where(
            JOBS.c.id.in_([job_id for job_id, _ in keys]),
            JOBS.c.abort_requested,
            JOBS.c.locked_by == self.worker_id,
        )
        return [
            key for key in ((row.id, row.fence) for row in connection.execute(asked)) if key in keys
        ]

    def _release_mine(self, connection: Connection) -> None:
        # A job interrupted by shutdown is not its fault: give it back without spending an attempt.
        held = sa.and_(JOBS.c.locked_by == self.worker_id, JOBS.c.state == JobState.running)
        _back_to_queue(connection, held, {"attempts": JOBS.c.attempts - 1, "run_after": utcnow()})


def _back_to_queue(
    connection: Connection, held: sa.ColumnElement[bool], values: Mapping[str, Any]
) -> None:
    """Put the running jobs `held` back in the queue with `values`, except those that must not run
    again: their run was aborted, or a copy with the same queueing lock waits already (it does
    the same work, and the unique index allows one)."""
    # Queued again, a job is relayed again (many machines): its earlier relay was used up.
    released = {"locked_by": None, "lease_expires_at": None, "relayed_at": None}
    ended = released | {"state": JobState.aborted, "finished_at": utcnow()}
    connection.execute(sa.update(JOBS).where(held, JOBS.c.abort_requested).values(**ended))
    copy = JOBS.alias("queued_copy")
    copy_waits = sa.exists().where(
        copy.c.queueing_lock == JOBS.c.queueing_lock, _state_is(copy, JobState.queued)
    )
    superseded = sa.update(JOBS).where(held, copy_waits).values(**ended, last_error=SUPERSEDED)
    requeue = sa.update(JOBS).where(held).values(**released, **values, state=JobState.queued)
    # A copy enqueued by another process between the two statements breaks the index: look again.
    for _ in range(3):
        connection.execute(superseded)
        if _unless_conflict(connection, requeue) is not None:
            return
    raise RuntimeError("jobs could not go back to the queue: their queueing locks keep conflicting")


def _lock_is_free(now: datetime) -> sa.ColumnElement[bool]:
    """A queued job may start: it has no lock, or no job with its lock runs and no older one
    with its lock is due."""
    other = JOBS.alias("same_lock")
    same_lock = other.c.lock == JOBS.c.lock
    running = sa.exists().where(same_lock, _state_is(other, JobState.running))
    older_due = sa.exists().where(
        same_lock,
        _state_is(other, JobState.queued),
        other.c.id < JOBS.c.id,
        other.c.run_after <= now,
    )
    return sa.or_(JOBS.c.lock.is_(None), sa.and_(~running, ~older_due))


def _state_is(table: sa.FromClause, state: JobState) -> sa.ColumnElement[bool]:
    # A literal, not a parameter: only then may the planner use the partial indexes on state.
    return table.c.state == sa.literal_column(f"'{state}'")


def _unless_conflict(connection: Connection, statement: sa.Update) -> list[sa.Row[Any]] | None:
    """Execute `statement`; None if it broke a unique index, the transaction still usable."""
    try:
        with _savepoint(connection):
            result = connection.execute(statement)
            return list(result) if result.returns_rows else []
    except sa.exc.IntegrityError:
        return None


def _savepoint(connection: Connection) -> AbstractContextManager[Any]:
    # PostgreSQL aborts the whole transaction on an error; SQLite undoes the statement alone.
    if connection.dialect.name == "postgresql":
        return connection.begin_nested()
    return contextlib.nullcontext()


def _enqueue_unless_pending(connection: Connection, name: str) -> None:
    """Queue job `name` unless a copy is queued or running already (several processes may ask);
    its locks keep copies that race past the check from waiting twice or running together."""
    pending = sa.select(sa.func.count()).where(
        JOBS.c.name == name, JOBS.c.state.in_([JobState.queued, JobState.running])
    )
    if connection.execute(pending).scalar_one() == 0:
        enqueue(connection, name, lock=name, queueing_lock=name)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _GiveUp(Exception):
    """A job failure that retrying cannot fix."""
