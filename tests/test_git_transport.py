"""Baton's git transport against a loopback git server that takes tokens like GitHub does."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.git import GitError, GitRunner, GitTimeout, Identity, Mirror, Mirrors, PushRejected
from bot.git.auth import basic_credentials, secret_forms
from bot.git.worktree import Worktree
from tests.doubles.git_http import GitHttpBackend, init_bare_repository
from tests.support import git, serve

REPO = "octo-org/widgets"
# Long and unusual on purpose: nothing may assume a token's length or alphabet.
TOKEN = "ghs_" + "A1b2_C3-d4.E5" * 24 + "_end-."
WRONG_TOKEN = "ghs_wrong-token_" + "x.y-z_" * 20
BRANCH = "baton/issue-7"
FILES = {"README.md": "# Widgets\n", "src/app.py": "def main():\n    return 1\n"}
NETWORK_COMMANDS = {"clone", "fetch", "push", "ls-remote"}


@dataclass
class GitServer:
    url: str
    backend: GitHttpBackend
    bare: Path
    initial: str


async def token() -> str:
    return TOKEN


async def wrong_token() -> str:
    return WRONG_TOKEN


def trailers(message: str) -> list[str]:
    """The trailers git itself finds in a commit message."""
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        capture_output=True,
        text=True,
        check=True,
    )
    return parsed.stdout.splitlines()


def push_by_hand(server: GitServer, scratch: Path, branch: str, files: dict[str, str]) -> str:
    """A maintainer's own commit on `branch` (from main when it does not exist), pushed directly."""
    work = scratch / f"maintainer-{uuid.uuid4().hex[:8]}"
    git("clone", "--quiet", str(server.bare), str(work), cwd=scratch)
    remote_branches = git("branch", "--remotes", cwd=work)
    start = f"origin/{branch}" if f"origin/{branch}" in remote_branches.split() else "origin/main"
    git("checkout", "--quiet", "-B", "work", start, cwd=work)
    for name, content in files.items():
        (work / name).write_text(content)
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "A maintainer's change", cwd=work)
    git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitServer]:
    root = tmp_path / "github"
    bare = root / f"{REPO}.git"
    initial = init_bare_repository(bare, FILES)
    backend = GitHttpBackend(root, lambda full_name, given: full_name == REPO and given == TOKEN)
    with serve(backend) as url:
        yield GitServer(url, backend, bare, initial)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return (tmp_path / "data").resolve()


@pytest.fixture
def mirrors(server: GitServer, data_dir: Path) -> Mirrors:
    return Mirrors(data_dir, server.url)


@pytest.fixture
def mirror(mirrors: Mirrors) -> Mirror:
    return mirrors.mirror(REPO, token)


async def commit_files(worktree: Worktree, files: dict[str, str], title: str) -> str:
    for name, content in files.items():
        (worktree.path / name).parent.mkdir(parents=True, exist_ok=True)
        (worktree.path / name).write_text(content)
    commit = await worktree.commit(title)
    assert commit is not None
    return commit.sha


# (a) one mirror per repository: cloned once, fetched afterwards


async def test_mirror_is_cloned_once_then_fetched(
    mirror: Mirror, server: GitServer, tmp_path: Path, data_dir: Path
) -> None:
    assert await mirror.update() == "cloned"
    assert mirror.path == data_dir / "mirrors" / "octo-org" / "widgets.git"
    marker = mirror.path / "kept-across-updates"
    marker.write_text("a clone would not have this file")
    inode = mirror.path.stat().st_ino
    newer = push_by_hand(server, tmp_path, "main", {"NEWS.md": "news\n"})

    assert await mirror.update() == "fetched"

    assert marker.exists()
    assert mirror.path.stat().st_ino == inode
    assert await mirror.branch_head("main") == newer
    assert {request.service for request in server.backend.requests} == {"git-upload-pack"}


async def test_concurrent_first_updates_clone_once(mirrors: Mirrors) -> None:
    first, second = mirrors.mirror(REPO, token), mirrors.mirror(REPO, token)
    updates = await asyncio.gather(first.update(), second.update())
    assert sorted(updates) == ["cloned", "fetched"]


