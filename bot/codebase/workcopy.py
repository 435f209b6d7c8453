"""A working copy's files as the read tools may touch them: regular files only, never through a
symbolic link, never blocking, and in bounded memory and time whatever a file's shape.

A worker can make anything in its working copy (a link to `/proc/self/environ`, a FIFO, a file of
gigabytes on one line), so every path is walked one component at a time without following a
link, and a file is opened with `O_NOFOLLOW | O_NONBLOCK` and checked again on the descriptor:
a swap between the check and the open cannot slip a link, FIFO or device through.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bot.codebase.files import BINARY_PROBE_BYTES, looks_binary
from bot.codebase.paths import PathRefused, clean_relative
from bot.codebase.snapshot import describe_link, printable

CHUNK_BYTES = 64 * 1024
# How much of one file a call reads at most, so a huge file costs bounded time too.
MAX_SCANNED_BYTES = 32 * 1024 * 1024
# A link's target text is read with one readlink; no path is longer.
_LINK_TARGET_BYTES = 4096
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Non-blocking: opening a FIFO must never wait for a writer.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Kind(StrEnum):
    FILE = "file"
    FOLDER = "folder"
    LINK = "link"
    MISSING = "missing"
    OTHER = "other"  # a FIFO, socket or device


@dataclass(frozen=True)
class Node:
    """What a path names in the working copy, looked at without following any link.

    `relative` is the clean path from the root (`.` for the root); `target` is a link's
    target text; `what` names any other kind of node (`a named pipe (FIFO)`)."""

    relative: str
    kind: Kind
    target: str = ""
    what: str = ""

    def link_note(self) -> str:
        return describe_link(self.relative, self.target)

    def not_a_file(self) -> str:
        """Why this node cannot be read as a file, for a node that is neither file nor folder."""
        return f"`{self.relative}` is {self.what}, not a regular file; only regular files are read"


def inspect(root: Path, given: str) -> Node:
    """What `given` names inside the working copy at `root` (a resolved, trusted folder).

    `PathRefused` when it is spelled as `clean_relative` refuses or when a folder on its way is
    a symbolic link (named in the message); the last component is reported as it is: a file,
    folder, link (with its target text), nothing, or another kind of node."""
    relative = clean_relative(given)
    if relative == ".":
        return Node(relative, Kind.FOLDER)
    parts = relative.split("/")
    for depth in range(1, len(parts)):
        prefix = "/".join(parts[:depth])
        node = _lstat_node(root, prefix)
        if node.kind is Kind.LINK:
            raise PathRefused(
                f"`{relative}` goes through `{prefix}`, a symbolic link; links are never "
                f"followed: name the path without it (read_file on `{prefix}` shows its target)"
            )
        if node.kind is not Kind.FOLDER:
            return Node(relative, Kind.MISSING)
    return _lstat_node(root, relative)


def _lstat_node(root: Path, relative: str) -> Node:
    location = root / relative
    try:
        status = os.lstat(location)
    except (FileNotFoundError, NotADirectoryError):
        return Node(relative, Kind.MISSING)
    except OSError as error:  # a folder without permission to look in, a name too long
        return Node(
            relative, Kind.OTHER, what=f"a path that cannot be looked at ({error.strerror})"
        )
    mode = status.st_mode
    if stat.S_ISREG(mode):
        return Node(relative, Kind.FILE)
    if stat.S_ISDIR(mode):
        return Node(relative, Kind.FOLDER)
    if stat.S_ISLNK(mode):
        return Node(relative, Kind.LINK, target=_link_target(location))
    return Node(relative, Kind.OTHER, what=node_kind(mode))


def _link_target(location: Path) -> str:
    try:
        target = os.readlink(location)
    except OSError as error:
        return f"(unreadable: {error.strerror})"
    return printable(target[:_LINK_TARGET_BYTES])


def node_kind(mode: int) -> str:
    """A file type in words, e.g. `a named pipe (FIFO)`."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a file of an unknown kind"


class NotReadable(Exception):
    """A file could not be opened as a regular file: it changed under the check, or the system
    refused; the message says which in plain words."""


@contextmanager
def opened(root: Path, relative: str) -> Iterator[tuple[int, os.stat_result]]:
    """A read-only descriptor of the regular file at `relative` (a clean path, as `inspect`
    gives), and its status, closed on leaving. No component is followed if it is a link, and
    the open never blocks; `NotReadable` unless the descriptor is a regular file."""
    descriptor = _open_nofollow(root, relative)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotReadable(
                f"`{relative}` is {node_kind(status.st_mode)}, not a regular file; "
                "only regular files are read"
            )
        yield descriptor, status
    finally:
        os.close(descriptor)


