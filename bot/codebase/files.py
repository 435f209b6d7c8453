"""A checkout's files as git sees them, and searching them: where git runs on a checkout.

`root` is a checkout (a worktree whose `.git` may be a file pointing at a mirror). Git runs with
no system or global configuration, so a user's settings cannot change what is listed.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from bot.git.runner import clean_environment

GIT_TIMEOUT_SECONDS = 120.0
# Git's own test for binary content: a NUL byte in the first 8000 bytes.
BINARY_PROBE_BYTES = 8000
# A search is stopped after this long (a back-reference pattern can run for hours) ...
SEARCH_SECONDS = 5.0
# ... or once git printed this much: very long matching lines, each read past and dropped.
MAX_GREP_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_MATCH_BYTES = 1200  # what is kept of one matching line: 300 characters of any UTF-8
MAX_PATH_BYTES = 4096
MAX_ERROR_BYTES = 4096
READ_CHUNK_BYTES = 64 * 1024


class GitFailed(RuntimeError):
    """Git could not answer about the checkout: a broken checkout, not a mistake of the caller."""


@dataclass(frozen=True)
class GitAnswer:
    """A finished git command: its exit status and what it printed."""

    code: int
    stdout: str


def run_git(
    root: Path, *args: str, ok_codes: Sequence[int] = (0,), pathspecs: bool = True
) -> GitAnswer:
    """What `git -C root *args` printed, and its exit status; `GitFailed` unless in `ok_codes`.

    With `pathspecs`, path arguments are taken literally (no globs or magic); commands that take
    plain paths and refuse that option pass False."""
    completed = subprocess.run(
        _command(root, args, pathspecs),
        capture_output=True,
        env=clean_environment(),
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode not in ok_codes:
        raise _failure(args, completed.returncode, completed.stderr)
    return GitAnswer(completed.returncode, completed.stdout.decode("utf-8", errors="replace"))


def tracked_files(root: Path) -> list[str]:
    """The paths of every file in the index of the checkout at `root`, sorted."""
    listed = run_git(root, "ls-files", "-z").stdout.split("\0")
    return sorted(path for path in listed if path)


def working_files(root: Path, under: str = ".") -> list[str]:
    """What git lists at or under `under` (a clean relative path) in the working copy: tracked
    files and untracked ones it does not ignore, sorted. A tracked file may since have been
    deleted or replaced by something else; callers look at each path without following links."""
    listed = run_git(
        root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", under
    )
    return sorted({path for path in listed.stdout.split("\0") if path})


def is_ignored(root: Path, relative: str) -> bool:
    """Whether git ignores the untracked path `relative` (tracked files are never ignored)."""
    answer = run_git(root, "check-ignore", "-q", "--", relative, ok_codes=(0, 1), pathspecs=False)
    return answer.code == 0


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file say it is binary, as git decides."""
    return b"\0" in head[:BINARY_PROBE_BYTES]


class BadPattern(ValueError):
    """Git refused a search pattern; the message is git's reason."""


@dataclass(frozen=True)
class GrepMatch:
    """A matching line: `text` is its beginning, at most `MAX_MATCH_BYTES` bytes of it, and
    `clipped` says the line went on."""

    path: str
    line: int
    text: str
    clipped: bool = False


@dataclass(frozen=True)
class GrepResult:
    """At most the asked number of matches, in git's order; `more` when git had others;
    `stopped` says why git was stopped before it finished (`time` or `output`), if it was."""

    matches: list[GrepMatch]
    more: bool
    stopped: str | None = None