async def test_clone_cut_short_by_a_crash_is_discarded(mirror: Mirror, server: GitServer) -> None:
    leftover = mirror.path.with_name(f".{mirror.path.name}.partial-crashed")
    (leftover / "objects").mkdir(parents=True)
    (leftover / "HEAD").write_text("half a clone")

    assert await mirror.update() == "cloned"

    assert not leftover.exists()
    assert await mirror.branch_head("main") == server.initial


async def test_branches_deleted_on_github_leave_the_mirror(
    mirror: Mirror, server: GitServer, tmp_path: Path
) -> None:
    push_by_hand(server, tmp_path, "short-lived", {"x.txt": "x\n"})
    await mirror.update()
    assert await mirror.branch_head("short-lived") is not None
    git("branch", "-D", "short-lived", cwd=server.bare)

    await mirror.update()

    assert await mirror.branch_head("short-lived") is None


# (b) a worktree per task; two used at once do not interfere


async def test_two_worktrees_used_at_once_see_only_their_own_files(
    mirror: Mirror, server: GitServer, data_dir: Path
) -> None:
    await mirror.update()
    one, two = await asyncio.gather(
        mirror.add_worktree("run-1", "T1", "main"), mirror.add_worktree("run-1", "T2", "main")
    )
    assert one.path == data_dir / "worktrees" / "run-1" / "T1"

    first, second = await asyncio.gather(
        commit_files(one, {"one.txt": "1\n"}, "Add one"),
        commit_files(two, {"two.txt": "2\n2\n"}, "Add two"),
    )

    assert (one.path / "one.txt").exists()
    assert not (one.path / "two.txt").exists()
    assert (two.path / "two.txt").exists()
    assert not (two.path / "one.txt").exists()
    assert git("rev-parse", f"{first}^", cwd=mirror.path) == server.initial
    assert git("rev-parse", f"{second}^", cwd=mirror.path) == server.initial
    assert git("show", "--format=", "--name-only", second, cwd=mirror.path) == "two.txt"

    await asyncio.gather(one.remove(), two.remove())
    assert not one.path.exists()
    assert not two.path.exists()
    listed = git("worktree", "list", "--porcelain", cwd=mirror.path)
    assert [line for line in listed.splitlines() if line.startswith("worktree ")] == [
        f"worktree {mirror.path}"
    ]


async def test_commit_has_bot_identity_message_trailers_and_diff_stat(mirror: Mirror) -> None:
    await mirror.update()
    worktree = await mirror.add_worktree("run-42", "T3", "main")
    (worktree.path / "README.md").write_text("# Widgets\n\nNow documented.\n")
    (worktree.path / "src" / "app.py").unlink()
    (worktree.path / "logo.bin").write_bytes(b"\x00\x01\x02")

    commit = await worktree.commit(" Document   widgets\n", body="# Why\nUsers asked.")

    assert commit is not None
    assert (commit.stat.files_changed, commit.stat.insertions, commit.stat.deletions) == (3, 2, 2)
    assert commit.sha == await worktree.head()
    log = git("log", "-1", "--format=%an <%ae>%n%cn <%ce>%n%B", commit.sha, cwd=mirror.path)
    assert log.splitlines() == [
        "baton-bot[bot] <baton-bot[bot]@users.noreply.github.com>",
        "baton-bot[bot] <baton-bot[bot]@users.noreply.github.com>",
        "T3: Document widgets",
        "",
        "# Why",
        "Users asked.",
        "",
        "Baton-Run: run-42",
        "Baton-Task: T3",
    ]


