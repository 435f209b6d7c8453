"""The local executor: runs jobs, retries with backoff, gives up, and survives a crash."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from bot.events import decide
from bot.executor import (
    Fenced,
    JobContext,
    JobFunction,
    check_fence,
    enqueue,
    request_abort,
)
from bot.executor.local import SUPERSEDED, ExecutorTuning, LocalExecutor
from bot.github.client import GitHubApp, GitHubTuning
from bot.github.repo import RepoClient
from bot.github.scopes import EXECUTE, TokenScope
from bot.jobs import JOBS
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.db import Store
from bot.store.migrate import alembic_config
from bot.store.models import Delivery, InstallationRepository, Job, JobState
from bot.store.types import utcnow
from tests.doubles.fixtures import INSTALLATION_ID, ISSUE_NUMBER, REPOSITORY, as_app
from tests.doubles.github import GitHubDouble
from tests.support import FAST, model_drift, payload

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
        metrics: Metrics | None = None,
    ) -> LocalExecutor:
        executor = LocalExecutor(
            store, settings, functions, metrics or Metrics(), tuning, busy_elsewhere
        )
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
    job_id = enqueue(session, name, max_attempts=max_attempts, **ids)
    assert job_id is not None
    return job_id


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

    async def held(context: JobContext) -> None:
        ran.set()

    job_id = await store.run(lambda s: _add(s, "held"))

    def held_by_a_live_process(session: Any) -> None:
        job = session.get(Job, job_id)
        job.state, job.locked_by = JobState.running, "local-alive"
        job.lease_expires_at = utcnow() + timedelta(minutes=5)

    await store.run(held_by_a_live_process)
    rounds = ClaimRounds()
    executor = executors({"held": held, **rounds.functions})
    await executor.start()
    await rounds.complete(executor)

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


class ClaimRounds:
    """Proves the executor claimed after a moment: a marker job submitted then has run. Jobs due
    before the marker come first in a claim, so one that did not start was passed over."""

    def __init__(self) -> None:
        self._ran: dict[int, asyncio.Event] = {}
        self.functions: dict[str, JobFunction] = {"marker": self._marker}

    async def _marker(self, context: JobContext, n: int) -> None:
        self._ran[n].set()

    async def complete(self, executor: LocalExecutor) -> None:
        n = len(self._ran)
        self._ran[n] = asyncio.Event()
        await executor.submit("marker", n=n)
        await asyncio.wait_for(self._ran[n].wait(), 10)


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
    busy, submitted = True, False
    asked = 0
    asked_often = asyncio.Event()

    def busy_elsewhere(_: float) -> bool:
        nonlocal asked
        asked += submitted
        if asked == 20:
            asked_often.set()
        return busy

    tuning = ExecutorTuning(poll_seconds=0.05, yield_seconds=30, quiet_seconds=0.01)
    executor = executors({"mark": mark}, tuning, busy_elsewhere)
    await executor.start()
    await executor.submit("mark")
    submitted = True
    # The executor keeps asking whether deliveries still stream in, and holds the job meanwhile.
    await asyncio.wait_for(asked_often.wait(), 5)
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


class Steps:
    """A job, `step`, that records when each step starts and ends, then waits to be let go."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []
        self._started: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._go: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.functions: dict[str, JobFunction] = {"step": self._step}

    async def _step(self, context: JobContext, step: str, **ids: Any) -> None:
        self.log.append(("start", step))
        self._started[step].set()
        try:
            await self._go[step].wait()
        except asyncio.CancelledError:
            self.log.append(("cancelled", step))
            raise
        self.log.append(("end", step))

    async def started(self, *steps: str) -> None:
        for step in steps:
            await asyncio.wait_for(self._started[step].wait(), 10)

    def has_started(self, step: str) -> bool:
        return self._started[step].is_set()

    def let_go(self, *steps: str) -> None:
        for step in steps:
            self._go[step].set()


