"""A checkout as models see it: safe paths, symbols, the planner's context and read-only tools.

Every test works on real git repositories built in `tmp_path`, read through a worktree whose
`.git` is a file, as Baton's own checkouts are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.codebase import (
    PathRefused,
    Symbol,
    planner_context,
    read_only_tools,
    relative_inside,
    resolve_inside,
    symbols,
)
from tests.support import call, committed_repository, refused, worktree, write

SECRET = "TOP SECRET outside the repository"

APP_PY = '''\
"""The app."""

import asyncio

MAX_SIZE = 10
_LIMIT: int = 3
lower_case = 1
A, B = 1, 2


class App:
    NAME = "app"

    def __init__(self) -> None:
        self.size = MAX_SIZE

    async def serve(self) -> None:
        def helper() -> None:
            pass

        await asyncio.sleep(0)

    class Config:
        def load(self) -> None:
            pass


@decorated
def main() -> None:
    App()


async def run() -> None:
    pass


T = TypeVar("T")
'''


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET + "\n")
    return folder


@pytest.fixture
def checkout(tmp_path: Path, outside: Path) -> Path:
    """A small project: Python source, a binary, an ignored secret, an untracked note and
    symlinks to places inside and outside it."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "to_outside").symlink_to(outside / "secret.txt")  # committed, as a repo may
    committed_repository(
        origin,
        {
            "README.md": "# Demo\n\nA small project.\n",
            ".gitignore": "*.env\nbuild/\n",
            "pkg/__init__.py": "",
            "pkg/app.py": APP_PY,
            "pkg/data.bin": b"\x89PNG\r\n\x1a\n\x00\x00binary",
            "pkg/notes.md": "needle in pkg\n",
            "docs/guide.md": "needle in docs\nsecond line\n",
        },
    )
    root = worktree(origin, tmp_path / "checkout")
    write(root, {"local.env": "TOKEN=needle\n", "build/out.py": "needle = 1\n"})
    write(root, {"new.txt": "a new needle, not yet committed\n"})
    (root / "dir_outside").symlink_to(outside, target_is_directory=True)
    (root / "into_pkg").symlink_to(root / "pkg", target_is_directory=True)
    (root / "into_git").symlink_to(root / ".git")
    (root / "loop").symlink_to(root / "loop")
    return root


# Paths.


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("/etc/passwd", "absolute", id="absolute"),
        pytest.param("../x", "leaves the repository; paths are relative to its root", id="parent"),
        pytest.param("a/../../x", "leaves the repository", id="nested-parent"),
        pytest.param(
            "pkg/../README.md", "holds `..`; write it without, as `README.md`", id="inner-dotdot"
        ),
        pytest.param(".git", "inside `.git`", id="git-itself"),
        pytest.param(".git/config", "inside `.git`", id="under-git"),
        pytest.param("./.git/", "inside `.git`", id="git-dotted"),
        pytest.param(".GIT/config", "inside `.git`", id="git-other-case"),
        pytest.param("pkg/.git/HEAD", "inside `.git`", id="nested-git"),
        pytest.param("to_outside", "outside the repository through a symlink", id="file-link"),
        pytest.param(
            "dir_outside/secret.txt", "outside the repository through a symlink", id="dir-link"
        ),
        pytest.param("dir_outside/new.txt", "outside the repository", id="dir-link-new-file"),
        pytest.param("into_git", "into `.git` through a symlink", id="link-to-git"),
        pytest.param("loop/x", "cannot be resolved", id="symlink-loop"),
        pytest.param("a\0b", "NUL", id="nul"),
    ],
)
def test_a_path_that_escapes_is_refused_with_a_reason(
    checkout: Path, path: str, reason: str
) -> None:
    with pytest.raises(PathRefused) as refused:
        resolve_inside(checkout, path)
    assert reason in str(refused.value)
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("pkg/app.py", "pkg/app.py", id="plain"),
        pytest.param("./pkg/app.py", "pkg/app.py", id="dot-prefix"),
        pytest.param("pkg/", "pkg", id="trailing-slash"),
        pytest.param("pkg//app.py", "pkg/app.py", id="double-slash"),
        pytest.param(".", ".", id="root"),
        pytest.param("pkg/new/module.py", "pkg/new/module.py", id="not-yet-existing"),
        pytest.param("into_pkg/app.py", "pkg/app.py", id="symlink-inside"),
        pytest.param(".github/workflows/ci.yml", ".github/workflows/ci.yml", id="dot-github"),
        pytest.param(".gitignore", ".gitignore", id="gitignore"),
    ],
)
def test_a_path_inside_resolves_to_its_real_location(
    checkout: Path, path: str, expected: str
) -> None:
    resolved = resolve_inside(checkout, path)
    assert resolved == (checkout.resolve() / expected).resolve()
    assert relative_inside(checkout, path) == expected


