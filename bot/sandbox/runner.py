"""Running a repository's commands under bubblewrap, for the worker tools (CONTRACT §6, §9).

Each command runs in a fresh sandbox that shows it only what `bot.sandbox.view` lists: the
system's programs and libraries, a minimal `/etc`, the `extra_read_only` paths, the worktree at
`/workspace` (its `.git` read-only) and a private `/tmp`, `/dev` and `/proc` (its own processes
only).
The data directory with its mirrors, the other worktrees and Baton's files are absent.

It runs as an unprivileged user (`bot.sandbox.identity`), with no network unless a caller asks
for one (then through `bot.sandbox.network`: never the host's, and closed to the host's
addresses and private networks), with `SANDBOX_ENVIRONMENT` as its whole environment, and
within `SandboxLimits`. A command stopped at a limit has every process of its sandbox killed,
and its result names the limit (`CommandResult.limit`) and says so in its output. Without a
working bubblewrap nothing runs: `SandboxUnavailable` says why.

Git inside the sandbox reads the repository only when the caller lists the worktree's mirror in
`extra_read_only`; otherwise `git` there fails with "not a git repository".
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

from bot.sandbox import disk
from bot.sandbox.identity import SandboxUser, sandbox_user
from bot.sandbox.limits import (
    DISK,
    FILE_SIZE,
    MEMORY,
    MIB,
    PROCESSES,
    TIME,
    TMP,
    Cgroup,
    SandboxLimits,
    describe_enforcement,
    enforcement_caveat,
    rlimit_arguments,
)
from bot.sandbox.network import Network, connect
from bot.sandbox.view import (
    ETC,
    STAGE,
    SYSTEM_DIRECTORIES,
    WORKSPACE,
    SharedFolder,
    View,
    build_view,
    inside,
    private_mounts,
    stage_prefix,
    system_mounts,
)

logger = logging.getLogger(__name__)

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
        # Files of users not mapped into the sandbox (the mirror is root's) look foreign to
        # git; inside the sandbox nothing is more trusted than anything else.
        "GIT_CONFIG_PARAMETERS": "'safe.directory'='*'",
    }
)
# Never the place of a worktree: every command sees these.
_FORBIDDEN_PLACES = (*SYSTEM_DIRECTORIES, ETC)
_READ_CHUNK_BYTES = 64 * 1024
_PROBE_SECONDS = 30.0
# bwrap exits as soon as the sandbox's first process is gone; this only bounds a stuck bwrap.
_EXIT_GRACE_SECONDS = 10.0
_SETUP_SECONDS = 30.0
# How often the cgroup's counters and /tmp are looked at while a command runs.
_WATCH_SECONDS = 0.2
# The worktree is walked at most this often, and never more than half of the time.
_MEASURE_SECONDS = 1.0
# A tmpfs with less free than this has refused a write.
_TMP_FULL_BYTES = 64 * 1024
# A shell reports a child killed by SIGXFSZ (the file size limit) as 128 + 25.
_FILE_SIZE_EXIT = 128 + signal.SIGXFSZ


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create a sandbox here; no command was run."""


@dataclass(frozen=True)
class CommandResult:
    """How a command ended. `exit_code` is None when the sandbox stopped it at a limit.

    `output` is stdout and stderr as they interleaved; when longer than the limit it keeps the
    head and the tail around a marker naming how many characters were cut (`output_truncated`).
    `limit` names the limit that stopped the command or refused its writes (`time`, `memory`,
    `processes`, `file_size`, `tmp`, `disk`), and then the output ends with a sentence saying
    so; `timed_out` is `limit == "time"`.
    """

    command: str
    exit_code: int | None
    timed_out: bool
    output: str
    output_truncated: bool
    seconds: float
    limit: str | None = None

    def as_json(self) -> str:
        """The result as a JSON object with these fields, for the model."""
        return json.dumps(asdict(self), ensure_ascii=False)


