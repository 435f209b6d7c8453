"""Figures for pages about runs: tokens and dollars summed from the `model_calls` rows, by run,
task, attempt, role and model, and an attempt's model and wall time.

Money and tokens come from the `model_calls` rows, so a run, its tasks and their attempts always
add up, and a running attempt already shows what it has spent. `Usage.cost_usd` is the sum of the
calls whose price was known; it is None only when there were calls and none of them had a known
price. `unpriced_calls` counts the calls left out of the sum, so a non-zero value marks the cost
as a lower bound. No model calls cost 0.0.

Each function reads with one query, whatever the number of runs, tasks or attempts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from bot.store.models import ModelCall, TaskAttempt


@dataclass(frozen=True)
class TokenCounts:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )


@dataclass(frozen=True)
class Usage:
    """Summed model calls: tokens, the dollars of the priced ones, and how many were unpriced."""

    tokens: TokenCounts = TokenCounts()
    priced_usd: float = 0.0
    priced_calls: int = 0
    unpriced_calls: int = 0

    @property
    def cost_usd(self) -> float | None:
        if self.unpriced_calls and not self.priced_calls:
            return None
        return self.priced_usd

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.tokens + other.tokens,
            self.priced_usd + other.priced_usd,
            self.priced_calls + other.priced_calls,
            self.unpriced_calls + other.unpriced_calls,
        )


NO_USAGE = Usage()


def total(usages: Iterable[Usage]) -> Usage:
    return sum(usages, NO_USAGE)


@dataclass(frozen=True)
class CallKind:
    """Model calls of one task attempt (or none: planning), one role and one model."""

    task_id: int | None
    attempt_id: int | None
    role: str
    model: str  # `provider/model`


def usage_by_run(session: Session, run_ids: Sequence[str]) -> dict[str, Usage]:
    """Each run's usage; a run with no model calls is left out."""
    if not run_ids:
        return {}
    query = (
        sa.select(col(ModelCall.run_id), *_usage_columns())
        .where(col(ModelCall.run_id).in_(run_ids))
        .group_by(ModelCall.run_id)
    )
    return {row[0]: _usage(row) for row in session.connection().execute(query)}


def usage_by_call_kind(session: Session, run_id: str) -> dict[CallKind, Usage]:
    """The run's usage split by task, attempt, role and model; their total is the run's."""
    keys = (
        col(ModelCall.task_id),
        col(ModelCall.attempt_id),
        col(ModelCall.role),
        col(ModelCall.provider),
        col(ModelCall.model),
    )
    query = (
        sa.select(*keys, *_usage_columns()).where(col(ModelCall.run_id) == run_id).group_by(*keys)
    )
    usage: dict[CallKind, Usage] = {}
    for row in session.connection().execute(query):
        task_id, attempt_id, role, provider, model = row[:5]
        usage[CallKind(task_id, attempt_id, role, f"{provider}/{model}")] = _usage(row)
    return usage


def task_usage(usage: Mapping[CallKind, Usage], task_id: int | None) -> Usage:
    """A task's usage: its workers' and its reviewer's calls, over all its attempts."""
    return total(used for kind, used in usage.items() if kind.task_id == task_id)


def attempt_usage(usage: Mapping[CallKind, Usage], attempt_id: int | None) -> Usage:
    """An attempt's usage, its reviewer's calls included."""
    return total(used for kind, used in usage.items() if kind.attempt_id == attempt_id)


def attempt_model(attempt: TaskAttempt, usage: Mapping[CallKind, Usage]) -> str:
    """The model the attempt recorded, else the models its worker's own calls (not the
    reviewer's) name, comma-separated."""
    if attempt.model:
        return attempt.model
    return ", ".join(
        sorted(
            {
                kind.model
                for kind in usage
                if kind.attempt_id == attempt.id and kind.role == attempt.role
            }
        )
    )


def wall_seconds(attempt: TaskAttempt) -> float | None:
    """Seconds from the attempt's start to its end; None while it runs. An attempt closed
    without recording its wall time has it from its start and end."""
    if attempt.ended_at is None:
        return None
    if attempt.wall_seconds is not None:
        return attempt.wall_seconds
    return (attempt.ended_at - attempt.started_at).total_seconds()


def _usage_columns() -> list[sa.ColumnElement[Any]]:
    return [
        sa.func.coalesce(sa.func.sum(ModelCall.input_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.output_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.cache_read_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.cache_write_tokens), 0),
        sa.func.coalesce(sa.func.sum(ModelCall.cost_usd), 0.0),
        # COUNT of a column skips nulls: this counts the calls whose price was known.
        sa.func.count(col(ModelCall.cost_usd)),
        sa.func.count(),
    ]


def _usage(row: Sequence[Any]) -> Usage:
    """A `Usage` from the last seven columns of a row selected with `_usage_columns`."""
    inputs, outputs, reads, writes, dollars, priced, calls = row[-7:]
    tokens = TokenCounts(int(inputs), int(outputs), int(reads), int(writes))
    return Usage(tokens, float(dollars), int(priced), int(calls) - int(priced))