def test_a_symlinked_root_is_no_escape(tmp_path: Path, checkout: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(checkout, target_is_directory=True)
    assert resolve_inside(alias, "pkg/app.py") == checkout.resolve() / "pkg/app.py"
    with pytest.raises(PathRefused):
        resolve_inside(alias, "to_outside")


# Symbols.


def test_python_symbols_come_from_the_parser() -> None:
    found = symbols("pkg/app.py", APP_PY)
    assert [(s.kind, s.name, s.parent) for s in found] == [
        ("constant", "MAX_SIZE", None),
        ("constant", "_LIMIT", None),
        ("constant", "A", None),
        ("constant", "B", None),
        ("class", "App", None),
        ("method", "__init__", "App"),
        ("async method", "serve", "App"),
        ("class", "Config", "App"),
        ("method", "load", "App.Config"),
        ("function", "main", None),
        ("async function", "run", None),
    ]
    app = next(s for s in found if s.name == "App")
    assert (app.line, app.end_line) == (11, 25)
    main = next(s for s in found if s.name == "main")
    assert main.line == 29  # the `def` line, not the decorator's


def test_python_that_does_not_parse_is_read_by_regexes() -> None:
    source = (
        "LIMIT = 3\n"
        "class Broken:\n"
        "    def method(self):\n"
        "        def local():\n"
        "            pass\n"
        "    async def fetch(self):\n"
        "        return (\n"
        "def top(:\n"
        "async def later():\n"
    )
    assert symbols("broken.py", source) == [
        Symbol("constant", "LIMIT", 1),
        Symbol("class", "Broken", 2),
        Symbol("method", "method", 3, parent="Broken"),
        Symbol("async method", "fetch", 6, parent="Broken"),
        Symbol("function", "top", 8),
        Symbol("async function", "later", 9),
    ]


def brief(found: list[Symbol]) -> list[tuple[str, str, int, str | None]]:
    return [(s.kind, s.name, s.line, s.parent) for s in found]


def test_typescript_declarations() -> None:
    source = (
        "import { x } from './x';\n"
        "export function parse(text: string): Node {\n"
        "  function inner() {}\n"
        "}\n"
        "export default class Parser extends Base {\n"
        "}\n"
        "export const handler = async (event: Event): Promise<void> => {\n"
        "const double = x => x * 2;\n"
        "const config = { a: 1 };\n"
        "export interface Options {\n"
        "export type Id = string;\n"
        "export async function* stream() {\n"
    )
    assert brief(symbols("src/parse.ts", source)) == [
        ("function", "parse", 2, None),
        ("class", "Parser", 5, None),
        ("function", "handler", 7, None),
        ("function", "double", 8, None),
        ("interface", "Options", 10, None),
        ("type", "Id", 11, None),
        ("function", "stream", 12, None),
    ]


def test_go_functions_methods_and_types() -> None:
    source = (
        "package server\n"
        "type Server struct {\n"
        "}\n"
        "type Handler interface {\n"
        "}\n"
        "type ID string\n"
        "func New(addr string) *Server {\n"
        "func (s *Server) Start() error {\n"
        "func (Server) name() string {\n"
    )
    assert brief(symbols("server.go", source)) == [
        ("struct", "Server", 2, None),
        ("interface", "Handler", 4, None),
        ("type", "ID", 6, None),
        ("function", "New", 7, None),
        ("method", "Start", 8, "Server"),
        ("method", "name", 9, "Server"),
    ]


def test_rust_items_and_impl_methods() -> None:
    source = (
        "pub struct Point { x: i32 }\n"
        "enum Shape {\n"
        "}\n"
        "pub trait Area {\n"
        "    fn area(&self) -> f64;\n"
        "}\n"
        "impl<T: Into<f64>> Area for Point {\n"
        "    pub fn area(&self) -> f64 {\n"
        "        fn local() {}\n"
        "    }\n"
        "}\n"
        "pub(crate) async fn run() {}\n"
    )
    assert brief(symbols("lib.rs", source)) == [
        ("struct", "Point", 1, None),
        ("enum", "Shape", 2, None),
        ("trait", "Area", 4, None),
        ("method", "area", 5, "Area"),
        ("impl", "Area for Point", 7, None),
        ("method", "area", 8, "Area for Point"),
        ("function", "run", 12, None),
    ]


def test_java_kotlin_and_csharp_classes_and_methods() -> None:
    java = (
        "public class Cache<K, V> {\n"
        "    private final Map<K, V> items = new HashMap<>();\n"
        "    public Cache(int size) {\n"
        "    @Override public V get(K key) {\n"
        "        return items.get(key);\n"
        "    private static <T> List<T> copy(List<T> from) {\n"
        "}\n"
        "interface Store {\n"
    )
    assert brief(symbols("Cache.java", java)) == [
        ("class", "Cache", 1, None),
        ("method", "Cache", 3, "Cache"),
        ("method", "get", 4, "Cache"),
        ("method", "copy", 6, "Cache"),
        ("interface", "Store", 8, None),
    ]
    kotlin = "data class User(val id: Int)\nfun main() {\n    fun local() {}\n}\n"
    assert brief(symbols("Main.kt", kotlin)) == [
        ("class", "User", 1, None),
        ("function", "main", 2, None),
    ]
    csharp = "public sealed class Api {\n    public async Task<int> GetAsync(int id) {\n"
    assert brief(symbols("Api.cs", csharp)) == [
        ("class", "Api", 1, None),
        ("method", "GetAsync", 2, "Api"),
    ]


def test_ruby_and_c_definitions() -> None:
    ruby = "module Shop\n  class Cart\n    def add(item)\n    def self.empty?\n  end\nend\n"
    assert brief(symbols("cart.rb", ruby)) == [
        ("module", "Shop", 1, None),
        ("class", "Cart", 2, "Shop"),
        ("method", "add", 3, "Shop.Cart"),
        ("method", "empty?", 4, "Shop.Cart"),
    ]
    c = (
        "#include <stdio.h>\n"
        "struct point {\n"
        "struct point *make_point(int x);\n"
        "static const char *\n"
        "name_of(int code)\n"
        "{\n"
        "    if (code) {\n"
        "int main(int argc, char **argv) {\n"
        "void Widget::draw(int depth) const {\n"
        "class Widget : public Base {\n"
    )
    assert brief(symbols("main.cpp", c)) == [
        ("struct", "point", 2, None),
        ("function", "name_of", 5, None),
        ("function", "main", 8, None),
        ("method", "draw", 9, "Widget"),
        ("class", "Widget", 10, None),
    ]


def test_an_unknown_language_has_no_symbols() -> None:
    assert symbols("notes.txt", "def looks_like_python():\n") == []
    assert symbols("Makefile", "all:\n") == []


# Planner context.


def big_project() -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        "README.md": "# Big project\n\n" + "Read me first. " * 4000,
        "docs/CONTRIBUTING.rst": "How to contribute\n",
        "AGENTS.md": "Agents: run make test.\n",
        "pkg0/README.md": "A package's own readme, not the project's.",
        "package-lock.json": "{}",
        "vendor/dep/dep.py": "def vendored():\n    pass\n",
        "web/app.min.js": "function minified(){}",
        "setup.py": "def setup_project():\n    pass\n",
    }
    for package in range(10):
        for module in range(20):
            files[f"pkg{package}/mod{module}.py"] = (
                f"class Model{module}:\n    def save(self):\n        pass\n\n"
                f"def helper_{package}_{module}():\n    pass\n"
            )
    for index in range(4000):
        files[f"src/legacy/part{index % 40}/deep/file{index}.py"] = f"VALUE_{index} = {index}\n"
    for index in range(600):
        files[f"tests/test_mod{index}.py"] = f"def test_{index}():\n    pass\n"
    while len(files) < 5000:
        files[f"assets/image{len(files)}.bin"] = b"\x00\x01"
    return files