def _add_step(session: Any, step: str, **options: Any) -> int:
    return _add(session, "step", step=step, **options)


async def job_task_ended(job_id: int) -> None:
    """The executor's task for the job has finished (its metrics are recorded by then)."""
    tasks = [task for task in asyncio.all_tasks() if task.get_name() == f"job-{job_id}"]
    if tasks:
        await asyncio.wait(tasks, timeout=10)


async def test_jobs_sharing_a_lock_run_one_at_a_time_in_the_order_enqueued(
    executors: Factory, store: Store
) -> None:
    steps, rounds = Steps(), ClaimRounds()

    def queue(session: Any) -> dict[str, int]:
        ids = {step: _add_step(session, step, lock="run-a") for step in ("a1", "a2", "a3")}
        return ids | {"b1": _add_step(session, "b1", lock="run-b")}

    ids = await store.run(queue)
    executor = executors(steps.functions | rounds.functions)
    await executor.start()

    await steps.started("a1", "b1")
    await rounds.complete(executor)
    assert not steps.has_started("a2")
    assert not steps.has_started("a3")

    steps.let_go("a1")
    await steps.started("a2")
    await rounds.complete(executor)
    assert not steps.has_started("a3")

    steps.let_go("b1", "a2")
    await steps.started("a3")
    steps.let_go("a3")
    for job_id in ids.values():
        await wait_for_state(store, job_id, JobState.succeeded)
    on_lock_a = [entry for entry in steps.log if entry[1].startswith("a")]
    assert on_lock_a == [
        ("start", "a1"),
        ("end", "a1"),
        ("start", "a2"),
        ("end", "a2"),
        ("start", "a3"),
        ("end", "a3"),
    ]
    # The other lock's job ran beside the first two.
    assert steps.log.index(("start", "b1")) < steps.log.index(("end", "a1"))
    assert steps.log.index(("end", "b1")) > steps.log.index(("start", "a2"))


async def test_a_queueing_lock_keeps_one_copy_waiting_and_takes_another_once_it_runs(
    executors: Factory, store: Store
) -> None:
    steps = Steps()

    def wake(session: Any, step: str) -> int | None:
        return enqueue(session, "step", lock="run-1", queueing_lock="run-1", step=step)

    def first_two(session: Any) -> tuple[int | None, int | None, int | None]:
        first, dropped = wake(session, "first"), wake(session, "dropped")
        # The dropped copy left the transaction usable: this job commits with the first.
        other = enqueue(session, "step", queueing_lock="run-2", step="other")
        return first, dropped, other

    first, dropped, other = await store.run(first_two)
    assert first is not None
    assert other is not None
    assert dropped is None
    executor = executors(steps.functions)
    await executor.start()
    await steps.started("first")

    second = await store.run(lambda session: wake(session, "second"))
    again = await store.run(lambda session: wake(session, "again"))
    assert second is not None
    assert again is None
    steps.let_go("first", "second", "other")
    for job_id in (first, second, other):
        await wait_for_state(store, job_id, JobState.succeeded)

    assert [step for event, step in steps.log if event == "start"] == ["first", "other", "second"]
    count = await store.run(lambda session: len(session.exec(select(Job)).all()))
    assert count == 3


def test_the_database_refuses_a_second_running_job_on_a_lock_or_queued_copy(
    engine: sa.Engine,
) -> None:
    now = utcnow()
    jobs: sa.Table = Job.__table__  # type: ignore[attr-defined]
    row = {"name": "step", "args": {}, "run_after": now, "created_at": now}
    refused = [
        {"state": JobState.running, "lock": "run-1"},
        {"state": JobState.queued, "queueing_lock": "run-1"},
    ]
    for columns in refused:
        with engine.begin() as connection:
            connection.execute(sa.insert(jobs).values(**row, **columns))
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(sa.insert(jobs).values(**row, **columns))
    # Other states share the keys freely: a finished job holds nothing.
    with engine.begin() as connection:
        for state in (JobState.succeeded, JobState.aborted):
            connection.execute(
                sa.insert(jobs).values(**row, state=state, lock="run-1", queueing_lock="run-1")
            )


