"""Room on the data directory's disk: with it full, deliveries cannot be stored and worktrees
cannot be made, so Baton says so before that happens."""

from __future__ import annotations

from pathlib import Path

from bot.sandbox.disk import free_bytes

MIB = 1024 * 1024


def disk_problem(path: Path, floor_mb: int) -> str | None:
    """Why the disk holding `path` (or its nearest existing parent, for a data directory not
    made yet) is too full to work on, or None when it has room."""
    existing = path.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = free_bytes(existing)
    if free >= floor_mb * MIB:
        return None
    return (
        f"nearly full: {free // MIB} MiB free on the disk of {path}, below the "
        f"{floor_mb} MiB Baton needs (BATON_MIN_FREE_DISK_MB); free some space"
    )
