"""What a sandboxed command may use, and the kernel mechanisms that hold it there.

Memory and processes are held by a cgroup made for each command where this machine lets Baton
make one (cgroup v1 `memory` and `pids` hierarchies writable, as on this project's machines);
elsewhere by rlimits (`RLIMIT_AS`, `RLIMIT_NPROC`), which bound each process rather than the
whole command. File size is always `RLIMIT_FSIZE`, `/tmp` a tmpfs of a fixed size, and the
worktree's disk use a watchdog (see `bot.sandbox.disk`).
"""

from __future__ import annotations

import errno
import os
import signal
import time
import uuid
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Network
from pathlib import Path

MIB = 1024 * 1024
GIB = 1024 * MIB
# The names a result gives the limit that stopped a command.
TIME, MEMORY, PROCESSES, FILE_SIZE, TMP, DISK = (
    "time",
    "memory",
    "processes",
    "file_size",
    "tmp",
    "disk",
)
_CGROUP_PREFIX = "baton-sandbox-"
# A cgroup outlives its processes by the moment the kernel takes to reap them.
_REMOVAL_TRIES = 50
_REMOVAL_PAUSE_SECONDS = 0.1


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed command. Sizes are bytes.

    `wall_seconds` of wall-clock time; `output_chars` of output shown, split between head and
    tail; `memory_bytes` for all its processes together (with /tmp's pages, where a cgroup holds
    it); `processes` alive at once; `file_bytes` for any one file written; `tmp_bytes` for the
    private /tmp; `worktree_bytes` for everything in the worktree; and `min_free_disk_bytes` that
    must stay free on the worktree's disk, below which no command starts and a running one stops.
    `allowed_networks` are the private networks a command given the network may reach besides
    the internet (see `bot.sandbox.network`).
    """

    wall_seconds: float = 600.0
    output_chars: int = 20_000
    memory_bytes: int = 4 * GIB
    processes: int = 512
    file_bytes: int = 1 * GIB
    tmp_bytes: int = 512 * MIB
    worktree_bytes: int = 2 * GIB
    min_free_disk_bytes: int = 1 * GIB
    allowed_networks: tuple[IPv4Network, ...] = ()

    def __post_init__(self) -> None:
        if self.wall_seconds <= 0:
            raise ValueError(f"wall_seconds must be positive, got {self.wall_seconds}")
        if self.output_chars < 1:
            raise ValueError(f"output_chars must be at least 1, got {self.output_chars}")
        for name in ("memory_bytes", "file_bytes", "tmp_bytes", "worktree_bytes"):
            if getattr(self, name) < MIB:
                raise ValueError(f"{name} must be at least 1 MiB, got {getattr(self, name)}")
        if self.processes < 8:
            raise ValueError(f"processes must be at least 8, got {self.processes}")
        if self.min_free_disk_bytes < 0:
            raise ValueError(f"min_free_disk_bytes must be 0 or more: {self.min_free_disk_bytes}")


def rlimit_arguments(limits: SandboxLimits, *, cgroup: bool, per_user_processes: bool) -> list[str]:
    """`prlimit` options for the sandbox's processes, inherited by all they start.

    No core dumps (a process stopped at the file size limit would leave one in the worktree).
    RLIMIT_AS and RLIMIT_NPROC only stand in where no cgroup holds memory and processes (the
    cgroup also says when its limit was hit): the first bounds each process's address space,
    not their sum, and breaks runtimes that reserve large address ranges. RLIMIT_NPROC counts
    every process of the user, so it is only set here when the sandbox's user is its own
    (`per_user_processes`).
    """
    arguments = [f"--fsize={limits.file_bytes}", "--core=0"]
    if not cgroup:
        arguments.append(f"--as={limits.memory_bytes}")
    if per_user_processes and not cgroup:
        # bwrap's own two processes run as the same user.
        arguments.append(f"--nproc={limits.processes + 2}")
    return arguments


@dataclass(frozen=True)
class _Hierarchy:
    """Baton's own cgroup in one cgroup v1 hierarchy, where children can be made."""

    controller: str
    directory: Path


