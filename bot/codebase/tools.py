"""The read-only model tools of CONTRACT §6: `list_files`, `read_file`, `search`, `list_symbols`.

Every tool takes a JSON object and answers a JSON object as text; paths in and out are relative
to the repository root. A bad argument or a refused path is a `ToolError` whose message says what
to send instead. The tools see the working copy: what git tracks, and new files it does not
ignore. Nothing outside the checkout, and nothing git ignores (`.env`, `node_modules/`), is shown.

Only regular files are read, and never through a symbolic link: a path through a linked folder
is refused naming the link, and a link itself is answered with its target text (`symlink_to`),
never followed. A FIFO, socket or device is refused without being opened. Memory and time are
bounded whatever a file or pattern is like, and a cap that cut an answer is stated in it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from bot.codebase.files import (
    MAX_GREP_OUTPUT_BYTES,
    SEARCH_SECONDS,
    BadPattern,
    GrepResult,
    grep,
    is_ignored,
    working_files,
)
from bot.codebase.paths import PathRefused
from bot.codebase.symbols import Symbol, has_symbol_reader, symbols
from bot.codebase.workcopy import (
    MAX_SCANNED_BYTES,
    Kind,
    Lines,
    Node,
    NotReadable,
    inspect,
    is_binary,
    opened,
    read_head,
)
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
        node = self._node(_optional_string(arguments, "path") or ".")
        if node.kind is Kind.OTHER:
            raise ToolError(node.not_a_file())
        kinds = {path: self._kind(path) for path in working_files(self.root, node.relative)}
        # What git lists may since have been deleted, or replaced by a FIFO or a linked folder.
        files = [path for path, kind in kinds.items() if kind in (Kind.FILE, Kind.LINK)]
        shown = files[: self.max_results]
        answer: _Answer = {"path": node.relative, "count": len(files), "files": shown}
        links = [path for path in shown if kinds[path] is Kind.LINK]
        if links:
            answer["symlinks"] = links
        if len(files) > self.max_results:
            answer["note"] = (
                f"showing the first {self.max_results} of {len(files)} files; "
                "call list_files with a folder inside this one to see the rest"
            )
        elif not files:
            answer["note"] = f"no files under `{node.relative}` that git tracks or does not ignore"
        return answer

    def read_file(self, arguments: Mapping[str, Any]) -> _Answer:
        given = required_string(arguments, "path")
        start = _line_number(arguments, "start_line") or 1
        end = _line_number(arguments, "end_line")
        if end is not None and end < start:
            raise ToolError(f"end_line {end} is before start_line {start}; give end_line >= it")
        node = self._text_file(given)
        if node.kind is Kind.LINK:
            return _link_answer(node)
        with self._opened(node.relative) as (descriptor, status):
            if is_binary(descriptor):
                raise ToolError(f"`{given}` is a binary file; only text files can be read")
            lines = Lines(start, end, self.max_read_chars).scan(descriptor)
        if start > lines.total and (lines.total or lines.partial):
            raise ToolError(_past_the_end(node.relative, start, lines, status.st_size))
        return _excerpt_answer(node.relative, start, lines, status.st_size)

    def search(self, arguments: Mapping[str, Any]) -> _Answer:
        pattern = required_string(arguments, "pattern")
        node = self._node(_optional_string(arguments, "path") or ".")
        answer: _Answer = {"pattern": pattern, "path": node.relative, "matches": []}
        if node.kind is Kind.OTHER:
            raise ToolError(node.not_a_file())
        if node.kind is Kind.LINK:
            return {**answer, "symlink_to": node.target, "note": node.link_note()}
        try:
            found = grep(self.root, pattern, node.relative, self.max_results)
        except BadPattern as error:
            raise ToolError(
                f"`{pattern}` is not a valid POSIX extended regular expression ({error}); "
                "escape special characters such as ( [ { with a backslash"
            ) from None
        answer["matches"] = [
            {"path": match.path, "line": match.line, "text": _clipped(match.text, match.clipped)}
            for match in found.matches
        ]
        note = _search_note(found, self.max_results)
        if note:
            answer["note"] = note
        return answer

    def list_symbols(self, arguments: Mapping[str, Any]) -> _Answer:
        node = self._text_file(required_string(arguments, "path"))
        relative = node.relative
        if node.kind is Kind.LINK:
            return {**_link_answer(node), "symbols": []}
        with self._opened(relative) as (descriptor, _):
            if is_binary(descriptor):
                raise ToolError(f"`{relative}` is a binary file; only text files can be read")
            if not has_symbol_reader(relative):
                suffix = PurePosixPath(relative).suffix or "extension-less"
                return {
                    "path": relative,
                    "symbols": [],
                    "note": f"symbols are not read from {suffix} files; use read_file or search",
                }
            data = read_head(descriptor, MAX_SYMBOL_SOURCE_BYTES + 1)
        if len(data) > MAX_SYMBOL_SOURCE_BYTES:
            raise ToolError(
                f"`{relative}` is larger than {MAX_SYMBOL_SOURCE_BYTES} bytes; "
                "use search to find its definitions"
            )
        source = data.decode("utf-8", errors="replace")
        return _symbols_answer(relative, symbols(relative, source), self.max_read_chars)

    def _node(self, given: str) -> Node:
        """What `given` names when it is safe and exists; ToolError otherwise."""
        try:
            node = inspect(self.root, given)
        except PathRefused as error:
            raise ToolError(str(error)) from None
        if node.kind is Kind.MISSING:
            raise ToolError(f"`{given}` does not exist; list_files shows what does")
        return node

    def _kind(self, relative: str) -> Kind:
        """What `relative` is; MISSING also when a link stands on its way."""
        try:
            return inspect(self.root, relative).kind
        except PathRefused:
            return Kind.MISSING

    def _text_file(self, given: str) -> Node:
        """What `given` names when it is a file git does not ignore or a link; ToolError
        naming what it is otherwise."""
        node = self._node(given)
        if node.kind is Kind.FOLDER:
            raise ToolError(
                f"`{given}` is a folder; list_files with path `{node.relative}` lists it"
            )
        if node.kind is Kind.OTHER:
            raise ToolError(node.not_a_file())
        if is_ignored(self.root, node.relative):
            raise ToolError(
                f"`{given}` is ignored by git (.gitignore), so it is not part of the repository"
            )
        return node

    @contextmanager
    def _opened(self, relative: str) -> Iterator[tuple[int, os.stat_result]]:
        try:
            with opened(self.root, relative) as descriptor_and_status:
                yield descriptor_and_status
        except NotReadable as error:
            raise ToolError(str(error)) from None
        except OSError as error:
            raise ToolError(f"`{relative}` cannot be read ({error.strerror})") from None


def _link_answer(node: Node) -> _Answer:
    return {"path": node.relative, "symlink_to": node.target, "note": node.link_note()}


def _excerpt_answer(relative: str, start: int, lines: Lines, size: int) -> _Answer:
    shown_end = start + len(lines.shown) - 1
    answer: _Answer = {
        "path": relative,
        "start_line": start,
        "end_line": shown_end,
        "total_lines": lines.total,
        "content": "\n".join(lines.shown),
    }
    notes = []
    if lines.cut:
        notes.append(f"cut at the {_plural(len(lines.shown), 'line')} that fit the character cap")
        if shown_end < lines.total:
            notes.append(f"call read_file with start_line {shown_end + 1} to read on")
    if lines.partial:
        notes.append(_scanned_part(relative, lines, size))
    if notes:
        answer["note"] = "; ".join(notes)
    return answer


def _scanned_part(relative: str, lines: Lines, size: int) -> str:
    return (
        f"`{relative}` is {_mebibytes(size)} and read_file reads only its first "
        f"{_mebibytes(MAX_SCANNED_BYTES)}, which end in line {lines.total}: total_lines counts "
        "only those, and lines past them cannot be shown"
    )


def _past_the_end(relative: str, start: int, lines: Lines, size: int) -> str:
    if lines.partial:
        return (
            f"start_line {start} is past what can be read: {_scanned_part(relative, lines, size)}"
        )
    return f"start_line {start} is past the end of `{relative}`, which has {lines.total} lines"


def _search_note(found: GrepResult, max_results: int) -> str | None:
    if found.stopped == "time":
        return (
            f"the search was stopped after {SEARCH_SECONDS:g} s; these are the matches found "
            "by then: narrow the pattern or give a path"
        )
    if found.stopped == "output":
        return (
            f"the search was stopped after {_mebibytes(MAX_GREP_OUTPUT_BYTES)} of matching "
            "lines; these are the matches found by then: narrow the pattern or give a path"
        )
    if found.more:
        return (
            f"more than {max_results} matches; these are the first "
            f"{max_results}: narrow the pattern or give a path"
        )
    if not found.matches:
        return (
            "no line matches; the pattern is a POSIX extended regular expression "
            "(no \\d or \\w: write [0-9], [[:alnum:]_])"
        )
    return None


def _mebibytes(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MiB"


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


def _clipped(text: str, clipped: bool) -> str:
    if len(text) <= MAX_MATCH_CHARS and not clipped:
        return text
    return text[:MAX_MATCH_CHARS] + " [… line cut]"


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
