"""What the planner is told about a repository before it asks anything: a bounded, stable text.

Three parts, each with its share of the budget: the tracked files by folder, the top-level
symbols of the most important source files, and the README and CONTRIBUTING documents (the
instructions for agents come apart, named as such: `bot.codebase.instructions`).
Everything is read as git objects at one commit, never from the working tree: a symbolic link is
shown as a link with its target text and a submodule as a commit, neither followed. The text
depends only on the commit, so every call for one commit gives the same bytes, which keeps the
model's prompt prefix cacheable.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bot.codebase.files import tracked_files
from bot.codebase.snapshot import Blobs, CommittedFile, TreeEntry, show_entry, tree_entries
from bot.codebase.symbols import has_symbol_reader, symbols

__all__ = ["DEFAULT_BUDGET_CHARS", "planner_context", "tracked_files"]

DEFAULT_BUDGET_CHARS = 60_000
TREE_SHARE = 0.35
DOCUMENTS_SHARE = 0.25  # the symbol map has the rest, and whatever the other two leave
SECTION_SEPARATOR = "\n\n"
MAX_SOURCE_BYTES = 512_000  # larger files are data or generated, not worth mapping
MAX_SYMBOLS_PER_FILE = 30
# Files listed per folder, tried in turn at each depth until the tree fits; None lists them all.
_NAMES_PER_FOLDER: tuple[int | None, ...] = (None, 40, 12, 4)

_DOCUMENT_KINDS = ("readme", "contributing")
_DOCUMENT_FOLDERS = ("", ".github", "docs")
_VENDORED_FOLDERS = frozenset(
    {
        "node_modules",
        "bower_components",
        "vendor",
        "vendored",
        "_vendor",
        "third_party",
        "third-party",
        "thirdparty",
        "site-packages",
        ".venv",
        "venv",
        "__pycache__",
        "dist",
        "build",
        "target",
        "generated",
        "__generated__",
    }
)
_GENERATED_NAME = re.compile(
    r"(_pb2(_grpc)?\.pyi?|\.pb\.go|\.pb\.(cc|h)|[._-]generated\.\w+|\.min\.\w+|\.bundle\.js)$",
    re.IGNORECASE,
)
_TEST_FOLDERS = frozenset({"test", "tests", "spec", "specs", "__tests__", "testdata", "fixtures"})
_TEST_NAME = re.compile(r"^test_|_test\.|\.test\.|\.spec\.|_spec\.|Tests?\.(java|kt|cs)$")


def planner_context(
    root: Path, budget_chars: int = DEFAULT_BUDGET_CHARS, revision: str = "HEAD"
) -> str:
    """The planner's view of commit `revision` of the repository or checkout at `root`, at most
    `budget_chars` characters long and the same for the same commit: its files by folder,
    top-level symbols per file (most important first) and the project's README and CONTRIBUTING
    documents. Blocking (git runs as a child process): call it in a thread."""
    files = tree_entries(root, revision)
    budget = max(budget_chars, 0)
    with Blobs(root) as blobs:
        tree = _tree_section(files, int(budget * TREE_SHARE))
        documents = _documents_section(blobs, files, int(budget * DOCUMENTS_SHARE))
        separators = 2 * len(SECTION_SEPARATOR)
        rest = budget - len(tree) - len(documents) - separators
        symbol_map = _symbols_section(blobs, files, rest)
    return SECTION_SEPARATOR.join(part for part in (tree, symbol_map, documents) if part)


class _Lines:
    """Lines added while they fit within `limit` characters, newlines included."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[str] = []
        self.size = 0

    def fits(self, line: str, reserve: int = 0) -> bool:
        return self.size + len(line) + 1 + reserve <= self.limit

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.size += len(line) + 1

    def text(self) -> str:
        return "\n".join(self.lines)


# The file tree.


@dataclass
class _Folder:
    names: list[str] = field(default_factory=list)  # files directly inside
    total: int = 0  # files at any depth below


def _tree_section(files: Sequence[TreeEntry], limit: int) -> str:
    folders = _folders(file.path for file in files)
    header = (
        f"## Tracked files: {len(files)} in {len(folders)} folders\n"
        "(`folder/: names` lists a folder's own files; `folder/ (N files)` stands for all N "
        "files below it; list_files(path) shows any folder)"
    )
    deepest = max((_depth(folder) for folder in folders), default=0)
    for depth in range(deepest, -1, -1):
        for names in _NAMES_PER_FOLDER:
            lines = _tree_lines(folders, depth, names)
            text = "\n".join([header, *lines])
            if len(text) <= limit:
                return text
    return _cut_lines(header, _tree_lines(folders, 0, 0), limit)


def _folders(paths: Iterable[str]) -> dict[str, _Folder]:
    folders: dict[str, _Folder] = defaultdict(_Folder)
    for path in paths:
        parent = PurePosixPath(path).parent
        folders[_folder_key(parent)].names.append(PurePosixPath(path).name)
        for ancestor in [parent, *parent.parents]:
            folders[_folder_key(ancestor)].total += 1
    return dict(folders)


def _folder_key(folder: PurePosixPath) -> str:
    return "" if str(folder) == "." else folder.as_posix()


def _depth(folder: str) -> int:
    return folder.count("/") + 1 if folder else 0


def _tree_lines(folders: dict[str, _Folder], depth: int, names: int | None) -> list[str]:
    """Folders down to `depth` with up to `names` file names each; those one deeper summed up."""
    lines = []
    for folder in sorted(folders, key=lambda key: key.split("/")):
        level = _depth(folder)
        content = folders[folder]
        if level <= depth and content.names:
            lines.append(_folder_line(folder, sorted(content.names), names))
        elif level == depth + 1:
            lines.append(f"{folder}/ ({_files(content.total)})")
    return lines