class Cgroup:
    """One command's cgroup in the memory and pids hierarchies, with its limits set."""

    def __init__(self, directories: dict[str, Path]) -> None:
        self._directories = directories

    @classmethod
    def create(cls, limits: SandboxLimits) -> Cgroup | None:
        """A new cgroup holding `limits`, or None where this machine offers none to Baton."""
        hierarchies = writable_hierarchies()
        if hierarchies is None:
            return None
        name = f"{_CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        made: dict[str, Path] = {}
        try:
            for hierarchy in hierarchies:
                directory = hierarchy.directory / name
                directory.mkdir()
                made[hierarchy.controller] = directory
            cgroup = cls(made)
            cgroup._set_limits(limits)
        except OSError:
            cls(made).remove()
            return None
        return cgroup

    def _set_limits(self, limits: SandboxLimits) -> None:
        memory = self._directories["memory"]
        _write(memory / "memory.limit_in_bytes", limits.memory_bytes)
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            # Memory and swap together: the command cannot swap its way past the limit.
            _write(swap, limits.memory_bytes)
        _write(self._directories["pids"] / "pids.max", limits.processes)

    def add(self, pid: int) -> None:
        """Put process `pid` (and so all it starts from now on) in this cgroup."""
        for directory in self._directories.values():
            _write(directory / "cgroup.procs", pid)

    def limit_reached(self) -> str | None:
        """MEMORY when the kernel killed a process at the memory limit, PROCESSES when a fork
        failed at the process limit, else None."""
        if _counter(self._directories["memory"] / "memory.oom_control", "oom_kill") > 0:
            return MEMORY
        if _counter(self._directories["pids"] / "pids.events", "max") > 0:
            return PROCESSES
        return None

    def kill_all(self) -> None:
        for directory in self._directories.values():
            for pid in _members(directory):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it ended meanwhile

    def remove(self) -> None:
        """Kill what is left in the cgroup and delete it; blocks until the kernel lets it go."""
        for directory in self._directories.values():
            for _ in range(_REMOVAL_TRIES):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as error:
                    if error.errno != errno.EBUSY:
                        raise
                    self.kill_all()
                    time.sleep(_REMOVAL_PAUSE_SECONDS)


def describe_enforcement() -> dict[str, str]:
    """How each limit is held on this machine, for logs and the operator."""
    cgroup = writable_hierarchies() is not None
    return {
        MEMORY: "cgroup memory limit on the whole command, /tmp's pages included"
        if cgroup
        else "RLIMIT_AS on each process on its own (no writable cgroup); /tmp is bounded apart",
        PROCESSES: "cgroup pids.max"
        if cgroup
        else "RLIMIT_NPROC, counted per user: the sandbox's own user, or its user namespace",
        FILE_SIZE: "RLIMIT_FSIZE",
        TMP: "size of the private tmpfs",
        DISK: "watchdog measuring the worktree, and a floor of free space on its disk",
        TIME: "wall clock; the whole pid namespace is killed",
    }


def enforcement_caveat() -> str | None:
    """What an operator must know when the limits hold less than they say, else None."""
    if writable_hierarchies() is not None:
        return None
    return (
        "no cgroup can be made for sandboxed commands here, so the memory limit holds each "
        "process on its own, not a command as a whole (a command may use it once per process "
        "it starts), and the process limit counts the processes of a user; give Baton writable "
        "cgroup v1 memory and pids hierarchies to hold a command as a whole"
    )


@cache
def writable_hierarchies() -> tuple[_Hierarchy, ...] | None:
    """Baton's own cgroups in the v1 memory and pids hierarchies, when it may make children
    in both; None otherwise (cgroup v2 without delegation, or no permission)."""
    mounts = _v1_mounts()
    own = _own_cgroups()
    hierarchies = []
    for controller in ("memory", "pids"):
        if controller not in mounts or controller not in own:
            return None
        mount_root, mount_point = mounts[controller]
        if not Path(own[controller]).is_relative_to(mount_root):
            return None  # Baton's cgroup lies outside what this mount shows
        directory = mount_point / Path(own[controller]).relative_to(mount_root)
        if not os.access(directory, os.W_OK):
            return None
        hierarchies.append(_Hierarchy(controller, directory))
    return tuple(hierarchies)


def _v1_mounts() -> dict[str, tuple[str, Path]]:
    """For each v1 controller, the root of the hierarchy seen by the mount, and where it is."""
    found: dict[str, tuple[str, Path]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, kind = before.split(), after.split()
        if len(kind) < 3 or kind[0] != "cgroup":
            continue
        for option in kind[2].split(","):
            found.setdefault(option, (fields[3], Path(fields[4])))
    return found


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path in each v1 hierarchy, by controller."""
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                own[controller] = path
    return own


def _write(path: Path, value: int) -> None:
    path.write_text(str(value))


def _counter(path: Path, name: str) -> int:
    """The number after `name` in a flat-keyed cgroup file, 0 when absent."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _members(directory: Path) -> list[int]:
    try:
        return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]
    except OSError:
        return []
