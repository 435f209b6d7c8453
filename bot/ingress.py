"""Recording webhook deliveries durably and fast.

Each accepted delivery is one `deliveries` row (and, when Baton acts on it, one `jobs` row) that is
committed before GitHub gets its answer. Commits are grouped: while one batch is being written,
new deliveries queue for the next, so one disk flush serves many requests. Whether a delivery is a
duplicate is decided by the unique constraint on `delivery_id` (INSERT ... ON CONFLICT DO NOTHING),
never by reading first, so two copies arriving at once cannot both be queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection

from bot.events import Decision
from bot.store.db import Store, insert_ignoring_conflicts
from bot.store.models import Delivery, DeliveryOutcome, Job, JobState
from bot.store.types import utcnow

log = logging.getLogger(__name__)

MAX_BATCH = 64


class Answer(StrEnum):
    queued = "queued"
    ignored = "ignored"
    duplicate = "duplicate"


@dataclass(frozen=True)
class NewDelivery:
    """A verified delivery, ready to record, and what it means."""

    delivery_id: str
    event: str
    decision: Decision


@dataclass
class _Pending:
    delivery: NewDelivery
    answer: asyncio.Future[Answer] = field(repr=False)


class DeliveryRecorder:
    """Writes deliveries in grouped commits from one thread; `record` returns after the commit."""

    def __init__(self, store: Store, on_jobs_committed: Callable[[], None]) -> None:
        self._store = store
        self._on_jobs_committed = on_jobs_committed
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-ingress")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name="delivery-recorder")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._writer.shutdown(wait=True)

    async def record(self, delivery: NewDelivery) -> Answer:
        """Store the delivery (and its job); returns once it is committed."""
        if self._task is None:
            raise RuntimeError("the delivery recorder is not running")
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(delivery, answer))
        return await answer

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                answers = await loop.run_in_executor(self._writer, self._write, batch)
            except Exception as error:
                log.exception("could not record %d deliveries", len(batch))
                answers = [error] * len(batch)
            for pending, answer in zip(batch, answers, strict=True):
                if not pending.answer.done():
                    _settle(pending.answer, answer)
                self._queue.task_done()

    def _write(self, batch: Sequence[_Pending]) -> list[Answer | Exception]:
        with self._store.engine.begin() as connection:
            answers, jobs_written = write_deliveries(connection, [p.delivery for p in batch])
        if jobs_written:
            self._on_jobs_committed()
        return list(answers)


def _settle(future: asyncio.Future[Answer], answer: Answer | Exception) -> None:
    if isinstance(answer, Exception):
        future.set_exception(answer)
    else:
        future.set_result(answer)


def write_deliveries(
    connection: Connection, deliveries: Sequence[NewDelivery]
) -> tuple[list[Answer], int]:
    """Insert deliveries and their jobs in the caller's transaction.

    Returns each delivery's answer, in order, and how many jobs were written. Of several copies
    of one delivery id in `deliveries`, the first is the one recorded.
    """
    now = utcnow()
    rows = [_delivery_row(delivery, now) for delivery in deliveries]
    inserted = insert_ignoring_conflicts(
        connection, Delivery, rows, conflict_column="delivery_id", returning=("delivery_id", "id")
    )
    answers: list[Answer] = []
    jobs: list[dict[str, Any]] = []
    for delivery in deliveries:
        row_id = inserted.pop(delivery.delivery_id, None)
        if row_id is None:
            answers.append(Answer.duplicate)
        elif delivery.decision.job is None:
            answers.append(Answer.ignored)
        else:
            answers.append(Answer.queued)
            jobs.append(_job_row(delivery.decision.job, row_id, now))
    if jobs:
        connection.execute(Job.__table__.insert(), jobs)  # type: ignore[attr-defined]
    return answers, len(jobs)


def _delivery_row(delivery: NewDelivery, now: Any) -> dict[str, Any]:
    decision = delivery.decision
    return {
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "action": decision.action[:64] if decision.action else None,
        "installation_id": decision.installation_id,
        "repository": decision.repository,
        "sender": decision.sender,
        "outcome": DeliveryOutcome.ignored if decision.job is None else DeliveryOutcome.queued,
        "reason": decision.reason[:255] if decision.reason else None,
        # The fields the job reads; the job loads them from here.
        "payload": decision.fields,
        "received_at": now,
    }


def _job_row(name: str, delivery_row_id: int, now: Any) -> dict[str, Any]:
    return {
        "name": name,
        "args": {"delivery_id": delivery_row_id},
        "state": JobState.queued,
        "attempts": 0,
        "max_attempts": 5,
        "run_after": now,
        "delivery_id": delivery_row_id,
        "created_at": now,
    }
