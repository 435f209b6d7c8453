"""The local executor: runs jobs, retries with backoff, gives up, and survives a crash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from bot.events import decide
from bot.executor import JobContext, JobFunction, enqueue
from bot.executor.local import ExecutorTuning, LocalExecutor
from bot.jobs import JOBS
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import Delivery, InstallationRepository, Job, JobState
from bot.store.types import utcnow
from tests.support import FAST, payload

Factory = Callable[..., LocalExecutor]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = Store(database_url)
    yield store
    store.close()


@pytest.fixture
async def executors(store: Store, settings: Settings) -> AsyncIterator[Factory]:
    """Makes started executors over the test store; all are stopped at the end."""
    started: list[LocalExecutor] = []

    def make(
        functions: Mapping[str, JobFunction],
        tuning: ExecutorTuning = FAST,
        busy_elsewhere: Callable[[float], bool] | None = None,
    ) -> LocalExecutor:
        executor = LocalExecutor(store, settings, functions, Metrics(), tuning, busy_elsewhere)
        started.append(executor)
        return executor

    yield make
    for executor in started:
        await executor.stop(grace_seconds=1)


async def wait_for_state(store: Store, job_id: int, *states: str) -> Job:
    async def poll() -> Job:
        while True:
            job = await store.run(lambda session: session.get(Job, job_id))
            if job is not None and job.state in states:
                return job
            await asyncio.sleep(0.02)

    return await asyncio.wait_for(poll(), 10)


async def test_submitted_job_runs_with_its_ids(executors: Factory, store: Store) -> None:
    seen: list[dict[str, Any]] = []

    async def remember(context: JobContext, **ids: Any) -> None:
        seen.append(ids)

    executor = executors({"remember": remember})
    await executor.start()
    job_id = await executor.submit("remember", run_id="r1", task=3)

    job = await wait_for_state(store, job_id, JobState.succeeded)
    assert seen == [{"run_id": "r1", "task": 3}]
    assert (job.attempts, job.locked_by, job.last_error) == (1, None, None)


async def test_failing_job_is_retried_with_backoff_until_it_succeeds(
    executors: Factory, store: Store
) -> None:
    calls: list[float] = []

    async def flaky(context: JobContext) -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) < 3:
            raise RuntimeError("the network hiccuped")

    executor = executors({"flaky": flaky})
    await executor.start()
    job = await wait_for_state(store, await executor.submit("flaky"), JobState.succeeded)

    assert job.attempts == 3
    # Backoff: base 0.05 s doubling, at least half of it after each failure.
    assert calls[1] - calls[0] >= 0.025
    assert calls[2] - calls[1] >= 0.05


async def test_job_that_keeps_failing_ends_failed_with_its_last_error(
    executors: Factory, store: Store
) -> None:
    async def broken(context: JobContext) -> None:
        raise ValueError("plan T4 depends on T9, which does not exist")

    executor = executors({"broken": broken})
    await executor.start()
    job_id = await store.run(lambda s: _add(s, "broken", max_attempts=2))
    executor.notify()

    job = await wait_for_state(store, job_id, JobState.failed)
    assert job.attempts == 2
    assert job.last_error == "ValueError: plan T4 depends on T9, which does not exist"


async def test_a_job_that_gives_up_is_told_in_the_transaction_that_fails_it(
    store: Store, settings: Settings
) -> None:
    told: list[tuple[str, dict[str, Any], str, str]] = []

    def gave_up(connection: sa.Connection, name: str, args: Any, error: BaseException) -> None:
        state = connection.execute(sa.text("SELECT state FROM jobs")).scalar_one()
        told.append((name, dict(args), str(error), state))

    async def broken(context: JobContext, run_id: str) -> None:
        raise ValueError("GitHub is down")

    executor = LocalExecutor(
        store, settings, {"broken": broken}, Metrics(), FAST, on_gave_up=gave_up
    )
    await executor.start()
    try:
        job_id = await store.run(lambda s: _add(s, "broken", max_attempts=2, run_id="r1"))
        executor.notify()
        await wait_for_state(store, job_id, JobState.failed)
    finally:
        await executor.stop(grace_seconds=1)
    # Told once, after the last attempt, seeing the job already failed in the same transaction.
    assert told == [("broken", {"run_id": "r1"}, "GitHub is down", JobState.failed)]


async def test_a_job_whose_give_up_handler_breaks_still_ends_failed(
    store: Store, settings: Settings
) -> None:
    def breaks(connection: sa.Connection, name: str, args: Any, error: BaseException) -> None:
        connection.execute(sa.text("UPDATE jobs SET name = 'renamed'"))
        raise RuntimeError("the handler broke")

    async def broken(context: JobContext) -> None:
        raise ValueError("GitHub is down")

    executor = LocalExecutor(
        store, settings, {"broken": broken}, Metrics(), FAST, on_gave_up=breaks
    )
    await executor.start()
    try:
        job_id = await store.run(lambda s: _add(s, "broken", max_attempts=1))
        executor.notify()
        job = await wait_for_state(store, job_id, JobState.failed)
    finally:
        await executor.stop(grace_seconds=1)
    # The handler's half-done write was rolled back with its savepoint; the failure stands.
    assert (job.name, job.last_error) == ("broken", "ValueError: GitHub is down")


async def test_unknown_job_name_fails_at_once_with_a_clear_error(
    executors: Factory, store: Store
) -> None:
    executor = executors({})
    await executor.start()

    job = await wait_for_state(store, await executor.submit("no_such_job"), JobState.failed)

    assert job.attempts == 1
    assert "no job named 'no_such_job' is registered" in (job.last_error or "")


async def test_concurrency_is_bounded(executors: Factory, store: Store) -> None:
    running = 0
    most = 0

    async def slow(context: JobContext) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1

    executor = executors({"slow": slow}, ExecutorTuning(concurrency=3, poll_seconds=0.05))
    await executor.start()
    ids = [await executor.submit("slow") for _ in range(10)]

    for job_id in ids:
        await wait_for_state(store, job_id, JobState.succeeded)
    assert most == 3


def _add(session: Any, name: str, max_attempts: int = 5, **ids: Any) -> int:
    job = enqueue(session, name, max_attempts=max_attempts, **ids)
    session.flush()
    assert job.id is not None
    return job.id


def _repository_added_delivery(session: Any) -> int:
    body = json.dumps(payload("installation_repositories.added")).encode()
    fields = decide("installation_repositories", body).fields
    delivery = Delivery(
        delivery_id="d-crash", event="installation_repositories", outcome="queued", payload=fields
    )
    session.add(delivery)
    session.flush()
    assert delivery.id is not None
    return delivery.id


def _left_running_by_a_dead_process(session: Any, job_id: int) -> None:
    """What a process killed mid-job leaves behind: running, its lease about to lapse."""
    job = session.get(Job, job_id)
    job.state = JobState.running
    job.attempts = 1
    job.locked_by = "local-dead"
    job.lease_expires_at = utcnow() + timedelta(seconds=0.3)


@pytest.mark.parametrize("effect_committed", [False, True], ids=["before-effect", "after-effect"])
async def test_job_interrupted_by_a_crash_runs_again_and_its_effect_happens_once(
    executors: Factory, store: Store, effect_committed: bool
) -> None:
    delivery_id = await store.run(_repository_added_delivery)
    job = "sync_installation_repositories"
    job_id = await store.run(lambda s: _add(s, job, delivery_id=delivery_id))
    if effect_committed:
        # The crash came after the job wrote its rows, before it was marked succeeded.
        context = JobContext(store, None, None, None)  # type: ignore[arg-type]
        await JOBS[job](context, delivery_id=delivery_id)
    await store.run(lambda s: _left_running_by_a_dead_process(s, job_id))

    executor = executors(JOBS)
    await executor.start()
    finished = await wait_for_state(store, job_id, JobState.succeeded)

    assert finished.attempts == 2
    assert finished.locked_by is None
    repositories = await store.run(lambda s: s.exec(select(InstallationRepository)).all())
    added = payload("installation_repositories.added")["repositories_added"]
    assert [r.full_name for r in repositories] == [r["full_name"] for r in added]


async def test_a_live_lease_is_not_taken_over(executors: Factory, store: Store) -> None:
    ran = asyncio.Event()

    async def mark(context: JobContext) -> None:
        ran.set()

    job_id = await store.run(lambda s: _add(s, "mark"))

    def held_by_a_live_process(session: Any) -> None:
        job = session.get(Job, job_id)
        job.state, job.locked_by = JobState.running, "local-alive"
        job.lease_expires_at = utcnow() + timedelta(minutes=5)

    await store.run(held_by_a_live_process)
    executor = executors({"mark": mark})
    await executor.start()
    await asyncio.sleep(0.3)

    assert not ran.is_set()
    job = await store.run(lambda s: s.get(Job, job_id))
    assert (job.state, job.locked_by) == (JobState.running, "local-alive")


async def test_stop_hands_unfinished_jobs_back_without_spending_an_attempt(
    executors: Factory, store: Store
) -> None:
    started = asyncio.Event()

    async def endless(context: JobContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    executor = executors({"endless": endless})
    await executor.start()
    job_id = await executor.submit("endless")
    await asyncio.wait_for(started.wait(), 5)

    await executor.stop(grace_seconds=0.05)

    job = await store.run(lambda s: s.get(Job, job_id))
    assert (job.state, job.attempts, job.locked_by) == (JobState.queued, 0, None)


async def test_two_executors_never_run_the_same_job(
    executors: Factory, store: Store, tmp_path: Path
) -> None:
    runs: list[int] = []

    async def count(context: JobContext, n: int) -> None:
        runs.append(n)
        await asyncio.sleep(0.01)

    ids = [await store.run(lambda s, n=n: _add(s, "count", n=n)) for n in range(40)]
    first, second = executors({"count": count}), executors({"count": count})
    await first.start()
    await second.start()
    first.notify()
    second.notify()

    for job_id in ids:
        await wait_for_state(store, job_id, JobState.succeeded)
    assert sorted(runs) == list(range(40))
    with store.engine.connect() as connection:
        attempts = connection.execute(sa.text("SELECT DISTINCT attempts FROM jobs")).scalars().all()
    assert attempts == [1]


def marking_job() -> tuple[asyncio.Event, JobFunction]:
    """A job that sets the returned event when it runs."""
    ran = asyncio.Event()

    async def mark(context: JobContext) -> None:
        ran.set()

    return ran, mark


async def test_jobs_wait_while_deliveries_stream_in_and_run_once_it_is_quiet(
    executors: Factory,
) -> None:
    ran, mark = marking_job()
    busy = True
    tuning = ExecutorTuning(poll_seconds=0.05, yield_seconds=30, quiet_seconds=0.01)
    executor = executors({"mark": mark}, tuning, lambda _: busy)
    await executor.start()
    await executor.submit("mark")
    await asyncio.sleep(0.3)
    assert not ran.is_set()

    busy = False
    await asyncio.wait_for(ran.wait(), 5)


async def test_jobs_are_not_held_back_forever_by_a_stream_of_deliveries(
    executors: Factory,
) -> None:
    ran, mark = marking_job()
    tuning = ExecutorTuning(poll_seconds=0.05, yield_seconds=0.2, quiet_seconds=0.01)
    executor = executors({"mark": mark}, tuning, lambda _: True)
    await executor.start()
    await executor.submit("mark")
    await asyncio.wait_for(ran.wait(), 5)
