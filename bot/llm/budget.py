"""Budgets per task (tokens, dollars) and per run (dollars), checked before every call.

A call is priced before it is made, from the request's size and its output cap; a call that
would pass a limit is not made, and the task ends `escalated` with the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass

from bot.llm.types import TurnRequest, Usage

# About four characters per token for English and code; only used to look ahead.
CHARS_PER_TOKEN = 4


class BudgetExceeded(Exception):
    """The next call would pass a budget; the message says which, by how much."""


@dataclass(frozen=True)
class BudgetLimits:
    """Unset limits do not apply (CONTRACT §4 `budget: {run_usd, task_usd, task_tokens}`)."""

    task_tokens: int | None = None
    task_usd: float | None = None
    run_usd: float | None = None


@dataclass
class Spend:
    tokens: int = 0
    usd: float = 0.0


@dataclass
class InFlight:
    """The most a run's calls now in flight may cost. Shared by the budgets of the run's tasks in
    one process, so calls made at once cannot together pass the run's budget."""

    usd: float = 0.0


class Budget:
    """What a task and its run have spent, against their limits."""

    def __init__(
        self,
        limits: BudgetLimits,
        task: Spend | None = None,
        run_usd: float = 0.0,
        run_spent: Callable[[], Awaitable[float]] | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self.limits = limits
        self.task = task or Spend()
        self.run_usd = run_usd
        # Tasks of one run spend at once: the run's total is read again before each call.
        self._run_spent = run_spent
        self.in_flight = in_flight or InFlight()

    async def refresh(self) -> None:
        """Bring the run's spend up to date with what its other tasks have spent meanwhile."""
        if self._run_spent is not None and self.limits.run_usd is not None:
            self.run_usd = await self._run_spent()

    def check(self, tokens: int, usd: float | None) -> None:
        """Raise BudgetExceeded when a call of `tokens` and `usd` (None: unknown) would pass."""
        limits = self.limits
        if limits.task_tokens is not None and self.task.tokens + tokens > limits.task_tokens:
            raise BudgetExceeded(
                f"the next call needs up to {tokens} tokens; the task has used "
                f"{self.task.tokens} of its {limits.task_tokens}"
            )
        if usd is None:
            return
        if limits.task_usd is not None and self.task.usd + usd > limits.task_usd:
            raise BudgetExceeded(
                f"the next call may cost ${usd:.4f}; the task has spent "
                f"${self.task.usd:.4f} of its ${limits.task_usd:.2f}"
            )
        pending = self.in_flight.usd
        if limits.run_usd is not None and self.run_usd + pending + usd > limits.run_usd:
            waiting = f" and calls in flight may cost ${pending:.4f} more" if pending else ""
            raise BudgetExceeded(
                f"the next call may cost ${usd:.4f}; the run has spent "
                f"${self.run_usd:.4f} of its ${limits.run_usd:.2f}{waiting}"
            )

    @contextlib.contextmanager
    def reserved(self, usd: float | None) -> Iterator[None]:
        """Count a checked call's largest cost against the run until the call is over."""
        usd = usd or 0.0
        self.in_flight.usd += usd
        try:
            yield
        finally:
            self.in_flight.usd = max(0.0, self.in_flight.usd - usd)

    def charge(self, usage: Usage, usd: float | None) -> None:
        self.task.tokens += usage.total
        if usd is not None:
            self.task.usd += usd
            self.run_usd += usd


def projected_usage(request: TurnRequest) -> Usage:
    """The most a call could use: its whole prompt as fresh input, and its full output cap."""
    prompt = [request.system, *request.context]
    prompt += [json.dumps(asdict(message), default=str) for message in request.messages]
    prompt += [json.dumps(asdict(tool)) for tool in request.tools]
    characters = sum(len(part) for part in prompt)
    return Usage(
        input_tokens=math.ceil(characters / CHARS_PER_TOKEN), output_tokens=request.max_tokens
    )
