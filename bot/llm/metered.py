"""A model wrapped with its budget, its price and a record of every call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from bot.llm.budget import Budget, projected_usage
from bot.llm.pricing import PriceTable
from bot.llm.types import Model, ModelFailed, Turn, TurnRequest, Usage, split_model_name
from bot.tracing import chat_span, record_answer


@dataclass(frozen=True)
class CallRecord:
    """One finished call, successful or not, as it is stored."""

    provider: str
    model: str
    usage: Usage
    cost_usd: float | None
    latency_ms: float
    retries: int
    stop_reason: str | None = None
    error: str | None = None


class CallRecorder(Protocol):
    async def record(self, call: CallRecord) -> None: ...


class MeteredModel:
    """Checks the budget before each call, then records and charges what the call used."""

    def __init__(
        self, model: Model, prices: PriceTable, budget: Budget, recorder: CallRecorder
    ) -> None:
        self.model = model
        self.prices = prices
        self.budget = budget
        self.recorder = recorder

    @property
    def name(self) -> str:
        return self.model.name

    async def turn(self, request: TurnRequest) -> Turn:
        """The model's turn; BudgetExceeded (no call made) or ModelFailed (recorded) otherwise."""
        projected = projected_usage(request)
        await self.budget.refresh()
        most = self.prices.cost(self.name, projected)
        self.budget.check(projected.total, most)
        # No await between the check and the reservation: no other call can slip in between.
        # Held until the call's cost is recorded, so a call may briefly count twice, never not.
        with self.budget.reserved(most):
            started = time.perf_counter()
            provider, model = split_model_name(self.name)
            with chat_span(provider, model, request.max_tokens) as span:
                try:
                    turn = await self.model.turn(request)
                except ModelFailed as failure:
                    await self.recorder.record(self._failed(failure, started))
                    raise
                record_answer(span, turn.usage, turn.raw_stop_reason)
            cost = self.prices.cost(self.name, turn.usage)
            await self.recorder.record(self._succeeded(turn, cost, started))
            self.budget.charge(turn.usage, cost)
        return turn

    def _succeeded(self, turn: Turn, cost: float | None, started: float) -> CallRecord:
        provider, model = split_model_name(self.name)
        return CallRecord(
            provider, model, turn.usage, cost, _since(started), turn.retries, turn.raw_stop_reason
        )

    def _failed(self, failure: ModelFailed, started: float) -> CallRecord:
        provider, model = split_model_name(self.name)
        return CallRecord(
            provider, model, Usage(), 0.0, _since(started), failure.retries, error=str(failure)
        )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
