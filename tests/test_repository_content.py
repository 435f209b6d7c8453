"""Repository content is data, never a path on the host (CONTRACT §9).

What Baton shows a model of a repository (the worker's conventions and context files, the
planner's context) is read as git objects at a commit: a committed symlink is shown as a link
with its target text and never followed, so it cannot pull a host file into a prompt. The read
tools see the working copy, and there they read only regular files, never through a symlink,
never a FIFO or a device, with bounded memory and time whatever the file or the pattern.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
import sys
import threading
from collections.abc import Awaitable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pytest

from bot.codebase import planner_context, read_committed, read_only_tools
from bot.codebase.edits import WriteSet, edit_tools
from bot.codebase.files import grep
from bot.codebase.instructions import read_instructions
from bot.codebase.workcopy import CHUNK_BYTES, Lines, opened
from bot.git import Mirror
from bot.plan.schema import PlanTask
from bot.store.db import Store
from bot.workers.attempt import RepoCommands
from tests.doubles.fixtures import WIDGETS_FILES, commit_files
from tests.doubles.github import GitHubDouble
from tests.support import call, committed_repository, git, refused, worktree
from tests.workers_by_hand import RUN_ID, TESTS, fenced, first_prompt

FAKE_SECRET = "BATON_WEBHOOK_SECRET=fake-webhook-secret-7c1e9d"
PROMPT_ANSWERED = 60.0  # generous: a tool that hangs fails the test instead of the session
T = TypeVar("T")


@pytest.fixture
def dotenv(tmp_path: Path) -> Path:
    """A `.env` outside every repository, holding a fake secret, as Baton's own would."""
    folder = tmp_path / "baton-home"
    folder.mkdir()
    path = folder / ".env"
    path.write_text(FAKE_SECRET + "\n")
    return path


