"""The names a source file defines, with their lines: Python through `ast`, others by regexes.

Python is parsed; a file that does not parse, and every other language, is read line by line with
a few regexes per file extension. Those see declarations that start a line, and take as a
symbol's parent the nearest earlier declaration indented less than it (Go receivers and C++
`Class::method` name theirs). Anything declared inside a function is left out, as `ast` leaves it
out. Unknown extensions have no symbols.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

SymbolKind = Literal[
    "class",
    "interface",
    "struct",
    "enum",
    "trait",
    "impl",
    "type",
    "module",
    "function",
    "async function",
    "method",
    "async method",
    "constant",
]

# Kinds whose functions are methods.
_CLASS_LIKE: frozenset[str] = frozenset({"class", "interface", "struct", "enum", "trait", "impl"})
_FUNCTION_KINDS: frozenset[str] = frozenset(
    {"function", "async function", "method", "async method"}
)
_AS_METHOD: dict[str, SymbolKind] = {"function": "method", "async function": "async method"}
_PYTHON_CONSTANT = re.compile(r"_?[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class Symbol:
    """A name defined in a file. `line` and `end_line` count from 1; `end_line` is known only for
    parsed Python. `parent` is the dotted name of the enclosing class, module, impl or the like,
    if any; a function with a class-like parent is a method."""

    kind: SymbolKind
    name: str
    line: int
    end_line: int | None = None
    parent: str | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.parent}.{self.name}" if self.parent else self.name


def symbols(path: str, source: str) -> list[Symbol]:
    """The symbols `source` defines, in the order they appear; the extension of `path` picks the
    reader, and an extension with none gives an empty list."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in _PYTHON_SUFFIXES:
        return _python_symbols(source)
    rules = _RULES_BY_SUFFIX.get(suffix)
    return _regex_symbols(source, rules) if rules else []


def has_symbol_reader(path: str) -> bool:
    """Whether `symbols` knows the language of `path` (by its extension)."""
    suffix = PurePosixPath(path).suffix.lower()
    return suffix in _PYTHON_SUFFIXES or suffix in _RULES_BY_SUFFIX


# Python, parsed.


def _python_symbols(source: str) -> list[Symbol]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return _regex_symbols(source, _PYTHON_RULES)
    return list(_python_body(tree.body, parent=None))


def _python_body(body: Sequence[ast.stmt], parent: str | None) -> Iterator[Symbol]:
    for node in body:
        if isinstance(node, ast.ClassDef):
            declared = Symbol("class", node.name, node.lineno, node.end_lineno, parent)
            yield declared
            yield from _python_body(node.body, declared.qualified_name)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind: SymbolKind = (
                "async function" if isinstance(node, ast.AsyncFunctionDef) else "function"
            )
            if parent is not None:
                kind = _AS_METHOD[kind]
            yield Symbol(kind, node.name, node.lineno, node.end_lineno, parent)
        elif parent is None:
            yield from _python_constants(node)


def _python_constants(node: ast.stmt) -> Iterator[Symbol]:
    if isinstance(node, ast.Assign):
        targets: list[ast.expr] = []
        for target in node.targets:
            targets.extend(target.elts if isinstance(target, ast.Tuple) else [target])
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets = [node.target]
    else:
        return
    if _declares_type_variable(node.value):
        return
    for target in targets:
        if isinstance(target, ast.Name) and _PYTHON_CONSTANT.fullmatch(target.id):
            yield Symbol("constant", target.id, node.lineno, node.end_lineno)


def _declares_type_variable(value: ast.expr | None) -> bool:
    # `T = TypeVar("T")` is upper case but no constant.
    if not isinstance(value, ast.Call):
        return False
    called = value.func
    name = called.attr if isinstance(called, ast.Attribute) else getattr(called, "id", "")
    return name in {"TypeVar", "ParamSpec", "TypeVarTuple"}


# Everything else, line by line.


@dataclass(frozen=True)
class _Rule:
    """A declaration that starts a line: group `name`, optionally `parent` (and `trait`)."""

    kind: SymbolKind
    pattern: re.Pattern[str]


def _rule(kind: SymbolKind, pattern: str) -> _Rule:
    return _Rule(kind, re.compile(pattern))


