"""Jobs on many machines: Baton's `jobs` table stays the outbox and the record of every claim,
and procrastinate carries each job to a worker (`BATON_EXECUTOR=procrastinate`, PostgreSQL).

A relay moves queued rows into procrastinate's queue in the transaction that marks them relayed
(rows taken with SKIP LOCKED, so any number of processes relay side by side, and a job is
relayed once per time it is queued). A worker's procrastinate task `baton.run_job` claims the
row by id exactly as the local executor claims: a lease its heartbeat renews and a new fence,
so a frozen worker that wakes up is refused, retries with backoff, aborts and giving up work as
on one machine. procrastinate brings the rest: wake-ups by LISTEN/NOTIFY across machines, a
queue for short steps and one for long attempts, and the run's lock, which keeps a run's steps
one at a time in order. A worker that died leaves its procrastinate job `doing`, holding that
lock: every worker sweeps such stalled jobs (no heartbeat for `stall_seconds`) back to the queue,
and Baton's claim counts the takeovers against the job's `max_attempts`.

Why a relay rather than deferring to procrastinate inside the caller's transaction: every state
change already enqueues through one function into the `jobs` table, on SQLite and PostgreSQL
alike; the relay keeps that, and keeps the fence, lease and abort records in Baton's own table
where the local executor's tests prove them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import procrastinate
import sqlalchemy as sa
from procrastinate.jobs import Job as QueuedJob
from procrastinate.sync_psycopg_connector import SyncPsycopgConnector
from sqlalchemy.engine import Connection

from bot.executor import JobFunction
from bot.executor.local import JOBS, Claimed, ExecutorTuning, GaveUp, LocalExecutor, _lock_is_free
from bot.integrations import Integrations
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.db import Store, libpq_url
from bot.store.models import JobState
from bot.store.types import utcnow

log = logging.getLogger(__name__)

RUN_JOB = "baton.run_job"
STEPS_QUEUE = "steps"
ATTEMPTS_QUEUE = "attempts"
RELAY_BATCH = 200
# A worker whose heartbeat is this old is taken for dead (`baton worker --stall-seconds`).
STALL_SECONDS = 30.0
# A job whose claim must wait (its lock is busy, or it is not due yet) is relayed again this late.
NOT_YET = timedelta(seconds=1)


@dataclass(frozen=True)
class QueueFigures:
    """procrastinate's queue as operators watch it."""

    jobs: dict[tuple[str, str], int]  # by queue and status
    stalled: int  # jobs `doing` on a worker whose heartbeat stopped
    workers_alive: int  # procrastinate workers (two per `baton worker`) with a recent heartbeat


def queue_figures(engine: sa.Engine, stall_seconds: float = STALL_SECONDS) -> QueueFigures:
    alive = "last_heartbeat > now() - make_interval(secs => :stall)"
    with engine.connect() as connection:
        jobs = connection.execute(
            sa.text(
                "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                "GROUP BY queue_name, status"
            )
        ).all()
        stalled = connection.execute(
            sa.text(
                "SELECT count(*) FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w "
                f"ON w.id = j.worker_id WHERE j.status = 'doing' AND NOT coalesce(w.{alive}, false)"
            ),
            {"stall": stall_seconds},
        ).scalar_one()
        workers = connection.execute(
            sa.text(f"SELECT count(*) FROM procrastinate_workers WHERE {alive}"),
            {"stall": stall_seconds},
        ).scalar_one()
    return QueueFigures({(queue, status): count for queue, status, count in jobs}, stalled, workers)


def procrastinate_app(settings: Settings) -> procrastinate.App:
    connector = procrastinate.PsycopgConnector(conninfo=libpq_url(settings.resolved_database_url))
    return procrastinate.App(connector=connector)


