"""The planner's effort reaches the scheduler: with one worker slot, a large task starts before
a chain of small ones that is longer by task count."""

from __future__ import annotations

import sqlalchemy as sa

from tests.world import FILES, World, approved, attempts, models_for, plan, task, wait_for_run

SMALL_CHAIN_AND_A_LARGE_TASK = plan(
    task("T1", [], [FILES["T1"]], effort=1),
    task("T2", ["T1"], [FILES["T2"]], effort=1),
    task("T3", [], [FILES["T3"]], effort=5),
)


def test_the_largest_effort_starts_first_when_one_task_runs_at_a_time(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, models_for(SMALL_CHAIN_AND_A_LARGE_TASK), "max_parallel: 1\n")
    wait_for_run(world, engine, "pr_open")

    started = [row.key for row in sorted(attempts(engine), key=lambda row: row.started_at)]
    # By task count T1 heads the longest chain; by effort T3 (4 units) outweighs T1 -> T2 (0.5).
    assert started == ["T3", "T1", "T2"]
    with engine.connect() as connection:
        efforts = dict(connection.execute(sa.text("SELECT key, effort FROM tasks")).all())
    assert efforts == {"T1": 1, "T2": 1, "T3": 5}
