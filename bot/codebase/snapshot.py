"""A commit's files as git objects: what Baton shows a model or a person of a repository.

Nothing here looks at a working copy. Entries come from `git ls-tree` at a commit and text from
`git cat-file --batch`, so a symbolic link is its target text and is never followed, a submodule
is a commit id and is never read, and every size is known before a byte of the file is read.
`repository` may be a bare mirror or a checkout: only its objects are used.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self, cast

from bot.codebase.files import GIT_TIMEOUT_SECONDS, GitFailed, looks_binary, run_git
from bot.codebase.paths import PathRefused, clean_relative
from bot.git.runner import clean_environment

REGULAR_MODES = frozenset({"100644", "100755"})
LINK_MODE = "120000"
SUBMODULE_MODE = "160000"
FOLDER_MODE = "040000"  # listed when a path names a folder; not a file
# A link's target is a path; anything longer is not one a system would follow anyway.
MAX_LINK_TARGET_BYTES = 4096
SKIP_PIECE_BYTES = 1 << 16  # what is held at once of a blob's part that is not kept


@dataclass(frozen=True)
class TreeEntry:
    """One file of a commit: its path from the root, git mode, object id and size in bytes
    (None for a submodule, whose object is a commit of another repository)."""

    path: str
    mode: str
    object_id: str
    size: int | None

    @property
    def regular(self) -> bool:
        return self.mode in REGULAR_MODES

    @property
    def link(self) -> bool:
        return self.mode == LINK_MODE

    @property
    def submodule(self) -> bool:
        return self.mode == SUBMODULE_MODE


@dataclass(frozen=True)
class CommittedFile:
    """A file as shown: `text` when it is a regular text file within the size asked for,
    otherwise None and `note` says what stands there instead (a link and its target text, a
    submodule, a binary or too large file)."""

    path: str
    text: str | None
    note: str | None = None

    @property
    def shown(self) -> str:
        """The text, or else the note: what a prompt may hold for this file."""
        return self.text if self.text is not None else self.note or ""


def tree_entries(
    repository: Path, commit: str, paths: Sequence[str] | None = None
) -> list[TreeEntry]:
    """Every file of `commit`, sorted by path; with `paths` (plain relative paths, as
    `clean_relative` gives), only the files named exactly so."""
    args = ["ls-tree", "-l", "-z", "--full-tree"]
    if paths is None:
        args.append("-r")
    elif not paths:
        return []
    if commit.startswith("-"):
        raise ValueError(f"{commit!r} is not a revision")
    listed = run_git(repository, *args, commit, "--", *(paths or ()))
    entries = [_entry(record) for record in listed.stdout.split("\0") if record]
    wanted = None if paths is None else set(paths)
    return sorted(
        (
            entry
            for entry in entries
            if entry is not None
            and entry.mode != FOLDER_MODE
            and (wanted is None or entry.path in wanted)
        ),
        key=lambda entry: entry.path,
    )


def read_committed(
    repository: Path, commit: str, paths: Sequence[str], max_bytes: int
) -> list[CommittedFile]:
    """The files at `paths` in `commit`, in the order of `paths`, each as text (up to
    `max_bytes` bytes) or as a note saying what stands there instead. A path that is not a
    plain relative path, or names no file of the commit (a folder, nothing), is left out."""
    cleaned: dict[str, str] = {}
    for path in paths:
        try:
            cleaned.setdefault(path, clean_relative(path))
        except PathRefused:
            continue
    found = {entry.path: entry for entry in tree_entries(repository, commit, [*cleaned.values()])}
    shown: list[CommittedFile] = []
    with Blobs(repository) as blobs:
        for path, clean in cleaned.items():
            if clean in found:
                committed = show_entry(found[clean], blobs, max_bytes)
                shown.append(CommittedFile(path, committed.text, committed.note))
    return shown


async def committed_files(
    repository: Path, commit: str, paths: Sequence[str], max_bytes: int
) -> list[CommittedFile]:
    """`read_committed`, run off the event loop (git is a blocking child process here)."""
    return await asyncio.to_thread(read_committed, repository, commit, paths, max_bytes)


def show_entry(
    entry: TreeEntry, blobs: Blobs, max_bytes: int, *, cut: bool = False
) -> CommittedFile:
    """The entry as shown. Only a regular file of at most `max_bytes` bytes, or a link's target
    text of at most `MAX_LINK_TARGET_BYTES`, is read; anything else is described from the entry.
    With `cut`, a larger regular file is shown as its first `max_bytes` bytes and a note."""
    path, size = entry.path, entry.size or 0
    if cut and entry.regular and size > max_bytes:
        return _cut_file(entry, blobs, max_bytes)
    if entry.link:
        if size > MAX_LINK_TARGET_BYTES:
            note = f"`{path}` is a symbolic link with a {size}-byte target; its target is not read"
            return CommittedFile(path, None, note)
        target = printable(blobs.read(entry.object_id, size).decode("utf-8", errors="replace"))
        return CommittedFile(path, None, describe_link(path, target))
    if entry.submodule:
        note = f"`{path}` is a submodule (commit {entry.object_id[:12]}); its files are not read"
        return CommittedFile(path, None, note)
    if not entry.regular:
        return CommittedFile(path, None, f"`{path}` is not a file (git mode {entry.mode})")
    if size > max_bytes:
        note = f"`{path}` is {size} bytes, more than the {max_bytes} shown here; read_file reads it"
        return CommittedFile(path, None, note)
    data = blobs.read(entry.object_id, size)
    if looks_binary(data):
        return CommittedFile(path, None, f"`{path}` is a binary file; it is not shown")
    return CommittedFile(path, data.decode("utf-8", errors="replace"))


def _cut_file(entry: TreeEntry, blobs: Blobs, max_bytes: int) -> CommittedFile:
    path, size = entry.path, entry.size or 0
    data = blobs.read_head(entry.object_id, size, max_bytes)
    if looks_binary(data):
        return CommittedFile(path, None, f"`{path}` is a binary file; it is not shown")
    # A character the cut split in two is dropped, not shown as a replacement mark.
    text = data.decode("utf-8", errors="replace").removesuffix("\ufffd")
    note = f"[... `{path}` is {size} bytes; only its first {max_bytes} are shown here]"
    return CommittedFile(path, f"{text}\n{note}")


def describe_link(path: str, target: str) -> str:
    """What stands for a symbolic link: the link and its target text, never its target."""
    return f"`{path}` is a symbolic link to `{target}`; its target is not read"


def printable(text: str) -> str:
    """`text` with control characters (a newline in a link's target, say) written as escapes,
    so a name or target stays on its one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class Blobs:
    """`git cat-file --batch` in `repository`, asked for one object at a time.

    A use is bounded: the caller asks only for objects whose size it knows, and git is killed
    when it outlives `GIT_TIMEOUT_SECONDS` (then reads fail with `GitFailed`)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: threading.Timer | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            ["git", "-C", str(self.repository), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=clean_environment(),
        )
        self._watchdog = threading.Timer(GIT_TIMEOUT_SECONDS, self._process.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for pipe in (self._process.stdin, self._process.stdout):
                if pipe is not None:
                    pipe.close()

    def read(self, object_id: str, size: int) -> bytes:
        """The `size` bytes of blob `object_id`; `GitFailed` when git says otherwise."""
        return self.read_head(object_id, size, size)

    def read_head(self, object_id: str, size: int, limit: int) -> bytes:
        """The first `limit` of the `size` bytes of blob `object_id`; the rest is read past in
        bounded pieces, never held. `GitFailed` when git says otherwise."""
        if self._process is None:
            raise RuntimeError("Blobs is used as a context manager")
        stdin = cast(IO[bytes], self._process.stdin)
        stdout = cast(IO[bytes], self._process.stdout)
        try:
            stdin.write(object_id.encode("ascii") + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError):
            raise GitFailed(f"`git cat-file` stopped before reading {object_id}") from None
        header = stdout.readline(200)
        if header.split() != [object_id.encode("ascii"), b"blob", str(size).encode()]:
            raise GitFailed(
                f"`git cat-file` answered {header!r} for blob {object_id} of {size} bytes"
            )
        kept = stdout.read(min(max(limit, 0), size))
        skipped = _read_past(stdout, size - len(kept) + 1)  # the rest and the closing newline
        if len(kept) + skipped != size + 1:
            raise GitFailed(f"`git cat-file` stopped while reading blob {object_id}")
        return kept


def _read_past(stream: IO[bytes], count: int) -> int:
    """Reads and drops up to `count` bytes of `stream`; how many there were."""
    done = 0
    while done < count:
        piece = stream.read(min(count - done, SKIP_PIECE_BYTES))
        if not piece:
            break
        done += len(piece)
    return done


def _entry(record: str) -> TreeEntry | None:
    # `<mode> SP <type> SP <object> SP+ <size> TAB <path>`; the size is `-` for a submodule.
    meta, separator, path = record.partition("\t")
    fields = meta.split()
    if not separator or len(fields) != 4:
        return None
    mode, _, object_id, size = fields
    return TreeEntry(path, mode, object_id, int(size) if size.isdigit() else None)
