"""Model calls into the store: one row per call, and the spend a budget starts from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.llm.budget import DailyCap, InFlight, Spend
from bot.llm.metered import CallRecord
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import ModelCall


@dataclass(frozen=True)
class StoreRecorder:
    """Records each call of one role, in one task attempt of one run, as a `model_calls` row."""

    store: Store
    role: str
    run_id: str | None = None
    task_id: int | None = None
    attempt_id: int | None = None

    async def record(self, call: CallRecord) -> None:
        row = ModelCall(
            run_id=self.run_id,
            task_id=self.task_id,
            attempt_id=self.attempt_id,
            role=self.role,
            provider=call.provider,
            model=call.model,
            input_tokens=call.usage.input_tokens,
            output_tokens=call.usage.output_tokens,
            cache_read_tokens=call.usage.cache_read_tokens,
            cache_write_tokens=call.usage.cache_write_tokens,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
            retries=call.retries,
            stop_reason=call.stop_reason,
            error=call.error,
        )

        def insert(session: Session) -> None:
            session.add(row)  # one row, one transaction: a call is recorded whole or not at all

        await self.store.run(insert)


def task_spend(session: Session, task_id: int) -> Spend:
    """Tokens and dollars the task's model calls have used so far."""
    query = select(_tokens(), _dollars()).where(ModelCall.task_id == task_id)
    used, dollars = session.exec(query).one()
    return Spend(int(used), float(dollars))


def run_total(session: Session, run_id: str) -> tuple[Spend, int]:
    """Tokens and dollars of all the run's model calls, and how many had no known price."""
    unpriced = sa.func.count() - sa.func.count(col(ModelCall.cost_usd))
    query = select(_tokens(), _dollars(), unpriced).where(ModelCall.run_id == run_id)
    used, dollars, unknown = session.exec(query).one()
    return Spend(int(used), float(dollars)), int(unknown)


def run_spend(session: Session, run_id: str) -> float:
    """Dollars the run's model calls have cost so far (calls of unknown price count nothing)."""
    return float(session.exec(select(_dollars()).where(ModelCall.run_id == run_id)).one())


def spend_since(session: Session, since: datetime) -> float:
    """Dollars all model calls recorded since `since` have cost, over every run; one SUM over
    the `(created_at, cost_usd)` index."""
    query = select(_dollars()).where(col(ModelCall.created_at) >= since)
    return float(session.exec(query).one())


def daily_cap(store: Store, settings: Settings, in_flight: InFlight) -> DailyCap | None:
    """The instance's `BATON_DAILY_BUDGET_USD` cap, read from `store`; None when it is unset.
    `in_flight` is the process's one counter, shared by every run's budgets."""
    if settings.daily_budget_usd is None:
        return None

    async def spent_today(since: datetime) -> float:
        return await store.run(lambda session: spend_since(session, since))

    return DailyCap(settings.daily_budget_usd, spent_today, in_flight)


def _tokens() -> sa.ColumnElement[int]:
    every_kind = (
        col(ModelCall.input_tokens)
        + col(ModelCall.output_tokens)
        + col(ModelCall.cache_read_tokens)
        + col(ModelCall.cache_write_tokens)
    )
    return sa.func.coalesce(sa.func.sum(every_kind), 0)


def _dollars() -> sa.ColumnElement[float]:
    return sa.func.coalesce(sa.func.sum(ModelCall.cost_usd), 0.0)
