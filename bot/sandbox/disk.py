"""The worktree on the host's disk: handing it to the sandbox's user, and measuring it.

A bind mount has no quota, so the worktree's disk use is measured: before a command, by a
watchdog while it runs, and after it. Every walk goes through directory descriptors and never
follows a symlink, so a command that swaps a folder for a link cannot point Baton elsewhere.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bot.sandbox.identity import SandboxUser

# The top-level directory stays Baton's (git as root checks its owner) and is shared by group.
_SHARED_TOP_MODE = 0o770
_OWNER_ENTERS = stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR
_BLOCK_BYTES = 512


@dataclass(frozen=True)
class Usage:
    """What a worktree takes on disk (allocated blocks, each hard-linked file once), and which
    files (inode and modification time) are as long as the length asked about or longer."""

    bytes: int
    long_files: frozenset[tuple[int, int]]


def hand_over(worktree: Path, user: SandboxUser) -> None:
    """Make everything in `worktree` writable by the sandbox's `user` (a no-op when commands run
    as Baton's own user).

    Files Baton itself wrote since (a checkout, a model's edit) become the user's; the
    top-level directory stays Baton's own, shared with the user's group, so Baton's git keeps
    trusting the worktree, and its `.git` file stays Baton's.
    """
    if not user.switched:
        return
    top = os.open(worktree, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(top, os.geteuid(), user.gid)
        os.fchmod(top, _SHARED_TOP_MODE)
    finally:
        os.close(top)
    top_path = str(worktree)
    for path, directories, files, folder in os.fwalk(top_path, follow_symlinks=False):
        for name in (*directories, *files):
            if path == top_path and name == ".git":
                continue
            _give(name, folder, user)


def measure(worktree: Path, long_file: int) -> Usage:
    """The disk use of `worktree` now, and its files of `long_file` bytes or more. Folders its
    owner left closed (`chmod 000`) are opened for the owner first, so nothing can be hidden
    from the measurement."""
    seen: set[tuple[int, int]] = set()
    long_files: set[tuple[int, int]] = set()
    total = 0
    for _, directories, files, folder in os.fwalk(worktree, follow_symlinks=False):
        for name in directories:
            _let_owner_in(name, folder)
        for name in (*directories, *files):
            try:
                entry = os.stat(name, dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed by the running command meanwhile
            if entry.st_nlink > 1 and not stat.S_ISDIR(entry.st_mode):
                if (entry.st_dev, entry.st_ino) in seen:
                    continue
                seen.add((entry.st_dev, entry.st_ino))
            total += entry.st_blocks * _BLOCK_BYTES
            if stat.S_ISREG(entry.st_mode) and entry.st_size >= long_file:
                long_files.add((entry.st_ino, entry.st_mtime_ns))
    return Usage(total, frozenset(long_files))


def free_bytes(path: Path) -> int:
    """Free space on the disk holding `path`, for a writer without root's reserve."""
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def _give(name: str, folder: int, user: SandboxUser) -> None:
    try:
        entry = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (entry.st_uid, entry.st_gid) != (user.uid, user.gid):
        os.chown(name, user.uid, user.gid, dir_fd=folder, follow_symlinks=False)


def _let_owner_in(name: str, folder: int) -> None:
    # Root enters every folder anyway; Baton as the owner may always change the mode.
    if os.geteuid() == 0:
        return
    try:
        entry = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return
    missing = _OWNER_ENTERS & ~entry.st_mode
    if stat.S_ISDIR(entry.st_mode) and missing and entry.st_uid == os.geteuid():
        os.chmod(name, stat.S_IMODE(entry.st_mode) | _OWNER_ENTERS, dir_fd=folder)