class FifoWatch:
    """While active, a reader holding one of `paths` open while it is a FIFO (as one blocked in
    `open` waiting for a writer does) is released (it reads end of file) and recorded in
    `readers`: a regression fails its assertion instead of hanging the test session."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self.readers: list[Path] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(0.02):
            for path in self.paths:
                self._release(path)

    def _release(self, path: Path) -> None:
        try:
            # Opening the write end without blocking works only while a reader has it open.
            descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno not in (errno.ENXIO, errno.ENOENT):
                raise
            return
        is_fifo = stat.S_ISFIFO(os.fstat(descriptor).st_mode)  # not yet made, or replaced
        os.close(descriptor)
        if is_fifo:
            self.readers.append(path)


async def promptly(answer: Awaitable[T]) -> T:
    return await asyncio.wait_for(answer, PROMPT_ANSWERED)


# The worker's prompt: conventions and context files at the attempt's base commit.


def reading_task(context_files: list[str]) -> PlanTask:
    return PlanTask(
        id="T1",
        title="Read the context",
        role="implementer",
        description="Look around.",
        files=["src/widgets/__init__.py"],
        context_files=context_files,
        acceptance="nothing changes",
    )


@pytest.mark.parametrize("target", ["dotenv", "/proc/self/environ"])
async def test_a_symlinked_agents_md_is_shown_as_a_link_and_its_target_never_read(
    store: Store, mirror: Mirror, github: GitHubDouble, dotenv: Path, target: str
) -> None:
    linked = str(dotenv) if target == "dotenv" else target
    commit_files(github, {}, symlinks={"AGENTS.md": linked})

    prompt, requests = await first_prompt(store, mirror, reading_task([]))

    assert f"`AGENTS.md` is a symbolic link to `{linked}`; its target is not read" in prompt
    assert b"fake-webhook-secret" not in requests
    assert b"PATH=" not in requests  # nothing of Baton's environment either


async def test_convention_files_after_a_link_are_still_read(
    store: Store, mirror: Mirror, github: GitHubDouble, dotenv: Path
) -> None:
    commit_files(
        github,
        {"CONTRIBUTING.md": "Run the tests before you push.\n"},
        symlinks={"AGENTS.md": str(dotenv)},
    )
    prompt, requests = await first_prompt(store, mirror, reading_task([]))
    assert fenced(prompt, "repository-instructions", 'path="AGENTS.md"') == (
        f"`AGENTS.md` is a symbolic link to `{dotenv}`; its target is not read"
    )
    assert fenced(prompt, "repository-instructions", 'path="CONTRIBUTING.md"') == (
        "Run the tests before you push.\n"
    )
    assert b"fake-webhook-secret" not in requests


async def test_a_context_file_that_links_elsewhere_is_described_not_followed(
    store: Store, mirror: Mirror, github: GitHubDouble, dotenv: Path
) -> None:
    commit_files(
        github,
        {},
        symlinks={
            "docs/widgets.md": "../src/widgets/__init__.py",
            "docs/settings.env": str(dotenv),
        },
    )
    task = reading_task(["docs/widgets.md", "docs/settings.env", "README.md", "../README.md"])

    prompt, requests = await first_prompt(store, mirror, task)

    assert fenced(prompt, "context-file", 'path="docs/widgets.md"') == (
        "`docs/widgets.md` is a symbolic link to `../src/widgets/__init__.py`; its target is not "
        "read"
    )
    assert "def render" not in prompt
    assert f"`docs/settings.env` is a symbolic link to `{dotenv}`" in prompt
    assert b"fake-webhook-secret" not in requests
    assert fenced(prompt, "context-file", 'path="README.md"').startswith("# Widgets\n")
    assert 'path="../README.md"' not in prompt


async def test_a_fifo_made_by_the_setup_command_never_stalls_the_worker(
    store: Store, mirror: Mirror, tmp_path: Path
) -> None:
    """The setup command runs before the prompt is built; it may leave a FIFO where a context
    file or AGENTS.md was. Reading it would block the event loop, and so every run, forever."""
    setup = "rm README.md && mkfifo README.md && mkfifo AGENTS.md"
    commands = RepoCommands(test=TESTS.test, setup=setup)
    checkout = tmp_path / "data" / "worktrees" / RUN_ID / "T1"

    with FifoWatch(checkout / "README.md", checkout / "AGENTS.md") as watch:
        prompt, _ = await first_prompt(store, mirror, reading_task(["README.md"]), commands)

    assert watch.readers == []
    assert fenced(prompt, "context-file", 'path="README.md"').startswith(WIDGETS_FILES["README.md"])


# The planner's context: documents and symbols at the commit.


def test_a_symlinked_contributing_md_reaches_the_planner_as_a_link(
    tmp_path: Path, dotenv: Path
) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "CONTRIBUTING.md").symlink_to(dotenv)
    (origin / "AGENTS.md").symlink_to("/proc/self/environ")
    (origin / "docs").mkdir()
    (origin / "docs/README.md").symlink_to("../app.py")
    committed_repository(origin, {"README.md": "# Linked\n", "app.py": "def main():\n    pass\n"})
    checkout = worktree(origin, tmp_path / "checkout")

    text = planner_context(checkout)

    assert FAKE_SECRET not in text
    assert "PATH=" not in text
    assert (
        f'<document path="CONTRIBUTING.md">\n`CONTRIBUTING.md` is a symbolic link to `{dotenv}`; '
        "its target is not read\n</document>"
    ) in text
    assert "`docs/README.md` is a symbolic link to `../app.py`" in text
    assert "app.py: function main:1" in text
    # The instructions for agents reach the planner apart from the overview, and as a link too.
    (instructions,) = read_instructions(checkout, "HEAD")
    assert instructions.shown == (
        "`AGENTS.md` is a symbolic link to `/proc/self/environ`; its target is not read"
    )


async def test_the_planner_context_reads_the_commit_not_the_working_tree(tmp_path: Path) -> None:
    origin = committed_repository(
        tmp_path / "origin",
        {"README.md": "# Committed\n", "app.py": "def committed():\n    pass\n"},
    )
    checkout = worktree(origin, tmp_path / "checkout")
    (checkout / "app.py").write_text("def edited():\n    pass\n")
    (checkout / "README.md").unlink()
    os.mkfifo(checkout / "README.md")

    with FifoWatch(checkout / "README.md") as watch:
        text = await promptly(asyncio.to_thread(planner_context, checkout))

    assert watch.readers == []
    assert '<document path="README.md">\n# Committed\n</document>' in text
    assert "app.py: function committed:1" in text


def test_a_submodule_is_listed_but_never_read(tmp_path: Path) -> None:
    origin = committed_repository(tmp_path / "origin", {"README.md": "# Parent\n"})
    sha = git("rev-parse", "HEAD", cwd=origin)
    git("update-index", "--add", "--cacheinfo", f"160000,{sha},AGENTS.md", cwd=origin)
    git("update-index", "--add", "--cacheinfo", f"160000,{sha},CONTRIBUTING.md", cwd=origin)
    git("commit", "-q", "-m", "Submodules", cwd=origin)

    text = planner_context(origin)
    (instructions,) = read_instructions(origin, "HEAD")

    assert f"`CONTRIBUTING.md` is a submodule (commit {sha[:12]}); its files are not read" in text
    assert "./: AGENTS.md, CONTRIBUTING.md, README.md" in text
    assert instructions.shown == (
        f"`AGENTS.md` is a submodule (commit {sha[:12]}); its files are not read"
    )


# The read tools on the working copy.


@pytest.fixture
def checkout(tmp_path: Path, dotenv: Path) -> Path:
    """A worktree with a symlinked folder, symlinks out and in, and a FIFO a worker made."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "env_link").symlink_to(dotenv)
    (origin / "into_pkg").symlink_to("pkg", target_is_directory=True)
    (origin / "pkg_link.py").symlink_to("pkg/app.py")
    committed_repository(
        origin,
        {"pkg/app.py": "def app():\n    pass\n", "notes.md": "needle\n", "pipe.py": "x = 1\n"},
    )
    root = worktree(origin, tmp_path / "checkout")
    (root / "pipe.py").unlink()
    os.mkfifo(root / "pipe.py")  # tracked as a file: a worker's run_command replaced it
    os.mkfifo(root / "new_pipe.md")  # untracked
    return root