class Sandbox:
    """Runs shell commands in `worktree`, each in a fresh bubblewrap sandbox (see the module).

    `extra_read_only` paths (an interpreter, a toolchain, the worktree's mirror) are shown
    read-only at their own resolved paths, and `shared` at `/shared`. Raises ValueError for a
    worktree that is not a directory or lies inside a system directory, and for an extra path
    that does not exist or holds the worktree (it would show the data directory around it).
    """

    def __init__(
        self,
        worktree: Path,
        *,
        limits: SandboxLimits | None = None,
        extra_read_only: Sequence[Path] = (),
        shared: SharedFolder | None = None,
    ) -> None:
        self.worktree = _checked_worktree(worktree)
        self.limits = limits or SandboxLimits()
        self.extra_read_only = tuple(_extra(path, self.worktree) for path in extra_read_only)
        if shared is not None:
            shared = SharedFolder(_extra(shared.path, self.worktree), shared.writable)
        self.shared = shared
        self.user = sandbox_user(self.worktree)
        self.long_files: frozenset[tuple[int, int]] = frozenset()
        self._checked_bwrap: str | None = None

    async def run(
        self, command: str, *, network: bool = False, wall_seconds: float | None = None
    ) -> CommandResult:
        """Run `command` with `/bin/sh -c` in the worktree and wait for it, within the limits.

        Past a limit every process of the command is killed before this returns. `network`
        gives the command a network of its own that reaches the internet and the limits'
        `allowed_networks`, never an address of the host or another private network (for a
        setup command); without the means for one it runs offline and its output says why.
        Raises SandboxUnavailable, having run nothing, when bubblewrap is missing or unusable.
        """
        seconds = self.limits.wall_seconds if wall_seconds is None else wall_seconds
        if seconds <= 0:
            raise ValueError(f"wall_seconds must be positive, got {seconds}")
        bwrap = await self._bwrap()
        started = time.monotonic()
        refusal = await asyncio.to_thread(self._prepare)
        if refusal is not None:
            return _refused(command, refusal, started)
        output = _HeadAndTail(self.limits.output_chars)
        run = _Run(self, bwrap, command, network, output)
        ending = await run.execute(seconds)
        notes = [*run.notes, *([ending.sentence] if ending.sentence else [])]
        text = output.text() + "".join(f"\n[sandbox: {note}]" for note in notes)
        return CommandResult(
            command=command,
            exit_code=ending.exit_code,
            timed_out=ending.limit == TIME,
            output=text,
            output_truncated=output.cut > 0,
            seconds=round(time.monotonic() - started, 3),
            limit=ending.limit,
        )

    def _prepare(self) -> str | None:
        """Why no command may start now (a nearly full disk, a worktree over its cap), or None
        after handing the worktree to the sandbox's user."""
        free = disk.free_bytes(self.worktree)
        if free < self.limits.min_free_disk_bytes:
            return (
                f"the command was not started at the disk limit: {free // MIB} MiB free on the "
                f"worktree's disk, below the {self.limits.min_free_disk_bytes // MIB} MiB "
                "that must stay free; remove what the commands left, or ask the operator"
            )
        disk.hand_over(self.worktree, self.user)
        if self.shared is not None and self.shared.writable and self.user.switched:
            os.chown(self.shared.path, self.user.uid, self.user.gid)  # an empty folder to fill
        usage = disk.measure(self.worktree, self.limits.file_bytes)
        # Files already at the file size limit before a command are not its doing.
        self.long_files = usage.long_files
        if usage.unmeasured:
            return f"the command was not started at the disk limit: {usage.unmeasured}"
        used = usage.bytes
        if used > self.limits.worktree_bytes:
            return (
                f"the command was not started at the disk limit: the worktree takes "
                f"{used // MIB} MiB, over its {self.limits.worktree_bytes // MIB} MiB; "
                "delete files from it first"
            )
        if self.user.switched:
            STAGE.mkdir(parents=True, exist_ok=True)
        return None

    async def _bwrap(self) -> str:
        """The bwrap to run, once it has been seen to start a sandbox on this machine."""
        bwrap = _locate_bwrap()
        if bwrap is None:
            raise SandboxUnavailable(_MISSING)
        if bwrap != self._checked_bwrap:
            problem = await asyncio.to_thread(_probe, bwrap, self.user)
            if problem is not None:
                raise SandboxUnavailable(problem)
            self._checked_bwrap = bwrap
            _log_enforcement()
        return bwrap


