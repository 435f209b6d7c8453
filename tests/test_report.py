"""`bot.report`'s figures that need no database: sums and an attempt's wall time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.report import (
    NO_USAGE,
    CallKind,
    TokenCounts,
    Usage,
    attempt_usage,
    task_usage,
    wall_seconds,
)
from bot.store.models import TaskAttempt

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def attempt(ended: datetime | None, wall: float | None = None) -> TaskAttempt:
    return TaskAttempt(
        task_id=1,
        run_id="run-a",
        number=1,
        role="implementer",
        started_at=START,
        ended_at=ended,
        wall_seconds=wall,
    )


def test_a_running_attempt_has_no_wall_time_yet() -> None:
    assert wall_seconds(attempt(None)) is None


def test_the_recorded_wall_time_is_shown_else_the_time_from_start_to_end() -> None:
    ended = START + timedelta(seconds=90)
    assert wall_seconds(attempt(ended, wall=89.5)) == 89.5
    assert wall_seconds(attempt(ended)) == 90.0  # closed without it, as an older row


def test_a_cost_is_unknown_only_when_no_call_had_a_price() -> None:
    priced = Usage(TokenCounts(100, 10), priced_usd=0.25, priced_calls=1)
    unpriced = Usage(TokenCounts(50, 5), unpriced_calls=1)
    assert NO_USAGE.cost_usd == 0.0
    assert unpriced.cost_usd is None
    both = priced + unpriced
    assert (both.cost_usd, both.unpriced_calls, both.tokens) == (0.25, 1, TokenCounts(150, 15))


def test_a_task_adds_up_its_attempts_and_an_attempt_its_reviewers_calls() -> None:
    usage = {
        CallKind(1, 10, "implementer", "openai/gpt-5"): Usage(TokenCounts(100), 0.1, 1),
        CallKind(1, 10, "reviewer", "anthropic/claude-opus-4-6"): Usage(TokenCounts(20), 0.2, 1),
        CallKind(1, 11, "implementer", "openai/gpt-5"): Usage(TokenCounts(300), 0.3, 1),
        CallKind(None, None, "planner", "anthropic/claude-opus-4-6"): Usage(TokenCounts(9), 0.9, 1),
    }
    assert attempt_usage(usage, 10).tokens.input == 120
    assert task_usage(usage, 1).tokens.input == 420
    assert task_usage(usage, 1).priced_calls == 3