async def test_read_file_answers_a_symlink_with_its_target_text(
    checkout: Path, dotenv: Path
) -> None:
    tools = read_only_tools(checkout)
    answer = await call(tools, "read_file", path="env_link")
    assert answer == {
        "path": "env_link",
        "symlink_to": str(dotenv),
        "note": f"`env_link` is a symbolic link to `{dotenv}`; its target is not read",
    }
    inside = await call(tools, "read_file", path="pkg_link.py")
    assert inside["symlink_to"] == "pkg/app.py"
    symbols = await call(tools, "list_symbols", path="pkg_link.py")
    assert symbols["symbols"] == []
    assert symbols["symlink_to"] == "pkg/app.py"


@pytest.mark.parametrize("tool", ["read_file", "list_symbols", "list_files", "search"])
async def test_a_path_through_a_symlinked_folder_is_refused_naming_the_link(
    checkout: Path, tool: str
) -> None:
    arguments: dict[str, Any] = {"path": "into_pkg/app.py"}
    if tool == "search":
        arguments["pattern"] = "def"
    error = await refused(read_only_tools(checkout), tool, **arguments)
    assert "`into_pkg/app.py` goes through `into_pkg`, a symbolic link; links are never" in error


async def test_list_files_shows_links_as_links(checkout: Path) -> None:
    answer = await call(read_only_tools(checkout), "list_files")
    assert answer["files"] == ["env_link", "into_pkg", "notes.md", "pkg/app.py", "pkg_link.py"]
    assert answer["symlinks"] == ["env_link", "into_pkg", "pkg_link.py"]


@pytest.mark.parametrize(
    ("tool", "path"),
    [
        ("read_file", "pipe.py"),
        ("read_file", "new_pipe.md"),
        ("list_symbols", "pipe.py"),
        ("search", "pipe.py"),
        ("search", "new_pipe.md"),
    ],
)
async def test_a_fifo_is_refused_promptly_and_no_reader_waits_on_it(
    checkout: Path, tool: str, path: str
) -> None:
    arguments: dict[str, Any] = {"path": path}
    if tool == "search":
        arguments["pattern"] = "x"
    with FifoWatch(checkout / "pipe.py", checkout / "new_pipe.md") as watch:
        error = await promptly(refused(read_only_tools(checkout), tool, **arguments))
    assert f"`{path}` is a named pipe (FIFO), not a regular file" in error
    assert watch.readers == []


async def test_a_search_of_a_tree_holding_fifos_skips_them(checkout: Path) -> None:
    with FifoWatch(checkout / "pipe.py", checkout / "new_pipe.md") as watch:
        answer = await promptly(call(read_only_tools(checkout), "search", pattern="needle|x"))
    assert answer["matches"] == [{"path": "notes.md", "line": 1, "text": "needle"}]
    assert watch.readers == []