@cache
def _log_enforcement() -> None:
    # Once per process: whether a cgroup can be made does not change while Baton runs.
    caveat = enforcement_caveat()
    if caveat is None:
        logger.info("sandbox limits", extra={"enforcement": describe_enforcement()})
    else:
        logger.warning("sandbox limits: %s", caveat, extra={"enforcement": describe_enforcement()})


@dataclass(frozen=True)
class _Ending:
    exit_code: int | None
    limit: str | None = None
    sentence: str = ""


class _Run:
    """One command from start to cleanup: the bwrap process, its cgroup, network and watchdog."""

    def __init__(
        self, sandbox: Sandbox, bwrap: str, command: str, network: bool, output: _HeadAndTail
    ) -> None:
        self.sandbox = sandbox
        self.limits = sandbox.limits
        self.bwrap = bwrap
        self.command = command
        self.network = network
        self.output = output
        self.notes: list[str] = []
        self.cgroup: Cgroup | None = None
        self.link: Network | None = None
        self.tmp: int | None = None  # an O_PATH descriptor of the sandbox's /tmp
        self.tmp_was_full = False
        self.file_at_limit = False

    async def execute(self, seconds: float) -> _Ending:
        try:
            self.cgroup = await asyncio.to_thread(Cgroup.create, self.limits)
            sandboxed = await self._start()
        except BaseException:
            await self._clean_up()
            raise
        try:
            return await self._supervise(sandboxed, seconds)
        finally:
            await sandboxed.stop()
            await self._clean_up()

    async def _start(self) -> _Sandboxed:
        view = build_view(
            self.sandbox.worktree,
            self.sandbox.extra_read_only,
            self.sandbox.user,
            tmp_bytes=self.limits.tmp_bytes,
            network=self.network,
            shared=self.sandbox.shared,
        )
        try:
            return await _Sandboxed.start(self._argv(view), view, self.output)
        finally:
            view.close()

    async def _supervise(self, sandboxed: _Sandboxed, seconds: float) -> _Ending:
        pid = await sandboxed.first_pid(_SETUP_SECONDS)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.add, pid)
        if self.cgroup is None and not self.sandbox.user.switched:
            # Counted in the sandbox's own user namespace: its processes alone.
            _limit_processes(pid, self.limits.processes)
        if self.network:
            await self._connect(pid)
        self.tmp = await _open_tmp(pid, self.limits.tmp_bytes)
        sandboxed.release()
        stopped = await self._wait(sandboxed, seconds)
        if stopped is not None:
            return stopped
        return await self._after(sandboxed.exit_code)

    async def _connect(self, pid: int) -> None:
        connected = await connect(pid, self.limits.allowed_networks)
        if isinstance(connected, str):
            self.notes.append(connected)
        else:
            self.link = connected

    async def _wait(self, sandboxed: _Sandboxed, seconds: float) -> _Ending | None:
        """None when the command ended by itself within `seconds`; else why it was stopped
        (the sandbox is killed by then)."""
        ended = asyncio.ensure_future(sandboxed.wait())
        watch = asyncio.ensure_future(self._watch())
        try:
            done, _ = await asyncio.wait(
                {ended, watch}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if ended in done:
            return None
        ended.cancel()
        sandboxed.kill()
        if watch in done:
            return watch.result()
        return _Ending(None, TIME, f"stopped at the time limit of {seconds:g} s")

    async def _watch(self) -> _Ending:
        """Returns when the running command passes a limit that stops it."""
        next_measure = time.monotonic()
        while True:
            stopped = self._cgroup_limit()
            if stopped is not None:
                return stopped
            self._look_at_tmp()
            if time.monotonic() >= next_measure:
                began = time.monotonic()
                stopped = await asyncio.to_thread(self._disk_limit, True)
                if stopped is not None:
                    return stopped
                walk = time.monotonic() - began
                next_measure = time.monotonic() + max(_MEASURE_SECONDS, 2 * walk)
            await asyncio.sleep(_WATCH_SECONDS)

    def _cgroup_limit(self) -> _Ending | None:
        reached = self.cgroup.limit_reached() if self.cgroup is not None else None
        if reached == MEMORY:
            return _Ending(None, MEMORY, _stopped_at("memory limit", self.limits.memory_bytes))
        if reached == PROCESSES:
            return _Ending(
                None,
                PROCESSES,
                f"stopped at the process limit of {self.limits.processes} processes at once: "
                "every process of the command was killed",
            )
        return None

    def _disk_limit(self, running: bool) -> _Ending | None:
        """DISK when the worktree is over its cap or its disk nearly full; the sentence says
        the command was stopped when it is `running` (the caller kills it)."""
        usage = disk.measure(self.sandbox.worktree, self.limits.file_bytes)
        self.file_at_limit |= bool(usage.long_files - self.sandbox.long_files)
        free = disk.free_bytes(self.sandbox.worktree)
        if usage.unmeasured:
            problem = usage.unmeasured
        elif usage.bytes > self.limits.worktree_bytes:
            problem = f"the worktree took over {self.limits.worktree_bytes // MIB} MiB"
        elif free < self.limits.min_free_disk_bytes:
            problem = f"only {free // MIB} MiB stayed free on the worktree's disk"
        else:
            return None
        if running:
            sentence = f"stopped at the disk limit: {problem}; every process was killed"
        else:
            sentence = f"disk limit reached: {problem}; delete files before the next command"
        return _Ending(None, DISK, sentence)

    def _look_at_tmp(self) -> None:
        if self.tmp is not None and not self.tmp_was_full:
            space = os.fstatvfs(self.tmp)
            self.tmp_was_full = space.f_bavail * space.f_frsize < _TMP_FULL_BYTES

    async def _after(self, exit_code: int | None) -> _Ending:
        """How a command that ended by itself fared against the limits."""
        stopped = self._cgroup_limit()
        if stopped is not None:
            return _Ending(exit_code, stopped.limit, stopped.sentence)
        over = await asyncio.to_thread(self._disk_limit, False)
        if over is not None:
            return _Ending(exit_code, over.limit, over.sentence)
        self._look_at_tmp()
        if self.tmp_was_full:
            return _Ending(
                exit_code,
                TMP,
                f"/tmp limit reached: /tmp holds at most {self.limits.tmp_bytes // MIB} MiB, "
                "and writes past it failed with 'No space left on device'",
            )
        if exit_code == _FILE_SIZE_EXIT or self.file_at_limit:
            return _Ending(
                exit_code,
                FILE_SIZE,
                f"file size limit reached: no file may grow past "
                f"{self.limits.file_bytes // MIB} MiB, and the writer was stopped there",
            )
        return _Ending(exit_code)

    def _argv(self, view: View) -> list[str]:
        user = self.sandbox.user
        rlimits = rlimit_arguments(
            self.limits, cgroup=self.cgroup is not None, per_user_processes=user.switched
        )
        return [
            *stage_prefix(view, user),
            *["prlimit", *rlimits, "--"],
            self.bwrap,
            *_isolation(),
            *view.arguments,
            *["--remount-ro", "/", "--chdir", str(WORKSPACE)],
            *["/bin/sh", "-c", self.command],
        ]

    async def _clean_up(self) -> None:
        if self.link is not None:
            await self.link.stop()
        if self.tmp is not None:
            os.close(self.tmp)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.remove)


