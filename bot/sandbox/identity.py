"""Who a sandboxed command runs as.

When Baton runs as root, each worktree's commands run as a user of their own: a uid derived
from the worktree's path, in a range no distribution, login or container tool hands out. Per-
user counters (RLIMIT_NPROC, inotify watches, key quotas) are then the command's own instead
of being shared with every other sandbox, as one fixed `nobody` would share them, and the uid
owns no file on the host outside worktrees. The same path always gives the same uid, so a
worktree stays writable from one command to the next. When Baton is not root its own user runs
the commands, inside a user namespace.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

SANDBOX_USER_NAME = "sandbox"
# Above systemd's container range (up to 1879048191), below 2**31 and its signed-int troubles.
FIRST_DERIVED_ID = 2_000_000_000
DERIVED_IDS = 100_000_000


@dataclass(frozen=True)
class SandboxUser:
    """The uid and gid of a sandbox's processes; `switched` when they differ from Baton's
    own (Baton is root)."""

    uid: int
    gid: int
    switched: bool


def sandbox_user(worktree: Path) -> SandboxUser:
    """The user the commands in `worktree` run as (see the module)."""
    if os.geteuid() != 0:
        return SandboxUser(os.getuid(), os.getgid(), switched=False)
    digest = hashlib.sha256(os.fsencode(worktree.resolve())).digest()
    derived = FIRST_DERIVED_ID + int.from_bytes(digest[:8], "big") % DERIVED_IDS
    return SandboxUser(derived, derived, switched=True)


def account_files(user: SandboxUser) -> dict[str, str]:
    """`/etc/passwd` and `/etc/group` naming only the sandbox's user and `nobody`, whom files
    of users not mapped into the sandbox belong to."""
    home = "/tmp/home"
    return {
        "passwd": (
            f"{SANDBOX_USER_NAME}:x:{user.uid}:{user.gid}:Baton sandbox:{home}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
        "group": f"{SANDBOX_USER_NAME}:x:{user.gid}:\nnogroup:x:65534:\n",
    }
