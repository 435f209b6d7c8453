"""A real `baton serve` in a child process between the GitHub and model doubles, to be killed,
frozen, thawed and started again; the `crashable` fixture and the helpers its tests share."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
import sqlalchemy as sa

from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, WIDGETS_FILES
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, RecordedCall
from tests.support import SECRET, free_port, payload, wait_for
from tests.world import ISSUE, who

# `baton serve` with its imports done ahead, waiting for a line on stdin to start: a restart
# then takes a moment instead of the seconds importing takes. End of input: it never serves.
WARM_SERVE = """\
import sys
import bot.cli, bot.doctor, bot.service, uvicorn, webhooks.access, webhooks.app
if sys.stdin.readline():
    sys.argv = ["baton", "serve"]
    bot.cli.main()
"""


class Freezable(Protocol):
    def freeze(self) -> None: ...

    def thaw(self) -> None: ...


class Server:
    """`baton serve` in a child process, started, killed, frozen and thawed at will. With
    `warm_spare`, the next process waits with its imports done while this one serves."""

    def __init__(self, environment: dict[str, str], logs: Path, warm_spare: bool = False) -> None:
        self.environment = environment
        self.logs = logs
        self.warm_spare = warm_spare
        self.process: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None  # the current process's output
        self.url = f"http://127.0.0.1:{environment['BATON_PORT']}"
        self._spare: tuple[subprocess.Popen[bytes], Path] | None = None

    def start(self) -> None:
        self.launch()
        self.wait_until_serving()

    def launch(self) -> None:
        """Start serving without waiting for it (start several at once, then wait for each)."""
        process, self.log = self._spare or self._warmed()
        assert process.stdin is not None
        process.stdin.write(b"serve\n")
        process.stdin.flush()
        self.process = process
        self._spare = self._warmed() if self.warm_spare else None

    def wait_until_serving(self) -> None:
        # Generous: start-up imports took 15 s on a machine loaded by other test runs.
        wait_for(self._answers, timeout=90)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def is_dead(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def logged(self, text: str) -> bool:
        return self.log is not None and text in self.log.read_text(errors="replace")

    def stop(self) -> None:
        """End the process and its spare, whatever state they are in."""
        for process in (self.process, self._spare[0] if self._spare else None):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    def _warmed(self) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"serve-{time.monotonic_ns()}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-c", WARM_SERVE],
                env=self.environment,
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=output,
            )
        return process, log

    def _answers(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "the server died"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def baton_doubles(tmp_path: Path) -> Iterator[tuple[GitHubDouble, ModelDouble]]:
    """The doubles a served Baton works between: alice, who may write, opened issue 7."""
    with GitHubDouble(tmp_path / "github") as github, ModelDouble() as models:
        github.add_installation(INSTALLATION_ID, "octo-org")
        github.add_repository(REPOSITORY, INSTALLATION_ID, WIDGETS_FILES, repository_id=712345678)
        github.add_issue(REPOSITORY, ISSUE, "Add a dial", "Please add a dial.", "alice", ["baton"])
        github.set_permission(REPOSITORY, "alice", "write")
        yield github, models


def baton_environment(
    github: GitHubDouble, models: ModelDouble, database_url: str, data_dir: Path, **more: str
) -> dict[str, str]:
    """A `baton serve` environment between the doubles, with a short job lease, then `more`."""
    toolchains = sorted({sys.prefix, sys.base_prefix})
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "BATON_DATABASE_URL": database_url,
        "BATON_DATA_DIR": str(data_dir),
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
        **more,
    }


@pytest.fixture
def crashable(
    baton_doubles: tuple[GitHubDouble, ModelDouble], database_url: str, tmp_path: Path
) -> Iterator[tuple[Server, GitHubDouble, ModelDouble]]:
    """One `baton serve` between the doubles, restarted warm after each kill."""
    github, models = baton_doubles
    environment = baton_environment(github, models, database_url, tmp_path / "data")
    server = Server(environment, tmp_path, warm_spare=True)
    try:
        yield server, github, models
    finally:
        server.stop()


def say(github: GitHubDouble, hooks: str, text: str) -> None:
    """Alice comments `text` on the issue, and GitHub delivers it."""
    body = copy.deepcopy(payload("issue_comment.created"))
    body["issue"]["number"] = ISSUE
    body["comment"] = {
        **body["comment"],
        **github.add_issue_comment(REPOSITORY, ISSUE, text, user="alice"),
    }
    assert github.send_webhook(hooks, "issue_comment", body).status_code == 202


def label(github: GitHubDouble, hooks: str) -> None:
    """Alice labels the issue, and GitHub delivers it."""
    labelled = payload("issues.labeled")
    labelled["issue"]["number"] = ISSUE
    assert github.send_webhook(hooks, "issues", labelled).status_code == 202


def run_state(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT state FROM runs")).scalar_one_or_none()


def task_state(engine: sa.Engine, key: str) -> str | None:
    with engine.connect() as connection:
        query = sa.text("SELECT state FROM tasks WHERE key = :key")
        return connection.execute(query, {"key": key}).scalar_one_or_none()


def status_comments(github: GitHubDouble) -> list[dict[str, object]]:
    """The run's status comments on the issue (there must be one)."""
    return [
        comment
        for comment in github.issue_comments(REPOSITORY, ISSUE)
        if "<!-- baton:run:" in comment["body"]
    ]


def signed_by(call: RecordedCall) -> str:
    """The key a model call was sent with, whichever header the client put it in."""
    key = call.headers.get("x-api-key") or call.headers.get("authorization", "")
    return key.removeprefix("Bearer ")


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


def freeze_between_transactions(server: Freezable, name: str, engine: sa.Engine) -> None:
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