def grep(
    root: Path,
    pattern: str,
    under: str,
    limit: int,
    seconds: float = SEARCH_SECONDS,
    max_output: int = MAX_GREP_OUTPUT_BYTES,
) -> GrepResult:
    """Lines matching the extended regular expression `pattern` in the text files at or under
    `under` that git does not ignore. Git is stopped after `seconds` or `max_output` bytes of
    output, whichever comes first, and the matches read by then are the answer; memory stays
    bounded whatever the lines' length. `BadPattern` when git cannot compile the pattern."""
    args = ("grep", "-n", "-z", "-I", "-E", "--untracked", "--no-color", "-e", pattern, "--", under)
    process = subprocess.Popen(
        _command(root, args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environment(),
        start_new_session=True,  # its own group, so a stop reaches all of it
    )
    reader = _GrepReader(limit)
    with process:
        stopped, errors = _drain(process, reader, time.monotonic() + seconds, max_output)
        if stopped is not None or reader.full:
            _kill_group(process)
    if stopped is None and not reader.full and process.returncode not in (0, 1):
        raise _grep_failure(args, process.returncode, errors)
    return GrepResult(reader.matches(), reader.full, stopped)


def _drain(
    process: subprocess.Popen[bytes], reader: _GrepReader, deadline: float, max_output: int
) -> tuple[str | None, bytes]:
    """Feed git's output to `reader` until git ends, the reader has enough, the deadline
    passes (`time`) or `max_output` bytes were read (`output`); also git's first error bytes."""
    stdout, stderr = cast(IO[bytes], process.stdout), cast(IO[bytes], process.stderr)
    errors = bytearray()
    read = 0
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        selector.register(stderr, selectors.EVENT_READ)
        while selector.get_map() and not reader.full:
            left = deadline - time.monotonic()
            if left <= 0:
                return "time", bytes(errors)
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, READ_CHUNK_BYTES)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.fileobj is stderr:
                    errors += chunk[: MAX_ERROR_BYTES - len(errors)]
                else:
                    read += len(chunk)
                    reader.feed(chunk)
            if read >= max_output and not reader.full:
                return "output", bytes(errors)
    if not reader.full:
        try:
            process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            return "time", bytes(errors)  # its output ended, yet it runs on
    return None, bytes(errors)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # it ended on its own meanwhile
    process.wait()


class _GrepReader:
    """`git grep -n -z` output (`path NUL line NUL text LF` per match) parsed as it arrives,
    keeping at most `MAX_MATCH_BYTES` of a line and `MAX_PATH_BYTES` of a path."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.full = False  # a match past `limit` was seen
        self._found: list[GrepMatch] = []
        self._fields: list[bytearray] = [bytearray()]
        self._clipped = False

    def feed(self, chunk: bytes) -> None:
        position = 0
        while position < len(chunk) and not self.full:
            stop = b"\n" if len(self._fields) == 3 else b"\0"
            end = chunk.find(stop, position)
            piece = chunk[position : len(chunk) if end < 0 else end]
            self._keep(piece)
            if end < 0:
                return
            position = end + 1
            if stop == b"\0":
                self._fields.append(bytearray())
            else:
                self._finish()

    def matches(self) -> list[GrepMatch]:
        """The matches read, with the one cut short by a stop if its number is known."""
        found = list(self._found)
        partial = self._match()
        if len(self._fields) == 3 and partial is not None and len(found) < self.limit:
            found.append(GrepMatch(partial.path, partial.line, partial.text, clipped=True))
        return found

    def _keep(self, piece: bytes) -> None:
        field = self._fields[-1]
        cap = MAX_MATCH_BYTES if len(self._fields) == 3 else MAX_PATH_BYTES
        room = cap - len(field)
        if len(piece) > room:
            self._clipped = self._clipped or len(self._fields) == 3
        field += piece[: max(room, 0)]

    def _finish(self) -> None:
        match = self._match()
        self._fields = [bytearray()]
        self._clipped = False
        if match is None:
            return
        if len(self._found) == self.limit:
            self.full = True  # enough read: the rest would only be counted
            return
        self._found.append(match)

    def _match(self) -> GrepMatch | None:
        if len(self._fields) != 3 or not self._fields[1].isdigit():
            return None
        path, line, text = self._fields
        return GrepMatch(
            path.decode(errors="replace"),
            int(line),
            text.decode(errors="replace"),
            self._clipped,
        )


def _grep_failure(args: Sequence[str], code: int, stderr: bytes) -> Exception:
    message = stderr.decode(errors="replace").strip()
    # git: "fatal: -e option, '(': Unmatched ( or \(" for a pattern it cannot compile.
    marker = "fatal: -e option, "
    if message.startswith(marker):
        _, _, reason = message[len(marker) :].rpartition("': ")
        return BadPattern(reason or message)
    return _failure(args, code, stderr)


def _failure(args: Sequence[str], code: int, stderr: bytes) -> GitFailed:
    command = " ".join(["git", *args])
    error = stderr.decode(errors="replace").strip() or "no message"
    return GitFailed(f"`{command}` failed with exit status {code}: {error}")


def _command(root: Path, args: Sequence[str], pathspecs: bool = True) -> list[str]:
    # Paths given are file names: never globs or pathspec magic such as `:(top)`.
    literal = ["--literal-pathspecs"] if pathspecs else []
    return ["git", *literal, "-C", str(root), *args]
