"""The read-only model tools of CONTRACT §6: `list_files`, `read_file`, `search`, `list_symbols`.

Every tool takes a JSON object and answers a JSON object as text; paths in and out are relative
to the repository root. A bad argument or a refused path is a `ToolError` whose message says what
to send instead. The tools see the working copy: what git tracks, and new files it does not
ignore. Nothing outside the checkout, and nothing git ignores (`.env`, `node_modules/`), is shown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bot.codebase.files import (
    BINARY_PROBE_BYTES,
    BadPattern,
    grep,
    is_ignored,
    looks_binary,
    read_text,
    working_files,
)
from bot.codebase.paths import PathRefused, resolve_inside
from bot.codebase.symbols import Symbol, has_symbol_reader, symbols
from bot.llm.agent import Tool, ToolError, ToolHandler
from bot.llm.types import ToolSpec

DEFAULT_MAX_READ_CHARS = 20_000
DEFAULT_MAX_RESULTS = 100
MAX_MATCH_CHARS = 300  # one matching line, e.g. of a minified file
MAX_SYMBOL_SOURCE_BYTES = 2_000_000

_PATH_PROPERTY = {"type": "string", "description": "relative to the repository root"}
_LINE_PROPERTY = {"type": "integer", "minimum": 1}

LIST_FILES = ToolSpec(
    "list_files",
    "List the files under a folder of the repository (the whole repository without `path`).",
    {
        "type": "object",
        "properties": {"path": {**_PATH_PROPERTY, "description": "a folder, e.g. `src`"}},
        "additionalProperties": False,
    },
)
READ_FILE = ToolSpec(
    "read_file",
    "Read a text file with line numbers, all of it or lines `start_line` to `end_line`.",
    {
        "type": "object",
        "properties": {
            "path": _PATH_PROPERTY,
            "start_line": {**_LINE_PROPERTY, "description": "first line to show, from 1"},
            "end_line": {**_LINE_PROPERTY, "description": "last line to show, included"},
        },
        "required": ["path"],
        "additionalProperties": False,
    },
)
SEARCH = ToolSpec(
    "search",
    "Find the lines matching a POSIX extended regular expression in the repository's text "
    "files, or only under `path`.",
    {
        "type": "object",
        "properties": {
            "pattern": {
                "type": "string",
                "description": "POSIX extended regex: write [0-9] for \\d, [[:space:]] for \\s",
            },
            "path": {**_PATH_PROPERTY, "description": "a folder or file to search in"},
        },
        "required": ["pattern"],
        "additionalProperties": False,
    },
)
LIST_SYMBOLS = ToolSpec(
    "list_symbols",
    "List the classes, functions, methods and constants a source file defines, with their lines.",
    {
        "type": "object",
        "properties": {"path": _PATH_PROPERTY},
        "required": ["path"],
        "additionalProperties": False,
    },
)


def read_only_tools(
    root: Path,
    *,
    max_read_chars: int = DEFAULT_MAX_READ_CHARS,
    max_results: int = DEFAULT_MAX_RESULTS,
) -> list[Tool]:
    """`list_files`, `read_file`, `search` and `list_symbols` over the checkout at `root`.

    `read_file` shows at most `max_read_chars` characters of a file per call and `list_symbols`
    answers at most about that many; `list_files` and `search` give at most `max_results`
    entries. Each cap is stated in the answer with how to see the rest.
    """
    reader = _Reader(root.resolve(), max_read_chars, max_results)
    return [
        Tool(LIST_FILES, in_thread(LIST_FILES, reader.list_files)),
        Tool(READ_FILE, in_thread(READ_FILE, reader.read_file)),
        Tool(SEARCH, in_thread(SEARCH, reader.search)),
        Tool(LIST_SYMBOLS, in_thread(LIST_SYMBOLS, reader.list_symbols)),
    ]


_Answer = dict[str, Any]


def in_thread(spec: ToolSpec, answer: Callable[[Mapping[str, Any]], _Answer]) -> ToolHandler:
    """A handler that checks the argument names, runs `answer` off the event loop (git and file
    reads block) and returns its JSON."""

    async def handler(arguments: Mapping[str, Any]) -> str:
        _check_names(spec, arguments)
        result = await asyncio.to_thread(answer, arguments)
        return json.dumps(result, ensure_ascii=False)

    return handler


@dataclass(frozen=True)
class _Reader:
    root: Path
    max_read_chars: int
    max_results: int

    def list_files(self, arguments: Mapping[str, Any]) -> _Answer:
        given = _optional_string(arguments, "path") or "."
        relative = self._existing(given)
        files = [path for path in working_files(self.root, relative) if self._readable(path)]
        answer: _Answer = {
            "path": relative,
            "count": len(files),
            "files": files[: self.max_results],
        }
        if len(files) > self.max_results:
            answer["note"] = (
                f"showing the first {self.max_results} of {len(files)} files; "
                "call list_files with a folder inside this one to see the rest"
            )
        elif not files:
            answer["note"] = f"no files under `{relative}` that git tracks or does not ignore"
        return answer

    def read_file(self, arguments: Mapping[str, Any]) -> _Answer:
        given = required_string(arguments, "path")
        start = _line_number(arguments, "start_line") or 1
        end = _line_number(arguments, "end_line")
        if end is not None and end < start:
            raise ToolError(f"end_line {end} is before start_line {start}; give end_line >= it")
        relative = self._text_file(given)
        excerpt = _excerpt(self.root / relative, start, end, self.max_read_chars)
        if excerpt.total_lines and start > excerpt.total_lines:
            raise ToolError(
                f"start_line {start} is past the end of `{relative}`, "
                f"which has {excerpt.total_lines} lines"
            )
        return excerpt.answer(relative, start)

    def search(self, arguments: Mapping[str, Any]) -> _Answer:
        pattern = required_string(arguments, "pattern")
        relative = self._existing(_optional_string(arguments, "path") or ".")
        try:
            found = grep(self.root, pattern, relative, self.max_results)
        except BadPattern as error:
            raise ToolError(
                f"`{pattern}` is not a valid POSIX extended regular expression ({error}); "
                "escape special characters such as ( [ { with a backslash"
            ) from None
        answer: _Answer = {
            "pattern": pattern,
            "path": relative,
            "matches": [
                {"path": match.path, "line": match.line, "text": _clipped(match.text)}
                for match in found.matches
            ],
        }
        if found.more:
            answer["note"] = (
                f"more than {self.max_results} matches; these are the first "
                f"{self.max_results}: narrow the pattern or give a path"
            )
        elif not found.matches:
            answer["note"] = (
                "no line matches; the pattern is a POSIX extended regular expression "
                "(no \\d or \\w: write [0-9], [[:alnum:]_])"
            )
        return answer

    def list_symbols(self, arguments: Mapping[str, Any]) -> _Answer:
        relative = self._text_file(required_string(arguments, "path"))
        if not has_symbol_reader(relative):
            suffix = PurePosixPath(relative).suffix or "extension-less"
            return {
                "path": relative,
                "symbols": [],
                "note": f"symbols are not read from {suffix} files; use read_file or search",
            }
        source = read_text(self.root / relative, MAX_SYMBOL_SOURCE_BYTES)
        if source is None:
            raise ToolError(
                f"`{relative}` is larger than {MAX_SYMBOL_SOURCE_BYTES} bytes; "
                "use search to find its definitions"
            )
        return _symbols_answer(relative, symbols(relative, source), self.max_read_chars)

    def _existing(self, given: str) -> str:
        """The relative path of `given` when it is safe and exists; ToolError otherwise."""
        location = _resolved(self.root, given)
        if not location.exists():
            raise ToolError(f"`{given}` does not exist; list_files shows what does")
        return location.relative_to(self.root).as_posix()

    def _readable(self, relative: str) -> bool:
        """Whether `relative` (from git) resolves inside the repository, symlinks followed."""
        try:
            resolve_inside(self.root, relative)
        except PathRefused:
            return False
        return True

    def _text_file(self, given: str) -> str:
        """The relative path of `given` when it is a readable text file git does not ignore."""
        relative = self._existing(given)
        location = self.root / relative
        if location.is_dir():
            raise ToolError(f"`{given}` is a folder; list_files with path `{relative}` lists it")
        if not location.is_file():
            raise ToolError(f"`{given}` is not a regular file; only files can be read")
        if is_ignored(self.root, relative):
            raise ToolError(
                f"`{given}` is ignored by git (.gitignore), so it is not part of the repository"
            )
        if _binary(location):
            raise ToolError(f"`{given}` is a binary file; only text files can be read")
        return relative


@dataclass(frozen=True)
class _Excerpt:
    lines: list[str]  # numbered, as shown
    total_lines: int
    cut: bool  # the character cap stopped it before the lines asked for

    def answer(self, relative: str, start: int) -> _Answer:
        shown_end = start + len(self.lines) - 1
        answer: _Answer = {
            "path": relative,
            "start_line": start,
            "end_line": shown_end,
            "total_lines": self.total_lines,
            "content": "\n".join(self.lines),
        }
        if self.cut:
            answer["note"] = (
                f"cut at the {_plural(len(self.lines), 'line')} that fit the character cap; "
                f"call read_file with start_line {shown_end + 1} to read on"
            )
        return answer


def _excerpt(location: Path, start: int, end: int | None, max_chars: int) -> _Excerpt:
    """Lines `start`..`end` of a text file, numbered, within `max_chars` characters; the file
    is streamed, so its size does not matter."""
    shown: list[str] = []
    size = 0
    cut = False
    total = 0
    with location.open("rb") as handle:
        for total, raw in enumerate(handle, start=1):
            if total < start or (end is not None and total > end) or cut:
                continue
            line = _numbered(total, raw)
            if size + len(line) + 1 > max_chars:
                cut = True
                if not shown:  # one line longer than the cap: show its beginning
                    shown.append(line[: max(max_chars - 40, 0)] + " [… line cut]")
                continue
            shown.append(line)
            size += len(line) + 1
    return _Excerpt(shown, total, cut)


def _numbered(number: int, raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return f"{number}\t{text}"


def _symbols_answer(relative: str, found: Sequence[Symbol], max_chars: int) -> _Answer:
    entries: list[dict[str, Any]] = []
    size = 0
    for symbol in found:
        entry = {key: value for key, value in asdict(symbol).items() if value is not None}
        size += len(json.dumps(entry, ensure_ascii=False)) + 2
        if size > max_chars:
            break
        entries.append(entry)
    answer: _Answer = {"path": relative, "symbols": entries}
    if len(entries) < len(found):
        answer["note"] = (
            f"the first {len(entries)} of {len(found)} symbols; "
            f"read_file from line {found[len(entries)].line} shows the rest"
        )
    return answer


def _resolved(root: Path, given: str) -> Path:
    try:
        return resolve_inside(root, given)
    except PathRefused as error:
        raise ToolError(str(error)) from None


def _binary(location: Path) -> bool:
    try:
        with location.open("rb") as handle:
            return looks_binary(handle.read(BINARY_PROBE_BYTES))
    except OSError as error:
        raise ToolError(f"the file cannot be read ({error.strerror})") from None


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_MATCH_CHARS else text[:MAX_MATCH_CHARS] + " [… line cut]"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _check_names(spec: ToolSpec, arguments: Mapping[str, Any]) -> None:
    known = spec.input_schema["properties"]
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ToolError(
            f"{spec.name} has no argument {', '.join(unknown)}; its arguments are "
            f"{', '.join(known)}"
        )
    missing = [name for name in spec.input_schema.get("required", ()) if name not in arguments]
    if missing:
        raise ToolError(f"{spec.name} needs {', '.join(missing)}")


def required_string(arguments: Mapping[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str) or not value:
        raise ToolError(f"{name} must be a non-empty string, got {json.dumps(value)}")
    return value


def _optional_string(arguments: Mapping[str, Any], name: str) -> str | None:
    value = arguments.get(name)
    if value is not None and not isinstance(value, str):
        raise ToolError(f"{name} must be a string, got {json.dumps(value)}")
    return value


def _line_number(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolError(f"{name} must be a whole number from 1, got {json.dumps(value)}")
    return value
