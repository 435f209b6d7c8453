"""A real `baton serve`, killed with SIGKILL and started again, carries its run on from where
it stood: one pull request, one status comment, no commit made twice, no gate forgotten."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.doubles.fixtures import (
    INSTALLATION_ID,
    REPOSITORY,
    WIDGETS_FILES,
    commit_files,
)
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
from tests.support import SECRET, free_port, payload, wait_for
from tests.world import (
    FILES,
    FOUR_TASKS,
    ISSUE,
    TEST_COMMAND,
    branch_log,
    models_for,
    plan,
    task,
    unsettled_jobs,
    who,
)


class Server:
    """`baton serve` in a child process, started and killed at will."""

    def __init__(self, environment: dict[str, str], logs: Path) -> None:
        self.environment = environment
        self.logs = logs
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{environment['BATON_PORT']}"

    def start(self) -> None:
        log = (self.logs / f"serve-{time.monotonic_ns()}.log").open("wb")
        command = [sys.executable, "-m", "bot.cli", "serve"]
        self.process = subprocess.Popen(command, env=self.environment, stdout=log, stderr=log)
        wait_for(self._answers, timeout=30)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the server died"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def crashable(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[Server, GitHubDouble, ModelDouble]]:
    with GitHubDouble(tmp_path / "github") as github, ModelDouble() as models:
        github.add_installation(INSTALLATION_ID, "octo-org")
        github.add_repository(REPOSITORY, INSTALLATION_ID, WIDGETS_FILES, repository_id=712345678)
        github.add_issue(REPOSITORY, ISSUE, "Add a dial", "Please add a dial.", "alice", ["baton"])
        github.set_permission(REPOSITORY, "alice", "write")
        toolchains = sorted({sys.prefix, sys.base_prefix})
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "BATON_DATABASE_URL": database_url,
            "BATON_DATA_DIR": str(tmp_path / "data"),
            "BATON_WEBHOOK_SECRET": SECRET,
            "BATON_PORT": str(free_port()),
            "BATON_JOB_LEASE_SECONDS": "2",
            "BATON_LOG_LEVEL": "WARNING",
            "BATON_GITHUB_APP_ID": str(github.app_id),
            "BATON_GITHUB_PRIVATE_KEY": github.private_key_pem,
            "BATON_GITHUB_API_URL": github.api_url,
            "BATON_GITHUB_URL": github.url,
            "BATON_SANDBOX_TOOLCHAINS": json.dumps(toolchains),
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": models.url,
        }
        server = Server(environment, tmp_path)
        try:
            yield server, github, models
        finally:
            if server.process is not None and server.process.poll() is None:
                server.kill()


def say(github: GitHubDouble, hooks: str, text: str) -> None:
    """Alice comments `text` on the issue, and GitHub delivers it."""
    body = copy.deepcopy(payload("issue_comment.created"))
    body["issue"]["number"] = ISSUE
    body["comment"] = {
        **body["comment"],
        **github.add_issue_comment(REPOSITORY, ISSUE, text, user="alice"),
    }
    assert github.send_webhook(hooks, "issue_comment", body).status_code == 202


def running_attempts(engine: sa.Engine) -> int:
    query = "SELECT count(*) FROM task_attempts WHERE status = 'running'"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


def run_state(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT state FROM runs")).scalar_one_or_none()


def planned_on_a_live_server(server: Server, github: GitHubDouble, engine: sa.Engine) -> str:
    """Start the server, label the issue, wait for the plan; returns the webhook address."""
    server.start()
    hooks = f"{server.url}/api/github/webhooks"
    labelled = payload("issues.labeled")
    labelled["issue"]["number"] = ISSUE
    assert github.send_webhook(hooks, "issues", labelled).status_code == 202
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
    status_comments = [
        c for c in github.issue_comments(REPOSITORY, ISSUE) if "<!-- baton:run:" in c["body"]
    ]
    assert len(status_comments) == 1
    assert len(github.check_runs(REPOSITORY)) == 1


def task_state(engine: sa.Engine, key: str) -> str | None:
    with engine.connect() as connection:
        query = sa.text("SELECT state FROM tasks WHERE key = :key")
        return connection.execute(query, {"key": key}).scalar_one_or_none()


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
