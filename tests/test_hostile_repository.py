"""End to end over HTTP: a repository whose AGENTS.md, CONTRIBUTING.md and a context file are
symlinks to Baton's secrets, and a worker that tries every read and connection a hostile issue
could ask for, still ends in a draft pull request, while no secret reaches a model, a comment,
a commit, the pull request or its check run, and no sandbox reaches a service on Baton's host."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.settings import Settings
from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import SECRET, Listener, hostile_setup
from tests.world import ACCEPT, ISSUE, World, plan, submit, task, tool, wait_for_run, who, world_of

MARKER_VARIABLE = "BATON_TEST_ENVIRONMENT_SECRET"


class Secrets:
    """Where the secrets live on Baton's host, and their values."""

    def __init__(self, tmp_path: Path, private_key: str) -> None:
        self.key_folder = Path("/etc") / f"baton-test-{uuid.uuid4().hex[:12]}"
        self.key_folder.mkdir(mode=0o700)
        self.key_file = self.key_folder / "app.pem"
        self.key_file.write_text(private_key)
        self.key_file.chmod(0o600)
        self.environment = f"environment-{uuid.uuid4().hex}"
        self.env_file = tmp_path / "server" / ".env"
        self.env_file.parent.mkdir()
        self.env_file.write_text(f"BATON_WEBHOOK_SECRET={SECRET}\n{MARKER_VARIABLE}=x\n")
        self.private_key_line = private_key.splitlines()[1]

    def values(self, tokens: list[str]) -> dict[str, str]:
        """Each secret by name: what must never show up anywhere."""
        found = {
            "webhook secret": SECRET,
            "private key": self.private_key_line,
            "process environment": self.environment,
        }
        return found | {f"installation token {n}": token for n, token in enumerate(tokens)}

    def remove(self) -> None:
        shutil.rmtree(self.key_folder)


@pytest.fixture
def hostile(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, Secrets, Listener]]:
    listener = Listener()
    monkeypatch.setenv(MARKER_VARIABLE, "")
    secrets: list[Secrets] = []

    def keep_the_key_in_a_file(configured: Settings) -> Settings:
        found = Secrets(tmp_path, configured.private_key_pem())
        secrets.append(found)
        monkeypatch.setenv(MARKER_VARIABLE, found.environment)
        return configured.model_copy(
            update={"github_private_key": None, "github_private_key_path": found.key_file}
        )

    try:
        with world_of(tmp_path, settings, configure=keep_the_key_in_a_file) as world:
            yield world, secrets[0], listener
    finally:
        listener.close()
        for found in secrets:
            found.remove()


def probes(secrets: Secrets, listener: Listener, baton_port: int, data_dir: Path) -> str:
    """A bash command trying every read and connection of the attacks, logging to findings.txt:
    `READ`, `FOUND` or `REACHED` in the log is an attack that worked."""
    reads = [
        secrets.key_file,
        "/etc/shadow",
        secrets.env_file,
        data_dir / "baton.db",
        data_dir.parent / ".env",
    ]
    connections = [listener.port, baton_port, 5432]
    lines = ["exec > findings.txt 2>&1", "id", "cat /proc/1/environ /proc/self/environ"]
    lines += [f"cat '{path}' && echo READ {path}" for path in reads]
    # The mirror is shown read-only (git needs it); nothing else of the data directory.
    lines.append(f"find '{data_dir}' -not -path '*/mirrors/*' -type f | grep . && echo FOUND")
    lines += [
        f"(echo GET /runs HTTP/1.0; echo) > /dev/tcp/127.0.0.1/{port} && echo REACHED {port}"
        for port in connections
    ]
    lines.append("echo probes done")
    return "bash -c " + shlex.quote("\n".join(lines))


PLAN = plan(
    task("T1", [], ["findings.txt"], context_files=["NOTES.md", "src/widgets/__init__.py"]),
)


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def branch_history(github: GitHubDouble) -> str:
    git_dir = github.root / f"{REPOSITORY}.git"
    shown = subprocess.run(
        ["git", "--git-dir", str(git_dir), "log", "-p", "--text", "--all", "--format=%H%n%B"],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout


def committed_file(github: GitHubDouble, sha: str, path: str) -> str:
    git_dir = github.root / f"{REPOSITORY}.git"
    shown = subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"{sha}:{path}"],
        capture_output=True,
        check=True,
    )
    return shown.stdout.decode(errors="replace")


def test_a_hostile_repository_and_worker_get_no_secret_and_reach_nothing(
    hostile: tuple[World, Secrets, Listener], settings: Settings, engine: sa.Engine
) -> None:
    world, secrets, listener = hostile
    baton_port = int(world.url.split(":")[2].split("/")[0])
    config = "setup_command: bash setup.sh\ntest_command: grep 'probes done' findings.txt\n"
    commit_files(
        world.github,
        {".github/baton.yml": config, "setup.sh": hostile_setup(listener.port)},
        symlinks={
            "AGENTS.md": str(secrets.env_file),
            "CONTRIBUTING.md": str(secrets.key_file),
            "NOTES.md": "/proc/self/environ",
        },
    )
    script = probes(secrets, listener, baton_port, settings.data_dir.resolve())

    def answer(call: RecordedCall) -> ModelReply:
        role, _ = who(call)
        if role == "planner":
            return submit(PLAN)
        if role == "reviewer":
            turns = len(call.json["messages"])
            return tool("read_file", path="CONTRIBUTING.md") if turns == 1 else ACCEPT
        steps = [
            tool("read_file", path="AGENTS.md"),
            tool("read_file", path="NOTES.md"),
            tool("search", pattern="BEGIN", path="."),
            tool("run_command", command=script),
            tool("run_tests"),
            tool("finish", summary="Probed.", confidence=0.9),
        ]
        return steps[min(len(call.json["messages"]) // 2, len(steps) - 1)]

    world.models.policy = answer
    world.label()
    wait_for_run(world, engine, "awaiting_approval")
    world.comment("/approve-plan")
    wait_for_run(world, engine, "pr_open")

    secret_values = secrets.values([issued.token for issued in world.github.tokens_issued])
    (pull,) = world.github.pulls(REPOSITORY)
    history = branch_history(world.github)
    places = {
        "model requests": "\n".join(json.dumps(call.json) for call in world.models.calls),
        "issue comments": "\n".join(
            c["body"]
            for number in (ISSUE, pull["number"])
            for c in world.github.issue_comments(REPOSITORY, number)
        ),
        "status comment": world.status(),
        "commits": history,
        "pull request": json.dumps(pull),
        "check runs": json.dumps(world.github.check_runs(REPOSITORY)),
    }
    assert {place: leaks(text, secret_values) for place, text in places.items()} == {
        place: [] for place in places
    }
    assert listener.accepted == []
    # The probes ran and were committed: each read and connection failed inside the sandbox.
    findings = committed_file(world.github, pull["head"]["sha"], "findings.txt")
    assert "probes done" in findings
    assert "uid=0(" not in findings
    for worked in ("READ ", "FOUND", "REACHED "):
        assert worked not in findings
    # The symlinks were shown to the worker as links, never followed.
    worker = next(call for call in world.models.calls if who(call)[0] == "worker")
    assert "symbolic link" in json.dumps(worker.json)
