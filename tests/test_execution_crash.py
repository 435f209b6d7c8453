"""A real `baton serve`, killed with SIGKILL while a task waits for a person and started again,
forgets no gate. (A run killed at each step boundary: test_crash_boundaries.py.)"""

from __future__ import annotations

import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble
from tests.serve_process import Server, label, run_state, say, task_state
from tests.support import wait_for
from tests.world import (
    FILES,
    TEST_COMMAND,
    branch_log,
    models_for,
    plan,
    task,
    unsettled_jobs,
)


def planned_on_a_live_server(server: Server, github: GitHubDouble, engine: sa.Engine) -> str:
    """Start the server, label the issue, wait for the plan; returns the webhook address."""
    server.start()
    hooks = f"{server.url}/api/github/webhooks"
    label(github, hooks)
    wait_for(lambda: run_state(engine) == "awaiting_approval", timeout=60)
    return hooks


def test_a_task_waiting_for_approval_waits_again_after_a_restart_and_is_then_integrated(
    crashable: tuple[Server, GitHubDouble, ModelDouble], engine: sa.Engine
) -> None:
    server, github, models = crashable
    models.policy = models_for(plan(task("T1", [], [FILES["T1"]])))
    config = f"test_command: {TEST_COMMAND}\nprotected_paths: [{FILES['T1']}]\n"
    commit_files(github, {".github/baton.yml": config})
    hooks = planned_on_a_live_server(server, github, engine)
    say(github, hooks, "/approve-plan")
    wait_for(lambda: task_state(engine, "T1") == "awaiting_approval", timeout=90)
    model_calls = len(models.calls)
    server.kill()

    server.start()
    # Every job of the run, the dead process's included, has been taken up and has ended:
    # nothing is left that could move the task without a person.
    wait_for(lambda: unsettled_jobs(engine) == 0, timeout=60)
    assert (run_state(engine), task_state(engine, "T1")) == ("executing", "awaiting_approval")
    assert branch_log(github) == []

    say(github, hooks, "/approve-task T1")
    wait_for(lambda: run_state(engine) == "pr_open", timeout=120)
    assert branch_log(github) == ["T1: Step T1"]
    assert len(models.calls) == model_calls  # the accepted work was integrated, not redone
    with engine.connect() as connection:
        query = "SELECT status, review_verdict FROM task_attempts"
        assert [tuple(row) for row in connection.execute(sa.text(query))] == [
            ("succeeded", "accept")
        ]
    assert len(github.pulls(REPOSITORY)) == 1
