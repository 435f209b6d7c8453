"""A network for the one command that may have it (a setup command on an untouched commit).

The command keeps its own network namespace; slirp4netns gives it a user-mode TCP/IP stack
behind NAT (10.0.2.100, gateway 10.0.2.2, DNS 10.0.2.3) with `--disable-host-loopback`, so the
host's loopback services (Baton's own HTTP server, PostgreSQL on 127.0.0.1) stay unreachable.
slirp4netns over pasta: it has that switch by name, runs itself in a sandbox with seccomp, and
tells when it is ready through a descriptor. It joins the user namespace that owns the
command's network namespace, so it holds capabilities only there.

slirp4netns opens the command's connections as sockets of the host, so any address the host
can reach would be the command's too. Before the command starts, `unreachable` routes in its
namespace close every address of the host (all of its local routing table) and the networks
where no public service lives but the host's neighbours, containers and the cloud's metadata
service (169.254.169.254) do: private, shared, link-local, multicast and reserved ones. The
command reaches the internet over IPv4 (slirp4netns gives it no IPv6), plus the networks the
operator allows. Without slirp4netns, or when the routes cannot be set, the command runs with
no network and its result says why: never the host's network, never one without the block.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, collapse_addresses

SLIRP4NETNS = "slirp4netns"
NSENTER = "nsenter"
IP = "ip"
# slirp4netns's own network: the command, the gateway and the DNS forwarder (--cidr's default).
SLIRP_NETWORK = IPv4Network("10.0.2.0/24")
# Special-purpose ranges (RFC 6890) that hold no public service, only private ones.
BLOCKED_NETWORKS = tuple(
    IPv4Network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_READY_SECONDS = 10.0
_EXIT_SECONDS = 5.0
_ROUTE_SECONDS = 30.0
# ip lives in sbin, often off an unprivileged user's PATH.
_SBIN = ("/usr/sbin", "/sbin")
# ioctl(2) on a namespace descriptor: the user namespace that owns it (linux/nsfs.h).
_NS_GET_USERNS = 0xB701
_OFFLINE = "so the command ran without network"


class _Unblocked(Exception):
    """The routes that close the host and private networks could not be set; says why."""


@dataclass
class Network:
    """A running slirp4netns for one sandbox; `stop` ends it."""

    process: asyncio.subprocess.Process
    exit_writer: int

    def __post_init__(self) -> None:
        assert self.process.stderr is not None  # stderr=PIPE in _start
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


async def connect(sandbox_pid: int, allowed: Sequence[IPv4Network] = ()) -> Network | str:
    """Give the network namespace of process `sandbox_pid` a way out to the internet and the
    `allowed` networks; once this returns a Network the interface, routes and DNS are
    configured. A string says why there is none."""
    programs = _programs()
    if isinstance(programs, str):
        return f"{programs}, {_OFFLINE}"
    slirp4netns, nsenter, ip = programs
    try:
        closed = blocked_networks(await _host_addresses(ip), allowed)
    except _Unblocked as error:
        return f"{error}, {_OFFLINE}"
    try:
        owner = _owning_user_namespace(sandbox_pid)
    except OSError as error:
        return f"the sandbox's network namespace could not be opened ({error})"
    try:
        network = await _start(slirp4netns, sandbox_pid, owner)
        if isinstance(network, str):
            return network
        try:
            await _block(nsenter, ip, owner, sandbox_pid, closed)
        except BaseException as error:
            await network.stop()  # its interface goes with it: no way out is left
            if not isinstance(error, _Unblocked):
                raise
            return f"the host's and private networks could not be closed ({error}), {_OFFLINE}"
        return network
    finally:
        os.close(owner)


def _programs() -> list[str] | str:
    """The paths of slirp4netns, nsenter and ip, or which of them are missing."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN])
    found = {name: shutil.which(name, path=search) for name in (SLIRP4NETNS, NSENTER, IP)}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH"
    return [path for path in found.values() if path is not None]