async def test_a_task_commit_outlives_git_gc_until_it_is_unpinned(mirror: Mirror) -> None:
    await mirror.update()
    worktree = await mirror.add_worktree("run-1", "T1", "main")
    sha = await commit_files(worktree, {"a.txt": "a\n"}, "Add a")
    await worktree.remove()

    def gc_then_has_commit() -> bool:
        # Expire and prune at once: what gc would do to an unreferenced commit weeks later.
        git("reflog", "expire", "--expire=now", "--all", cwd=mirror.path)
        git("gc", "--quiet", "--prune=now", cwd=mirror.path)
        kind = subprocess.run(
            ["git", "cat-file", "-t", sha], cwd=mirror.path, capture_output=True, text=True
        )
        return kind.stdout.strip() == "commit"

    assert git("rev-parse", "refs/baton/run-1/T1", cwd=mirror.path) == sha
    assert gc_then_has_commit()
    await mirror.unpin("run-1", "T1")
    await mirror.unpin("run-1", "T1")  # again, as after a crash: harmless
    assert not gc_then_has_commit()


async def test_a_run_that_ends_lets_go_of_every_pin_it_has_and_only_its_own(
    mirror: Mirror,
) -> None:
    await mirror.update()
    for run_id, task_id in [("run-1", "T1"), ("run-1", "T2"), ("run-2", "T1")]:
        worktree = await mirror.add_worktree(run_id, task_id, "main")
        await commit_files(worktree, {f"{task_id}.txt": run_id}, f"Add {task_id}")
        await worktree.remove()

    await mirror.unpin("run-1")
    await mirror.unpin("run-1")  # nothing left: harmless

    pins = git("for-each-ref", "--format=%(refname)", "refs/baton", cwd=mirror.path)
    assert pins.split() == ["refs/baton/run-2/T1"]


async def test_commit_with_a_given_identity(mirror: Mirror) -> None:
    await mirror.update()
    worktree = await mirror.add_worktree("run-1", "T1", "main")
    (worktree.path / "a.txt").write_text("a\n")
    identity = Identity.for_github_app("baton-dev", 123456)

    commit = await worktree.commit("Add a", identity=identity)

    assert commit is not None
    author = git("log", "-1", "--format=%an <%ae>|%cn", commit.sha, cwd=mirror.path)
    assert author == (
        "baton-dev[bot] <123456+baton-dev[bot]@users.noreply.github.com>|baton-dev[bot]"
    )


async def test_a_task_with_no_change_makes_no_commit(mirror: Mirror, server: GitServer) -> None:
    await mirror.update()
    worktree = await mirror.add_worktree("run-1", "T4", "main")
    (worktree.path / "scratch.log").write_text("ignored\n")
    (worktree.path / ".gitignore").write_text("*.log\n")
    (worktree.path / ".gitignore").unlink()
    (worktree.path / "scratch.log").unlink()

    assert await worktree.commit("Analyse only") is None
    assert await worktree.head() == server.initial


async def test_worktree_left_by_a_crash_is_replaced(mirror: Mirror, server: GitServer) -> None:
    await mirror.update()
    crashed = await mirror.add_worktree("run-1", "T1", "main")
    (crashed.path / "half-done.txt").write_text("from the attempt that died\n")

    again = await mirror.add_worktree("run-1", "T1", "main")

    assert again.path == crashed.path
    assert not (again.path / "half-done.txt").exists()
    assert await again.head() == server.initial


@pytest.mark.parametrize(
    ("run_id", "task_id"),
    [("../escape", "T1"), ("run-1", "a/b"), ("", "T1"), ("run-1", ".git"), ("run-1", "-x")],
    ids=["dot-dot", "slash", "empty", "leading-dot", "leading-dash"],
)
async def test_unsafe_ids_are_refused(
    mirror: Mirror, data_dir: Path, run_id: str, task_id: str
) -> None:
    await mirror.update()
    with pytest.raises(ValueError, match="not safe in a path"):
        await mirror.add_worktree(run_id, task_id, "main")
    assert not (data_dir / "worktrees").exists()


async def test_unknown_start_names_what_to_do(mirror: Mirror) -> None:
    await mirror.update()
    with pytest.raises(GitError, match="names no commit in the mirror of octo-org/widgets"):
        await mirror.add_worktree("run-1", "T1", "no-such-branch")


# (c) pushes with a lease