async def test_a_slow_regular_expression_is_stopped_with_a_note(tmp_path: Path) -> None:
    # Back-references make glibc's matcher try every split of the line: minutes per line.
    lines = "".join("a" * 70 + "b\n" for _ in range(3))
    origin = committed_repository(tmp_path / "origin", {"slow.txt": lines, "fast.txt": "xx\n"})
    pattern = "(.*)(.*)(.*)(.*)(.*)\\5\\4\\3\\2\\1x"

    answer = await promptly(call(read_only_tools(origin), "search", pattern=pattern))

    assert "the search was stopped after" in answer["note"]
    assert "narrow the pattern or give a path" in answer["note"]


MEMORY_PROBE = """
import asyncio, json, resource, sys
from pathlib import Path
from bot.codebase import read_only_tools

root = Path(sys.argv[1])
tools = {tool.spec.name: tool for tool in read_only_tools(root)}

async def main() -> dict:
    await tools["read_file"].run({"path": "small.txt"})  # warm up: threads, imports
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answers = {}
    for name, arguments in [
        ("read_file", {"path": "huge.py"}),
        ("read_file", {"path": "huge.py", "start_line": 2}),
        ("search", {"pattern": "^a"}),
        ("search", {"pattern": "b$", "path": "huge.py"}),
        ("list_symbols", {"path": "huge.py"}),
    ]:
        try:
            answers[name + json.dumps(arguments)] = json.loads(await tools[name].run(arguments))
        except Exception as error:
            answers[name + json.dumps(arguments)] = {"error": str(error)}
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"growth_kib": after - before, "answers": answers}

print(json.dumps(asyncio.run(main())))
"""
HUGE_BYTES = 320 * 1024 * 1024


async def test_a_huge_one_line_file_costs_bounded_memory(tmp_path: Path) -> None:
    origin = committed_repository(tmp_path / "origin", {"small.txt": "small\n"})
    huge = origin / "huge.py"
    chunk = b"a" * (1024 * 1024)
    try:
        with huge.open("wb") as handle:  # untracked, as a worker's command may leave it
            for _ in range(HUGE_BYTES // len(chunk)):
                handle.write(chunk)
            handle.write(b"b\n")
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MEMORY_PROBE,
            str(origin),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[1],
        )
        out, err = await promptly(probe.communicate())
    finally:
        huge.unlink()
    assert probe.returncode == 0, err.decode()
    measured = json.loads(out)
    answers = measured["answers"]
    assert measured["growth_kib"] * 1024 < HUGE_BYTES / 10, answers
    first = answers['read_file{"path": "huge.py"}']
    assert first["content"].startswith("1\taaaa")
    assert first["content"].endswith("[… line cut]")
    past = answers['read_file{"path": "huge.py", "start_line": 2}']
    assert "only its first" in past["error"], past
    assert "larger than" in answers['list_symbols{"path": "huge.py"}']["error"]
    searched = answers['search{"pattern": "^a"}']
    assert "the search was stopped after" in searched["note"]  # by its time or output cap
    assert all(match["text"].endswith("[… line cut]") for match in searched["matches"])


async def test_a_tracked_folder_replaced_by_a_link_out_shows_nothing_of_its_target(
    tmp_path: Path, dotenv: Path
) -> None:
    origin = committed_repository(tmp_path / "origin", {"conf/settings.env": "DEBUG=1\n"})
    checkout = worktree(origin, tmp_path / "checkout")
    (checkout / "conf/settings.env").unlink()
    (checkout / "conf").rmdir()
    (checkout / "conf").symlink_to(dotenv.parent, target_is_directory=True)
    (dotenv.parent / "settings.env").write_text(FAKE_SECRET + "\n")
    tools = read_only_tools(checkout)

    listed = await call(tools, "list_files")
    found = await call(tools, "search", pattern="fake-webhook-secret")
    error = await refused(tools, "read_file", path="conf/settings.env")

    assert (listed["files"], listed["symlinks"]) == (["conf"], ["conf"])
    assert found["matches"] == []
    assert "goes through `conf`, a symbolic link" in error


# The writing tools never open what they replace.


async def test_the_edit_tools_refuse_a_fifo_and_no_reader_waits_on_it(tmp_path: Path) -> None:
    origin = committed_repository(tmp_path / "origin", {"app.py": "x = 1\n"})
    checkout = worktree(origin, tmp_path / "checkout")
    (checkout / "app.py").unlink()
    os.mkfifo(checkout / "app.py")
    tools = edit_tools(checkout, WriteSet(["app.py"]))
    patch = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"

    with FifoWatch(checkout / "app.py") as watch:
        errors = [
            await promptly(refused(tools, "write_file", path="app.py", content="x = 2\n")),
            await promptly(refused(tools, "delete_file", path="app.py")),
            await promptly(refused(tools, "apply_patch", patch=patch)),
        ]

    assert all("`app.py` is not a regular file" in error for error in errors), errors
    assert watch.readers == []
    assert stat.S_ISFIFO(os.lstat(checkout / "app.py").st_mode)


