"""A checkout's files as git sees them, and their text: the only place that runs git here.

`root` is a checkout (a worktree whose `.git` may be a file pointing at a mirror). Git runs with
no system or global configuration, so a user's settings cannot change what is listed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from bot.git.runner import clean_environment

GIT_TIMEOUT_SECONDS = 120.0
# Git's own test for binary content: a NUL byte in the first 8000 bytes.
BINARY_PROBE_BYTES = 8000
_REGULAR_FILE_MODES = frozenset({"100644", "100755"})


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


@dataclass(frozen=True)
class TrackedFile:
    """A file in git's index: its POSIX path from the root, and whether it is a regular file
    (not a symlink or a submodule)."""

    path: str
    regular: bool


def tracked_files(root: Path) -> list[str]:
    """The paths of every file in the index of the checkout at `root`, sorted."""
    return [entry.path for entry in index_entries(root)]


def index_entries(root: Path) -> list[TrackedFile]:
    """Every file in the index of the checkout at `root`, sorted by path."""
    entries = []
    for record in run_git(root, "ls-files", "-s", "-z").stdout.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        entries.append(TrackedFile(path, meta.split(" ", 1)[0] in _REGULAR_FILE_MODES))
    return sorted(entries, key=lambda entry: entry.path)


def working_files(root: Path, under: str = ".") -> list[str]:
    """The files at or under `under` (a safe relative path) that exist in the working copy and
    git does not ignore, tracked or not, sorted."""
    listed = run_git(
        root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", under
    )
    paths = {path for path in listed.stdout.split("\0") if path}
    # A tracked file a worker deleted is still in the index; list what is there.
    return sorted(path for path in paths if _exists(root / path))


def is_ignored(root: Path, relative: str) -> bool:
    """Whether git ignores the untracked path `relative` (tracked files are never ignored)."""
    answer = run_git(root, "check-ignore", "-q", "--", relative, ok_codes=(0, 1), pathspecs=False)
    return answer.code == 0


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file say it is binary, as git decides."""
    return b"\0" in head[:BINARY_PROBE_BYTES]


def read_text(path: Path, max_bytes: int) -> str | None:
    """The text of the file at `path` (a resolved, safe location), or None when it is binary,
    larger than `max_bytes` or unreadable. Undecodable bytes become U+FFFD."""
    try:
        if path.stat().st_size > max_bytes:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return None if looks_binary(data) else data.decode("utf-8", errors="replace")


class BadPattern(ValueError):
    """Git refused a search pattern; the message is git's reason."""


@dataclass(frozen=True)
class GrepMatch:
    path: str
    line: int
    text: str


@dataclass(frozen=True)
class GrepResult:
    """At most the asked number of matches, in git's order; `more` when git had others."""

    matches: list[GrepMatch]
    more: bool


def grep(root: Path, pattern: str, under: str, limit: int) -> GrepResult:
    """Lines matching the extended regular expression `pattern` in the text files at or under
    `under` that git does not ignore. `BadPattern` when git cannot compile the pattern."""
    args = ("grep", "-n", "-z", "-I", "-E", "--untracked", "--no-color", "-e", pattern, "--", under)
    process = subprocess.Popen(
        _command(root, args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environment(),
    )
    # Both are pipes, as asked above.
    stdout, stderr = cast(IO[bytes], process.stdout), cast(IO[bytes], process.stderr)
    matches: list[GrepMatch] = []
    more = False
    with process:
        for record in stdout:
            if len(matches) == limit:
                more = True
                process.kill()  # enough read: the rest would only be counted
                break
            matches.extend(_grep_match(record))
        errors = stderr.read()
    if not more and process.returncode not in (0, 1):
        raise _grep_failure(args, process.returncode, errors)
    return GrepResult(matches, more)


def _grep_match(record: bytes) -> list[GrepMatch]:
    # `path NUL line NUL text`, one per output line (`-z` keeps odd paths unquoted).
    fields = record.rstrip(b"\n").split(b"\0", 2)
    if len(fields) != 3 or not fields[1].isdigit():
        return []
    path, line, text = fields
    return [GrepMatch(path.decode(errors="replace"), int(line), text.decode(errors="replace"))]


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


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
