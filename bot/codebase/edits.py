"""The writing model tools of CONTRACT §6: `write_file`, `delete_file` and `apply_patch`.

A task may change only the files of its write set (its plan's `files`; a listed file need not
exist yet). Every path goes through `resolve_inside`, and nothing is written through a symlink,
even one that stays inside the checkout. A refused or failed call is a `ToolError` whose message
says what to send instead, and it leaves every file exactly as it was.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unidiff.errors import UnidiffParseError
from unidiff.patch import PatchSet

from bot.codebase.files import GIT_TIMEOUT_SECONDS
from bot.codebase.paths import PathRefused, resolve_inside
from bot.codebase.tools import in_thread, required_string
from bot.git.runner import clean_environment
from bot.llm.agent import Tool, ToolError
from bot.llm.types import ToolSpec

DEFAULT_MAX_PATCH_CHARS = 200_000
NEW_FILE_MODE = 0o644  # what git records for a plain file
DEV_NULL = "/dev/null"
_GIT_FILE_MODES = frozenset({"100644", "100755"})
_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$")
# Git header lines that set a file's mode: a symlink (120000) or submodule (160000) is refused.
_MODE_LINE = re.compile(r"^(?:old mode|new mode|new file mode|deleted file mode|index \S+) (\d+)$")
# Git header lines naming the two sides of a rename or copy, without a/ and b/ prefixes.
_RENAME_LINE = re.compile(r"^(?:rename|copy) (?:from|to) (.+)$")
_PATCH_FAILED = "error: patch failed: "

_PATH_PROPERTY = {"type": "string", "description": "relative to the repository root"}

WRITE_FILE = ToolSpec(
    "write_file",
    "Create or replace a file of this task's write set with `content`, creating its folders.",
    {
        "type": "object",
        "properties": {
            "path": _PATH_PROPERTY,
            "content": {"type": "string", "description": "the whole new text of the file"},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
)
DELETE_FILE = ToolSpec(
    "delete_file",
    "Delete a file of this task's write set.",
    {
        "type": "object",
        "properties": {"path": _PATH_PROPERTY},
        "required": ["path"],
        "additionalProperties": False,
    },
)
APPLY_PATCH = ToolSpec(
    "apply_patch",
    "Apply a unified diff to files of this task's write set, all of it or nothing "
    "(`--- a/path`, `+++ b/path`, `@@` hunks; `/dev/null` as a side creates or deletes a file).",
    {
        "type": "object",
        "properties": {
            "patch": {
                "type": "string",
                "description": "a unified diff, as `git diff` prints it; hunk line counts "
                "are recounted, so they need not be exact",
            }
        },
        "required": ["patch"],
        "additionalProperties": False,
    },
)


class WriteSet:
    """The files one task may write: its plan's `files`. A listed file need not exist yet.

    Paths match after dropping `./` segments and repeated or trailing slashes; `..` is never
    collapsed, so a path that holds it matches nothing unless listed so.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._paths = frozenset(_normalised(path) for path in paths)

    def allows(self, relative: str) -> bool:
        """Whether the task may create, change or delete the file at `relative`."""
        return _normalised(relative) in self._paths

    def __repr__(self) -> str:
        return f"WriteSet({list(self.paths)!r})"

    @property
    def paths(self) -> tuple[str, ...]:
        """The listed files, normalised and sorted."""
        return tuple(sorted(self._paths))

    def refusal(self, relative: str) -> str:
        """Why writing `relative` is refused, naming the files the task may write."""
        if not self._paths:
            return (
                f"`{relative}` is not in this task's write set, which is empty; "
                "finish and say in notes what needs changing"
            )
        return (
            f"`{relative}` is not in this task's write set ({', '.join(self.paths)}); change "
            "only those files, or finish and say in notes what else needs changing"
        )


def edit_tools(
    root: Path, write_set: WriteSet, *, max_patch_chars: int = DEFAULT_MAX_PATCH_CHARS
) -> list[Tool]:
    """`write_file`, `delete_file` and `apply_patch` over the checkout at `root`.

    Each changes only files of `write_set`, answers JSON (`{"path", "written": bytes}`,
    `{"path", "deleted": true}`, `{"files", "added", "removed"}`, where `files` are the paths
    git reports: a rename's new name) and leaves every file as it was when it refuses or fails.
    Text is written as UTF-8. `apply_patch` refuses patches longer than `max_patch_chars`.
    """
    editor = _Editor(root.resolve(), write_set, max_patch_chars)
    return [
        Tool(WRITE_FILE, in_thread(WRITE_FILE, editor.write_file)),
        Tool(DELETE_FILE, in_thread(DELETE_FILE, editor.delete_file)),
        Tool(APPLY_PATCH, in_thread(APPLY_PATCH, editor.apply_patch)),
    ]


