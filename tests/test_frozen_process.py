"""Two `baton serve` processes on one database. The one running a task's attempt is frozen
(SIGSTOP) past its lease; the other takes the attempt over and carries the run to its pull
request; the first, thawed (SIGCONT), goes on from where it stood and has its late writes
rejected: one commit for the task, one status comment, one pull request."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
from tests.serve_process import (
    Server,
    baton_environment,
    label,
    run_state,
    say,
    signed_by,
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
    who,
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


class HeldWorker:
    """Holds the first worker model call open until `release()`, noting who made it (the
    key it was signed with); every other call is answered by `policy` at once."""

    def __init__(self, policy: Callable[[RecordedCall], ModelReply]) -> None:
        self.policy = policy
        self.caller: str | None = None
        self._released = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, call: RecordedCall) -> ModelReply:
        if who(call)[0] == "worker" and self._first(call):
            self._released.wait(timeout=120)
        return self.policy(call)

    def release(self) -> None:
        self._released.set()

    def _first(self, call: RecordedCall) -> bool:
        with self._lock:
            if self.caller is not None:
                return False
            self.caller = signed_by(call)
            return True


def attempt_job(engine: sa.Engine) -> tuple[int, int]:
    """The running attempt job's id and fence."""
    query = "SELECT id, fence FROM jobs WHERE name = 'attempt_task' AND state = 'running'"
    with engine.connect() as connection:
        job_id, fence = connection.execute(sa.text(query)).one()
    return int(job_id), int(fence)


def fence_of(engine: sa.Engine, job_id: int) -> int:
    with engine.connect() as connection:
        query = sa.text("SELECT fence FROM jobs WHERE id = :id")
        return int(connection.execute(query, {"id": job_id}).scalar_one())


def attempts(engine: sa.Engine) -> list[tuple[int, str, str | None]]:
    query = "SELECT number, status, error FROM task_attempts ORDER BY number"
    with engine.connect() as connection:
        return [(row.number, row.status, row.error) for row in connection.execute(sa.text(query))]


def freeze_between_transactions(server: Server, name: str, engine: sa.Engine) -> None:
    """SIGSTOP `server` at a moment it holds no transaction open: frozen inside one, it would
    hold row locks the other process needs, a stall no lease can end."""

    def frozen_idle() -> bool:
        server.freeze()
        if not holds_a_transaction(name, engine):
            return True
        server.thaw()
        return False

    wait_for(frozen_idle, timeout=30)


def holds_a_transaction(name: str, engine: sa.Engine) -> bool:
    """Whether the server signing its sessions `baton-{name}` has a transaction open."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND state <> 'idle'"
    )
    with engine.connect() as connection:
        return bool(connection.execute(sa.text(query), {"name": f"baton-{name}"}).scalar_one())


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