def _regex_symbols(source: str, rules: Sequence[_Rule]) -> list[Symbol]:
    found: list[Symbol] = []
    enclosing: list[tuple[int, Symbol]] = []  # open declarations with their indentation
    for number, line in enumerate(source.split("\n"), start=1):
        match, rule = _first_match(line, rules)
        if match is None or rule is None:
            continue
        indent = len(line) - len(line.lstrip())
        while enclosing and enclosing[-1][0] >= indent:
            enclosing.pop()
        outer = enclosing[-1][1] if enclosing else None
        if outer is not None and outer.kind in _FUNCTION_KINDS:
            continue  # local to a function body
        symbol = _matched_symbol(rule, match, number, outer)
        found.append(symbol)
        enclosing.append((indent, symbol))
    return found


def _first_match(line: str, rules: Sequence[_Rule]) -> tuple[re.Match[str] | None, _Rule | None]:
    for rule in rules:
        match = rule.pattern.match(line)
        if match is not None:
            return match, rule
    return None, None


def _matched_symbol(rule: _Rule, match: re.Match[str], line: int, outer: Symbol | None) -> Symbol:
    groups = match.groupdict()
    name = match["name"]
    if groups.get("trait"):
        name = f"{groups['trait']} for {name}"
    parent = groups.get("parent") or (outer.qualified_name if outer is not None else None)
    kind = rule.kind
    named_parent = groups.get("parent") is not None
    if kind in _AS_METHOD and (named_parent or (outer is not None and outer.kind in _CLASS_LIKE)):
        kind = _AS_METHOD[kind]
    return Symbol(kind, name, line, None, parent)


_PYTHON_SUFFIXES = frozenset({".py", ".pyi"})

_PYTHON_RULES = (
    _rule("class", r"\s*class\s+(?P<name>\w+)"),
    _rule("async function", r"\s*async\s+def\s+(?P<name>\w+)"),
    _rule("function", r"\s*def\s+(?P<name>\w+)"),
    _rule("constant", r"(?P<name>_?[A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=(?!=)"),
)

_JS_NAME = r"(?P<name>[A-Za-z_$][\w$]*)"
_JS_EXPORT = r"\s*(?:export\s+)?(?:default\s+)?(?:declare\s+)?"
_JAVASCRIPT_RULES = (
    _rule("class", _JS_EXPORT + r"(?:abstract\s+)?class\s+" + _JS_NAME),
    _rule("interface", _JS_EXPORT + r"interface\s+" + _JS_NAME),
    _rule("enum", _JS_EXPORT + r"(?:const\s+)?enum\s+" + _JS_NAME),
    _rule("type", _JS_EXPORT + r"type\s+" + _JS_NAME + r"\s*(?:<[^=]*>)?\s*="),
    _rule("function", _JS_EXPORT + r"(?:async\s+)?function\b\s*\*?\s*" + _JS_NAME),
    # `const handler = async (event) => …`, `const f = function (…)`
    _rule(
        "function",
        r"\s*(?:export\s+)?(?:const|let|var)\s+"
        + _JS_NAME
        + r"\s*(?::[^=]+)?=\s*(?:async\s+)?"
        + r"(?:function\b|(?:\([^)]*\)|[A-Za-z_$][\w$]*)\s*(?::[^=]+)?=>)",
    ),
)

_GO_RULES = (
    _rule(
        "function",
        r"func\s*\(\s*(?:\w+\s+)?\*?(?P<parent>\w+)(?:\[[^\]]*\])?\s*\)\s*(?P<name>\w+)",
    ),
    _rule("function", r"func\s+(?P<name>\w+)"),
    _rule("struct", r"type\s+(?P<name>\w+)(?:\[[^\]]*\])?\s+struct\b"),
    _rule("interface", r"type\s+(?P<name>\w+)(?:\[[^\]]*\])?\s+interface\b"),
    _rule("type", r"type\s+(?P<name>\w+)\b"),
)

_RUST_VISIBILITY = r"\s*(?:pub(?:\([^)]*\))?\s+)?"
_RUST_GENERICS = r"(?:<(?:[^<>]|<[^<>]*>)*>)?"
_RUST_RULES = (
    _rule(
        "function",
        _RUST_VISIBILITY
        + r"(?:(?:const|async|unsafe|extern(?:\s+\"[^\"]*\")?)\s+)*fn\s+(?P<name>\w+)",
    ),
    _rule("struct", _RUST_VISIBILITY + r"struct\s+(?P<name>\w+)"),
    _rule("enum", _RUST_VISIBILITY + r"enum\s+(?P<name>\w+)"),
    _rule("trait", _RUST_VISIBILITY + r"(?:unsafe\s+)?trait\s+(?P<name>\w+)"),
    _rule(
        "impl",
        r"\s*(?:unsafe\s+)?impl\s*"
        + _RUST_GENERICS
        + r"\s+(?:!?(?P<trait>[\w:]+)"
        + _RUST_GENERICS
        + r"\s+for\s+)?(?P<name>[\w:]+)",
    ),
    _rule("module", _RUST_VISIBILITY + r"mod\s+(?P<name>\w+)\s*\{"),
)