async def test_push_creates_the_run_branch_with_both_trailers(
    mirror: Mirror, server: GitServer
) -> None:
    await mirror.update()
    worktree = await mirror.add_worktree("run-9", "T1", "main")
    sha = await commit_files(worktree, {"feature.py": "x = 2\n"}, "Add the feature")

    await mirror.push(BRANCH, sha, None)

    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=server.bare) == sha
    message = git("log", "-1", "--format=%B", sha, cwd=server.bare)
    assert trailers(message) == ["Baton-Run: run-9", "Baton-Task: T1"]
    assert await mirror.branch_head(BRANCH) == sha
    assert "git-receive-pack" in {request.service for request in server.backend.requests}


async def test_push_with_a_stale_lease_keeps_the_maintainers_commit(
    mirror: Mirror, server: GitServer, tmp_path: Path
) -> None:
    await mirror.update()
    first_task = await mirror.add_worktree("run-9", "T1", "main")
    first = await commit_files(first_task, {"one.py": "1\n"}, "First")
    await mirror.push(BRANCH, first, None)
    theirs = push_by_hand(server, tmp_path, BRANCH, {"theirs.py": "mine\n"})
    second_task = await mirror.add_worktree("run-9", "T2", first)
    second = await commit_files(second_task, {"two.py": "2\n"}, "Second")

    with pytest.raises(PushRejected, match="the branch moved") as rejected:
        await mirror.push(BRANCH, second, first)
    with pytest.raises(PushRejected, match="expected to create it"):
        await mirror.push(BRANCH, second, None)

    assert rejected.value.branch == BRANCH
    assert rejected.value.reason == "stale info"
    assert theirs[:12] in str(rejected.value)
    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=server.bare) == theirs

    # Building on their head is the way forward.
    await mirror.update()
    third_task = await mirror.add_worktree("run-9", "T3", BRANCH)
    third = await commit_files(third_task, {"three.py": "3\n"}, "Third")
    await mirror.push(BRANCH, third, theirs)
    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=server.bare) == third


async def test_push_that_would_drop_commits_is_refused(mirror: Mirror, server: GitServer) -> None:
    await mirror.update()
    ours = await commit_files(await mirror.add_worktree("r", "T1", "main"), {"a": "a\n"}, "A")
    await mirror.push(BRANCH, ours, None)
    sibling = await commit_files(await mirror.add_worktree("r", "T2", "main"), {"b": "b\n"}, "B")

    with pytest.raises(PushRejected, match="does not descend from"):
        await mirror.push(BRANCH, sibling, ours)

    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=server.bare) == ours


async def test_push_repeated_after_a_crash_is_harmless(mirror: Mirror, server: GitServer) -> None:
    await mirror.update()
    sha = await commit_files(await mirror.add_worktree("r", "T1", "main"), {"a": "a\n"}, "A")
    await mirror.push(BRANCH, sha, None)

    await mirror.push(BRANCH, sha, None)

    assert git("rev-parse", f"refs/heads/{BRANCH}", cwd=server.bare) == sha


@pytest.mark.parametrize("branch", ["", "bad..name", "-option", "with space", "end.lock"])
async def test_invalid_branch_names_are_refused(mirror: Mirror, branch: str) -> None:
    await mirror.update()
    with pytest.raises(ValueError, match="not a valid git branch name"):
        await mirror.push(branch, "0" * 40, None)


# (d) the token goes nowhere but the environment of the git process that needs it


@dataclass
class Spawned:
    argv: tuple[str, ...]
    environment: dict[str, str]


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Spawned]:
    """Every process started through asyncio, recorded; git also traces the processes it starts."""
    recorded: list[Spawned] = []
    original = asyncio.create_subprocess_exec
    trace = tmp_path / "git-trace.log"

    async def record(program: str, *args: str, **options: Any) -> asyncio.subprocess.Process:
        environment = dict(options.get("env") or {})
        recorded.append(Spawned((program, *args), environment))
        options["env"] = {**environment, "GIT_TRACE": str(trace)}
        return await original(program, *args, **options)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", record)
    monkeypatch.setenv("BATON_WEBHOOK_SECRET", "baton-secret-that-git-must-not-see")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-key-that-git-must-not-see")
    return recorded


