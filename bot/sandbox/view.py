"""What a sandboxed command sees of the file system, as bubblewrap arguments.

The system's programs and libraries read-only; of `/etc` only what programs need (certificates,
loader configuration, Debian's alternatives, name service and time zone files) plus a
synthesized `passwd`, `group`, `hosts`, `hostname` and `nsswitch.conf`; the listed extra paths
read-only; the worktree, at `/workspace`; a private `/tmp`, `/dev` and `/proc`. Nothing else of
the host.

Synthesized files reach bubblewrap through pipes (`--ro-bind-data`), never through host files.
When commands run as another user (Baton is root), the paths they need are first bound into a
private staging folder by root (in a mount namespace of their own that dies with the command),
because that user may not traverse the folders above them (`/root`, a 0700 data directory).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot.sandbox.identity import SandboxUser, account_files

# Shown read-only to every command; a symlink (merged /usr) is recreated as the same symlink.
SYSTEM_DIRECTORIES = tuple(
    Path(name) for name in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
)
ETC = Path("/etc")
# Entries of /etc that programs read and that hold no secret. Not `ssl/private`, `shadow`,
# `sudoers`, `ssh`, `npmrc` or `pip.conf` (they may hold credentials), nor anything unlisted.
ETC_SHOWN = (
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust/extracted",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "protocols",
    "services",
    "rpc",
    "host.conf",
    "gai.conf",
    "mime.types",
    "magic",
    "magic.mime",
    "os-release",
    "debian_version",
    "lsb-release",
    "locale.alias",
    "inputrc",
    "bash.bashrc",
    "profile",
    "shells",
    "fonts",
    "xml",
    "perl",
    "java-17-openjdk",
    "java-21-openjdk",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
)
SANDBOX_HOSTNAME = "sandbox"
# Where every command finds its worktree, whatever the host path: what the setup command builds
# there (a virtualenv, node_modules) names this path, so it works in every worktree of the run.
WORKSPACE = Path("/workspace")
# Where a `SharedFolder` is shown.
SHARED = Path("/shared")
_RESOLVER = "nameserver 10.0.2.3\n"  # slirp4netns's DNS forwarder
_HOSTS = f"127.0.0.1\tlocalhost {SANDBOX_HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
# Where root binds the paths a switched user may not reach (a fresh tmpfs covers it first).
STAGE = Path("/run/baton-sandbox")
STAGE_SCRIPT = """set -e
stage=$1 uid=$2 gid=$3
shift 3
mount -t tmpfs -o mode=0755,size=64k baton-stage "$stage"
i=0
while [ "$1" != -- ]; do
    mkdir "$stage/$i"
    mount --bind "$1" "$stage/$i"
    i=$((i + 1))
    shift
done
shift
unset PWD  # the shell set it to Baton's folder; the sandbox's first process would show it
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"""


@dataclass(frozen=True)
class SharedFolder:
    """A host folder shown at `/shared`, read-only unless `writable`: how what one command
    built reaches another worktree's commands without Baton reading it on the host."""

    path: Path
    writable: bool = False


@dataclass
class View:
    """bwrap's file system arguments for one command, and the descriptors they read from.

    `staged` lists the host paths root must bind into `STAGE` before the user switch (empty when
    commands run as Baton's own user); `descriptors` are pipes holding synthesized files, to be
    passed to bwrap and closed once it has started.
    """

    arguments: list[str] = field(default_factory=list)
    staged: list[Path] = field(default_factory=list)
    descriptors: list[int] = field(default_factory=list)

    def close(self) -> None:
        for descriptor in self.descriptors:
            os.close(descriptor)
        self.descriptors.clear()

    def source(self, path: Path, user: SandboxUser) -> str:
        """Where bwrap finds host `path`: itself, or its staged copy when the user switches."""
        if not user.switched:
            return str(path)
        self.staged.append(path)
        return str(STAGE / str(len(self.staged) - 1))

    def data(self, content: str, destination: str) -> None:
        """A read-only file at `destination` holding `content`."""
        reading, writing = os.pipe()
        try:
            # A few hundred bytes: the pipe's buffer holds them all, so this never blocks.
            os.write(writing, content.encode())
        finally:
            os.close(writing)
        self.descriptors.append(reading)
        self.arguments += ["--perms", "0644", "--ro-bind-data", str(reading), destination]


def build_view(
    worktree: Path,
    extra_read_only: Sequence[Path],
    user: SandboxUser,
    *,
    tmp_bytes: int,
    network: bool,
    shared: SharedFolder | None = None,
) -> View:
    """The whole file system of one command (see the module); its descriptors are the
    caller's to close, unless this raises."""
    view = View()
    try:
        view.arguments += system_mounts()
        view.arguments += etc_mounts()
        for name, content in account_files(user).items():
            view.data(content, str(ETC / name))
        view.data(_HOSTS, "/etc/hosts")
        view.data(f"{SANDBOX_HOSTNAME}\n", "/etc/hostname")
        view.data(_NSSWITCH, "/etc/nsswitch.conf")
        if network:
            view.data(_RESOLVER, "/etc/resolv.conf")
        view.arguments += private_mounts(tmp_bytes)
        for path in extra_read_only:
            view.arguments += ["--ro-bind", view.source(path, user), str(path)]
        if shared is not None:
            mount = "--bind" if shared.writable else "--ro-bind"
            view.arguments += [mount, view.source(shared.path, user), str(SHARED)]
        source = view.source(worktree, user)
        view.arguments += ["--bind", source, str(WORKSPACE)]
        if _plain_entry(worktree / ".git"):
            # Baton's own git follows this file on the host; a command must not redirect it.
            view.arguments += ["--ro-bind", f"{source}/.git", str(WORKSPACE / ".git")]
    except BaseException:
        view.close()  # the pipes made before the failure
        raise
    return view


def system_mounts() -> list[str]:
    arguments: list[str] = []
    for directory in SYSTEM_DIRECTORIES:
        if directory.is_symlink():
            arguments += ["--symlink", os.readlink(directory), str(directory)]
        elif directory.is_dir():
            arguments += ["--ro-bind", str(directory), str(directory)]
    return arguments


def etc_mounts() -> list[str]:
    arguments = ["--dir", str(ETC)]
    for name in ETC_SHOWN:
        path = ETC / name
        if path.is_symlink():
            arguments += ["--symlink", os.readlink(path), str(path)]
        elif path.exists():
            arguments += ["--ro-bind", str(path), str(path)]
    return arguments


def private_mounts(tmp_bytes: int) -> list[str]:
    return [
        *["--dev", "/dev", "--proc", "/proc"],
        # --size applies to the --tmpfs right after it.
        *["--size", str(tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"],
        *["--dir", "/tmp/home", "--symlink", "../tmp", "/var/tmp"],
    ]


def stage_prefix(view: View, user: SandboxUser) -> list[str]:
    """The programs that start bwrap: for a switched user, a private mount namespace where root
    binds the staged paths, then the switch to the user; nothing otherwise."""
    if not user.switched:
        return []
    return [
        *["unshare", "--mount", "--propagation", "private", "--"],
        *["/bin/sh", "-c", STAGE_SCRIPT, "baton-stage"],
        *[str(STAGE), str(user.uid), str(user.gid), *map(str, view.staged), "--"],
    ]


def inside(path: Path, directories: Sequence[Path]) -> bool:
    return any(path.is_relative_to(directory.resolve()) for directory in directories)


def _plain_entry(path: Path) -> bool:
    # A symlink is never bound: its target could be any host path.
    return path.exists() and not path.is_symlink()
