"""Many machines (CONTRACT §10): `baton serve` answers webhooks and runs no job; two `baton
worker` processes, each with a data directory of its own, share the work of a run through
PostgreSQL and procrastinate, and the run ends in one draft pull request on a linear branch."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
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
    signed_by,
    status_comments,
)
from tests.support import wait_for
from tests.world import FILES, TEST_COMMAND, branch_log, models_for, plan, task, wait_explained, who

WORKERS = ("east", "west")
# Three tasks that can run at once, and one after them all.
FAN_IN = plan(
    task("T1", [], [FILES["T1"]]),
    task("T2", [], [FILES["T2"]]),
    task("T3", [], [FILES["T3"]]),
    task("T4", ["T1", "T2", "T3"], [FILES["T4"]]),
)


@pytest.fixture
def queue_schema(database_url: str) -> str:
    """The test database with procrastinate's tables (its migrations made them) empty."""
    engine = sa.create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_events CASCADE"
            )
        )
    engine.dispose()
    return database_url


class Worker:
    """`baton worker` in a child process."""

    def __init__(self, environment: dict[str, str], log: Path, *options: str) -> None:
        command = [sys.executable, "-m", "bot.cli", "worker", *options]
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(command, env=environment, stdout=output, stderr=output)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def logged(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def machines(
    baton_doubles: tuple[GitHubDouble, ModelDouble], queue_schema: str, tmp_path: Path
) -> Iterator[tuple[Server, dict[str, Worker]]]:
    """`baton serve` and two workers, each signing its model calls with its name as the key."""
    github, models = baton_doubles
    # Short leases and stall times: a dead or frozen worker's job is taken over in seconds.
    many = {"BATON_EXECUTOR": "procrastinate", "BATON_JOB_LEASE_SECONDS": "2"}
    server = Server(
        baton_environment(github, models, queue_schema, tmp_path / "serve", **many), tmp_path
    )
    workers = {
        name: Worker(
            baton_environment(
                github,
                models,
                queue_schema,
                tmp_path / name,
                ANTHROPIC_API_KEY=name,
                PGAPPNAME=f"baton-{name}",
                **many,
            ),
            tmp_path / f"{name}.log",
            *("--concurrency", "2", "--attempts", "1", "--stall-seconds", "3"),
            *("--grace-seconds", "1"),
        )
        for name in WORKERS
    }
    try:
        yield server, workers
    finally:
        server.stop()
        for worker in workers.values():
            worker.stop()


class HeldUntilBothWork:
    """Holds each worker model call until both workers have one under way: the run's tasks
    then run on both machines, or the test fails waiting."""

    def __init__(self, policy: Callable[[RecordedCall], ModelReply]) -> None:
        self.policy = policy
        self.working: set[str] = set()
        self.both = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, call: RecordedCall) -> ModelReply:
        if who(call)[0] == "worker":
            with self._lock:
                self.working.add(signed_by(call))
                if self.working >= set(WORKERS):
                    self.both.set()
            self.both.wait(timeout=60)
        return self.policy(call)


def approved(server: Server, github: GitHubDouble, engine: sa.Engine) -> None:
    """Serve, label the issue, wait for the plan and approve it."""
    server.start()
    hooks = f"{server.url}/api/github/webhooks"
    label(github, hooks)
    wait_explained(engine, lambda: run_state(engine) == "awaiting_approval", "planned")
    say(github, hooks, "/approve-plan")


def merges_on_branch(github: GitHubDouble) -> int:
    git_dir = github.root / f"{REPOSITORY}.git"
    listed = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-list", "--merges", "main..baton/issue-7"],
        capture_output=True,
        text=True,
        check=True,
    )
    return len(listed.stdout.split())


def attempt_places(engine: sa.Engine) -> list[tuple[str, int]]:
    query = "SELECT host, process FROM task_attempts"
    with engine.connect() as connection:
        return [(row.host, row.process) for row in connection.execute(sa.text(query))]


