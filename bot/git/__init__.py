"""Baton's git transport: a bare mirror per repository, a worktree per task, commits with Baton's
identity and trailers, and pushes with a lease. The installation token reaches git only through
the environment of the one git process that needs it."""

from bot.git.auth import TokenProvider
from bot.git.mirror import Mirror, Mirrors, MirrorUpdate, PushRejected
from bot.git.runner import GitError, GitRunner, GitTimeout
from bot.git.worktree import (
    ApplyConflict,
    Commit,
    DiffStat,
    Identity,
    Worktree,
    commit_message,
)

__all__ = [
    "ApplyConflict",
    "Commit",
    "DiffStat",
    "GitError",
    "GitRunner",
    "GitTimeout",
    "Identity",
    "Mirror",
    "MirrorUpdate",
    "Mirrors",
    "PushRejected",
    "TokenProvider",
    "Worktree",
    "commit_message",
]