# The pieces: files at a commit, bounded line reading, bounded search.


def test_committed_files_are_text_or_a_note_on_what_stands_there(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "link.md").symlink_to("/etc/baton/app.pem")
    committed_repository(
        origin,
        {
            "notes.md": "plain text\n",
            "big.md": "x" * 101,
            "logo.png": b"\x89PNG\x00\x00",
            "docs/guide.md": "a guide\n",
        },
    )
    paths = [
        "notes.md",
        "./docs//guide.md",
        "link.md",
        "big.md",
        "logo.png",
        "docs",
        "missing.md",
        "../notes.md",
        "/etc/passwd",
        ".git/config",
    ]

    shown = read_committed(origin, "HEAD", paths, max_bytes=100)

    assert [(file.path, file.shown) for file in shown] == [
        ("notes.md", "plain text\n"),
        ("./docs//guide.md", "a guide\n"),
        ("link.md", "`link.md` is a symbolic link to `/etc/baton/app.pem`; its target is not read"),
        ("big.md", "`big.md` is 101 bytes, more than the 100 shown here; read_file reads it"),
        ("logo.png", "`logo.png` is a binary file; it is not shown"),
    ]  # a folder, nothing, and paths out of the repository are left out
    assert [file.text is None for file in shown] == [False, False, True, True, True]


@pytest.mark.parametrize(
    ("start", "end", "shown", "total"),
    [
        pytest.param(1, 2, ["1\tline 1", "2\tline 2"], 70_000, id="first"),
        pytest.param(50_000, 50_001, ["50000\tline 50000", "50001\tline 50001"], 70_000, id="mid"),
        pytest.param(70_000, None, ["70000\tlast, no newline"], 70_000, id="last"),
    ],
)
def test_lines_are_read_across_chunks(
    tmp_path: Path, start: int, end: int | None, shown: list[str], total: int
) -> None:
    path = tmp_path / "many.txt"
    body = "".join(f"line {number}\n" for number in range(1, 70_000))
    path.write_text(body + "last, no newline")
    assert path.stat().st_size > 4 * CHUNK_BYTES
    with opened(tmp_path, "many.txt") as (descriptor, _):
        lines = Lines(start, end, max_chars=1_000).scan(descriptor)
    assert (lines.shown, lines.total, lines.cut, lines.partial) == (shown, total, False, False)


def test_lines_stop_at_the_scan_limit_and_say_so(tmp_path: Path) -> None:
    (tmp_path / "long.txt").write_text("short\n" + "y" * 10_000 + "\nafter\n")
    with opened(tmp_path, "long.txt") as (descriptor, _):
        lines = Lines(1, None, max_chars=100).scan(descriptor, limit=1_000)
    assert lines.partial
    assert lines.total == 2
    assert lines.shown == ["1\tshort"]
    assert lines.cut  # the second line did not fit


def test_a_search_is_stopped_at_its_output_cap(tmp_path: Path) -> None:
    origin = committed_repository(tmp_path / "origin", {"wide.txt": ("z" * 5000 + "\n") * 50})
    found = grep(origin, "z", ".", limit=100, max_output=20_000)
    assert found.stopped == "output"
    assert 1 <= len(found.matches) < 50  # read a chunk at a time, stopped past 20,000 bytes
    assert all(match.clipped and len(match.text) <= 1200 for match in found.matches)


async def test_a_declaration_built_to_make_the_symbol_regexes_backtrack_is_read_promptly(
    tmp_path: Path,
) -> None:
    # `*` and `&` fit both parts of a C declaration's words: every split was tried, 2**n.
    hostile = "a&" * 80 + "\nint main(void) {\n"
    origin = committed_repository(tmp_path / "origin", {"src/main.c": hostile})

    answer = await promptly(call(read_only_tools(origin), "list_symbols", path="src/main.c"))
    context = await promptly(asyncio.to_thread(planner_context, origin))

    assert answer["symbols"] == [{"kind": "function", "name": "main", "line": 2}]
    assert "src/main.c: function main:2" in context