def blocked_networks(
    host: Iterable[IPv4Network], allowed: Iterable[IPv4Network]
) -> list[IPv4Network]:
    """The destinations closed to the command: BLOCKED_NETWORKS and the `host`'s addresses, less
    the `allowed` networks. A host address inside a wider allowed network stays closed; only an
    allowed network within it (its own /32) opens it."""
    allowed = list(allowed)
    host = list(collapse_addresses(host))
    on_host = [network for network in allowed if any(network.subnet_of(h) for h in host)]
    # slirp4netns's connected route is more specific than 10.0.0.0/8, so its gateway and DNS
    # stay routed; a host address inside its network is not closed, since there every address
    # but the DNS forwarder's is the host's loopback, which --disable-host-loopback refuses.
    closed = _less(collapse_addresses(BLOCKED_NETWORKS), allowed)
    closed += _less(host, [SLIRP_NETWORK, *on_host])
    return sorted(set(closed))


def _less(blocks: Iterable[IPv4Network], holes: Sequence[IPv4Network]) -> list[IPv4Network]:
    """`blocks` without the addresses of `holes`, as CIDR blocks."""
    left = []
    for block in blocks:
        pieces = [block]
        for hole in holes:
            pieces = [rest for piece in pieces for rest in _cut(piece, hole)]
        left += pieces
    return left


def _cut(block: IPv4Network, hole: IPv4Network) -> list[IPv4Network]:
    if block.subnet_of(hole):
        return []
    if hole.subnet_of(block):
        return list(block.address_exclude(hole))
    return [block]  # two CIDR blocks are nested or apart


async def _host_addresses(ip: str) -> list[IPv4Network]:
    # The local table holds every address the host answers on, with whole local prefixes
    # (AnyIP) that `ip addr` does not list; slirp4netns's sockets live in this namespace.
    listing = await _run([ip, "-j", "-4", "route", "show", "table", "local", "type", "local"])
    try:
        return [IPv4Network(route["dst"], strict=False) for route in json.loads(listing)]
    except (ValueError, KeyError, TypeError) as error:
        raise _Unblocked(f"the host's addresses could not be read ({error})") from None


async def _block(
    nsenter: str, ip: str, owner: int, pid: int, networks: Sequence[IPv4Network]
) -> None:
    """Add an `unreachable` route for each of `networks` in the namespace of `pid`."""
    # The owning namespace maps its root to the user bwrap ran as: Baton when it is not root,
    # whose credentials are then kept; a root Baton, unmapped there, becomes that root.
    credentials = [] if os.geteuid() == 0 else ["--preserve-credentials"]
    argv = [
        nsenter,
        *credentials,
        f"--user=/proc/self/fd/{owner}",
        f"--net=/proc/{pid}/ns/net",
        *["--", ip, "-batch", "-"],
    ]
    routes = "".join(f"route add unreachable {network}\n" for network in networks)
    await _run(argv, routes.encode(), pass_fds=(owner,))


async def _run(argv: list[str], stdin: bytes = b"", pass_fds: Sequence[int] = ()) -> bytes:
    """What `argv` wrote to stdout; _Unblocked when it cannot start, fails or hangs."""
    name = os.path.basename(argv[0])
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=pass_fds,
            env={"PATH": os.defpath},
        )
    except OSError as error:
        raise _Unblocked(f"{name} could not be started: {error}") from None
    try:
        output, errors = await asyncio.wait_for(process.communicate(stdin), _ROUTE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise _Unblocked(f"{name} did not finish within {_ROUTE_SECONDS:g} s") from None
    if process.returncode != 0:
        words = errors.decode(errors="replace").strip()[:500] or "no reason given"
        raise _Unblocked(f"{name} exited with status {process.returncode}: {words}")
    return output


async def _start(program: str, pid: int, owner: int) -> Network | str:
    """slirp4netns for the namespace of `pid`, once it says the interface is configured."""
    ready_reader, ready_writer = os.pipe()
    exit_reader, exit_writer = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            *_arguments(pid, owner, ready_writer, exit_reader),
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
        for descriptor in (ready_writer, exit_reader):
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