@pytest.mark.parametrize("late", ["returns", "raises"])
@pytest.mark.parametrize("taker", ["another-process", "same-process"])
async def test_a_job_taken_over_after_its_lease_lapsed_can_neither_write_nor_settle(
    executors: Factory, store: Store, caplog: pytest.LogCaptureFixture, late: str, taker: str
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.executor")
    started: dict[Any, asyncio.Event] = defaultdict(asyncio.Event)
    go: dict[Any, asyncio.Event] = defaultdict(asyncio.Event)
    wrote: list[Any] = []

    async def write(context: JobContext) -> None:
        me = context.executor
        started[me].set()
        await go[me].wait()
        try:
            await context.store.run(check_fence)
        except Fenced:
            if late == "raises":
                raise
            return
        wrote.append(me)

    # The first holder neither renews its lease nor claims again while the test lets it lapse;
    # running one job at a time, it claims the marker only once that job's run has ended.
    slow = ExecutorTuning(concurrency=1, lease_seconds=60, poll_seconds=0.1)
    first_metrics, rounds = Metrics(), ClaimRounds()
    first = executors({"write": write} | rounds.functions, slow, metrics=first_metrics)
    # One slot, held by the job it took over: the marker below can only be the first's.
    second = executors({"write": write}, dataclasses.replace(FAST, concurrency=1))
    if taker == "same-process":
        second.worker_id = first.worker_id  # only the fence tells the two claims apart
    await first.start()
    job_id = await first.submit("write")
    await asyncio.wait_for(started[first].wait(), 10)

    def lapse(session: Any) -> None:
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)

    await store.run(lapse)
    await second.start()
    await asyncio.wait_for(started[second].wait(), 10)
    job = await store.run(lambda session: session.get(Job, job_id))
    assert (job.locked_by, job.fence, job.attempts) == (second.worker_id, 2, 2)

    go[first].set()
    await rounds.complete(first)  # its run ended, and what it believed finished was settled

    job = await store.run(lambda session: session.get(Job, job_id))
    assert (job.state, job.locked_by, job.fence) == (JobState.running, second.worker_id, 2)
    assert f"late write rejected: job {job_id} (write)" in caplog.text
    outcome = {"returns": "succeeded", "raises": "fenced"}[late]
    labels = {"job": "write", "outcome": outcome}
    assert first_metrics.registry.get_sample_value("baton_job_duration_seconds_count", labels) == 1

    go[second].set()
    job = await wait_for_state(store, job_id, JobState.succeeded)
    assert wrote == [second]
    assert (job.attempts, job.locked_by, job.last_error) == (2, None, None)


async def test_a_process_that_claims_its_own_job_again_stops_the_older_run(
    executors: Factory, store: Store
) -> None:
    runs: list[asyncio.Event] = []
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def endless(context: JobContext) -> None:
        go = asyncio.Event()
        runs.append(go)
        started.set()
        try:
            await go.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    executor = executors({"endless": endless}, ExecutorTuning(lease_seconds=60, poll_seconds=0.1))
    await executor.start()
    job_id = await executor.submit("endless")
    await asyncio.wait_for(started.wait(), 10)
    started.clear()

    def lapse(session: Any) -> None:
        session.get(Job, job_id).lease_expires_at = utcnow() - timedelta(seconds=1)

    await store.run(lapse)
    executor.notify()
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(cancelled.wait(), 10)

    runs[-1].set()
    job = await wait_for_state(store, job_id, JobState.succeeded)
    assert (len(runs), job.attempts, job.fence) == (2, 2, 2)