_Answer = dict[str, Any]


@dataclass(frozen=True)
class _Editor:
    root: Path
    write_set: WriteSet
    max_patch_chars: int

    def write_file(self, arguments: Mapping[str, Any]) -> _Answer:
        relative = self._writable(required_string(arguments, "path"))
        content = arguments.get("content")
        if not isinstance(content, str):
            raise ToolError(f"content must be a string, the whole text of `{relative}`")
        data = _utf8(content, "content")
        try:
            _write_with_parents(self.root / relative, data)
        except OSError as error:
            raise ToolError(f"`{relative}` could not be written ({error.strerror})") from None
        return {"path": relative, "written": len(data)}

    def delete_file(self, arguments: Mapping[str, Any]) -> _Answer:
        relative = self._writable(required_string(arguments, "path"))
        location = self.root / relative
        if not location.exists():
            raise ToolError(f"`{relative}` does not exist, so there is nothing to delete")
        try:
            location.unlink()
        except OSError as error:
            raise ToolError(f"`{relative}` could not be deleted ({error.strerror})") from None
        return {"path": relative, "deleted": True}

    def apply_patch(self, arguments: Mapping[str, Any]) -> _Answer:
        patch = required_string(arguments, "patch")
        if len(patch) > self.max_patch_chars:
            raise ToolError(
                f"the patch is {len(patch)} characters, over the limit of "
                f"{self.max_patch_chars}; send smaller patches, or use write_file"
            )
        text = _recounted(patch)
        parsed = _parsed(text)
        strip = _strip_level(parsed)
        self._check_patch(text, parsed, strip)
        with _patch_file(text) as patch_path:
            options = [f"-p{strip}", "--whitespace=nowarn", str(patch_path)]
            counts = self._git_view(options, parsed, strip)
            self._git_apply(["--check", *options], parsed, strip)
            self._git_apply(options, parsed, strip)
        return {
            "files": sorted(counts),
            "added": sum(added for added, _ in counts.values()),
            "removed": sum(removed for _, removed in counts.values()),
        }

    def _writable(self, given: str) -> str:
        """The normalised relative path of `given` when this task may write a regular file
        there; ToolError naming the problem otherwise."""
        try:
            resolve_inside(self.root, given)
        except PathRefused as error:
            raise ToolError(str(error)) from None
        relative = _normalised(given)
        if relative in ("", "."):
            raise ToolError(f"`{given}` is the repository root; name a file")
        if not self.write_set.allows(relative):
            raise ToolError(self.write_set.refusal(relative))
        link = _symlink_on_the_way(self.root, relative)
        if link is not None:
            raise ToolError(
                f"`{relative}` goes through the symlink `{link}`; files are never written "
                "through symlinks: name the file it points to, if the write set holds it"
            )
        location = self.root / relative
        if location.is_dir():
            raise ToolError(f"`{relative}` is a folder; name a file")
        if location.exists() and not location.is_file():
            raise ToolError(f"`{relative}` is not a regular file; only files can be written")
        return relative

    def _check_patch(self, text: str, parsed: PatchSet, strip: int) -> None:
        """ToolError unless every file the patch names, on either side, may be written, and it
        changes only the text of plain files."""
        for patched in parsed:
            if patched.is_binary_file:
                raise ToolError(
                    f"the patch changes `{patched.path}` as a binary file; {_TEXT_ONLY}"
                )
            for side in (patched.source_file, patched.target_file):
                if side != DEV_NULL:
                    self._writable(_side_name(side, strip))
        for line in text.split("\n"):
            self._check_header_line(line)

    def _check_header_line(self, line: str) -> None:
        mode = _MODE_LINE.match(line)
        if mode is not None and mode.group(1) not in _GIT_FILE_MODES:
            raise ToolError(
                f"`{line}`: the patch makes a symlink or submodule (mode {mode.group(1)}); "
                "only regular files can be written"
            )
        renamed = _RENAME_LINE.match(line)
        if renamed is not None:
            self._writable(renamed.group(1))

    def _git_view(self, options: Sequence[str], parsed: PatchSet, strip: int) -> _Counts:
        """Added and removed lines of each file git itself will touch, each checked again: the
        last word on what a patch names is git's own reading of it."""
        counts: _Counts = {}
        for record in self._git_apply(["--numstat", "-z", *options], parsed, strip).split("\0"):
            if not record:
                continue
            added, removed, path = record.split("\t", 2)
            relative = self._writable(path)
            if not (added.isdigit() and removed.isdigit()):
                raise ToolError(f"the patch changes `{relative}` as a binary file; {_TEXT_ONLY}")
            counts[relative] = (int(added), int(removed))
        if not counts:
            raise ToolError(f"the patch changes no file; {_DIFF_SHAPE}")
        return counts

    def _git_apply(self, args: Sequence[str], parsed: PatchSet, strip: int) -> str:
        """What `git apply *args` printed; ToolError naming what did not apply when it failed."""
        completed = subprocess.run(
            ["git", "-C", str(self.root), "apply", *args],
            capture_output=True,
            env=clean_environment(),
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
        if completed.returncode != 0:
            stderr = completed.stderr.decode("utf-8", errors="replace")
            raise ToolError(_apply_failure(stderr, parsed, strip))
        return completed.stdout.decode("utf-8", errors="replace")


_Counts = dict[str, tuple[int, int]]
_TEXT_ONLY = "binary patches are refused: patch text files only, or use write_file"
_READ_AGAIN = "read the file again and send a new patch or use write_file"
_DIFF_SHAPE = (
    "send a unified diff: `--- a/path` and `+++ b/path` lines, then hunks that start with "
    "`@@ -start,count +start,count @@`"
)


def _apply_failure(stderr: str, parsed: PatchSet, strip: int) -> str:
    """What went wrong, per file, in words a model can act on."""
    errors = [line for line in stderr.splitlines() if line.startswith(("error: ", "fatal: "))]
    problems = [_hunk_problem(line, parsed, strip) or _plain(line) for line in errors]
    listed = "; ".join(problem for problem in problems if problem) or stderr.strip()
    return f"the patch was not applied and no file changed: {listed}"


def _hunk_problem(error: str, parsed: PatchSet, strip: int) -> str | None:
    # git: "error: patch failed: src/app.py:10", 10 being where the failing hunk starts.
    if not error.startswith(_PATCH_FAILED):
        return None
    path, _, line = error[len(_PATCH_FAILED) :].rpartition(":")
    for patched in parsed:
        names = {_side_name(patched.source_file, strip), _side_name(patched.target_file, strip)}
        if path not in names:
            continue
        for number, hunk in enumerate(patched, start=1):
            if str(hunk.source_start) == line:
                header = (
                    f"@@ -{hunk.source_start},{hunk.source_length} "
                    f"+{hunk.target_start},{hunk.target_length} @@"
                )
                return (
                    f"hunk {number} of {path} ({header}) does not apply: the lines it expects "
                    f"are not there; {_READ_AGAIN}"
                )
    return f"a hunk of {path} at line {line} does not apply; {_READ_AGAIN}"


def _plain(error: str) -> str:
    message = error.removeprefix("error: ").removeprefix("fatal: ")
    if message.endswith(": patch does not apply"):
        return ""  # the line before it named the hunk
    return message


def _parsed(text: str) -> PatchSet:
    try:
        parsed = PatchSet(text)
    except UnidiffParseError as error:
        raise ToolError(f"the patch is not a unified diff ({error}); {_DIFF_SHAPE}") from None
    if not parsed:
        raise ToolError(f"the patch names no file; {_DIFF_SHAPE}")
    return parsed


def _strip_level(parsed: PatchSet) -> int:
    """1 when every side is prefixed as git writes them (`a/...`, `b/...`), else 0: a model
    that writes `--- src/app.py` means that file, not `app.py`."""
    prefixed = all(
        _prefixed(patched.source_file, "a/") and _prefixed(patched.target_file, "b/")
        for patched in parsed
    )
    return 1 if prefixed else 0


def _prefixed(name: str | None, prefix: str) -> bool:
    return name is None or name == DEV_NULL or name.startswith(prefix)


def _side_name(name: str | None, strip: int) -> str:
    if name is None or name == DEV_NULL:
        return DEV_NULL
    return name.split("/", strip)[-1] if strip else name


def _recounted(patch: str) -> str:
    """`patch` with each hunk's header counting the lines its body really has.

    Models miscount; git's own `--recount` counts into the next file of a plain (non-git) diff,
    so the counts are made right here. A hunk runs to the next `@@`, `diff ` or `--- `/`+++ `
    pair; any other line there that is not a hunk line is a ToolError, since git would skip
    the rest of the hunk without a word. Empty lines are context, as git reads them; empty
    lines at the very end are dropped.
    """
    lines = patch.rstrip("\n").split("\n")
    recounted: list[str] = []
    start = 0
    while start < len(lines):
        line = lines[start]
        if not line.startswith("@@"):
            recounted.append(line)
            start += 1
            continue
        end = _hunk_end(lines, start + 1)
        body = lines[start + 1 : end]
        recounted.extend([_hunk_header(line, body), *body])
        start = end
    return "\n".join(recounted) + "\n"


def _hunk_end(lines: Sequence[str], start: int) -> int:
    """The index of the line after the hunk whose body begins at `start`."""
    end = start
    while end < len(lines) and not _starts_section(lines, end):
        line = lines[end]
        if line and line[0] not in " +-\\":
            raise ToolError(
                f"line {end + 1} of the patch, `{line}`, is not a hunk line: in a hunk every "
                "line starts with a space (context), `+` (added) or `-` (removed)"
            )
        end += 1
    return end


def _starts_section(lines: Sequence[str], index: int) -> bool:
    # A new hunk, a git file header, or a plain diff's next file.
    line = lines[index]
    if line.startswith(("@@", "diff ")):
        return True
    return (
        line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ ")
    )


def _hunk_header(header: str, body: Sequence[str]) -> str:
    matched = _HUNK_HEADER.match(header)
    if matched is None:
        raise ToolError(
            f"`{header}` is not a hunk header; write `@@ -start,count +start,count @@` with "
            "the line numbers of the file before and after"
        )
    old_start, new_start, section = matched.groups()
    old = sum(1 for line in body if line == "" or line[0] in " -")
    new = sum(1 for line in body if line == "" or line[0] in " +")
    return f"@@ -{old_start},{old} +{new_start},{new} @@{section}"


@contextmanager
def _patch_file(text: str) -> Iterator[Path]:
    """The patch written to a temporary file outside the checkout, removed afterwards."""
    data = _utf8(text, "patch")
    descriptor, name = tempfile.mkstemp(prefix="baton-", suffix=".patch")
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        yield path
    finally:
        path.unlink(missing_ok=True)


def _utf8(text: str, name: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate, which JSON's \u escapes allow
        raise ToolError(
            f"{name} holds a character UTF-8 cannot store at index {error.start}; send plain text"
        ) from None


def _normalised(path: str) -> str:
    # `./src/app.py`, `src//app.py` and `src/app.py` name one file; `..` is never collapsed.
    if path.startswith("/"):
        return path
    return "/".join(part for part in path.split("/") if part not in ("", "."))


def _symlink_on_the_way(root: Path, relative: str) -> str | None:
    """The first part of `relative` (itself included) that is a symlink, or None."""
    parts = relative.split("/")
    for count in range(1, len(parts) + 1):
        prefix = "/".join(parts[:count])
        if (root / prefix).is_symlink():
            return prefix
    return None


def _write_with_parents(location: Path, data: bytes) -> None:
    """Write `data` to `location`, creating missing folders; on failure, the folders made are
    removed again and the file is as it was."""
    created: list[Path] = []
    try:
        for folder in reversed(list(_missing_folders(location.parent))):
            folder.mkdir()
            created.append(folder)
        _replace(location, data)
    except OSError:
        for folder in reversed(created):
            folder.rmdir()
        raise


def _missing_folders(folder: Path) -> Iterator[Path]:
    while not folder.exists():
        yield folder
        folder = folder.parent


def _replace(location: Path, data: bytes) -> None:
    """Put `data` at `location` in one step (a reader never sees half a file), keeping an
    existing file's mode; a new file gets git's plain file mode."""
    mode = location.stat().st_mode & 0o7777 if location.exists() else NEW_FILE_MODE
    # A short name of its own, so any name the file system takes can be written.
    descriptor, name = tempfile.mkstemp(dir=location.parent, prefix=".baton-", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        temporary.chmod(mode)
        temporary.replace(location)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
