"""Attacks on the worker sandbox, with the real bubblewrap and slirp4netns: host secrets, root,
limits, network.

Each test is an attack that worked on an earlier sandbox; the assertions say what must hold now.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from bot.git.runner import GitRunner
from bot.git.worktree import delete_tree
from bot.sandbox import CommandResult, Sandbox, SandboxLimits
from bot.sandbox import network as sandbox_network
from bot.sandbox.tree import MAX_DEPTH
from tests.sandboxes import PYTHON, PYTHON_PATHS, make_mirror_and_worktree

MIB = 1024 * 1024


def python(code: str) -> str:
    return f"{PYTHON} -c {shlex.quote(code)}"


@pytest.fixture
def etc_secret() -> Iterator[Path]:
    """An App key where the README once suggested keeping it, removed afterwards."""
    folder = Path("/etc") / f"baton-test-{uuid.uuid4().hex}"
    folder.mkdir(mode=0o700)
    key = folder / "app.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\netc-secret-key\n")
    key.chmod(0o600)
    try:
        yield key
    finally:
        key.unlink()
        folder.rmdir()


class Listener:
    """A TCP server on one of the host's addresses that records every connection it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self.accepted = asyncio.Event()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.accepted.set()
        writer.close()


@asynccontextmanager
async def listening(address: str) -> AsyncIterator[Listener]:
    recorder = Listener()
    server = await asyncio.start_server(recorder.answer, address, 0)
    recorder.port = server.sockets[0].getsockname()[1]
    async with server:
        yield recorder


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A listener on the host's loopback."""
    async with listening("127.0.0.1") as recorder:
        yield recorder


@pytest.fixture
def host_address() -> Iterator[str]:
    """An address of this host outside 127/8, as eth0's is: a TEST-NET-2 address added to `lo`
    for the test where that is allowed (root), else the machine's own."""
    address = f"198.51.100.{random.randint(1, 254)}/32"
    added = subprocess.run(["ip", "addr", "add", address, "dev", "lo"], capture_output=True)
    if added.returncode != 0:
        yield own_address()
        return
    try:
        yield address.removesuffix("/32")
    finally:
        subprocess.run(["ip", "addr", "del", address, "dev", "lo"], check=True)


def own_address() -> str:
    listing = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, check=True)
    for interface in json.loads(listing.stdout):
        for entry in interface["addr_info"]:
            if not entry["local"].startswith("127."):
                return str(entry["local"])
    pytest.skip("this machine has no IPv4 address but loopback, and no dummy could be made")


@pytest.fixture
async def host_listener(host_address: str) -> AsyncIterator[Listener]:
    """A listener on an address of the host that is not loopback, as Baton's server on 0.0.0.0."""
    async with listening(host_address) as recorder:
        yield recorder


def reached(result: CommandResult) -> bool:
    return "connected" in result.output.split()


async def test_a_key_kept_under_etc_is_not_shown(sandbox: Sandbox, etc_secret: Path) -> None:
    read = await sandbox.run(f"cat {etc_secret}")
    listed = await sandbox.run("ls /etc")

    assert "etc-secret-key" not in read.output
    assert "No such file or directory" in read.output
    assert etc_secret.parent.name not in listed.output.split()


async def test_etc_shadow_and_host_accounts_are_not_shown(sandbox: Sandbox) -> None:
    result = await sandbox.run("cat /etc/shadow /etc/gshadow; cat /etc/passwd")

    assert "root:" not in result.output.replace("root:x:0:0", "")  # no hash, no host account
    assert "No such file or directory" in result.output
    shown = {line.split(":")[0] for line in result.output.splitlines() if line.count(":") >= 6}
    assert shown <= {"root", "sandbox", "nobody"}


