"""Task attempts: how one ends, and what stops it early (a budget, a model that cannot answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session, col

from bot.llm.budget import BudgetExceeded
from bot.store.db import Store
from bot.store.models import AttemptStatus, ModelCall, TaskAttempt
from bot.store.types import utcnow

T = TypeVar("T")


class AttemptStopped(Exception):
    """The attempt ended before its work did; the attempt row says how and why."""


def end_attempt(
    session: Session, attempt_id: int, status: AttemptStatus, error: str | None
) -> None:
    """Close the attempt with its status, its model usage summed, and the reason if any."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None:
        raise LookupError(f"task attempt {attempt_id} does not exist")
    _sum_usage(session, attempt)
    attempt.status = status
    attempt.error = error
    stamp_end(attempt)


def stamp_end(attempt: TaskAttempt) -> None:
    """The attempt ends now: `ended_at`, and its wall time in seconds since `started_at`
    (CONTRACT §7)."""
    ended = utcnow()
    attempt.ended_at = ended
    # Never negative, should the system clock have been set back meanwhile.
    attempt.wall_seconds = max((ended - attempt.started_at).total_seconds(), 0.0)


def _sum_usage(session: Session, attempt: TaskAttempt) -> None:
    query = sa.select(
        sa.func.coalesce(sa.func.sum(ModelCall.input_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.output_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.cache_read_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.cache_write_tokens), 0),
        sa.func.sum(ModelCall.cost_usd),
    ).where(col(ModelCall.attempt_id) == attempt.id)
    totals = session.connection().execute(query).one()
    inputs, outputs, reads, writes, cost = totals
    attempt.input_tokens, attempt.output_tokens = int(inputs), int(outputs)
    attempt.cache_read_tokens, attempt.cache_write_tokens = int(reads), int(writes)
    attempt.cost_usd = None if cost is None else float(cost)


async def within_budget(store: Store, attempt_id: int, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work`; if a budget stops it, record the attempt `escalated` with the reason."""
    try:
        return await work()
    except BudgetExceeded as exceeded:
        reason = f"budget: {exceeded}"
        await store.run(
            lambda session: end_attempt(session, attempt_id, AttemptStatus.escalated, reason)
        )
        raise AttemptStopped(reason) from exceeded
