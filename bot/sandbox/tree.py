"""Walking and deleting a folder tree that a hostile command may change while it is walked.

Every folder is opened through its parent's descriptor with O_NOFOLLOW | O_DIRECTORY |
O_NONBLOCK: a name swapped for a symlink fails (ELOOP), one swapped for a FIFO or a file fails
(ENOTDIR), and no open ever blocks. Such names, and names removed meanwhile, are skipped. A
folder closed to its owner is opened up through a descriptor of that folder, never by name, so
a swapped-in link cannot turn the change onto another file. The walk keeps its own stack rather
than recursing, and holds at most `MAX_DEPTH` folders open; what lies deeper is the caller's to
decide (`too_deep`).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

# One open descriptor per level: deeper folders are never entered.
MAX_DEPTH = 128
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A /proc/self/fd link must be followed: it leads to the folder its descriptor holds.
_REOPEN_FLAGS = FOLDER_FLAGS & ~os.O_NOFOLLOW
_HANDLE_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_ENTERS = stat.S_IRWXU
# What opening a name fails with once it was removed or swapped for something not a folder.
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


class TooDeep(Exception):
    """Folders nest deeper than `MAX_DEPTH` levels; the walk did not go into them."""

    def __init__(self) -> None:
        super().__init__(f"folders nest deeper than {MAX_DEPTH} levels")


class Entry(NamedTuple):  # a tuple, cheap to make: one is made for every name walked
    """One name in a folder of the walk.

    `folder` is the descriptor of the folder holding it, open until the walk moves past it;
    `status` is what lstat said of the name when the walk came to it; `depth` is 1 for names in
    the top folder. `done` marks a folder's second appearance, after everything in it.
    """

    folder: int
    name: str
    status: os.stat_result
    depth: int
    done: bool = False

    @property
    def is_folder(self) -> bool:
        return stat.S_ISDIR(self.status.st_mode)


@dataclass
class _Level:
    descriptor: int
    names: list[str]
    entry: Entry | None  # None for the top folder, which the caller opened


def _refuse(entry: Entry) -> NoReturn:
    raise TooDeep


def walk(
    top: int,
    *,
    owner_enters: bool = False,
    folders_done: bool = False,
    too_deep: Callable[[Entry], None] = _refuse,
) -> Iterator[Entry]:
    """Every entry under the folder open at `top` (the caller's to close), a folder before what
    it holds, and with `folders_done` once more after it.

    With `owner_enters`, folders of Baton's own that its owner may not read, write or enter are
    opened up for the owner (root enters every folder anyway). A folder deeper than `MAX_DEPTH`
    is not entered: it goes to `too_deep`, which by default raises TooDeep.
    """
    stack = [_Level(top, os.listdir(top), None)]
    try:
        while stack:
            level = stack[-1]
            if not level.names:
                stack.pop()
                if level.entry is not None:
                    os.close(level.descriptor)
                    if folders_done:
                        yield level.entry._replace(done=True)
                continue
            entry = _entry(level.descriptor, level.names.pop(), len(stack))
            if entry is None:
                continue
            yield entry
            if not entry.is_folder:
                continue
            if entry.depth > MAX_DEPTH:
                too_deep(entry)
                continue
            inner = _enter(entry, owner_enters)
            if inner is not None:
                stack.append(inner)
    finally:
        for level in stack[1:]:
            os.close(level.descriptor)


def _entry(folder: int, name: str, depth: int) -> Entry | None:
    try:
        status = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed meanwhile
    return Entry(folder, name, status, depth)


def _enter(entry: Entry, owner_enters: bool) -> _Level | None:
    descriptor = open_folder(entry.folder, entry.name, owner_enters=owner_enters)
    if descriptor is None:
        return None
    try:
        return _Level(descriptor, os.listdir(descriptor), entry)
    except BaseException:
        os.close(descriptor)
        raise


def open_folder(parent: int, name: str, *, owner_enters: bool = False) -> int | None:
    """A descriptor of the folder `name` in the folder open at `parent`, or None when that name
    is no longer a folder (removed, or swapped for a link, a FIFO or a file). With
    `owner_enters`, opened up for its owner first as `walk` says."""
    owner_enters = owner_enters and os.geteuid() != 0
    try:
        try:
            descriptor = os.open(name, FOLDER_FLAGS, dir_fd=parent)
        except PermissionError:
            if not owner_enters:
                raise
            descriptor = _open_closed(parent, name)
    except OSError as error:
        if error.errno in _GONE:
            return None
        raise
    if owner_enters:
        try:
            _let_owner_in(descriptor)
        except BaseException:
            os.close(descriptor)
            raise
    return descriptor


def _open_closed(parent: int, name: str) -> int:
    """Open a folder its owner may not read: its mode changes through an O_PATH descriptor of
    the folder itself, whatever its name leads to by then."""
    handle = os.open(name, _HANDLE_FLAGS, dir_fd=parent)
    try:
        status = os.fstat(handle)
        if status.st_uid != os.geteuid():
            raise PermissionError(errno.EACCES, "a closed folder of another user", name)
        held = f"/proc/self/fd/{handle}"
        os.chmod(held, stat.S_IMODE(status.st_mode) | _OWNER_ENTERS)
        return os.open(held, _REOPEN_FLAGS)
    finally:
        os.close(handle)


def _let_owner_in(descriptor: int) -> None:
    status = os.fstat(descriptor)
    if status.st_uid == os.geteuid() and _OWNER_ENTERS & ~status.st_mode:
        os.fchmod(descriptor, stat.S_IMODE(status.st_mode) | _OWNER_ENTERS)


def delete(parent: int, name: str) -> None:
    """Delete `name` in the folder open at `parent`, with everything in it: also folders closed
    to their owner and folders nested past `MAX_DEPTH`. Whatever can be deleted is; then the
    first OSError met, if any, is raised."""
    try:
        status = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(status.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    top = open_folder(parent, name, owner_enters=True)
    if top is None:
        return  # removed meanwhile
    try:
        failures = _empty(top)
    finally:
        os.close(top)
    if failures:
        raise failures[0]
    os.rmdir(name, dir_fd=parent)


def _empty(top: int) -> list[OSError]:
    """Delete what the folder open at `top` holds; what could not be deleted, and why."""
    failures: list[OSError] = []
    while _empty_once(top, failures):
        pass  # folders nested too deep were moved up to `top`: another pass deletes them
    return failures


def _empty_once(top: int, failures: list[OSError]) -> bool:
    """One walk deleting all it reaches; whether it moved folders nested too deep to `top`."""
    moved = False

    def move_up(entry: Entry) -> None:
        nonlocal moved
        try:
            os.rename(
                entry.name, f".deep-{uuid.uuid4().hex}", src_dir_fd=entry.folder, dst_dir_fd=top
            )
            moved = True
        except OSError as error:
            failures.append(error)

    for entry in walk(top, owner_enters=True, folders_done=True, too_deep=move_up):
        if entry.done or not entry.is_folder:
            _remove(entry, failures)
    return moved


def _remove(entry: Entry, failures: list[OSError]) -> None:
    try:
        if entry.is_folder:
            os.rmdir(entry.name, dir_fd=entry.folder)
        else:
            os.unlink(entry.name, dir_fd=entry.folder)
    except FileNotFoundError:
        pass  # removed meanwhile
    except OSError as error:
        failures.append(error)