@pytest.fixture(scope="module")
def big_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A worktree of one commit of a 5,000-file repository, and the repository it came from."""
    base = tmp_path_factory.mktemp("big")
    origin = committed_repository(base / "origin", big_project())
    return worktree(origin, base / "checkout"), origin


def test_the_context_of_5000_files_stays_within_its_budget(
    big_repository: tuple[Path, Path],
) -> None:
    root, _ = big_repository
    text = planner_context(root)
    assert len(text) <= 60_000
    assert "## Tracked files: 5000 in" in text
    for folder in ("assets/", "docs/", "pkg0/", "pkg9/", "src/", "tests/", "vendor/"):
        assert f"\n{folder}" in text
    assert "./: AGENTS.md, README.md, package-lock.json, setup.py" in text
    assert '<document path="README.md">\n# Big project' in text
    assert "read_file('README.md') shows the rest]\n</document>" in text
    assert '<document path="docs/CONTRIBUTING.rst">\nHow to contribute\n</document>' in text
    # The planner gets the instructions for agents apart, named as such (bot.codebase.instructions).
    assert '<document path="AGENTS.md">' not in text
    assert 'path="pkg0/README.md"' not in text


def test_the_symbol_map_puts_important_files_first_and_says_what_it_left_out(
    big_repository: tuple[Path, Path],
) -> None:
    root, _ = big_repository
    text = planner_context(root)
    symbol_map = text.split("## Top-level symbols")[1].split("\n\n")[0]
    lines = symbol_map.splitlines()[1:]
    assert lines[0] == "setup.py: function setup_project:1"
    assert "pkg0/mod0.py: class Model0:1, function helper_0_0:5" in lines
    assert "vendor/" not in symbol_map
    assert "minified" not in symbol_map
    assert "tests/" not in symbol_map  # sources fill the share before tests come
    assert lines[-1].startswith("… ")
    assert "more source files not mapped here" in lines[-1]


def test_the_context_is_the_same_for_the_same_commit(big_repository: tuple[Path, Path]) -> None:
    checkout, origin = big_repository
    first = planner_context(checkout)
    assert planner_context(checkout) == first
    assert planner_context(origin) == first  # nothing of where the files lie


def test_a_large_tree_collapses_deep_folders_into_counts(
    big_repository: tuple[Path, Path],
) -> None:
    root, _ = big_repository
    middle = planner_context(root, budget_chars=8_000).split("\n\n")[0]
    assert len(middle) <= 8_000 * 0.35
    assert "\nsrc/legacy/part0/deep/ (100 files)\n" in middle
    assert "\npkg1/: mod0.py, mod1.py, mod10.py, mod11.py, … (+16 more)\n" in middle
    small = planner_context(root, budget_chars=3_000).split("\n\n")[0]
    assert len(small) <= 3_000 * 0.35
    assert "\nsrc/ (4000 files)\ntests/ (600 files)\nvendor/ (1 file)\n" in small


@pytest.mark.parametrize("budget", [0, 40, 200, 1_000, 3_000, 10_000])
def test_any_budget_bounds_the_context(checkout: Path, budget: int) -> None:
    assert len(planner_context(checkout, budget_chars=budget)) <= budget


def test_a_small_project_is_shown_whole(checkout: Path) -> None:
    text = planner_context(checkout)
    assert "./: .gitignore, README.md, to_outside" in text
    assert "pkg/: __init__.py, app.py, data.bin, notes.md" in text
    assert "pkg/app.py: constant MAX_SIZE:5" in text
    assert '<document path="README.md">\n# Demo\n\nA small project.\n</document>' in text
    assert "more source files" not in text
    assert SECRET not in text
    assert str(checkout) not in text


# Read-only tools.


def test_the_tools_are_those_of_the_contract(checkout: Path) -> None:
    specs = {tool.spec.name: tool.spec for tool in read_only_tools(checkout)}
    schemas = {name: spec.input_schema for name, spec in specs.items()}
    assert {name: (set(s["properties"]), s.get("required", [])) for name, s in schemas.items()} == {
        "list_files": ({"path"}, []),
        "read_file": ({"path", "start_line", "end_line"}, ["path"]),
        "search": ({"pattern", "path"}, ["pattern"]),
        "list_symbols": ({"path"}, ["path"]),
    }
    for spec in specs.values():
        assert spec.description.endswith(".")
        assert ". " not in spec.description  # one sentence


async def test_list_files_shows_the_working_copy_without_ignored_files(checkout: Path) -> None:
    answer = await call(read_only_tools(checkout), "list_files")
    assert answer["files"] == [
        ".gitignore",
        "README.md",
        "dir_outside",
        "docs/guide.md",
        "into_git",
        "into_pkg",
        "loop",
        "new.txt",
        "pkg/__init__.py",
        "pkg/app.py",
        "pkg/data.bin",
        "pkg/notes.md",
        "to_outside",
    ]
    # Links are listed as what they are, and never followed.
    assert answer["symlinks"] == ["dir_outside", "into_git", "into_pkg", "loop", "to_outside"]
    assert answer["count"] == len(answer["files"])
    assert "note" not in answer


async def test_list_files_of_a_folder_and_its_cap(checkout: Path) -> None:
    tools = read_only_tools(checkout, max_results=2)
    answer = await call(tools, "list_files", path="./pkg/")
    assert answer["path"] == "pkg"
    assert answer["files"] == ["pkg/__init__.py", "pkg/app.py"]
    assert answer["count"] == 4
    assert "showing the first 2 of 4 files" in answer["note"]
    linked = await call(tools, "list_files", path="into_pkg")
    assert (linked["files"], linked["symlinks"]) == (["into_pkg"], ["into_pkg"])
    one = await call(tools, "list_files", path="pkg/app.py")
    assert one["files"] == ["pkg/app.py"]


async def test_list_files_refuses_what_is_not_there_or_outside(checkout: Path) -> None:
    tools = read_only_tools(checkout)
    assert "`nowhere` does not exist" in await refused(tools, "list_files", path="nowhere")
    assert "leaves the repository" in await refused(tools, "list_files", path="..")
    assert "goes through `dir_outside`, a symbolic link" in await refused(
        tools, "list_files", path="dir_outside/secret.txt"
    )
    assert "must be a string" in await refused(tools, "list_files", path=3)
    assert "has no argument folder" in await refused(tools, "list_files", folder="pkg")


async def test_read_file_numbers_lines_and_reads_a_range(checkout: Path) -> None:
    tools = read_only_tools(checkout)
    whole = await call(tools, "read_file", path="docs/guide.md")
    assert whole == {
        "path": "docs/guide.md",
        "start_line": 1,
        "end_line": 2,
        "total_lines": 2,
        "content": "1\tneedle in docs\n2\tsecond line",
    }
    part = await call(tools, "read_file", path="pkg/app.py", start_line=11, end_line=12)
    assert part["content"] == '11\tclass App:\n12\t    NAME = "app"'
    assert part["total_lines"] == APP_PY.count("\n")
    untracked = await call(tools, "read_file", path="new.txt")
    assert untracked["content"] == "1\ta new needle, not yet committed"
    linked = await call(tools, "read_file", path="to_outside")
    assert linked["symlink_to"] == str(checkout.parent / "outside/secret.txt")
    assert "its target is not read" in linked["note"]
    assert "content" not in linked


async def test_read_file_stops_at_its_cap_and_says_how_to_read_on(checkout: Path) -> None:
    tools = read_only_tools(checkout, max_read_chars=60)
    answer = await call(tools, "read_file", path="pkg/app.py")
    assert len(answer["content"]) <= 60
    assert answer["content"].startswith('1\t"""The app."""\n2\t\n3\timport asyncio')
    shown = answer["end_line"]
    assert f"start_line {shown + 1} to read on" in answer["note"]
    following = await call(tools, "read_file", path="pkg/app.py", start_line=shown + 1)
    assert following["start_line"] == shown + 1


async def test_read_file_cuts_a_line_longer_than_the_cap(tmp_path: Path) -> None:
    origin = committed_repository(tmp_path / "origin", {"app.min.js": "x" * 500 + "\nend\n"})
    tools = read_only_tools(origin, max_read_chars=100)
    answer = await call(tools, "read_file", path="app.min.js")
    assert answer["content"].endswith("[… line cut]")
    assert len(answer["content"]) <= 100
    assert "start_line 2" in answer["note"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"path": "missing.py"}, "`missing.py` does not exist", id="missing"),
        pytest.param({"path": "pkg/data.bin"}, "is a binary file", id="binary"),
        pytest.param({"path": "pkg"}, "is a folder; list_files", id="folder"),
        pytest.param({"path": "local.env"}, "ignored by git", id="ignored"),
        pytest.param({"path": "build/out.py"}, "ignored by git", id="ignored-folder"),
        pytest.param(
            {"path": "into_pkg/app.py"}, "goes through `into_pkg`, a symbolic link", id="via-link"
        ),
        pytest.param({"path": "../outside/secret.txt"}, "leaves the repository", id="dotdot"),
        pytest.param({"path": ".git"}, "inside `.git`", id="git"),
        pytest.param({"path": "/etc/passwd"}, "is absolute", id="absolute"),
        pytest.param({}, "read_file needs path", id="no-path"),
        pytest.param({"path": ""}, "non-empty string", id="empty-path"),
        pytest.param({"path": "README.md", "start_line": 0}, "from 1, got 0", id="line-zero"),
        pytest.param({"path": "README.md", "start_line": "2"}, 'got "2"', id="line-text"),
        pytest.param({"path": "README.md", "end_line": True}, "got true", id="line-bool"),
        pytest.param(
            {"path": "README.md", "start_line": 3, "end_line": 2},
            "end_line 2 is before start_line 3",
            id="reversed",
        ),
        pytest.param(
            {"path": "README.md", "start_line": 40},
            "start_line 40 is past the end of `README.md`, which has 3 lines",
            id="past-end",
        ),
    ],
)
async def test_read_file_refusals_say_what_to_do(
    checkout: Path, arguments: dict[str, Any], message: str
) -> None:
    error = await refused(read_only_tools(checkout), "read_file", **arguments)
    assert message in error
    assert SECRET not in error
    assert str(checkout.parent) not in error


async def test_search_finds_lines_in_text_files_git_does_not_ignore(checkout: Path) -> None:
    tools = read_only_tools(checkout)
    answer = await call(tools, "search", pattern="needle")
    assert answer["matches"] == [
        {"path": "docs/guide.md", "line": 1, "text": "needle in docs"},
        {"path": "new.txt", "line": 1, "text": "a new needle, not yet committed"},
        {"path": "pkg/notes.md", "line": 1, "text": "needle in pkg"},
    ]
    under = await call(tools, "search", pattern="ne+dle in [a-z]+$", path="pkg")
    assert [match["path"] for match in under["matches"]] == ["pkg/notes.md"]


async def test_search_never_shows_what_lies_outside(checkout: Path) -> None:
    tools = read_only_tools(checkout)
    answer = await call(tools, "search", pattern="SECRET")
    assert answer["matches"] == []
    assert "POSIX extended regular expression" in answer["note"]
    linked = await call(tools, "search", pattern="SECRET", path="dir_outside")
    assert (linked["matches"], linked["symlink_to"]) == ([], str(checkout.parent / "outside"))
    assert "goes through `dir_outside`" in await refused(
        tools, "search", pattern="SECRET", path="dir_outside/secret.txt"
    )


async def test_search_caps_its_results(checkout: Path) -> None:
    answer = await call(read_only_tools(checkout, max_results=2), "search", pattern=".")
    assert len(answer["matches"]) == 2
    assert "more than 2 matches" in answer["note"]


async def test_search_refuses_a_bad_pattern_clearly(checkout: Path) -> None:
    tools = read_only_tools(checkout)
    error = await refused(tools, "search", pattern="(unclosed")
    assert "`(unclosed` is not a valid POSIX extended regular expression" in error
    assert "Unmatched ( or \\(" in error
    assert "non-empty string" in await refused(tools, "search", pattern="")
    assert "search needs pattern" in await refused(tools, "search", path="pkg")
    dashed = await call(tools, "search", pattern="--no-index")
    assert dashed["matches"] == []


async def test_list_symbols_of_a_source_file(checkout: Path) -> None:
    tools = read_only_tools(checkout)
    answer = await call(tools, "list_symbols", path="pkg/app.py")
    assert answer["symbols"][4] == {"kind": "class", "name": "App", "line": 11, "end_line": 25}
    assert answer["symbols"][5] == {
        "kind": "method",
        "name": "__init__",
        "line": 14,
        "end_line": 15,
        "parent": "App",
    }
    other = await call(tools, "list_symbols", path="README.md")
    assert other["symbols"] == []
    assert "not read from .md files" in other["note"]


async def test_list_symbols_caps_its_answer(checkout: Path) -> None:
    answer = await call(
        read_only_tools(checkout, max_read_chars=200), "list_symbols", path="pkg/app.py"
    )
    assert 0 < len(answer["symbols"]) < 11
    assert "of 11 symbols; read_file from line" in answer["note"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("pkg/data.bin", "is a binary file"),
        ("nothing.py", "does not exist"),
        ("dir_outside/secret.txt", "goes through `dir_outside`, a symbolic link"),
        ("local.env", "ignored by git"),
    ],
)
async def test_list_symbols_refusals(checkout: Path, path: str, message: str) -> None:
    assert message in await refused(read_only_tools(checkout), "list_symbols", path=path)
