"""The worker sandbox, with the real bubblewrap: no network, no secrets, limits, hidden files."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.sandbox import (
    SANDBOX_ENVIRONMENT,
    Sandbox,
    SandboxLimits,
    SandboxUnavailable,
    runner,
    sandbox_available,
    view,
)
from bot.sandbox.limits import writable_hierarchies
from tests.sandboxes import PYTHON, make_mirror_and_worktree

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The test interpreter and its packages, shown read-only so commands inside can run Python.


@pytest.fixture
async def listening_port() -> AsyncIterator[int]:
    """A port a server listens on, on the host's loopback."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def python(code: str) -> str:
    return f"{PYTHON} -c {shlex.quote(code)}"


def processes_matching(marker: str) -> list[str]:
    """Command lines of live processes that contain `marker` (what `pgrep -af` shows)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command_line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # not a process, or it ended while we looked
        if marker in command_line:
            found.append(command_line)
    return found


async def sleeper_started(marker: str) -> bool:
    """Whether a `sleep {marker}` process appears, looking for a while."""
    for _ in range(200):
        if f"sleep {marker} " in processes_matching(marker):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_the_network_is_off_unless_asked(sandbox: Sandbox, listening_port: int) -> None:
    connect = python(f"import socket; socket.create_connection(('127.0.0.1', {listening_port}))")

    offline = await sandbox.run(f"{connect} && echo connected; cat /proc/net/route")
    online = await sandbox.run("cat /proc/net/route", network=True)

    assert offline.exit_code == 0
    assert "connected" not in offline.output
    assert "ConnectionRefusedError" in offline.output
    assert "tap0" not in offline.output  # no route at all: only the loopback exists
    assert "tap0" in online.output  # its own network, never the host's (see the attack tests)


async def test_the_environment_holds_no_secret(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "BATON_WEBHOOK_SECRET": "webhook-secret-value",
        "BATON_GITHUB_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----pem-value",
        "ANTHROPIC_API_KEY": "sk-ant-secret-value",
        "OPENAI_API_KEY": "sk-openai-secret-value",
        "GITHUB_TOKEN": "ghs_secret-value",
        "GIT_CONFIG_GLOBAL": "/secret/gitconfig",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    result = await sandbox.run("env")

    assert result.exit_code == 0
    for name, value in secrets.items():
        assert name not in result.output
        assert value not in result.output
    names = {line.split("=", 1)[0] for line in result.output.splitlines()}
    assert names <= {*SANDBOX_ENVIRONMENT, "PWD"}  # the shell sets PWD itself
    assert "HOME=/tmp/home" in result.output.splitlines()


async def test_the_home_directory_is_writable(sandbox: Sandbox) -> None:
    result = await sandbox.run('echo cached > "$HOME/.cache" && cat "$HOME/.cache"')

    assert (result.exit_code, result.output) == (0, "cached\n")


async def test_a_command_past_its_limit_is_killed_with_its_children(sandbox: Sandbox) -> None:
    marker = f"1000.{uuid.uuid4().int % 10**9}"

    # The children let go of the output pipe, so its end says nothing about whether they live.
    sleeper = f"sleep {marker} >/dev/null 2>&1"
    result = await sandbox.run(f"{sleeper} & {sleeper}; wait", wall_seconds=1)

    assert result.timed_out
    assert result.exit_code is None
    assert processes_matching(marker) == []


async def test_a_cancelled_run_kills_its_command(sandbox: Sandbox) -> None:
    marker = f"1000.{uuid.uuid4().int % 10**9}"
    run = asyncio.create_task(sandbox.run(f"sleep {marker} & sleep {marker}; wait"))
    assert await sleeper_started(marker)

    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run

    assert processes_matching(marker) == []


async def test_a_command_within_its_limit_reports_its_exit_code(sandbox: Sandbox) -> None:
    result = await sandbox.run("echo out; echo err >&2; exit 3")

    assert result.exit_code == 3
    assert not result.timed_out
    assert result.output == "out\nerr\n"
    assert not result.output_truncated


async def test_background_processes_end_with_the_command(sandbox: Sandbox) -> None:
    marker = f"1000.{uuid.uuid4().int % 10**9}"

    result = await sandbox.run(f"sleep {marker} & echo started")

    assert (result.exit_code, result.output) == (0, "started\n")
    assert processes_matching(marker) == []


async def test_ten_megabytes_of_output_keep_only_head_and_tail(worktree: Path) -> None:
    sandbox = Sandbox(worktree, limits=SandboxLimits(output_chars=1000))

    result = await sandbox.run(r"head -c 10000000 /dev/zero | tr '\0' x")

    assert result.exit_code == 0
    assert result.output_truncated
    assert result.output == "x" * 500 + "\n[... 9999000 characters cut ...]\n" + "x" * 500


async def test_the_head_is_the_beginning_and_the_tail_is_the_end(worktree: Path) -> None:
    sandbox = Sandbox(worktree, limits=SandboxLimits(output_chars=100))

    result = await sandbox.run("seq 1 100000")

    assert result.output.startswith("1\n2\n3\n")
    assert result.output.endswith("99999\n100000\n")
    assert "\n[... 588795 characters cut ...]\n" in result.output


async def test_output_within_the_limit_is_whole(worktree: Path) -> None:
    sandbox = Sandbox(worktree, limits=SandboxLimits(output_chars=10))

    result = await sandbox.run("printf 0123456789")

    assert (result.output, result.output_truncated) == ("0123456789", False)


async def test_the_worktree_is_writable_and_the_system_is_not(
    sandbox: Sandbox, worktree: Path
) -> None:
    result = await sandbox.run("echo written > note.txt; touch /usr/x; echo $?; touch /x; echo $?")

    assert (worktree / "note.txt").read_text() == "written\n"
    assert result.output.splitlines()[1::2] == ["1", "1"]
    assert "Read-only file system" in result.output


async def test_the_worktrees_git_file_is_read_only(sandbox: Sandbox, worktree: Path) -> None:
    git_file = worktree / ".git"
    git_file.write_text("gitdir: /elsewhere\n")

    result = await sandbox.run("echo 'gitdir: /tmp/evil' > .git; rm -f .git; cat .git")

    assert result.output.endswith("gitdir: /elsewhere\n")
    assert git_file.read_text() == "gitdir: /elsewhere\n"


async def test_tmp_is_private(sandbox: Sandbox) -> None:
    name = f"baton-sandbox-{uuid.uuid4().hex}"

    result = await sandbox.run(f"echo inside > /tmp/{name} && cat /tmp/{name}")

    assert result.output == "inside\n"
    assert not (Path("/tmp") / name).exists()


async def test_the_data_directory_beside_the_worktree_is_hidden(
    sandbox: Sandbox, data_dir: Path
) -> None:
    mirror = data_dir / "mirrors" / "octo" / "app.git"
    mirror.mkdir(parents=True)
    (mirror / "config").write_text("mirror-config-contents\n")
    sibling = data_dir / "worktrees" / "run-1" / "T2"
    sibling.mkdir(parents=True)
    (sibling / "work.txt").write_text("another task's work\n")

    result = await sandbox.run(f"cat {mirror}/config; cat {sibling}/work.txt; ls {data_dir}")

    assert "mirror-config-contents" not in result.output
    assert "another task's work" not in result.output
    # Not even the data directory's path exists: the worktree is shown at /workspace.
    assert result.output.count("No such file or directory") == 3
    assert "mirrors" not in result.output.splitlines()


async def test_the_worktree_is_shown_at_one_path_whatever_its_place_on_the_host(
    sandbox: Sandbox,
) -> None:
    (sandbox.worktree / "made-on-the-host.txt").write_text("here\n")

    result = await sandbox.run("pwd; cat made-on-the-host.txt; echo made > made-inside.txt")

    assert result.output == "/workspace\nhere\n"
    assert (sandbox.worktree / "made-inside.txt").read_text() == "made\n"


async def test_host_files_outside_the_listed_paths_are_hidden(worktree: Path) -> None:
    sandbox = Sandbox(worktree)

    result = await sandbox.run(f"cat {PROJECT_ROOT / 'pyproject.toml'}")

    assert result.exit_code != 0
    assert "No such file or directory" in result.output


@pytest.mark.parametrize(
    ("show_mirror", "expected"),
    [(True, "?? new.txt"), (False, "not a git repository")],
    ids=["mirror-read-only", "mirror-hidden"],
)
async def test_git_reads_the_worktree_only_when_its_mirror_is_shown(
    tmp_path: Path, show_mirror: bool, expected: str
) -> None:
    mirror, worktree = make_mirror_and_worktree(tmp_path / "data")
    (worktree / "new.txt").write_text("new\n")
    sandbox = Sandbox(worktree, extra_read_only=[mirror] if show_mirror else [])

    result = await sandbox.run("git status --short 2>&1")

    assert expected in result.output


async def test_a_python_projects_tests_run_inside(sandbox: Sandbox, worktree: Path) -> None:
    (worktree / "test_tiny.py").write_text("def test_adds():\n    assert 1 + 1 == 2\n")

    result = await sandbox.run(f"{PYTHON} -m pytest -q -p no:cacheprovider test_tiny.py")

    assert result.exit_code == 0, result.output
    assert "1 passed" in result.output


async def test_without_bwrap_nothing_runs(
    worktree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    sandbox = Sandbox(worktree)

    with pytest.raises(SandboxUnavailable, match=r"bubblewrap \(bwrap\) is not on PATH"):
        await sandbox.run("touch ran")

    assert not (worktree / "ran").exists()
    assert sandbox_available() is not None


@pytest.fixture
def reachable_folder() -> Iterator[Path]:
    """A folder the sandbox's own user may enter and write (pytest's are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="baton-sandbox-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


