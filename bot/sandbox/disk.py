"""The worktree on the host's disk: handing it to the sandbox's user, and measuring it.

A bind mount has no quota, so the worktree's disk use is measured: before a command, by a
watchdog while it runs, and after it. Both walks go through `bot.sandbox.tree`, which never
follows a symlink, never blocks on a FIFO swapped in for a folder, and does not go deeper than
`tree.MAX_DEPTH` levels: a worktree nested deeper counts as over its cap.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bot.sandbox import tree
from bot.sandbox.identity import SandboxUser

# The top-level directory stays Baton's (git as root checks its owner) and is shared by group.
_SHARED_TOP_MODE = 0o770
_BLOCK_BYTES = 512


@dataclass(frozen=True)
class Usage:
    """What a worktree takes on disk (allocated blocks, each hard-linked file once), and which
    files (inode and modification time) are as long as the length asked about or longer.

    `unmeasured` says why part of the worktree could not be measured (folders nested too deep);
    the worktree then counts as over its cap, whatever `bytes` says.
    """

    bytes: int
    long_files: frozenset[tuple[int, int]]
    unmeasured: str = ""


def hand_over(worktree: Path, user: SandboxUser) -> None:
    """Make everything in `worktree` writable by the sandbox's `user` (a no-op when commands run
    as Baton's own user).

    Files Baton itself wrote since (a checkout, a model's edit) become the user's; the
    top-level directory stays Baton's own, shared with the user's group, so Baton's git keeps
    trusting the worktree, and its `.git` file stays Baton's. Folders nested past
    `tree.MAX_DEPTH` are left as they are: measuring the worktree refuses it anyway.
    """
    if not user.switched:
        return
    top = os.open(worktree, tree.FOLDER_FLAGS)
    try:
        os.fchown(top, os.geteuid(), user.gid)
        os.fchmod(top, _SHARED_TOP_MODE)
        for entry in tree.walk(top, too_deep=_leave):
            if entry.depth == 1 and entry.name == ".git":
                continue
            _give(entry, user)
    finally:
        os.close(top)


def measure(worktree: Path, long_file: int) -> Usage:
    """The disk use of `worktree` now, and its files of `long_file` bytes or more. Folders its
    owner left closed (`chmod 000`) are opened for the owner first, so nothing can be hidden
    from the measurement; folders nested past `tree.MAX_DEPTH` make it `unmeasured`."""
    seen: set[tuple[int, int]] = set()
    long_files: set[tuple[int, int]] = set()
    total = 0
    top = os.open(worktree, tree.FOLDER_FLAGS)
    try:
        for entry in tree.walk(top, owner_enters=True):
            status = entry.status
            if status.st_nlink > 1 and not entry.is_folder:
                if (status.st_dev, status.st_ino) in seen:
                    continue
                seen.add((status.st_dev, status.st_ino))
            total += status.st_blocks * _BLOCK_BYTES
            if stat.S_ISREG(status.st_mode) and status.st_size >= long_file:
                long_files.add((status.st_ino, status.st_mtime_ns))
    except tree.TooDeep as error:
        return Usage(total, frozenset(long_files), f"{error}, deeper than Baton measures")
    finally:
        os.close(top)
    return Usage(total, frozenset(long_files))


def free_bytes(path: Path) -> int:
    """Free space on the disk holding `path`, for a writer without root's reserve."""
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def _give(entry: tree.Entry, user: SandboxUser) -> None:
    if (entry.status.st_uid, entry.status.st_gid) == (user.uid, user.gid):
        return
    try:
        os.chown(entry.name, user.uid, user.gid, dir_fd=entry.folder, follow_symlinks=False)
    except FileNotFoundError:
        pass  # removed meanwhile


def _leave(entry: tree.Entry) -> None:
    pass  # too deep to hand over; `measure` refuses such a worktree