_ANNOTATIONS = r"\s*(?:@\w+(?:\([^)]*\))?\s+)*"
_MODIFIER = (
    r"(?:public|private|protected|internal|static|final|abstract|sealed|open|override|virtual"
    r"|async|synchronized|native|extern|unsafe|partial|readonly|data|inner|annotation|value"
    r"|suspend|inline|operator|infix|tailrec|external|default|strictfp)"
)
_JVM_TYPE = r"[\w.?\[\]]+(?:<[^()=;]*>)?(?:\[\])*"
_JVM_RULES = (
    _rule("interface", _ANNOTATIONS + rf"(?:{_MODIFIER}\s+)*(?:fun\s+)?interface\s+(?P<name>\w+)"),
    _rule("enum", _ANNOTATIONS + rf"(?:{_MODIFIER}\s+)*enum\s+(?:class\s+)?(?P<name>\w+)"),
    _rule("struct", _ANNOTATIONS + rf"(?:{_MODIFIER}\s+)*(?:record\s+)?struct\s+(?P<name>\w+)"),
    _rule("class", _ANNOTATIONS + rf"(?:{_MODIFIER}\s+)*(?:class|record|object)\s+(?P<name>\w+)"),
    # Kotlin: `fun name(`, `fun <T> List<T>.name(`
    _rule(
        "function",
        _ANNOTATIONS
        + rf"(?:{_MODIFIER}\s+)*fun\s+(?:<[^>]*>\s*)?(?:[\w.<>?]+\.)?(?P<name>\w+)\s*\(",
    ),
    # Java and C#: a modifier, maybe a type, then `name(`; constructors have no type.
    _rule(
        "function",
        _ANNOTATIONS + rf"(?:{_MODIFIER}\s+)+(?:<[^>]*>\s+)?(?:{_JVM_TYPE}\s+)?(?P<name>\w+)\s*\(",
    ),
)

_RUBY_RULES = (
    _rule("class", r"\s*class\s+(?P<name>[A-Z][\w:]*)"),
    _rule("module", r"\s*module\s+(?P<name>[A-Z][\w:]*)"),
    _rule("function", r"\s*def\s+(?:self\.)?(?P<name>[\w?!=]+|\[\]=?|[-+*/%<>=!~^&|]+)"),
)

_C_KEYWORDS = r"(?!(?:if|else|for|while|do|switch|case|return|typedef|using|sizeof|goto)\b)"
# A class or struct head: no `;` (a forward declaration) and no `(` (a function returning one).
_C_TYPE_HEAD = r"\s+(?:[A-Z_][A-Z0-9_]*\s+)?(?P<name>\w+)\s*(?:final\s*)?(?::[^;{(]*)?\{?\s*$"
_C_RULES = (
    # Everything at column 0.
    _rule("class", r"(?:template\s*<.*>\s*)?class" + _C_TYPE_HEAD),
    _rule("struct", r"(?:typedef\s+)?struct" + _C_TYPE_HEAD),
    # A definition at column 0: words, then `name(` or `Class::name(`, no `;` after it. Each
    # word is atomic: `*` and `&` fit both its parts, and retrying every split of `a&a&a&…`
    # took seconds for a line of 100 characters, years for a longer one.
    _rule(
        "function",
        _C_KEYWORDS
        + r"(?>[A-Za-z_][\w:<>,*&]*[\s*&]+){0,6}"
        + r"(?:(?P<parent>[A-Za-z_][\w:]*)::)?"
        + _C_KEYWORDS
        + r"(?P<name>~?[A-Za-z_]\w*)\s*\([^;]*$",
    ),
)

_RULES_BY_SUFFIX: dict[str, tuple[_Rule, ...]] = {
    **dict.fromkeys(
        (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts"), _JAVASCRIPT_RULES
    ),
    ".go": _GO_RULES,
    ".rs": _RUST_RULES,
    **dict.fromkeys((".java", ".kt", ".kts", ".cs"), _JVM_RULES),
    ".rb": _RUBY_RULES,
    **dict.fromkeys((".c", ".h", ".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx"), _C_RULES),
}