def attempts_by_worker(engine: sa.Engine) -> dict[str, int]:
    query = "SELECT status, count(*) FROM task_attempts GROUP BY status"
    with engine.connect() as connection:
        return {row[0]: row[1] for row in connection.execute(sa.text(query))}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_run_spreads_over_two_workers_and_ends_in_one_pull_request(
    machines: tuple[Server, dict[str, Worker]],
    baton_doubles: tuple[GitHubDouble, ModelDouble],
    engine: sa.Engine,
) -> None:
    server, workers = machines
    github, models = baton_doubles
    held = HeldUntilBothWork(models_for(FAN_IN))
    models.policy = held
    commit_files(github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\nmax_parallel: 3\n"})
    approved(server, github, engine)
    if not held.both.wait(timeout=90):
        raise AssertionError(f"only {held.working} worked at once")
    wait_explained(engine, lambda: run_state(engine) == "pr_open", "draft opened", timeout=180)

    subjects = branch_log(github)  # oldest first, and git log shows a merge as one more line
    assert sorted(subjects[:3]) == ["T1: Step T1", "T2: Step T2", "T3: Step T3"]
    assert subjects[3:] == ["T4: Step T4"]
    assert merges_on_branch(github) == 0
    assert len(github.pulls(REPOSITORY)) == 1
    assert len(status_comments(github)) == 1
    assert attempts_by_worker(engine) == {"succeeded": 4}
    # Each attempt says where it ran: both workers' processes, on this machine.
    pids = {worker.process.pid for worker in workers.values()}
    assert {process for _, process in attempt_places(engine)} == pids
    assert {host for host, _ in attempt_places(engine)} == {socket.gethostname()}
    assert not any(worker.process.poll() is not None for worker in workers.values())
    ready = httpx.get(f"{server.url}/readyz", timeout=5).json()
    assert ready["queue"] == {"workers_alive": 4, "stalled_jobs": 0}  # two lanes a worker
    metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
    assert "baton_queue_workers_alive 4.0" in metrics
    assert "baton_queue_stalled_jobs 0.0" in metrics


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("fate", ["killed", "frozen", "stopped"])
def test_a_worker_lost_during_an_attempt_costs_the_run_nothing(
    machines: tuple[Server, dict[str, Worker]],
    baton_doubles: tuple[GitHubDouble, ModelDouble],
    engine: sa.Engine,
    fate: str,
) -> None:
    server, workers = machines
    github, models = baton_doubles
    held = HeldWorker(models_for(plan(task("T1", [], [FILES["T1"]]))))
    models.policy = held
    commit_files(github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    approved(server, github, engine)
    wait_explained(engine, lambda: held.caller, "start a worker", timeout=60)
    lost = workers[str(held.caller)]
    job_id, fence = attempt_job(engine)

    if fate == "killed":
        lost.kill()
    elif fate == "stopped":  # SIGTERM: the attempt outlasts the grace period and is handed back
        lost.process.send_signal(signal.SIGTERM)
        assert lost.process.wait(timeout=30) == 0
    else:
        freeze_between_transactions(lost, str(held.caller), engine)
    # The other worker swept the job back to the queue, took it over and closed the attempt.
    wait_explained(engine, lambda: attempts(engine)[0][1] == "failed", "take over", timeout=60)
    assert fence_of(engine, job_id) > fence
    if fate == "frozen":
        lost.thaw()
    held.release()
    if fate == "frozen":
        wait_for(lambda: lost.logged("late write rejected"), timeout=60)
    wait_explained(engine, lambda: run_state(engine) == "pr_open", "draft opened", timeout=120)

    assert branch_log(github) == ["T1: Step T1"]
    assert len(status_comments(github)) == 1
    assert len(github.pulls(REPOSITORY)) == 1
    assert len(github.check_runs(REPOSITORY)) == 1
    assert attempts(engine) == [
        (1, "failed", "interrupted: the process stopped"),
        (2, "succeeded", None),
    ]
