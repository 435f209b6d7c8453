"""A task that writes a protected path waits for a person's `/approve-task`, and the approval
holds only for the change the person saw."""

from __future__ import annotations

import re
import time

import sqlalchemy as sa

from tests.doubles.fixtures import commit_files
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import wait_for
from tests.world import (
    BRANCH,
    FILES,
    World,
    approved,
    attempts,
    branch_log,
    models_for,
    plan,
    task,
    unsettled_jobs,
    wait_for_run,
    who,
)

ONE_GATED_TASK = plan(task("T1", [], [FILES["T1"]]))


def gate(engine: sa.Engine) -> tuple[str, int] | None:
    """T1's state and how many attempts it has had; None before the plan is approved."""
    with engine.connect() as connection:
        query = sa.text("SELECT state, attempts FROM tasks WHERE key = 'T1'")
        row = connection.execute(query).one_or_none()
        return None if row is None else (str(row[0]), int(row[1]))


def events(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        query = "SELECT kind FROM timeline_events WHERE task_key = 'T1' ORDER BY id"
        return list(connection.execute(sa.text(query)).scalars())


PROTECTED_T1 = f"protected_paths: [{FILES['T1']}]\n"


def test_work_redone_after_a_conflict_needs_approving_again(
    world: World, engine: sa.Engine
) -> None:
    quick = models_for(ONE_GATED_TASK)
    pushed: list[str] = []

    def answer(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "reviewer" and not pushed:
            # While T1 is reviewed, a person pushes their own version of its file.
            pushed.append(commit_files(world.github, {FILES["T1"]: "PERSON = 1\n"}, branch=BRANCH))
        return quick(call)

    approved(world, engine, answer, PROTECTED_T1)
    wait_for(lambda: gate(engine) == ("awaiting_approval", 1), timeout=120)
    world.comment("/approve-task T1")

    # The approved change no longer applies: the worker redoes it, and the new change waits
    # for a person again instead of going in on the first approval.
    wait_for(lambda: gate(engine) == ("awaiting_approval", 2), timeout=120)
    # Every step the run could take without a person is taken: the first approval, were it
    # kept, would have let the new change in.
    wait_for(lambda: unsettled_jobs(engine) == 0, timeout=30)
    assert gate(engine) == ("awaiting_approval", 2)
    assert branch_log(world.github) == ["Maintainer's change"]
    world.comment("/approve-task T1")
    wait_for_run(world, engine, "pr_open")

    assert branch_log(world.github) == ["Maintainer's change", "T1: Step T1"]
    assert [row.number for row in attempts(engine)] == [1, 2]
    # The second attempt held a worker slot: T1 was running again between the two waits.
    kinds = events(engine)
    first_wait = kinds.index("task.awaiting_approval")
    assert "task.running" in kinds[first_wait:]


def test_an_approval_before_the_work_waits_for_it_is_refused_and_not_kept(
    world: World, engine: sa.Engine
) -> None:
    quick = models_for(ONE_GATED_TASK)

    def thinking(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "worker":
            time.sleep(1.5)  # the early approval arrives while the worker is at it
        return quick(call)

    approved(world, engine, thinking, PROTECTED_T1)
    wait_for(lambda: gate(engine) == ("running", 1), timeout=120)
    world.comment("/approve-task T1")

    (reply,) = wait_for(lambda: [r for r in world.replies() if "/approve-task" in r], timeout=60)
    assert re.search(
        r"T1 is (running|reviewing); `/approve-task` applies once its accepted change waits "
        "for approval.$",
        reply,
    )
    wait_for(lambda: gate(engine) == ("awaiting_approval", 1), timeout=120)
    wait_for(lambda: unsettled_jobs(engine) == 0, timeout=30)  # a kept approval acts by now
    assert gate(engine) == ("awaiting_approval", 1)
    assert branch_log(world.github) == []
    world.comment("/approve-task T1")
    wait_for_run(world, engine, "pr_open")
    assert branch_log(world.github) == ["T1: Step T1"]