def _folder_line(folder: str, names: list[str], shown: int | None) -> str:
    label = f"{folder}/:" if folder else "./:"
    if shown is None or len(names) <= shown:
        return f"{label} {', '.join(names)}"
    if shown == 0:
        return f"{label} {_files(len(names))}"
    return f"{label} {', '.join(names[:shown])}, … (+{len(names) - shown} more)"


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"


def _cut_lines(header: str, lines: list[str], limit: int) -> str:
    """`header` and as many `lines` as fit, with a last line counting the rest."""
    kept = _Lines(limit)
    if not kept.fits(header):
        return ""
    kept.add(header)
    for index, line in enumerate(lines):
        rest = f"… {len(lines) - index} more lines left out"
        if not kept.fits(line, reserve=len(rest) + 1):
            if kept.fits(rest):
                kept.add(rest)
            break
        kept.add(line)
    return kept.text()


# The symbol map.


def _symbols_section(blobs: Blobs, files: Sequence[TreeEntry], limit: int) -> str:
    header = "## Top-level symbols by file (kind name:line), most important files first"
    candidates = sorted(
        (file for file in files if _worth_mapping(file)),
        key=lambda file: _importance(file.path),
    )
    lines = _Lines(limit)
    if not candidates or not lines.fits(header):
        return ""
    lines.add(header)
    for index, file in enumerate(candidates):
        rest = (
            f"… {len(candidates) - index} more source files not mapped here; "
            "list_symbols(path) gives any file's symbols"
        )
        line = _symbol_line(blobs, file)
        if line is None:
            continue
        if not lines.fits(line, reserve=len(rest) + 1):
            if lines.fits(rest):
                lines.add(rest)
            break
        lines.add(line)
    return lines.text()


def _worth_mapping(file: TreeEntry) -> bool:
    if not file.regular or (file.size or 0) > MAX_SOURCE_BYTES:
        return False
    parts = PurePosixPath(file.path).parts
    if any(part.casefold() in _VENDORED_FOLDERS for part in parts[:-1]):
        return False
    return has_symbol_reader(file.path) and not _GENERATED_NAME.search(parts[-1])


def _importance(path: str) -> tuple[bool, int, str]:
    """Sort key: source before tests, shallow before deep, then by path."""
    parts = PurePosixPath(path).parts
    is_test = any(part.casefold() in _TEST_FOLDERS for part in parts[:-1])
    return (is_test or bool(_TEST_NAME.search(parts[-1])), len(parts), path)


def _symbol_line(blobs: Blobs, file: TreeEntry) -> str | None:
    source = show_entry(file, blobs, MAX_SOURCE_BYTES).text
    if source is None:
        return None
    path = file.path
    names = [
        f"{symbol.kind} {symbol.name}:{symbol.line}"
        for symbol in symbols(path, source)
        if symbol.parent is None
    ]
    if not names:
        return None
    if len(names) > MAX_SYMBOLS_PER_FILE:
        names = [*names[:MAX_SYMBOLS_PER_FILE], f"… (+{len(names) - MAX_SYMBOLS_PER_FILE} more)"]
    return f"{path}: {', '.join(names)}"


# The project's documents.


def _documents_section(blobs: Blobs, files: Sequence[TreeEntry], limit: int) -> str:
    """README and CONTRIBUTING documents; a link or submodule in a document's place is
    shown as what it is, so the planner knows why its text is missing."""
    ranked = [(_document_rank(file.path), file.path, file) for file in files]
    documents = [file for rank, _, file in sorted(r for r in ranked if r[0] is not None)]
    blocks: list[str] = []
    used = 0
    for index, file in enumerate(documents):
        separator = len(SECTION_SEPARATOR) if blocks else 0
        # An equal share of what is left for each document still to come.
        allowance = (limit - used - separator) // (len(documents) - index)
        block = _document_block(file.path, show_entry(file, blobs, MAX_SOURCE_BYTES), allowance)
        if block:
            blocks.append(block)
            used += len(block) + separator
    return SECTION_SEPARATOR.join(blocks)


def _document_rank(path: str) -> tuple[int, int] | None:
    """(kind, folder) positions for a README or CONTRIBUTING file, else None."""
    pure = PurePosixPath(path)
    stem = pure.name.split(".", 1)[0].casefold()
    folder = _folder_key(pure.parent)
    if stem not in _DOCUMENT_KINDS or folder not in _DOCUMENT_FOLDERS:
        return None
    return _DOCUMENT_KINDS.index(stem), _DOCUMENT_FOLDERS.index(folder)


def _document_block(path: str, document: CommittedFile, allowance: int) -> str:
    """The document in tags, since its own headings would blur with this text's sections."""
    text = document.shown.strip()
    if not text:
        return ""
    opening, closing = f'<document path="{path}">\n', "\n</document>"
    frame = len(opening) + len(closing)
    if frame + len(text) <= allowance:
        return opening + text + closing
    kept = allowance - frame - len(_cut_note(path, len(text)))
    if kept <= 0:
        return ""
    # The note counts the characters left out, which the cut itself decides.
    return opening + text[:kept] + _cut_note(path, len(text) - kept) + closing


def _cut_note(path: str, left_out: int) -> str:
    return f"\n[… {left_out} more characters; read_file({path!r}) shows the rest]"
