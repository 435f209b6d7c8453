"""`baton worker`: runs jobs from the queue every machine shares (`BATON_EXECUTOR=procrastinate`).

One process runs two procrastinate workers: one for the short control steps, `--concurrency` at a
time, and one for worker attempts, `--attempts` at a time, so attempts never take the
slots the steps need. Beside them, a sweeper puts back in the queue the jobs of workers that
stopped sending heartbeats (a machine that died), which would otherwise hold their run's lock
for good. SIGTERM stops taking jobs, gives running ones a grace period, and hands the rest back
to the queue for another worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from contextlib import suppress
from typing import Any

import procrastinate
from procrastinate.retry import RetryStrategy

from bot.executor.relayed import (
    ATTEMPTS_QUEUE,
    RUN_JOB,
    STEPS_QUEUE,
    RelayedExecutor,
    procrastinate_app,
)
from bot.service import Baton
from bot.settings import Settings

log = logging.getLogger(__name__)

# A job cancelled by a worker's shutdown is retried elsewhere; Baton counts real failures itself.
RETRY = RetryStrategy(max_attempts=1000, wait=1)


def worker_name(lane: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{lane}"


async def run_worker(
    settings: Settings,
    concurrency: int,
    attempts: int,
    stall_seconds: float,
    grace_seconds: float = 20.0,
) -> None:
    """Run jobs until SIGTERM or SIGINT."""
    baton = Baton(settings)
    executor = baton.executor
    assert isinstance(executor, RelayedExecutor)
    app = procrastinate_app(settings)
    app.task(name=RUN_JOB, retry=RETRY, pass_context=False)(executor.run_job)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with app.open_async():
        await baton.start()
        lanes = [
            _lane(app, STEPS_QUEUE, concurrency, stall_seconds, grace_seconds),
            _lane(app, ATTEMPTS_QUEUE, attempts, stall_seconds, grace_seconds),
            asyncio.create_task(_sweep_stalled_forever(app, stall_seconds)),
        ]
        log.info("baton worker %s running jobs", worker_name("*"))
        await stop.wait()
        log.info("stopping: running jobs get %.0f s to end", grace_seconds)
        for lane in lanes:
            lane.cancel()
        for lane in lanes:
            with suppress(asyncio.CancelledError):
                await lane
        await baton.stop()


def _lane(
    app: procrastinate.App, queue: str, concurrency: int, stall_seconds: float, grace: float
) -> asyncio.Task[Any]:
    return asyncio.create_task(
        app.run_worker_async(
            queues=[queue],
            name=worker_name(queue),
            concurrency=concurrency,
            install_signal_handlers=False,
            shutdown_graceful_timeout=grace,
            # Three heartbeats may be missed before a live worker would count as dead.
            update_heartbeat_interval=stall_seconds / 4,
            stalled_worker_timeout=stall_seconds,
            delete_jobs="successful",
        ),
        name=f"worker-{queue}",
    )


async def _sweep_stalled_forever(app: procrastinate.App, stall_seconds: float) -> None:
    """Put back in the queue the jobs of workers whose heartbeat stopped: their machine died,
    and the job's lock would otherwise stay held. Baton's claim counts each takeover."""
    while True:
        await asyncio.sleep(stall_seconds / 2)
        try:
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stall_seconds)
            for job in stalled:
                log.warning("job %s of a stalled worker goes back to the queue", job.id)
                await app.job_manager.retry_job(job)
        except Exception:
            log.exception("could not sweep stalled jobs; trying again")
