"""Two `baton serve` processes on one database. The one running a task's attempt is frozen
(SIGSTOP) past its lease; the other takes the attempt over and carries the run to its pull
request; the first, thawed (SIGCONT), goes on from where it stood and has its late writes
rejected: one commit for the task, one status comment, one pull request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble
from tests.serve_process import (
    HeldWorker,
    Server,
    attempt_job,
    attempts,
    baton_environment,
    fence_of,
    freeze_between_transactions,
    label,
    run_state,
    say,
    status_comments,
)
from tests.support import wait_for
from tests.world import (
    FILES,
    TEST_COMMAND,
    branch_log,
    models_for,
    plan,
    task,
    unsettled_jobs,
    wait_explained,
)

NAMES = ("first", "second")


@pytest.fixture
def two_servers(
    baton_doubles: tuple[GitHubDouble, ModelDouble], database_url: str, tmp_path: Path
) -> Iterator[dict[str, Server]]:
    """Two `baton serve` on one database, each with a data directory of its own (as on two
    machines); each signs its model calls with its own name as the key, and its PostgreSQL
    sessions with its name as the application name."""
    github, models = baton_doubles
    servers = {
        name: Server(
            baton_environment(
                github,
                models,
                database_url,
                tmp_path / name,
                ANTHROPIC_API_KEY=name,
                PGAPPNAME=f"baton-{name}",
            ),
            tmp_path,
        )
        for name in NAMES
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# Many processes on one database is PostgreSQL's part (CONTRACT §10); SQLite serves one.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_frozen_process_whose_attempt_was_taken_over_writes_nothing_late(
    two_servers: dict[str, Server],
    baton_doubles: tuple[GitHubDouble, ModelDouble],
    engine: sa.Engine,
) -> None:
    github, models = baton_doubles
    held = HeldWorker(models_for(plan(task("T1", [], [FILES["T1"]]))))
    models.policy = held
    commit_files(github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    for server in two_servers.values():
        server.launch()
    for server in two_servers.values():
        server.wait_until_serving()
    hooks = f"{two_servers['first'].url}/api/github/webhooks"
    label(github, hooks)
    wait_for(lambda: run_state(engine) == "awaiting_approval", timeout=60)
    say(github, hooks, "/approve-plan")

    wait_explained(engine, lambda: held.caller, "start a worker", timeout=60)
    caller = str(held.caller)
    frozen = two_servers[caller]
    job_id, fence = attempt_job(engine)
    freeze_between_transactions(frozen, caller, engine)
    # The other process took the job over and closed the attempt the frozen one left open.
    wait_explained(engine, lambda: attempts(engine)[0][1] == "failed", "take over", timeout=30)
    assert fence_of(engine, job_id) > fence

    frozen.thaw()
    held.release()
    wait_for(lambda: frozen.logged("late write rejected"), timeout=60)
    wait_explained(
        engine,
        lambda: run_state(engine) == "pr_open" and unsettled_jobs(engine) == 0,
        "reach pr_open with every step taken",
        timeout=120,
    )

    assert branch_log(github) == ["T1: Step T1"]
    assert len(status_comments(github)) == 1
    assert len(github.pulls(REPOSITORY)) == 1
    assert attempts(engine) == [
        (1, "failed", "interrupted: the process stopped"),
        (2, "succeeded", None),
    ]