class RelayedExecutor(LocalExecutor):
    """Relays queued jobs to procrastinate; in a worker, runs those procrastinate hands it."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        functions: Mapping[str, JobFunction],
        metrics: Metrics,
        tuning: ExecutorTuning | None = None,
        integrations: Integrations | None = None,
        on_gave_up: GaveUp | None = None,
        housekeeping: Sequence[str] = (),
        long_jobs: Sequence[str] = (),
    ) -> None:
        super().__init__(
            store,
            settings,
            functions,
            metrics,
            tuning,
            None,
            integrations,
            on_gave_up=on_gave_up,
            housekeeping=housekeeping,
            long_jobs=long_jobs,
        )
        self._deferrer = procrastinate.App(connector=SyncPsycopgConnector()).job_manager

    def _background_loops(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        # Relaying takes the place of claiming: procrastinate's workers hand out the jobs.
        loops = super()._background_loops()
        return [("executor-relay", self._relay_forever)] + [
            (name, loop) for name, loop in loops if name != "executor-dispatch"
        ]

    async def _relay_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                relayed = await self._store.run_connection(self._relay)
            except Exception:
                log.exception("could not relay jobs to the queue; trying again shortly")
                relayed = 0
            if relayed < RELAY_BATCH:
                await self._sleep_until_woken()

    def _relay(self, connection: Connection) -> int:
        """Defer queued, unrelayed jobs to procrastinate in this transaction; how many."""
        rows = connection.execute(
            sa.select(JOBS.c.id, JOBS.c.name, JOBS.c.lock, JOBS.c.run_after)
            .where(JOBS.c.state == JobState.queued, JOBS.c.relayed_at.is_(None))
            .order_by(JOBS.c.id)
            .limit(RELAY_BATCH)
            .with_for_update(skip_locked=True, of=JOBS)
        ).all()
        if not rows:
            return 0
        driver = connection.connection.driver_connection
        self._deferrer.batch_defer_jobs([self._queued(row) for row in rows], connection=driver)
        ids = [row.id for row in rows]
        connection.execute(sa.update(JOBS).where(JOBS.c.id.in_(ids)).values(relayed_at=utcnow()))
        return len(rows)

    def _queued(self, row: Any) -> QueuedJob:
        queue = ATTEMPTS_QUEUE if row.name in self._long_jobs else STEPS_QUEUE
        return QueuedJob(
            queue=queue,
            lock=row.lock,
            queueing_lock=None,
            task_name=RUN_JOB,
            task_kwargs={"job_id": row.id},
            scheduled_at=row.run_after,
        )

    async def run_job(self, job_id: int) -> None:
        """procrastinate's task: claim Baton's job `job_id` and run it here, if it is still to do.

        A job still held under a live lease (its holder frozen, or slow to renew) is waited for:
        its lease runs out, or it ends. Cancelled (the worker stops), the job goes back to the
        queue when this executor stops, for another worker."""
        while True:
            claimed, held = await self._store.run_connection(partial(self._claim_by_id, job_id))
            if claimed is not None:
                break
            if not held:
                return
            await asyncio.sleep(self._tuning.abort_poll_seconds)
        task = asyncio.create_task(self._run(claimed), name=f"job-{claimed.id}")
        self._running[claimed.key] = task
        await task
        await self._store.run_connection(self._record_successes)

    def _claim_by_id(self, job_id: int, connection: Connection) -> tuple[Claimed | None, bool]:
        """The claim on job `job_id`, or None and whether another holder's lease still runs."""
        now = utcnow()
        this = JOBS.c.id == job_id
        abandoned = sa.and_(this, JOBS.c.state == JobState.running, JOBS.c.lease_expires_at < now)
        due = sa.and_(this, JOBS.c.state == JobState.queued, JOBS.c.run_after <= now)
        claimed = self._claim_where(connection, abandoned, 1, now) or self._claim_where(
            connection, sa.and_(due, _lock_is_free(now)), 1, now
        )
        if claimed:
            self._long_running.update(job.id for job in claimed if job.name in self._long_jobs)
            return claimed[0], False
        state = connection.execute(sa.select(JOBS.c.state).where(this)).scalar()
        if state == JobState.queued:
            # Not due, or its lock is busy: relayed again a moment later, not lost.
            again = sa.update(JOBS).where(this, JOBS.c.state == JobState.queued)
            later = sa.func.greatest(JOBS.c.run_after, now + NOT_YET)
            connection.execute(again.values(relayed_at=None, run_after=later))
        return None, state == JobState.running
