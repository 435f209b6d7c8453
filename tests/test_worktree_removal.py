"""A worktree goes whole, whatever permissions a worker's commands left inside it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.git.runner import GitRunner
from bot.git.worktree import remove_worktree
from tests.sandboxes import make_mirror_and_worktree

NON_ROOT = 65534


def give_to(root: Path, owner: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, owner, owner, follow_symlinks=False)


def leave_unreadable_folders(worktree: Path, owner: int | None = None) -> None:
    """What a worker can leave: a folder nobody may enter, read-only folders of files."""
    locked = worktree / "locked" / "deeper"
    locked.mkdir(parents=True)
    (locked / "file.txt").write_text("x")
    frozen = worktree / "frozen"
    frozen.mkdir()
    (frozen / "kept.txt").write_text("y")
    (frozen / "kept.txt").chmod(0o444)
    if owner is not None:
        give_to(worktree, owner)
    locked.chmod(0o000)
    (worktree / "locked").chmod(0o000)
    frozen.chmod(0o555)


async def test_a_worktree_with_folders_of_another_user_is_removed(tmp_path: Path) -> None:
    mirror, worktree = make_mirror_and_worktree(tmp_path / "data")
    leave_unreadable_folders(worktree, owner=NON_ROOT)

    await remove_worktree(GitRunner(), mirror, worktree)

    assert not worktree.exists()
    listed = await GitRunner().run(["worktree", "list"], cwd=mirror)
    assert str(worktree) not in listed.stdout


def remove_as(user: int, mirror: Path, worktree: Path) -> None:
    """In a forked child (Baton's code is already loaded): become `user`, then remove."""
    os.setgroups([])
    os.setgid(user)
    os.setuid(user)
    asyncio.run(remove_worktree(GitRunner(), mirror, worktree))


@pytest.fixture
def reachable_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's own are the test user's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="baton-removal-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


async def test_a_non_root_baton_removes_folders_its_commands_locked(
    reachable_folder: Path,
) -> None:
    # The whole tree belongs to the non-root user, as it does when Baton runs as that user.
    mirror, worktree = make_mirror_and_worktree(reachable_folder)
    give_to(reachable_folder, NON_ROOT)
    leave_unreadable_folders(worktree, owner=NON_ROOT)

    removal = multiprocessing.get_context("fork").Process(
        target=remove_as, args=(NON_ROOT, mirror, worktree)
    )
    removal.start()
    await asyncio.to_thread(removal.join)

    assert removal.exitcode == 0
    assert not worktree.exists()
