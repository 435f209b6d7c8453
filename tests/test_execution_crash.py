"""A real `baton serve`, killed with SIGKILL and started again, carries its run on from where
it stood: one pull request, one status comment, no commit made twice, no gate forgotten."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
from tests.serve_process import Server, label, run_state, say, status_comments, task_state
from tests.support import wait_for
from tests.world import (
    FILES,
    FOUR_TASKS,
    TEST_COMMAND,
    branch_log,
    models_for,
    plan,
    task,
    unsettled_jobs,
    who,
)


def running_attempts(engine: sa.Engine) -> int:
    query = "SELECT count(*) FROM task_attempts WHERE status = 'running'"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


def planned_on_a_live_server(server: Server, github: GitHubDouble, engine: sa.Engine) -> str:
    """Start the server, label the issue, wait for the plan; returns the webhook address."""
    server.start()
    hooks = f"{server.url}/api/github/webhooks"
    label(github, hooks)
    wait_for(lambda: run_state(engine) == "awaiting_approval", timeout=60)
    return hooks


def test_a_run_killed_while_a_worker_runs_completes_after_a_restart(
    crashable: tuple[Server, GitHubDouble, ModelDouble], engine: sa.Engine
) -> None:
    server, github, models = crashable
    quick = models_for(FOUR_TASKS)

    def thinking(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "worker":
            time.sleep(0.5)  # long enough for the kill to land while a worker runs
        return quick(call)

    models.policy = thinking
    commit_files(github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    hooks = planned_on_a_live_server(server, github, engine)

    say(github, hooks, "/approve-plan")
    # Kill once the first task is pushed and a later worker is at work.
    wait_for(lambda: branch_log(github) and running_attempts(engine) > 0, timeout=90)
    server.kill()

    server.start()
    wait_for(lambda: run_state(engine) == "pr_open", timeout=120)
    subjects = branch_log(github)
    assert sorted(subjects) == sorted(f"{key}: Step {key}" for key in FILES)
    assert len(github.pulls(REPOSITORY)) == 1
    assert len(status_comments(github)) == 1
    assert len(github.check_runs(REPOSITORY)) == 1


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
