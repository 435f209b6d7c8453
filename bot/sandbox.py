"""Running a repository's commands under bubblewrap, for the worker tools (CONTRACT §6).

Each command runs in a fresh sandbox that shows it only: the system directories read-only
(`/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`), the paths the caller lists as `extra_read_only`, the
worktree read-write at its own path (its `.git` read-only), and a private `/tmp`, `/dev` and
`/proc`. Everything else on the host, the data directory with its mirrors and the other worktrees
included, is absent. Nothing outside the worktree survives from one command to the next.

The network is off unless a run asks for it; the environment is `SANDBOX_ENVIRONMENT` and nothing
else, so no setting or secret of Baton's reaches a command. A wall-clock limit ends the whole
process tree. Without a working bubblewrap nothing runs: `SandboxUnavailable` says why.

Git inside the sandbox reads the repository only when the caller lists the worktree's mirror in
`extra_read_only`; otherwise `git` there fails with "not a git repository".
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

BWRAP = "bwrap"
SANDBOX_HOME = "/tmp/home"
# The whole environment of a sandboxed command: nothing is inherited, so no secret can leak in.
SANDBOX_ENVIRONMENT: Mapping[str, str] = MappingProxyType(
    {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": SANDBOX_HOME,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "CI": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
)
# Shown read-only to every command; a symlink (merged /usr) is recreated as the same symlink.
SYSTEM_DIRECTORIES = tuple(
    Path(name) for name in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
)
_READ_CHUNK_BYTES = 64 * 1024
_PROBE_SECONDS = 30.0
# bwrap exits as soon as the sandbox's first process is gone; this only bounds a stuck bwrap.
_EXIT_GRACE_SECONDS = 10.0


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox here; no command was run."""


@dataclass(frozen=True)
class SandboxLimits:
    """`wall_seconds` per command; `output_chars` of output shown, split between head and tail."""

    wall_seconds: float = 600.0
    output_chars: int = 20_000

    def __post_init__(self) -> None:
        if self.wall_seconds <= 0:
            raise ValueError(f"wall_seconds must be positive, got {self.wall_seconds}")
        if self.output_chars < 1:
            raise ValueError(f"output_chars must be at least 1, got {self.output_chars}")


@dataclass(frozen=True)
class CommandResult:
    """How a command ended. `exit_code` is None when it was stopped at its limit (`timed_out`).

    `output` is stdout and stderr as they interleaved; when longer than the limit it keeps the
    head and the tail around a marker naming how many characters were cut (`output_truncated`).
    """

    command: str
    exit_code: int | None
    timed_out: bool
    output: str
    output_truncated: bool
    seconds: float

    def as_json(self) -> str:
        """The result as a JSON object with these fields, for the model."""
        return json.dumps(asdict(self), ensure_ascii=False)


