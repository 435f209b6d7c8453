"""Recording webhook deliveries durably and fast.

Each accepted delivery is one `deliveries` row (and, when Baton acts on it, one `jobs` row) that is
committed before GitHub gets its answer. Commits are grouped: while one batch is being written,
new deliveries gather for the next, so one disk flush serves many requests. Whether a delivery is a
duplicate is decided by the unique constraint on `delivery_id` (INSERT ... ON CONFLICT DO NOTHING),
never by reading first, so two copies arriving at once cannot both be queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import sqlalchemy as sa

from bot.events import Decision
from bot.store.db import Store
from bot.store.models import Delivery, DeliveryOutcome
from bot.store.prepared import PreparedInsert
from bot.store.types import utcnow
from bot.store.writers import (
    AsyncBatchWriter,
    InThread,
    ProcessWriter,
    SqlAlchemyBatchWriter,
)

log = logging.getLogger(__name__)

DELIVERY_COLUMNS = (
    "delivery_id",
    "event",
    "action",
    "job",
    "installation_id",
    "repository",
    "sender",
    "outcome",
    "reason",
    "payload",
    "received_at",
)


class Answer(StrEnum):
    queued = "queued"
    ignored = "ignored"
    duplicate = "duplicate"


class NewDelivery(NamedTuple):
    """A verified delivery, ready to record, and what it means."""

    delivery_id: str
    event: str
    decision: Decision


class DeliveryRecorder:
    """Writes deliveries in grouped commits, one batch at a time; `record` returns after the
    commit."""

    def __init__(self, store: Store, on_jobs_committed: Callable[[], None]) -> None:
        self._on_jobs_committed = on_jobs_committed
        self._insert, self._batches = delivery_writer(store)
        self._gathering: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_arrival = float("-inf")

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever(), name="delivery-recorder")

    async def stop(self) -> None:
        """Finish what has gathered, then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            if self._gathering:
                await self._write_batch()
        await self._batches.close()

    async def record(self, delivery: NewDelivery) -> Answer:
        """Store the delivery (and its job); returns once it is committed."""
        if self._task is None:
            raise RuntimeError("the delivery recorder is not running")
        # Values are converted here so the writer thread, which competes with this one for the
        # interpreter lock, does little more than the database calls.
        row = self._insert.values(delivery_row(delivery, utcnow()))
        loop = asyncio.get_running_loop()
        self._last_arrival = loop.time()
        answer: asyncio.Future[Answer] = loop.create_future()
        self._gathering.append(_Pending(delivery, row, answer))
        self._arrived.set()
        return await answer

    def busy(self, within_seconds: float) -> bool:
        """True when a delivery arrived in the last `within_seconds` or some await their commit."""
        if self._gathering:
            return True
        return asyncio.get_running_loop().time() - self._last_arrival < within_seconds

    async def _write_forever(self) -> None:
        while True:
            await self._arrived.wait()
            await self._write_batch()

    async def _write_batch(self) -> None:
        batch, self._gathering = self._gathering, []
        self._arrived.clear()
        rows = [pending.row for pending in batch]
        try:
            inserted = await self._batches.write(rows)
        except Exception as error:
            log.exception("could not record %d deliveries", len(batch))
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(error)
            return
        answers = answers_for([pending.delivery for pending in batch], inserted)
        if Answer.queued in answers:
            self._on_jobs_committed()
        for pending, answer in zip(batch, answers, strict=True):
            if not pending.answer.done():  # the request may have been cancelled meanwhile
                pending.answer.set_result(answer)


class _Pending(NamedTuple):
    delivery: NewDelivery
    row: list[Any]
    answer: asyncio.Future[Answer]


def answers_for(deliveries: Sequence[NewDelivery], inserted: Sequence[str]) -> list[Answer]:
    """Each delivery's answer, given the delivery ids the INSERT actually wrote. Of several
    copies of one id in a batch, the first is the one that was written."""
    written = set(inserted)
    answers = []
    for delivery in deliveries:
        if delivery.delivery_id not in written:
            answers.append(Answer.duplicate)
            continue
        written.discard(delivery.delivery_id)
        answers.append(Answer.ignored if delivery.decision.job is None else Answer.queued)
    return answers


def delivery_writer(store: Store) -> tuple[PreparedInsert, AsyncBatchWriter]:
    """The INSERT that records deliveries (a trigger adds the job of each that names one) and
    the writer that runs it for this store's database: a process of its own for SQLite's file
    and PostgreSQL, through the engine on a thread for anything else."""
    deliveries: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
    url = store.engine.url
    sqlite_file = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    psycopg = url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"
    insert = PreparedInsert(
        deliveries,
        DELIVERY_COLUMNS,
        store.engine.dialect,
        conflict_column="delivery_id",
        # SQLite's writer tells the inserted keys from the count of rows it wrote.
        returning=None if sqlite_file else "delivery_id",
    )
    if sqlite_file or psycopg:
        return insert, ProcessWriter.for_store(store.engine, insert, key_column="delivery_id")
    return insert, InThread(SqlAlchemyBatchWriter(store.engine, insert))


def delivery_row(delivery: NewDelivery, now: datetime) -> dict[str, Any]:
    decision = delivery.decision
    outcome = DeliveryOutcome.ignored if decision.job is None else DeliveryOutcome.queued
    return {
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "action": decision.action[:64] if decision.action else None,
        "job": decision.job,
        "installation_id": decision.installation_id,
        "repository": decision.repository,
        "sender": decision.sender,
        "outcome": outcome.value,
        "reason": decision.reason[:255] if decision.reason else None,
        # The fields the job reads; the job loads them from here.
        "payload": decision.fields,
        "received_at": now,
    }