@pytest.mark.parametrize("interrupted", ["fails", "stopped"])
async def test_a_job_that_would_queue_again_beside_its_queued_copy_ends_superseded(
    executors: Factory, store: Store, interrupted: str
) -> None:
    started = {step: asyncio.Event() for step in ("first", "copy")}
    go = asyncio.Event()

    async def wake(context: JobContext, step: str) -> None:
        started[step].set()
        await go.wait()
        if step == "first":
            raise RuntimeError("GitHub is down")

    def queue(session: Any, step: str) -> int | None:
        return enqueue(session, "wake", lock="run-1", queueing_lock="run-1", step=step)

    executor = executors({"wake": wake})
    await executor.start()
    first = await store.run(lambda session: queue(session, "first"))
    await asyncio.wait_for(started["first"].wait(), 10)
    copy = await store.run(lambda session: queue(session, "copy"))
    assert first is not None
    assert copy is not None

    if interrupted == "fails":
        go.set()
        await asyncio.wait_for(started["copy"].wait(), 10)
        assert (await wait_for_state(store, copy, JobState.succeeded)).attempts == 1
    else:
        await executor.stop(grace_seconds=0.05)
        assert (await store.run(lambda session: session.get(Job, copy))).state == JobState.queued
    ended = await wait_for_state(store, first, JobState.aborted)
    assert ended.last_error == SUPERSEDED
    assert ended.finished_at is not None


async def test_a_delayed_job_waits_for_its_time(executors: Factory, store: Store) -> None:
    ran, mark = marking_job()
    rounds = ClaimRounds()
    job_id = await store.run(lambda session: enqueue(session, "mark", delay_seconds=3600))
    executor = executors({"mark": mark} | rounds.functions)
    await executor.start()
    await rounds.complete(executor)

    assert not ran.is_set()
    job = await store.run(lambda session: session.get(Job, job_id))
    assert job.state == JobState.queued
    assert timedelta(minutes=59) < job.run_after - utcnow() <= timedelta(hours=1)


async def test_check_fence_outside_a_job_does_nothing(store: Store) -> None:
    await store.run(check_fence)


async def test_aborting_a_run_cancels_its_running_job_and_ends_its_queued_ones(
    executors: Factory, store: Store
) -> None:
    steps, metrics = Steps(), Metrics()

    def queue(session: Any) -> dict[str, int]:
        # Each run's second step waits behind its first, which holds the run's lock.
        return {
            f"{run}-{step}": _add_step(session, f"{run}-{step}", lock=run, run_id=run)
            for run in ("r1", "r2")
            for step in ("running", "queued")
        }

    ids = await store.run(queue)
    tuning = dataclasses.replace(FAST, abort_poll_seconds=0.05)
    executor = executors(steps.functions, tuning, metrics=metrics)
    await executor.start()
    await steps.started("r1-running", "r2-running")

    assert await store.run(lambda session: request_abort(session, "r1")) == 2

    aborted = await wait_for_state(store, ids["r1-running"], JobState.aborted)
    assert ("cancelled", "r1-running") in steps.log
    assert (aborted.attempts, aborted.locked_by) == (1, None)
    assert aborted.finished_at is not None
    jobs = await store.run(lambda session: {job.id: job for job in session.exec(select(Job))})
    assert jobs[ids["r1-queued"]].state == JobState.aborted
    # The same poll looked at the other run's job, and left it running.
    assert ("cancelled", "r2-running") not in steps.log
    assert (jobs[ids["r2-running"]].state, jobs[ids["r2-queued"]].state) == (
        JobState.running,
        JobState.queued,
    )
    await job_task_ended(ids["r1-running"])
    labels = {"job": "step", "outcome": "aborted"}
    assert metrics.registry.get_sample_value("baton_job_duration_seconds_count", labels) == 1

    # Stopping still hands a running job back to the queue: only an abort ends it.
    await executor.stop(grace_seconds=0.05)
    job = await store.run(lambda session: session.get(Job, ids["r2-running"]))
    assert (job.state, job.attempts, job.locked_by) == (JobState.queued, 0, None)