async def test_programs_still_find_certificates_and_the_loader(sandbox: Sandbox) -> None:
    result = await sandbox.run(
        "ls /etc/ssl/certs | head -1; test -e /etc/ld.so.cache && echo loader; "
        "test -e /etc/ssl/private && echo private-keys-shown; whoami; echo $HOME"
    )

    lines = result.output.splitlines()
    assert "loader" in lines
    assert "private-keys-shown" not in lines
    assert "sandbox" in lines  # the synthesized account of the sandbox's user
    assert "/tmp/home" in lines


async def test_proc_1_environ_holds_only_the_sandboxs_own_environment(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"baton-marker-{uuid.uuid4().hex}"
    monkeypatch.setenv("BATON_TEST_MARKER", marker)

    result = await sandbox.run("cat /proc/1/environ | tr '\\0' '\\n'; ls /proc")

    assert marker not in result.output
    assert "BATON_TEST_MARKER" not in result.output
    assert "PATH=" in result.output  # the sandbox's own environment is what /proc/1 shows
    assert str(os.getpid()) not in result.output.split()
    # Not even the folder Baton runs in.
    assert not [line for line in result.output.splitlines() if line.startswith("PWD=")]


async def test_the_data_directorys_files_outside_the_worktree_are_hidden(
    sandbox: Sandbox, data_dir: Path
) -> None:
    (data_dir / ".env").write_text("BATON_WEBHOOK_SECRET=data-dir-secret\n")
    (data_dir / "baton.db").write_text("database-contents\n")

    result = await sandbox.run(f"cat {data_dir}/.env {data_dir}/baton.db; ls -a {data_dir}")

    assert "data-dir-secret" not in result.output
    assert "database-contents" not in result.output
    assert "baton.db" not in result.output.split()


async def test_commands_do_not_run_as_root(sandbox: Sandbox, worktree: Path) -> None:
    result = await sandbox.run("id -u; id -g; touch made-here; echo $?")

    uid, gid, touched = result.output.split()
    assert uid != "0"
    assert gid != "0"
    assert touched == "0"  # the worktree is writable by the sandbox's user
    assert (worktree / "made-here").stat().st_uid == int(uid)


async def test_allocating_past_the_memory_limit_is_stopped(worktree: Path) -> None:
    limits = SandboxLimits(memory_bytes=128 * MIB)
    sandbox = Sandbox(worktree, limits=limits, extra_read_only=PYTHON_PATHS)

    result = await sandbox.run(python("b = bytearray(512 * 1024 * 1024); print('allocated')"))

    assert "allocated" not in result.output
    assert result.limit == "memory"
    assert "memory limit" in result.output


async def test_a_fork_loop_stops_at_the_process_limit(worktree: Path) -> None:
    sandbox = Sandbox(worktree, limits=SandboxLimits(processes=40, wall_seconds=120))
    marker = f"600.{uuid.uuid4().int % 10**9}"

    result = await sandbox.run(f"while :; do sleep {marker} & done")

    assert result.limit == "processes"
    assert not result.timed_out
    assert "process limit" in result.output
    assert running_with(marker) == []  # every process of the sandbox was ended


def running_with(marker: str) -> list[str]:
    """Command lines of live processes that contain `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # not a process, or it ended while we looked
        if marker in line:
            found.append(line)
    return found


async def test_baton_and_the_sandbox_share_the_worktree(tmp_path: Path) -> None:
    mirror, worktree = make_mirror_and_worktree(tmp_path / "data")
    (worktree / "written-by-baton.txt").write_text("baton\n")  # as a model's edit is
    sandbox = Sandbox(worktree, extra_read_only=[mirror])

    result = await sandbox.run(
        "echo sandbox >> written-by-baton.txt && mkdir -p pkg && echo x > pkg/new.txt "
        "&& git status --short"
    )
    status = await GitRunner().run(["status", "--short"], cwd=worktree)

    assert result.exit_code == 0, result.output
    assert "?? pkg/" in result.output  # git works inside, on a mirror that is root's
    assert (worktree / "written-by-baton.txt").read_text() == "baton\nsandbox\n"
    assert "?? pkg/" in status.stdout  # and Baton's own git still trusts the worktree


async def test_tmp_is_bounded_and_says_so(worktree: Path) -> None:
    sandbox = Sandbox(worktree, limits=SandboxLimits(tmp_bytes=16 * MIB))

    result = await sandbox.run("head -c 64M /dev/zero > /tmp/big; echo status=$?")

    assert "No space left on device" in result.output
    assert "status=1" in result.output
    assert result.limit == "tmp"
    assert "/tmp limit" in result.output


async def test_one_file_past_the_file_size_limit_is_stopped(
    sandbox: Sandbox, worktree: Path
) -> None:
    sandbox = Sandbox(worktree, limits=SandboxLimits(file_bytes=8 * MIB))

    result = await sandbox.run("head -c 32M /dev/zero > big.bin")

    assert (worktree / "big.bin").stat().st_size == 8 * MIB
    assert result.limit == "file_size"
    assert "file size limit" in result.output


async def test_filling_the_worktree_past_its_cap_is_stopped(worktree: Path) -> None:
    limits = SandboxLimits(worktree_bytes=64 * MIB, file_bytes=4 * MIB, wall_seconds=120)
    sandbox = Sandbox(worktree, limits=limits)

    result = await sandbox.run("i=0; while :; do head -c 4M /dev/urandom > f$i; i=$((i+1)); done")

    assert result.limit == "disk"
    assert not result.timed_out
    assert "disk limit" in result.output
    assert not (worktree / "f1000").exists()


async def test_folders_nested_too_deep_to_measure_stop_at_the_disk_limit(
    sandbox: Sandbox, worktree: Path
) -> None:
    chain = python("import os\nfor _ in range(5000): os.mkdir('d'); os.chdir('d')")

    try:
        result = await sandbox.run(chain)
        refused = await sandbox.run("echo ran")
    finally:
        await asyncio.to_thread(delete_tree, worktree)

    assert result.limit == "disk"
    assert f"folders nest deeper than {MAX_DEPTH} levels" in result.output
    assert refused.limit == "disk"
    assert "the command was not started" in refused.output
    assert not await asyncio.to_thread(worktree.exists)


async def test_no_command_starts_on_a_nearly_full_disk(worktree: Path) -> None:
    free = os.statvfs(worktree)
    needed = free.f_bavail * free.f_frsize + 1024 * MIB
    sandbox = Sandbox(worktree, limits=SandboxLimits(min_free_disk_bytes=needed))

    result = await sandbox.run("touch ran")

    assert result.limit == "disk"
    assert result.exit_code is None
    assert not (worktree / "ran").exists()
    assert "free" in result.output


async def test_without_network_the_hosts_loopback_is_unreachable(
    sandbox: Sandbox, listener: Listener
) -> None:
    result = await sandbox.run(connect_command(listener.port))

    assert not reached(result)
    assert listener.connections == 0


async def test_with_network_the_hosts_loopback_stays_unreachable(
    sandbox: Sandbox, listener: Listener
) -> None:
    result = await sandbox.run(connect_command(listener.port), network=True)

    assert not reached(result)
    assert listener.connections == 0
    assert result.output.count("refused-or-unreachable") == 2, result.output


async def test_with_network_the_command_has_its_own_interface_route_and_resolver(
    sandbox: Sandbox,
) -> None:
    result = await sandbox.run("cat /proc/net/dev /proc/net/route /etc/resolv.conf", network=True)

    assert "tap0" in result.output
    # A default route (destination 0) through slirp4netns's gateway 10.0.2.2.
    assert any(
        fields[1:3] == ["00000000", "0202000A"]
        for fields in (line.split() for line in result.output.splitlines())
        if len(fields) > 3
    ), result.output
    assert "nameserver 10.0.2.3" in result.output


async def test_with_network_the_hosts_other_addresses_are_unreachable(
    sandbox: Sandbox, host_listener: Listener, host_address: str
) -> None:
    result = await sandbox.run(connect_command(host_listener.port, host_address), network=True)

    assert not reached(result), result.output
    assert "No route to host" in result.output, result.output
    assert host_listener.connections == 0


async def test_an_allowed_network_is_reachable(
    worktree: Path, host_listener: Listener, host_address: str
) -> None:
    allowed = (IPv4Network(f"{host_address}/32"),)
    limits = SandboxLimits(allowed_networks=allowed)
    sandbox = Sandbox(worktree, limits=limits, extra_read_only=PYTHON_PATHS)

    result = await sandbox.run(connect_command(host_listener.port, host_address), network=True)

    assert reached(result), result.output
    await asyncio.wait_for(host_listener.accepted.wait(), 10)
    assert host_listener.connections == 1


async def test_with_network_only_dns_and_public_addresses_are_routed(sandbox: Sandbox) -> None:
    private = ["169.254.169.254", "10.1.2.3", "172.17.0.1", "192.168.1.1", "100.64.0.1"]
    lookups = "; ".join(f"ip route get {address}" for address in private)
    # The command tries to lift the block first: it holds no capability over its network.
    command = (
        f"ip route del 169.254.0.0/16; {lookups}; {connect_command(80, '169.254.169.254')}; "
        "ip route get 10.0.2.3; ip route get 1.1.1.1; ip -6 route get 2001:4860:4860::8888"
    )

    result = await sandbox.run(command, network=True)

    assert "Operation not permitted" in result.output, result.output
    assert result.output.count("RTNETLINK answers: No route to host") == len(private)
    assert "refused-or-unreachable 169.254.169.254 [Errno 113] No route to host" in result.output
    assert "10.0.2.3 dev tap0 src 10.0.2.100" in result.output  # slirp4netns's DNS forwarder
    assert "1.1.1.1 via 10.0.2.2 dev tap0" in result.output
    assert "RTNETLINK answers: Network is unreachable" in result.output  # no IPv6 at all


@pytest.mark.parametrize(
    ("allowed", "open_addresses", "closed_addresses"),
    [
        ("10.20.0.0/16", ["10.20.0.5"], ["10.20.3.4", "10.21.0.1", "169.254.169.254"]),
        ("10.20.3.4/32", ["10.20.3.4"], ["10.20.3.5", "192.168.0.1"]),
    ],
    ids=["a-network-around-the-host", "the-hosts-own-address"],
)
def test_an_allowed_network_opens_but_the_hosts_addresses_in_it_only_one_by_one(
    allowed: str, open_addresses: list[str], closed_addresses: list[str]
) -> None:
    host = [IPv4Network("127.0.0.0/8"), IPv4Network("10.20.3.4/32")]

    closed = sandbox_network.blocked_networks(host, [IPv4Network(allowed)])

    def is_closed(address: str) -> bool:
        return any(IPv4Address(address) in network for network in closed)

    assert not any(map(is_closed, open_addresses)), closed
    assert all(map(is_closed, closed_addresses)), closed


@pytest.mark.parametrize(
    ("program", "replacement"),
    [("IP", "baton-no-such-program"), ("NSENTER", "false")],
    ids=["ip-missing", "nsenter-fails"],
)
async def test_without_the_block_the_command_runs_offline(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, program: str, replacement: str
) -> None:
    monkeypatch.setattr(sandbox_network, program, replacement)

    result = await sandbox.run("cat /proc/net/dev /proc/net/route", network=True)

    assert result.exit_code == 0
    assert "tap0" not in result.output.split("[sandbox:")[0]
    assert "so the command ran without network]" in result.output
    assert replacement in result.output


def connect_command(port: int, *hosts: str) -> str:
    """Tries each of `hosts`, by default the host's loopback directly and through slirp4netns's
    gateway address."""
    code = f"""
import socket
for host in {hosts or ("127.0.0.1", "10.0.2.2")!r}:
    try:
        socket.create_connection((host, {port}), timeout=5).close()
        print("connected", host)
    except OSError as error:
        print("refused-or-unreachable", host, error)
"""
    return python(code)