def _stopped_at(name: str, size: int) -> str:
    return f"stopped at the {name} of {size // MIB} MiB: every process of the command was killed"


def _limit_processes(pid: int, processes: int) -> None:
    try:
        resource.prlimit(pid, resource.RLIMIT_NPROC, (processes, processes))
    except OSError:
        logger.warning("the process limit could not be set on the sandbox", exc_info=True)


async def _open_tmp(pid: int, size: int) -> int | None:
    """A descriptor of the sandbox's /tmp once bwrap has mounted it (it then waits for the
    release), kept so /tmp can be measured after the command is gone; None if it never shows."""
    deadline = time.monotonic() + _SETUP_SECONDS
    while time.monotonic() < deadline:
        try:
            descriptor = os.open(f"/proc/{pid}/root/tmp", os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            descriptor = -1  # bwrap has not made it yet
        except OSError:
            return None  # Baton may not look into the sandbox
        if descriptor >= 0:
            space = os.fstatvfs(descriptor)
            if space.f_blocks * space.f_frsize == size:
                return descriptor
            os.close(descriptor)  # still the host's, before bwrap's pivot_root
        await asyncio.sleep(0.01)
    return None


def _refused(command: str, reason: str, started: float) -> CommandResult:
    return CommandResult(
        command=command,
        exit_code=None,
        timed_out=False,
        output=f"[sandbox: {reason}]",
        output_truncated=False,
        seconds=round(time.monotonic() - started, 3),
        limit=DISK,
    )


def sandbox_available() -> str | None:
    """None when bubblewrap can start a sandbox here, else why not and what to do."""
    bwrap = _locate_bwrap()
    if bwrap is None:
        return _MISSING
    return _probe(bwrap, sandbox_user(Path("/")))


_MISSING = (
    f"bubblewrap ({BWRAP}) is not on PATH: install it (apt-get install bubblewrap); "
    "Baton runs repository commands only inside its sandbox"
)


def _locate_bwrap() -> str | None:
    return shutil.which(BWRAP)


def _probe(bwrap: str, user: SandboxUser) -> str | None:
    # The same way in as a command's: root's staging namespace and the switch of user.
    if user.switched:
        STAGE.mkdir(parents=True, exist_ok=True)
    argv = [
        *stage_prefix(View(), user),
        bwrap,
        *_isolation(),
        *system_mounts(),
        *private_mounts(MIB),
        *["--remount-ro", "/", "/bin/sh", "-c", ":"],
    ]
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
        f"{bwrap} cannot create a sandbox on this machine ({words}): it needs unprivileged "
        "user namespaces, and in a container a profile that allows them"
    )