async def test_a_job_that_aborts_its_own_run_is_spared(executors: Factory, store: Store) -> None:
    steps = Steps()
    asked = asyncio.Event()
    go = asyncio.Event()

    async def cancel_run(context: JobContext, run_id: str) -> None:
        assert await context.store.run(lambda session: request_abort(session, run_id)) == 1
        asked.set()
        await go.wait()

    tuning = dataclasses.replace(FAST, abort_poll_seconds=0.05)
    executor = executors({"cancel_run": cancel_run} | steps.functions, tuning)
    await executor.start()
    other = await store.run(lambda session: _add_step(session, "other", run_id="r1"))
    await steps.started("other")
    cancelling = await executor.submit("cancel_run", run_id="r1")
    await asyncio.wait_for(asked.wait(), 10)

    await wait_for_state(store, other, JobState.aborted)  # the poll saw both jobs
    go.set()
    job = await wait_for_state(store, cancelling, JobState.succeeded)
    assert not job.abort_requested


async def test_a_job_whose_run_was_aborted_after_its_holder_died_ends_without_running(
    executors: Factory, store: Store
) -> None:
    steps = Steps()
    job_id = await store.run(lambda session: _add_step(session, "orphan", run_id="r1"))
    await store.run(lambda session: _left_running_by_a_dead_process(session, job_id))
    assert await store.run(lambda session: request_abort(session, "r1")) == 1

    executor = executors(steps.functions)
    await executor.start()
    job = await wait_for_state(store, job_id, JobState.aborted)

    assert not steps.has_started("orphan")
    assert job.finished_at is not None


def test_the_job_locks_migration_goes_down_and_up_again(engine: sa.Engine) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
        assert "fence" not in {
            column["name"] for column in sa.inspect(connection).get_columns("jobs")
        }
        command.upgrade(config, "head")
    with engine.connect() as connection:
        assert model_drift(connection) == []


async def test_a_job_taken_over_while_it_writes_to_github_sends_no_more_writes(
    executors: Factory,
    store: Store,
    settings: Settings,
    github: GitHubDouble,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A process frozen while its next GitHub write waits its turn (the write pacing) must not
    send it once woken: another process took the job over meanwhile and writes instead."""
    caplog.set_level(logging.WARNING, logger="bot.executor")
    app = GitHubApp(as_app(settings, github), GitHubTuning(write_interval=0.2))
    repo = RepoClient(app.client(TokenScope(INSTALLATION_ID, REPOSITORY, EXECUTE)), REPOSITORY)
    comments = f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}/comments"

    ended = asyncio.Event()

    async def comment_twice(context: JobContext) -> None:
        try:
            await repo.comment(ISSUE_NUMBER, "first")
            await repo.comment(ISSUE_NUMBER, "second")
        finally:
            ended.set()

    def take_over(method: str, path: str, status: int) -> None:
        # Another process claims the job while the first comment is answered.
        if (method, path) == ("POST", comments):
            table = Job.__table__  # type: ignore[attr-defined]
            taken = sa.update(table).values(fence=table.c.fence + 1, locked_by="elsewhere")
            with store.engine.begin() as connection:
                connection.execute(taken)

    github.before_replying.append(take_over)
    executor = executors({"comment_twice": comment_twice})
    await executor.start()
    job_id = await executor.submit("comment_twice")

    await asyncio.wait_for(ended.wait(), 10)
    await executor.stop(grace_seconds=1)
    bodies = [comment["body"] for comment in github.issue_comments(REPOSITORY, ISSUE_NUMBER)]
    assert bodies == ["first"]
    assert f"late write rejected: job {job_id} (comment_twice)" in caplog.text
    job = await store.run(lambda session: session.get(Job, job_id))
    assert (job.state, job.locked_by) == (JobState.running, "elsewhere")
