"""A repository checkout as models see it: safe paths, symbols, the planner's context and the
read-only tools. Everything works on a checkout directory and never shows what lies outside it."""

from bot.codebase.context import planner_context
from bot.codebase.files import GitFailed, tracked_files
from bot.codebase.paths import PathRefused, relative_inside, resolve_inside
from bot.codebase.symbols import Symbol, SymbolKind, has_symbol_reader, symbols
from bot.codebase.tools import read_only_tools

__all__ = [
    "GitFailed",
    "PathRefused",
    "Symbol",
    "SymbolKind",
    "has_symbol_reader",
    "planner_context",
    "read_only_tools",
    "relative_inside",
    "resolve_inside",
    "symbols",
    "tracked_files",
]