def _open_nofollow(root: Path, relative: str) -> int:
    *folders, name = relative.split("/")
    try:
        directory = os.open(root, _DIRECTORY_FLAGS)
    except OSError as error:
        raise NotReadable(f"the working copy cannot be opened ({error.strerror})") from None
    try:
        for folder in folders:
            inner = os.open(folder, _DIRECTORY_FLAGS, dir_fd=directory)
            os.close(directory)
            directory = inner
        return os.open(name, _FILE_FLAGS, dir_fd=directory)
    except OSError as error:
        # ELOOP: a link where a folder or the file was; it changed since it was looked at.
        raise NotReadable(
            f"`{relative}` could not be opened as a regular file ({error.strerror}); "
            "it may have changed: look at it again"
        ) from None
    finally:
        os.close(directory)


def read_head(descriptor: int, limit: int) -> bytes:
    """Up to `limit` bytes from the descriptor's current position."""
    parts: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(descriptor, min(CHUNK_BYTES, left))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def is_binary(descriptor: int) -> bool:
    """Whether the file's first bytes say it is binary, as git decides; reads from the start."""
    return looks_binary(os.pread(descriptor, BINARY_PROBE_BYTES, 0))


@dataclass
class Lines:
    """Lines `start`..`end` of a file, numbered, within `max_chars` characters, read in fixed
    chunks: of a line only what can be shown is kept, however long it is.

    After `scan`, `shown` holds the numbered lines, `cut` says the character cap stopped them
    before the lines asked for, `total` counts the lines read and `partial` says the file went
    on past the bytes scanned, so `total` counts only the lines in that part."""

    start: int
    end: int | None
    max_chars: int
    shown: list[str] = field(default_factory=list)
    cut: bool = False
    total: int = 0
    partial: bool = False
    _size: int = 0
    _line: int = 1  # the line being read
    _open: bool = False  # bytes of `_line` were read, and no newline yet
    _current: bytearray = field(default_factory=bytearray)
    _overlong: bool = False

    def scan(self, descriptor: int, limit: int = MAX_SCANNED_BYTES) -> Lines:
        """Read the file from the descriptor's position, at most `limit` bytes."""
        scanned = 0
        while scanned < limit:
            chunk = os.read(descriptor, min(CHUNK_BYTES, limit - scanned))
            if not chunk:
                break
            scanned += len(chunk)
            self._feed(chunk)
            self._open = not chunk.endswith(b"\n")
        else:
            self.partial = bool(os.read(descriptor, 1))
        if self._open:
            self._overlong = self._overlong or self.partial  # the limit cut this line
            self._close_line()
        self.total = self._line - 1
        return self

    def _feed(self, chunk: bytes) -> None:
        position = 0
        while position < len(chunk):
            if self._line < self.start:
                position = self._skip_to_start(chunk, position)
                continue
            if not self._wanted():  # past the end, or the cap is reached: only count
                self._line += chunk.count(b"\n", position)
                return
            newline = chunk.find(b"\n", position)
            if newline < 0:
                self._keep(chunk[position:])
                return
            self._keep(chunk[position:newline])
            self._close_line()
            position = newline + 1

    def _skip_to_start(self, chunk: bytes, position: int) -> int:
        """The position in `chunk` where line `start` begins, or its end, counting lines."""
        newlines = chunk.count(b"\n", position)
        if self._line + newlines < self.start:
            self._line += newlines
            return len(chunk)
        while self._line < self.start:
            position = chunk.index(b"\n", position) + 1
            self._line += 1
        return position

    def _wanted(self) -> bool:
        past_end = self.end is not None and self._line > self.end
        return not (self._line < self.start or past_end or self.cut)

    def _keep(self, piece: bytes) -> None:
        # Four bytes per character at most: enough of a line to fill the cap, and no more.
        room = 4 * self.max_chars - len(self._current)
        if len(piece) > room:
            self._overlong = True
        self._current += piece[: max(room, 0)]

    def _close_line(self) -> None:
        if self._wanted():
            self._show(_numbered(self._line, bytes(self._current)), self._overlong)
        self._current.clear()
        self._overlong = False
        self._line += 1

    def _show(self, line: str, overlong: bool) -> None:
        if not overlong and self._size + len(line) + 1 <= self.max_chars:
            self.shown.append(line)
            self._size += len(line) + 1
            return
        self.cut = True
        if not self.shown:  # one line longer than the cap: show its beginning
            self.shown.append(line[: max(self.max_chars - 40, 0)] + " [… line cut]")


def _numbered(number: int, raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    return f"{number}\t{text}"