def leaks(text: str | bytes) -> list[str]:
    """Which forms of the tokens appear in `text`."""
    forms = [*secret_forms(TOKEN), *secret_forms(WRONG_TOKEN)]
    if isinstance(text, bytes):
        return [form for form in forms if form.encode() in text]
    return [form for form in forms if form in text]


def files_with_leaks(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and leaks(path.read_bytes())]


async def test_token_reaches_git_only_through_its_environment(
    mirrors: Mirrors,
    server: GitServer,
    data_dir: Path,
    tmp_path: Path,
    spawned: list[Spawned],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    mirror = mirrors.mirror(REPO, token)
    errors: list[GitError] = []

    await mirror.update()
    worktree = await mirror.add_worktree("run-5", "T1", "main")
    sha = await commit_files(worktree, {"secret-free.txt": "x\n"}, "Change")
    await mirror.push(BRANCH, sha, None)
    push_by_hand(server, tmp_path, BRANCH, {"theirs.txt": "y\n"})
    following = await mirror.add_worktree("run-5", "T2", sha)
    newer = await commit_files(following, {"more.txt": "z\n"}, "More")
    with pytest.raises(PushRejected) as rejected:
        await mirror.push(BRANCH, newer, sha)
    errors.append(rejected.value)
    with pytest.raises(GitError, match="refused the installation token") as refused:
        await mirrors.mirror(REPO, wrong_token).update()
    errors.append(refused.value)

    git_processes = [process for process in spawned if process.argv[1] != "http-backend"]
    assert {process.argv[1] for process in git_processes} >= NETWORK_COMMANDS | {"commit"}
    for process in spawned:
        assert leaks(" ".join(process.argv)) == []
    for process in git_processes:
        carries_token = "GIT_CONFIG_VALUE_0" in process.environment
        assert carries_token == (process.argv[1] in NETWORK_COMMANDS)
        assert process.environment["GIT_CONFIG_NOSYSTEM"] == "1"
        assert process.environment["GIT_TERMINAL_PROMPT"] == "0"
        assert not [name for name in process.environment if name.startswith("BATON_")]
        assert "ANTHROPIC_API_KEY" not in process.environment
    # Git's own children (remote-http, index-pack, …), as git traced them.
    traced = (tmp_path / "git-trace.log").read_text()
    assert "run_command: git remote-http origin" in traced
    assert leaks(traced) == []
    assert files_with_leaks(data_dir) == []
    for record in caplog.records:
        assert leaks(record.getMessage() + repr(vars(record))) == []
    for error in errors:
        assert leaks(f"{error} {error.command} {error.stderr}") == []


async def test_secrets_in_git_error_output_are_scrubbed(tmp_path: Path) -> None:
    repository = tmp_path / "scratch.git"
    init_bare_repository(repository, {})
    runner = GitRunner()
    for echoed in secret_forms(TOKEN):
        # `git mktree` repeats a malformed input line in its error: a real echo of the secret.
        with pytest.raises(GitError, match="input format error") as failed:
            await runner.run(
                ["mktree"],
                cwd=repository,
                stdin=f"{echoed}\n".encode(),
                secrets=secret_forms(TOKEN),
            )
        assert "[redacted]" in str(failed.value)
        assert leaks(f"{failed.value} {failed.value.stderr}") == []
    assert basic_credentials(TOKEN) in secret_forms(TOKEN)


async def test_git_that_hangs_is_stopped_and_leaves_no_partial_clone(data_dir: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        mirrors = Mirrors(data_dir, url, runner=GitRunner(timeout_seconds=1.0))
        mirror = mirrors.mirror(REPO, token)
        with pytest.raises(GitTimeout, match="took longer than 1 s") as stopped:
            await mirror.update()
    finally:
        silent.close()
    assert leaks(str(stopped.value)) == []
    assert list(mirror.path.parent.iterdir()) == []