def _isolation() -> list[str]:
    # A pid namespace lets one kill end the whole tree and hides Baton's /proc/*/environ; no
    # user namespace may be nested inside, which keeps the kernel's surface small.
    return [
        *["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL"],
        *["--hostname", "sandbox", "--die-with-parent", "--new-session"],
    ]


def _checked_worktree(path: Path) -> Path:
    worktree = path.resolve()
    if not worktree.is_dir():
        raise ValueError(f"the worktree {worktree} is not a directory")
    if worktree == Path("/") or inside(worktree, _FORBIDDEN_PLACES):
        raise ValueError(
            f"the worktree {worktree} must lie outside / and the system directories every "
            "command sees; put BATON_DATA_DIR elsewhere"
        )
    return worktree


def _extra(path: Path, worktree: Path) -> Path:
    resolved = path.resolve()
    if not resolved.exists():
        raise ValueError(f"the read-only path {path} does not exist")
    if worktree.is_relative_to(resolved):
        raise ValueError(
            f"the read-only path {path} holds the worktree {worktree}; it would show the "
            "data directory around it: list the toolchain's own folder instead"
        )
    return resolved


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
    """One running bwrap, held before its command until `release`; its output being read."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        info: int,
        release: int,
        reader: asyncio.Task[None],
        output: _HeadAndTail,
    ) -> None:
        self._output = output
        self._process = process
        self._info = info
        self._release = release
        self._reader = reader
        self._pid: int | None = None

    @classmethod
    async def start(cls, argv: list[str], view: View, output: _HeadAndTail) -> _Sandboxed:
        info_read, info_write = os.pipe()
        block_read, block_write = os.pipe()
        held = ["--info-fd", str(info_write), "--block-fd", str(block_read)]
        command_at = len(argv) - 3  # before `/bin/sh -c command`
        try:
            process = await asyncio.create_subprocess_exec(
                *argv[:command_at],
                *held,
                *argv[command_at:],
                env=dict(SANDBOX_ENVIRONMENT),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                pass_fds=(info_write, block_read, *view.descriptors),
                # Its own process group, the fallback way to stop it before its sandbox exists.
                start_new_session=True,
            )
        except BaseException:
            os.close(info_read)
            os.close(block_write)
            raise
        finally:
            os.close(info_write)
            os.close(block_read)
        assert process.stdout is not None  # stdout=PIPE above
        reader = asyncio.create_task(_read_into(process.stdout, output))
        return cls(process, info_read, block_write, reader, output)

    @property
    def exit_code(self) -> int | None:
        return self._process.returncode

    async def first_pid(self, seconds: float) -> int:
        """The host pid of the sandbox's first process, from bwrap's `--info-fd` report;
        SandboxUnavailable when there is none, once bwrap is gone (killed, when it stays silent
        for `seconds`)."""
        try:
            report = await asyncio.wait_for(asyncio.to_thread(_read_report, self._info), seconds)
        except TimeoutError:
            report = None
        self._info = -1  # the reading thread closes it, once bwrap is gone if not before
        pid = _child_pid(report)
        if pid is None:
            raise SandboxUnavailable(await self._why_not_started(report is None, seconds))
        self._pid = pid
        return pid

    async def _why_not_started(self, hung: bool, seconds: float) -> str:
        """Wait for a bwrap that reported no sandbox to end, killing it first when it said
        nothing within `seconds` (`hung`), and say why it started none."""
        if hung:
            _kill_group(self._process.pid)  # no sandbox yet: its process group is all there is
        await self._process.wait()
        await self._reader
        if hung:
            return (
                f"bwrap did not start the sandbox within {seconds:g} s and was killed; "
                "check that bubblewrap runs on this machine"
            )
        words = self._output.text().strip() or f"exit status {self._process.returncode}"
        return f"bwrap did not start the sandbox: {words}"

    def release(self) -> None:
        """Let the command start (bwrap waits on `--block-fd` until now)."""
        os.write(self._release, b"1")
        os.close(self._release)
        self._release = -1

    async def wait(self) -> None:
        await self._process.wait()

    def kill(self) -> None:
        if self._pid is None:
            _kill_group(self._process.pid)
            return
        # Killing a pid namespace's first process kills all of it; bwrap then exits by itself.
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own meanwhile

    async def stop(self) -> None:
        """End every process of the sandbox; on return bwrap has exited and all output is read."""
        if self._process.returncode is None:
            self.kill()
            try:
                await asyncio.wait_for(self._process.wait(), _EXIT_GRACE_SECONDS)
            except TimeoutError:
                _kill_group(self._process.pid)
                await self._process.wait()
        # Only now: an earlier close would let a held command start.
        for descriptor in (self._release, self._info):
            if descriptor >= 0:
                os.close(descriptor)
        self._release = self._info = -1
        await self._reader


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended on its own meanwhile


def _read_report(descriptor: int) -> bytes:
    # bwrap writes one JSON object right after creating the sandbox, then closes the pipe.
    chunks = []
    try:
        while chunk := os.read(descriptor, _READ_CHUNK_BYTES):
            chunks.append(chunk)
            with contextlib.suppress(ValueError):
                json.loads(b"".join(chunks))
                break
    finally:
        os.close(descriptor)
    return b"".join(chunks)


def _child_pid(report: bytes | None) -> int | None:
    try:
        pid = json.loads(report or b"")["child-pid"]
    except (ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) and pid > 0 else None


async def _read_into(stream: asyncio.StreamReader, output: _HeadAndTail) -> None:
    while chunk := await stream.read(_READ_CHUNK_BYTES):
        output.feed(chunk)
    output.feed(b"", final=True)
