"""Walking a worktree that a hostile command changes meanwhile: measuring it, handing it over,
deleting it.

A command cannot be timed to win a race on every run, so hooks make the swap at the worst
moment for Baton: right before it opens a listed folder, or changes a folder's mode.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.git.worktree import delete_tree
from bot.sandbox.disk import hand_over, measure
from bot.sandbox.identity import SandboxUser
from bot.sandbox.tree import MAX_DEPTH

NON_ROOT = 65534
GIB = 1024 * 1024 * 1024
# Far longer than any of these walks takes; a walk still going by then is stuck.
STUCK_SECONDS = 20.0
DEEP = 5000

Walk = Callable[[Path], object]
WALKS: dict[str, Walk] = {
    "measure": lambda tree: measure(tree, GIB),
    "hand_over": lambda tree: hand_over(tree, SandboxUser(NON_ROOT, NON_ROOT, switched=True)),
    "delete_tree": delete_tree,
}
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="handing over needs root")
# The walks that open up folders a command closed to its own user.
OPENING_WALKS = {name: WALKS[name] for name in ("measure", "delete_tree")}


def walks(chosen: dict[str, Walk]) -> list[object]:
    return [
        pytest.param(walk, id=name, marks=[ROOT_ONLY] if name == "hand_over" else [])
        for name, walk in chosen.items()
    ]


def swap_before_opening(monkeypatch: pytest.MonkeyPatch, place: Path) -> None:
    """The first time `place`'s name is opened inside its folder, it is a FIFO by then."""
    real_open = os.open
    swapped = False

    def open_after_swap(path: str, flags: int, mode: int = 0o777, **keywords: int) -> int:
        nonlocal swapped
        if not swapped and path == place.name and keywords.get("dir_fd") is not None:
            swapped = True
            shutil.rmtree(place)
            os.mkfifo(place)
        return real_open(path, flags, mode, **keywords)

    monkeypatch.setattr(os, "open", open_after_swap)


def swap_before_changing_mode(monkeypatch: pytest.MonkeyPatch, place: Path, target: Path) -> None:
    """The first time the folder at `place` is about to get a new mode, its name is made a
    symlink to `target` (the folder itself moves aside)."""
    real_chmod = os.chmod
    folder = place.stat().st_ino
    swapped = False

    def chmod_after_swap(path: str, mode: int, **keywords: int) -> None:
        nonlocal swapped
        dir_fd = keywords.get("dir_fd")
        if not swapped and os.stat(path, dir_fd=dir_fd).st_ino == folder:
            swapped = True
            place.rename(place.with_name("moved-aside"))
            place.symlink_to(target)
        real_chmod(path, mode, **keywords)

    monkeypatch.setattr(os, "chmod", chmod_after_swap)


def finishes(walk: Walk, tree: Path, fifo: Path) -> bool:
    """Whether `walk` over `tree` ends (raising nothing) while the test waits; a walk stuck
    opening `fifo` is let go afterwards."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            walk(tree)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(STUCK_SECONDS)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer wakes the stuck reader
        thread.join(STUCK_SECONDS)
        return False
    if errors:
        raise errors[0]
    return True


def make_chain(top: Path, depth: int) -> None:
    """`depth` folders under `top`, each in the one before, with a file in the last; made
    through descriptors, as no path that long can be named."""
    folder = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=folder)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        written = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=folder)
        os.write(written, b"x" * 10_000)
        os.close(written)
    finally:
        os.close(folder)


def run_as(user: int, walk: Walk, tree: Path) -> None:
    """In a forked child (Baton's code is already loaded): become `user`, then walk."""
    os.setgroups([])
    os.setgid(user)
    os.setuid(user)
    walk(tree)


@pytest.fixture
def reachable_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's own are the test user's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="baton-walk-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize("walk", walks(WALKS))
def test_a_folder_swapped_for_a_fifo_before_it_is_opened_does_not_hang_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, walk: Walk
) -> None:
    tree = tmp_path / "tree"
    (tree / "swapped" / "inner").mkdir(parents=True)
    (tree / "kept.txt").write_text("kept\n")
    swap_before_opening(monkeypatch, tree / "swapped")

    assert finishes(walk, tree, tree / "swapped")


@pytest.mark.skipif(os.geteuid() != 0, reason="the walk runs as another user, made by root")
@pytest.mark.parametrize("walk", walks(OPENING_WALKS))
def test_a_closed_folder_swapped_for_a_link_never_changes_the_links_target(
    reachable_folder: Path, monkeypatch: pytest.MonkeyPatch, walk: Walk
) -> None:
    # Baton runs as NON_ROOT here, and its commands as the same user, as without root.
    tree = reachable_folder / "tree"
    closed = tree / "closed"
    closed.mkdir(parents=True)
    (closed / "inside.txt").write_text("inside\n")
    batons_own = reachable_folder / "batons-own.txt"
    batons_own.write_text("Baton's file, outside the worktree\n")
    for path in (tree, closed, closed / "inside.txt", batons_own):
        os.chown(path, NON_ROOT, NON_ROOT)
    batons_own.chmod(0o600)
    closed.chmod(0o000)
    swap_before_changing_mode(monkeypatch, closed, batons_own)

    walking = multiprocessing.get_context("fork").Process(
        target=run_as, args=(NON_ROOT, walk, tree)
    )
    walking.start()
    walking.join(STUCK_SECONDS)

    assert stat.S_IMODE(batons_own.stat().st_mode) == 0o600
    assert (tree / "moved-aside").is_dir()  # the swap was made
    assert walking.exitcode == 0


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Path]:
    """A folder for chains of folders; deleted here, as pytest's own clean-up recurses."""
    folder = tmp_path / "deep"
    folder.mkdir()
    try:
        yield folder
    finally:
        delete_tree(folder)


def test_folders_nested_deeper_than_the_walk_goes_count_as_over_the_cap(deep: Path) -> None:
    make_chain(deep, DEEP)

    usage = measure(deep, GIB)

    assert usage.unmeasured == (
        f"folders nest deeper than {MAX_DEPTH} levels, deeper than Baton measures"
    )


def test_folders_nested_as_deep_as_the_walk_goes_are_measured_whole(deep: Path) -> None:
    make_chain(deep, MAX_DEPTH)

    usage = measure(deep, 10_000)

    assert usage.unmeasured == ""
    assert len(usage.long_files) == 1  # the file at the bottom was reached


def test_a_tree_nested_deeper_than_the_walk_goes_is_deleted_whole(deep: Path) -> None:
    make_chain(deep, DEEP)

    delete_tree(deep)

    assert not deep.exists()
