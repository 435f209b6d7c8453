"""A network for the one command that may have it (a setup command on an untouched commit).

The command keeps its own network namespace; slirp4netns gives it a user-mode TCP/IP stack
behind NAT (10.0.2.100, gateway 10.0.2.2, DNS 10.0.2.3) with `--disable-host-loopback`, so the
host's loopback services (Baton's own HTTP server, PostgreSQL on 127.0.0.1) stay unreachable.
slirp4netns over pasta: it has that switch by name, runs itself in a sandbox with seccomp, and
tells when it is ready through a descriptor. It joins the user namespace that owns the
command's network namespace, so it holds capabilities only there. Without slirp4netns the
command runs with no network and its result says why: never the host's network.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
from dataclasses import dataclass

SLIRP4NETNS = "slirp4netns"
_READY_SECONDS = 10.0
_EXIT_SECONDS = 5.0
# ioctl(2) on a namespace descriptor: the user namespace that owns it (linux/nsfs.h).
_NS_GET_USERNS = 0xB701


@dataclass
class Network:
    """A running slirp4netns for one sandbox; `stop` ends it."""

    process: asyncio.subprocess.Process
    exit_writer: int

    def __post_init__(self) -> None:
        assert self.process.stderr is not None  # stderr=PIPE in connect
        self._drain = asyncio.create_task(_discard(self.process.stderr))

    async def stop(self) -> None:
        if self.exit_writer >= 0:
            os.close(self.exit_writer)  # slirp4netns exits when this closes
            self.exit_writer = -1
        try:
            await asyncio.wait_for(self.process.wait(), _EXIT_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._drain.cancel()


async def connect(sandbox_pid: int) -> Network | str:
    """Give the network namespace of process `sandbox_pid` a way out; once this returns a
    Network the interface, route and DNS are configured. A string says why there is none."""
    program = shutil.which(SLIRP4NETNS)
    if program is None:
        return f"{SLIRP4NETNS} is not installed, so the command ran without network"
    try:
        owner = _owning_user_namespace(sandbox_pid)
    except OSError as error:
        return f"the sandbox's network namespace could not be opened ({error})"
    ready_reader, ready_writer = os.pipe()
    exit_reader, exit_writer = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            *_arguments(sandbox_pid, owner, ready_writer, exit_reader),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(owner, ready_writer, exit_reader),
            env={"PATH": os.defpath},
        )
    except OSError as error:
        for descriptor in (ready_reader, exit_writer):
            os.close(descriptor)
        return f"{SLIRP4NETNS} could not be started ({error})"
    finally:
        for descriptor in (owner, ready_writer, exit_reader):
            os.close(descriptor)
    problem = await _wait_ready(ready_reader, process)
    if problem is None:
        return Network(process, exit_writer)
    os.close(exit_writer)
    if process.returncode is None:
        process.kill()
    await process.wait()
    return problem


async def _discard(stream: asyncio.StreamReader) -> None:
    # Read so a chatty slirp4netns never blocks on a full pipe.
    while await stream.read(64 * 1024):
        pass


def _arguments(pid: int, owner: int, ready: int, exit_reader: int) -> list[str]:
    return [
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--enable-sandbox",
        "--enable-seccomp",
        f"--ready-fd={ready}",
        f"--exit-fd={exit_reader}",
        f"--userns-path=/proc/self/fd/{owner}",
        "--netns-type=path",
        f"/proc/{pid}/ns/net",
        "tap0",
    ]


def _owning_user_namespace(pid: int) -> int:
    # bwrap nests a second user namespace inside the one owning the network namespace; only
    # the owner grants slirp4netns the capability to configure it.
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(net, _NS_GET_USERNS)
    finally:
        os.close(net)
    os.set_inheritable(owner, True)
    return owner


async def _wait_ready(reader: int, process: asyncio.subprocess.Process) -> str | None:
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(_read_once, reader), _READY_SECONDS)
    except TimeoutError:
        return f"{SLIRP4NETNS} was not ready within {_READY_SECONDS:g} s; no network"
    if ready:
        return None
    assert process.stderr is not None  # stderr=PIPE above
    words = (await process.stderr.read(2000)).decode(errors="replace").strip()
    return f"{SLIRP4NETNS} could not give the sandbox a network ({words or 'no reason given'})"


def _read_once(descriptor: int) -> bytes:
    try:
        return os.read(descriptor, 1)
    finally:
        os.close(descriptor)