async def test_a_bwrap_that_cannot_sandbox_is_never_given_the_command(
    worktree: Path, reachable_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = reachable_folder / "fake-bin"
    fake.mkdir()
    fake.chmod(0o755)
    calls = reachable_folder / "calls.txt"
    calls.touch(mode=0o666)
    calls.chmod(0o666)
    (fake / "bwrap").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        'echo "bwrap: No permissions to create new namespace" >&2\nexit 1\n'
    )
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))

    with pytest.raises(SandboxUnavailable, match="No permissions to create new namespace"):
        await Sandbox(worktree).run("touch ran-marker")

    assert "--unshare-all" in calls.read_text()  # the probe ran, and the command never did
    assert "ran-marker" not in calls.read_text()
    assert not (worktree / "ran-marker").exists()


async def test_a_bwrap_that_never_reports_its_sandbox_is_killed_in_time(
    worktree: Path, reachable_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"1000.{uuid.uuid4().int % 10**9}"
    fake = reachable_folder / "fake-bin"
    fake.mkdir()
    fake.chmod(0o755)
    # Passes the probe, then hangs where a sandbox's report was due.
    (fake / "bwrap").write_text(
        f'#!/bin/sh\ncase "$*" in *--info-fd*) exec sleep {marker} ;; esac\nexit 0\n'
    )
    (fake / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    monkeypatch.setattr(runner, "_SETUP_SECONDS", 1.0)

    with pytest.raises(SandboxUnavailable, match="did not start the sandbox within 1 s"):
        await asyncio.wait_for(Sandbox(worktree).run("touch ran"), 30)

    assert processes_matching(marker) == []
    assert not (worktree / "ran").exists()


def baton_cgroups() -> list[Path]:
    """This process's command cgroups that still exist."""
    return [
        folder
        for hierarchy in writable_hierarchies() or ()
        for folder in hierarchy.directory.glob(f"baton-sandbox-{os.getpid()}-*")
    ]


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


async def test_a_view_that_cannot_be_built_leaves_no_cgroup_and_no_descriptor(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    if writable_hierarchies() is None:
        pytest.skip("no cgroup can be made for commands here")
    await sandbox.run("true")  # the probe and the worker threads are in place from now on
    before = open_descriptors()

    def failing(tmp_bytes: int) -> list[str]:
        raise OSError(errno.EMFILE, "Too many open files")

    # Past the pipes holding /etc's files, after the cgroup was made.
    monkeypatch.setattr(view, "private_mounts", failing)
    with pytest.raises(OSError, match="Too many open files"):
        await sandbox.run("touch ran")

    assert baton_cgroups() == []
    assert open_descriptors() == before


async def test_the_result_is_json_for_the_model(sandbox: Sandbox) -> None:
    result = await sandbox.run("echo hi")

    assert json.loads(result.as_json()) == {
        "command": "echo hi",
        "exit_code": 0,
        "timed_out": False,
        "output": "hi\n",
        "output_truncated": False,
        "seconds": result.seconds,
        "limit": None,
    }


def test_the_sandbox_is_usable_here() -> None:
    assert sandbox_available() is None


@pytest.mark.parametrize(
    ("worktree", "extra", "problem"),
    [
        (Path("/usr/lib"), (), "must lie outside"),
        (Path("/"), (), "must lie outside"),
        (Path("/no/such/worktree"), (), "is not a directory"),
        (Path("/tmp"), (Path("/no/such/toolchain"),), "does not exist"),
    ],
    ids=["system-directory", "root", "missing-worktree", "missing-read-only-path"],
)
def test_unusable_paths_are_refused(worktree: Path, extra: tuple[Path, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Sandbox(worktree, extra_read_only=extra)