class Sandbox:
    """Runs shell commands in `worktree`, each in a fresh bubblewrap sandbox (see the module).

    `extra_read_only` paths (an interpreter, a toolchain, the worktree's mirror) are shown
    read-only at their own resolved paths. Raises ValueError for a worktree that is not a
    directory or lies inside a system directory, and for an extra path that does not exist.
    """

    def __init__(
        self,
        worktree: Path,
        *,
        limits: SandboxLimits = SandboxLimits(),
        extra_read_only: Sequence[Path] = (),
    ) -> None:
        self.worktree = _checked_worktree(worktree)
        self.limits = limits
        self.extra_read_only = tuple(_existing(path) for path in extra_read_only)
        self._checked_bwrap: str | None = None

    async def run(
        self, command: str, *, network: bool = False, wall_seconds: float | None = None
    ) -> CommandResult:
        """Run `command` with `/bin/sh -c` in the worktree and wait for it, within the limit.

        Past the limit every process of the command is killed before this returns. `network`
        shares the host's network (for a setup command). Raises SandboxUnavailable, having run
        nothing, when bubblewrap is missing or unusable.
        """
        limit = self.limits.wall_seconds if wall_seconds is None else wall_seconds
        if limit <= 0:
            raise ValueError(f"wall_seconds must be positive, got {limit}")
        bwrap = await self._bwrap()
        started = time.monotonic()
        output = _HeadAndTail(self.limits.output_chars)
        sandboxed = await _Sandboxed.start(bwrap, self._arguments(network), command, output)
        try:
            finished = await sandboxed.wait(limit)
        finally:
            await sandboxed.stop()
        return CommandResult(
            command=command,
            exit_code=sandboxed.exit_code if finished else None,
            timed_out=not finished,
            output=output.text(),
            output_truncated=output.cut > 0,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _bwrap(self) -> str:
        """The bwrap to run, once it has been seen to start a sandbox on this machine."""
        bwrap = _locate_bwrap()
        if bwrap is None:
            raise SandboxUnavailable(_MISSING)
        if bwrap != self._checked_bwrap:
            problem = await asyncio.to_thread(_probe, bwrap)
            if problem is not None:
                raise SandboxUnavailable(problem)
            self._checked_bwrap = bwrap
        return bwrap

    def _arguments(self, network: bool) -> list[str]:
        worktree = str(self.worktree)
        return [
            *_isolation(network),
            *_system_mounts(),
            *(_resolver_mount() if network else []),
            *_read_only(self.extra_read_only),
            *["--bind", worktree, worktree],
            # Baton's own git follows this file on the host; a command must not redirect it.
            *_read_only(_git_entry(self.worktree)),
            *["--remount-ro", "/", "--chdir", worktree],
        ]


def sandbox_available() -> str | None:
    """None when bubblewrap can start a sandbox here, else why not and what to do."""
    bwrap = _locate_bwrap()
    return _MISSING if bwrap is None else _probe(bwrap)


_MISSING = (
    f"bubblewrap ({BWRAP}) is not on PATH: install it (apt-get install bubblewrap); "
    "Baton runs repository commands only inside its sandbox"
)


def _locate_bwrap() -> str | None:
    return shutil.which(BWRAP)


def _probe(bwrap: str) -> str | None:
    argv = [bwrap, *_isolation(False), *_system_mounts(), "--remount-ro", "/", "/bin/sh", "-c", ":"]
    try:
        probe = subprocess.run(
            argv,
            env=dict(SANDBOX_ENVIRONMENT),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_PROBE_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{bwrap} could not be run: {error}"
    if probe.returncode == 0:
        return None
    words = probe.stderr.strip() or f"exit status {probe.returncode}"
    return (
        f"{bwrap} cannot create a sandbox on this machine ({words}): it needs user namespaces "
        "(or root, or a setuid bwrap), and in a container a profile that allows them"
    )


def _isolation(network: bool) -> list[str]:
    # A pid namespace lets one kill end the whole tree and hides Baton's /proc/*/environ.
    flags = ["--unshare-all", "--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    return [*flags, "--share-net"] if network else flags


def _system_mounts() -> list[str]:
    arguments: list[str] = []
    for directory in SYSTEM_DIRECTORIES:
        if directory.is_symlink():
            arguments += ["--symlink", os.readlink(directory), str(directory)]
        elif directory.is_dir():
            arguments += ["--ro-bind", str(directory), str(directory)]
    private = ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--dir", SANDBOX_HOME]
    return arguments + private


def _resolver_mount() -> list[str]:
    # systemd-resolved keeps the real resolv.conf in /run, which the sandbox does not show.
    target = Path("/etc/resolv.conf").resolve()
    if _inside(target, SYSTEM_DIRECTORIES):
        return []
    return ["--ro-bind-try", str(target), str(target)]


def _read_only(paths: Sequence[Path]) -> list[str]:
    return [argument for path in paths for argument in ("--ro-bind", str(path), str(path))]


def _git_entry(worktree: Path) -> list[Path]:
    # A symlink is never bound: its target could be any host path.
    entry = worktree / ".git"
    return [entry] if entry.exists() and not entry.is_symlink() else []


def _checked_worktree(path: Path) -> Path:
    worktree = path.resolve()
    if not worktree.is_dir():
        raise ValueError(f"the worktree {worktree} is not a directory")
    if worktree == Path("/") or _inside(worktree, SYSTEM_DIRECTORIES):
        raise ValueError(
            f"the worktree {worktree} must lie outside / and the system directories every "
            "command sees; put BATON_DATA_DIR elsewhere"
        )
    return worktree


def _existing(path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.exists():
        raise ValueError(f"the read-only path {path} does not exist")
    return resolved


def _inside(path: Path, directories: Sequence[Path]) -> bool:
    return any(path.is_relative_to(directory.resolve()) for directory in directories)


class _HeadAndTail:
    """The first and last characters of a byte stream, and how many fell between; bounded memory."""

    def __init__(self, limit: int) -> None:
        self._head_size = limit // 2
        self._tail_size = limit - self._head_size
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._head = ""
        self._tail = ""
        self._total = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        self._total += len(text)
        room = self._head_size - len(self._head)
        if room > 0:
            self._head += text[:room]
            text = text[room:]
        self._tail = _last(self._tail + text, self._tail_size)

    @property
    def cut(self) -> int:
        return self._total - len(self._head) - len(self._tail)

    def text(self) -> str:
        if not self.cut:
            return self._head + self._tail
        return f"{self._head}\n[... {self.cut} characters cut ...]\n{self._tail}"


def _last(text: str, count: int) -> str:
    return text[len(text) - count :] if len(text) > count else text


class _Sandboxed:
    """One running bwrap: its output being read, and its sandbox's first process once known."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        info: asyncio.Future[bytes],
        reader: asyncio.Task[None],
    ) -> None:
        self._process = process
        self._info = info
        self._reader = reader

    @classmethod
    async def start(
        cls, bwrap: str, arguments: list[str], command: str, output: _HeadAndTail
    ) -> _Sandboxed:
        info_read, info_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                bwrap,
                *arguments,
                *["--info-fd", str(info_write), "/bin/sh", "-c", command],
                env=dict(SANDBOX_ENVIRONMENT),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(info_write,),
                # Its own process group, the fallback way to stop it before its sandbox exists.
                start_new_session=True,
            )
        except BaseException:
            os.close(info_read)
            raise
        finally:
            os.close(info_write)
        assert process.stdout is not None  # stdout=PIPE above
        info = asyncio.ensure_future(asyncio.to_thread(_read_to_end, info_read))
        reader = asyncio.create_task(_read_into(process.stdout, output))
        return cls(process, info, reader)

    @property
    def exit_code(self) -> int | None:
        return self._process.returncode

    async def wait(self, seconds: float) -> bool:
        """True when the command ended within `seconds`."""
        try:
            await asyncio.wait_for(self._process.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """End every process of the sandbox; on return bwrap has exited and all output is read."""
        if self._process.returncode is None:
            self._kill()
            try:
                await asyncio.wait_for(self._process.wait(), _EXIT_GRACE_SECONDS)
            except TimeoutError:
                _kill_group(self._process.pid)
                await self._process.wait()
        await self._reader
        await self._info

    def _kill(self) -> None:
        first = _sandbox_first_pid(self._info)
        if first is None:
            _kill_group(self._process.pid)
            return
        # Killing a pid namespace's first process kills all of it; bwrap then exits by itself.
        try:
            os.kill(first, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own meanwhile


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended on its own meanwhile


def _sandbox_first_pid(info: asyncio.Future[bytes]) -> int | None:
    """The host pid of the sandbox's first process, from bwrap's `--info-fd` report."""
    if not info.done() or info.exception() is not None:
        return None
    try:
        pid = json.loads(info.result())["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


def _read_to_end(descriptor: int) -> bytes:
    # bwrap writes its report right after creating the sandbox and closes the pipe.
    chunks = []
    try:
        while chunk := os.read(descriptor, _READ_CHUNK_BYTES):
            chunks.append(chunk)
    finally:
        os.close(descriptor)
    return b"".join(chunks)


async def _read_into(stream: asyncio.StreamReader, output: _HeadAndTail) -> None:
    while chunk := await stream.read(_READ_CHUNK_BYTES):
        output.feed(chunk)
    output.feed(b"", final=True)
