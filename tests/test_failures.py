"""A job that fails for good: its run ends `failed`, the issue is told why and how to start
again once GitHub answers, and a new label starts a new run; the executor backs off minutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.executor.local import ExecutorTuning, LocalExecutor
from bot.github.client import GitHubTuning
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store.db import Store
from tests.doubles.fixtures import REPOSITORY
from tests.doubles.github import GitHubDouble
from tests.doubles.models import RecordedCall
from tests.support import wait_for
from tests.world import DIAMOND, ISSUE, World, submit, wait_explained, world_of

OUTAGE_METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")


@pytest.fixture
def world(tmp_path: Path, settings: Settings) -> Iterator[World]:
    # No retries inside a call: each job attempt meets the outage at once.
    tuning = GitHubTuning(write_interval=0.0, server_error_retries=0)
    with world_of(tmp_path, settings, tuning) as served:
        yield served


def outage(github: GitHubDouble) -> None:
    """Every REST request answers 503 until the failures are cleared."""
    for method in OUTAGE_METHODS:
        github.fail_next(method, r"/.*", 503, times=1_000_000, message="Service Unavailable")


def runs(engine: sa.Engine) -> list[tuple[str, str, bool, str | None]]:
    query = "SELECT state, branch, active, error FROM runs ORDER BY created_at"
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(query))]  # type: ignore[misc]


def failed_jobs(engine: sa.Engine) -> list[tuple[str, str]]:
    query = "SELECT name, last_error FROM jobs WHERE state = 'failed' ORDER BY id"
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(query))]  # type: ignore[misc]


def test_a_github_outage_that_outlasts_the_retries_fails_the_run_and_frees_the_issue(
    world: World, engine: sa.Engine
) -> None:
    def planner_then_outage(call: RecordedCall) -> object:
        outage(world.github)  # GitHub goes down while the planner works
        return submit(DIAMOND)

    world.models.policy = planner_then_outage
    world.label()
    wait_explained(engine, lambda: runs(engine) and not runs(engine)[0][2], "end for good")

    state, branch, _, reason = runs(engine)[0]
    assert (state, branch) == ("failed", f"baton/issue-{ISSUE}")
    assert reason is not None
    assert "planning step" in reason
    assert "GitHub" in reason
    # The raw answer stays in the job's record, not in the reason the issue will see.
    assert "Service Unavailable" in failed_jobs(engine)[0][1]
    assert "Service Unavailable" not in reason
    assert "**Failed**" not in world.status()  # GitHub is down: nothing could be said yet

    world.github.clear_failures()
    wait_explained(engine, lambda: "**Failed**" in world.status(), "show its failure")
    status = world.status()
    assert "GitHub could not be reached" in status
    assert "remove the label baton from this issue and add it again" in status
    assert "Service Unavailable" not in status

    world.models.policy = lambda call: submit(DIAMOND)
    world.label()
    wait_explained(engine, lambda: len(runs(engine)) == 2, "start a second run")
    wait_explained(engine, lambda: runs(engine)[1][0] == "awaiting_approval", "plan the second run")
    second = runs(engine)[1]
    assert (second[1], bool(second[2])) == (f"baton/issue-{ISSUE}-2", True)

    def status_markers() -> set[str]:
        comments = world.github.issue_comments(REPOSITORY, ISSUE)
        firsts = {c["body"].splitlines()[0] for c in comments if c["user"]["type"] == "Bot"}
        return {m for m in firsts if m.startswith("<!-- baton:run:")}

    wait_for(lambda: len(status_markers()) == 2)  # each run has its own status comment


def test_the_default_backoff_waits_minutes_before_the_last_try(
    database_url: str, settings: Settings
) -> None:
    store = Store(database_url)
    executor = LocalExecutor(store, settings, {}, Metrics(), ExecutorTuning())
    # The backoff is drawn between half and all of its step; the smallest draw still waits.
    waits = [executor._backoff(attempt) for attempt in range(1, 5)]
    store.close()
    assert sum(waits, timedelta()) >= timedelta(minutes=3)
