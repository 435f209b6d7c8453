"""A repository as models see it: its files at a commit (read as git objects, a link never
followed), safe paths, symbols, the planner's context and the read-only tools over a working
copy. Nothing outside the repository is ever shown."""

from bot.codebase.context import planner_context
from bot.codebase.files import GitFailed, tracked_files
from bot.codebase.paths import PathRefused, relative_inside, resolve_inside
from bot.codebase.snapshot import CommittedFile, committed_files, read_committed
from bot.codebase.symbols import Symbol, SymbolKind, has_symbol_reader, symbols
from bot.codebase.tools import read_only_tools

__all__ = [
    "CommittedFile",
    "GitFailed",
    "PathRefused",
    "Symbol",
    "SymbolKind",
    "committed_files",
    "has_symbol_reader",
    "planner_context",
    "read_committed",
    "read_only_tools",
    "relative_inside",
    "resolve_inside",
    "symbols",
    "tracked_files",
]
