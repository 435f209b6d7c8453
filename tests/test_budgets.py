"""Budgets end to end over HTTP: the instance's default budgets for a repository that sets
none, and the instance's daily cap, which counts the model calls of every run."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.settings import Settings
from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import wait_for
from tests.world import (
    FILES,
    ISSUE,
    TEST_COMMAND,
    World,
    models_for,
    plan,
    submit,
    task,
    tool,
    wait_explained,
    wait_for_run,
    who,
    world_of,
)

OTHER_ISSUE = 8
ONE_TASK = plan(task("T1", [], [FILES["T1"]]))
# On Sonnet ($3 per million input tokens) a turn reporting this many costs about $0.45.
WORKER_HEAVY_INPUT = 150_000
# On Opus ($5 per million input tokens) a planning turn reporting this many costs about $0.50.
PLANNER_HEAVY_INPUT = 100_000
# One planning call is priced ahead at about $0.23 and one worker call at about $0.14 (their
# 8,192-token output caps and their prompts): room for two plannings, not one more worker call.
DAILY_CAP = 0.6


def configured(**changes: Any) -> Callable[[Settings], Settings]:
    return lambda settings: settings.model_copy(update=changes)


@pytest.fixture
def small_task_default(tmp_path: Path, settings: Settings) -> Iterator[World]:
    with world_of(tmp_path, settings, configure=configured(default_task_budget_usd=0.5)) as world:
        yield world


@pytest.fixture
def daily_capped(tmp_path: Path, settings: Settings) -> Iterator[World]:
    with world_of(tmp_path, settings, configure=configured(daily_budget_usd=DAILY_CAP)) as world:
        yield world


def state_of(engine: sa.Engine, issue: int) -> str | None:
    query = sa.text("SELECT state FROM runs WHERE issue_number = :issue")
    with engine.connect() as connection:
        return connection.execute(query, {"issue": issue}).scalar_one_or_none()


def wait_for_issue(engine: sa.Engine, issue: int, state: str) -> None:
    wait_explained(engine, lambda: state_of(engine, issue) == state, f"reach {state} on #{issue}")


def issue_of(call: RecordedCall) -> int:
    """The issue a planner call plans."""
    prompt = call.json["messages"][0]["content"][0]["text"]
    found = re.search(r"Plan the work for issue #(\d+)", prompt)
    assert found, prompt
    return int(found.group(1))


def heavy_planning_of(issue: int) -> Callable[[RecordedCall], ModelReply]:
    """Plans `ONE_TASK` for every issue, and spends about $0.50 planning `issue`."""
    cheap = models_for(ONE_TASK)

    def answer(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "planner" and issue_of(call) == issue:
            return submit(ONE_TASK)._replace(input_tokens=PLANNER_HEAVY_INPUT)
        return cheap(call)

    return answer


def spent_today(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        usd = connection.execute(sa.text("SELECT sum(cost_usd) FROM model_calls")).scalar_one()
    return f"${usd:.4f}"


def next_utc_midnight() -> str:
    return f"{datetime.now(UTC).date() + timedelta(days=1):%Y-%m-%d} 00:00 UTC"


def test_a_run_whose_repository_sets_no_budget_stops_at_the_default(
    small_task_default: World, engine: sa.Engine
) -> None:
    world = small_task_default
    plain = models_for(ONE_TASK)

    def answer(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "worker" and len(call.json["messages"]) == 1:
            written = tool("write_file", path=FILES["T1"], content="NAME = 'T1'\n")
            return written._replace(input_tokens=WORKER_HEAVY_INPUT)
        return plain(call)

    commit_files(world.github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    world.models.policy = answer
    world.label()
    plan_shown = wait_for(lambda: "Plan r1" in world.status() and world.status())
    assert "**Budget:** $20.00 per run and $0.50 per task (Baton's defaults)." in plan_shown
    world.comment("/approve-plan")
    wait_for_run(world, engine, "needs_human")

    status = wait_for(lambda: "Needs a person" in world.status() and world.status())
    assert "- [ ] **T1** Step T1 — escalated" in status
    assert "- **T1** stopped: budget: the next call may cost $0.1" in status
    assert (
        "the task has spent $0.4503 of its $0.50 "
        "(Baton's default, BATON\\_DEFAULT\\_TASK\\_BUDGET\\_USD)"
    ) in status
    # The call that would have passed the budget was never made.
    assert [who(call)[0] for call in world.models.calls] == ["planner", "worker"]


def test_the_daily_cap_refuses_a_runs_call_once_another_run_spent_the_day(
    daily_capped: World, engine: sa.Engine
) -> None:
    world = daily_capped
    commit_files(world.github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    world.models.policy = heavy_planning_of(OTHER_ISSUE)
    world.label()
    wait_for_issue(engine, ISSUE, "awaiting_approval")
    world.github.add_issue(REPOSITORY, OTHER_ISSUE, "Add a knob", "Knobs too.", "alice", ["baton"])
    world.label(issue=OTHER_ISSUE)
    wait_for_issue(engine, OTHER_ISSUE, "awaiting_approval")

    world.comment("/approve-plan")
    wait_for_issue(engine, ISSUE, "needs_human")

    status = wait_for(lambda: "Needs a person" in world.status() and world.status())
    assert "- [ ] **T1** Step T1 — escalated" in status
    assert (
        f"- **T1** stopped: budget: Baton's daily budget is reached: {spent_today(engine)} of "
        "its $0.60 (BATON\\_DAILY\\_BUDGET\\_USD) spent today, and the next call may cost $0.1"
    ) in status
    assert f"It resets at {next_utc_midnight()}, the start of the next UTC day" in status
    assert "the operator can raise BATON\\_DAILY\\_BUDGET\\_USD" in status
    # Both plannings were made; the worker's first call was not.
    assert [who(call)[0] for call in world.models.calls] == ["planner", "planner"]


def test_a_planning_the_daily_cap_refuses_says_so_on_its_issue(
    daily_capped: World, engine: sa.Engine
) -> None:
    world = daily_capped
    world.models.policy = heavy_planning_of(ISSUE)
    world.label()
    wait_for_issue(engine, ISSUE, "awaiting_approval")
    world.github.add_issue(REPOSITORY, OTHER_ISSUE, "Add a knob", "Knobs too.", "alice", ["baton"])
    world.label(issue=OTHER_ISSUE)
    wait_for_issue(engine, OTHER_ISSUE, "failed")

    status = wait_for(
        lambda: "Planning stopped" in world.status(OTHER_ISSUE) and world.status(OTHER_ISSUE)
    )
    assert "## Planning stopped by a budget\n\n- Baton's daily budget is reached: " in status
    assert f"{spent_today(engine)} of its $0.60 (BATON\\_DAILY\\_BUDGET\\_USD)" in status
    assert f"It resets at {next_utc_midnight()}" in status
    assert "To try again, remove the label baton from this issue and add it again." in status
    assert len(world.models.calls) == 1  # the first run's planning alone
