"""Budgets per task (tokens, dollars), per run (dollars) and per UTC day over the whole instance
(dollars), checked before every call.

A call is priced before it is made, from the request's size and its output cap; a call that
would pass a limit is not made, and the task ends `escalated` with the reason. A call to a model
of unknown price is held to the token limit only: it counts against no dollar limit.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, time, timedelta

from bot.llm.types import TurnRequest, Usage
from bot.settings import Settings, variable_name

# About four characters per token for English and code; only used to look ahead.
CHARS_PER_TOKEN = 4
LIMITS = ("run_usd", "task_usd", "task_tokens")
# The settings that give a limit the repository leaves unset.
DEFAULT_SETTINGS = {"run_usd": "default_run_budget_usd", "task_usd": "default_task_budget_usd"}


class BudgetExceeded(Exception):
    """The next call would pass a budget; the message says which, by how much."""


class DailyBudgetExceeded(BudgetExceeded):
    """The next call would pass the instance's daily cap, shared by every run."""


@dataclass(frozen=True)
class BudgetLimits:
    """Unset limits do not apply (CONTRACT §4 `budget: {run_usd, task_usd, task_tokens}`).
    `defaults` names the limits that are the instance's defaults, not the repository's own."""

    task_tokens: int | None = None
    task_usd: float | None = None
    run_usd: float | None = None
    defaults: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> BudgetLimits:
        """The instance's defaults, `BATON_DEFAULT_RUN_BUDGET_USD` and `..._TASK_BUDGET_USD`."""
        return cls(
            task_usd=settings.default_task_budget_usd,
            run_usd=settings.default_run_budget_usd,
            defaults=frozenset(DEFAULT_SETTINGS),
        )

    def with_defaults(self, defaults: BudgetLimits) -> BudgetLimits:
        """These limits, each one left unset taken from `defaults` and named in `defaults`."""
        taken = {
            name: getattr(defaults, name)
            for name in LIMITS
            if getattr(self, name) is None and getattr(defaults, name) is not None
        }
        return replace(self, **taken, defaults=frozenset(taken))

    def source(self, name: str) -> str:
        """Where limit `name` comes from, for a person: the setting or the repository's file."""
        if name in self.defaults and name in DEFAULT_SETTINGS:
            return f"Baton's default, {variable_name(DEFAULT_SETTINGS[name])}"
        return ".github/baton.yml"


@dataclass
class Spend:
    tokens: int = 0
    usd: float = 0.0


@dataclass
class InFlight:
    """The most a run's calls now in flight may cost. Shared by the budgets of the run's tasks in
    one process, so calls made at once cannot together pass the run's budget."""

    usd: float = 0.0


@dataclass
class DailyCap:
    """The instance's cap on what model calls cost in one UTC day, over all runs: what the
    day's recorded calls cost (read again before each call) plus this process's calls in
    flight must stay within `usd`."""

    usd: float
    spent_today: Callable[[datetime], Awaitable[float]]
    in_flight: InFlight = field(default_factory=InFlight)
    spent: float = 0.0

    async def refresh(self) -> None:
        """Read again what the calls recorded since this UTC day began have cost."""
        self.spent = await self.spent_today(day_start(datetime.now(UTC)))

    def check(self, usd: float) -> None:
        """Raise DailyBudgetExceeded when a call of `usd` would pass the cap."""
        pending = self.in_flight.usd
        if self.spent + pending + usd <= self.usd:
            return
        waiting = f" (and calls in flight may cost ${pending:.4f} more)" if pending else ""
        resets = day_start(datetime.now(UTC)) + timedelta(days=1)
        setting = variable_name("daily_budget_usd")
        raise DailyBudgetExceeded(
            f"Baton's daily budget is reached: ${self.spent:.4f} of its ${self.usd:.2f} "
            f"({setting}) spent today{waiting}, and the next call may cost ${usd:.4f}. It "
            f"resets at {resets:%Y-%m-%d %H:%M} UTC, the start of the next UTC day; the "
            f"operator can raise {setting}"
        )


def day_start(moment: datetime) -> datetime:
    """Midnight UTC of `moment`'s UTC day: the daily cap counts from there."""
    return datetime.combine(moment.astimezone(UTC).date(), time(), tzinfo=UTC)


class Budget:
    """What a task and its run have spent, against their limits."""

    def __init__(
        self,
        limits: BudgetLimits,
        task: Spend | None = None,
        run_usd: float = 0.0,
        run_spent: Callable[[], Awaitable[float]] | None = None,
        in_flight: InFlight | None = None,
        daily: DailyCap | None = None,
    ) -> None:
        self.limits = limits
        self.task = task or Spend()
        self.run_usd = run_usd
        # Tasks of one run spend at once: the run's total is read again before each call.
        self._run_spent = run_spent
        self.in_flight = in_flight or InFlight()
        self.daily = daily

    async def refresh(self) -> None:
        """Bring the run's spend, and the day's, up to date with what others spent meanwhile."""
        if self._run_spent is not None and self.limits.run_usd is not None:
            self.run_usd = await self._run_spent()
        if self.daily is not None:
            await self.daily.refresh()

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
                f"${self.task.usd:.4f} of its ${limits.task_usd:.2f} "
                f"({limits.source('task_usd')})"
            )
        pending = self.in_flight.usd
        if limits.run_usd is not None and self.run_usd + pending + usd > limits.run_usd:
            waiting = f" and calls in flight may cost ${pending:.4f} more" if pending else ""
            raise BudgetExceeded(
                f"the next call may cost ${usd:.4f}; the run has spent "
                f"${self.run_usd:.4f} of its ${limits.run_usd:.2f} "
                f"({limits.source('run_usd')}){waiting}"
            )
        if self.daily is not None:
            self.daily.check(usd)

    @contextlib.contextmanager
    def reserved(self, usd: float | None) -> Iterator[None]:
        """Count a checked call's largest cost against the run, and the day, until it is over."""
        usd = usd or 0.0
        counters = [self.in_flight] + ([self.daily.in_flight] if self.daily else [])
        for counter in counters:
            counter.usd += usd
        try:
            yield
        finally:
            for counter in counters:
                counter.usd = max(0.0, counter.usd - usd)

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
