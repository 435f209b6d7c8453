"""The writing tools: a task changes only its write set, never outside the checkout, and a call
that is refused or fails leaves every file as it was.

Each test works on a worktree of a bare repository built in `tmp_path`, so its `.git` is a file,
as in Baton's own checkouts.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bot.codebase.edits import WriteSet, edit_tools
from bot.llm.agent import Tool, ToolError
from tests.support import git

SECRET = "TOP SECRET outside the repository\n"
APP_PY = "".join(f"line {number}\n" for number in range(1, 21))
TEST_APP_PY = "def test_app() -> None:\n    assert True\n"
OTHER_PY = "other = 1\n"
RUN_SH = "#!/bin/sh\necho run\n"
LOGO = b"\x89PNG\r\n\x1a\n\x00\x00binary"

# Every path a refusal test names is listed, so each is refused for its own reason.
WRITABLE = (
    "src/app.py",
    "tests/test_app.py",
    "src/new_module.py",
    "src/deep/er/new.py",
    "bin/run.sh",
    "assets/logo.png",
    "src",
    "link_out",
    "link_in",
    "src_link/app.py",
    "dir_out/secret.txt",
)

Snapshot = dict[str, tuple[Any, ...]]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    """The repository the bare one is cloned from; also where binary diffs are made."""
    seed = tmp_path / "seed"
    files: dict[str, str | bytes] = {
        "src/app.py": APP_PY,
        "src/other.py": OTHER_PY,
        "tests/test_app.py": TEST_APP_PY,
        "bin/run.sh": RUN_SH,
        "assets/logo.png": LOGO,
        "README.md": "# Demo\n",
    }
    for name, content in files.items():
        path = seed / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    (seed / "bin/run.sh").chmod(0o755)
    git("init", "-q", "-b", "main", cwd=seed)
    git("add", "-A", cwd=seed)
    git("commit", "-q", "-m", "files", cwd=seed)
    return seed


@pytest.fixture
def checkout(tmp_path: Path, seed: Path, outside: Path) -> Path:
    """A worktree of a bare clone of `seed`, with symlinks leading outside and inside it."""
    git("clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git"), cwd=tmp_path)
    root = tmp_path / "checkout"
    git("worktree", "add", "-q", "--detach", str(root), "HEAD", cwd=tmp_path / "origin.git")
    assert (root / ".git").is_file()
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "src" / "app.py")
    (root / "src_link").symlink_to(root / "src", target_is_directory=True)
    return root


@pytest.fixture
def tools(checkout: Path) -> dict[str, Tool]:
    return {tool.spec.name: tool for tool in edit_tools(checkout, WriteSet(WRITABLE))}


def snapshot(base: Path) -> Snapshot:
    """Every file, folder and symlink under `base`: bytes, modes and link targets."""
    seen: Snapshot = {}
    for folder, folders, files in os.walk(base):
        for name in folders + files:
            path = Path(folder) / name
            key = path.relative_to(base).as_posix()
            if path.is_symlink():
                seen[key] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[key] = ("folder", stat.S_IMODE(path.stat().st_mode))
            else:
                seen[key] = ("file", path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return seen


async def call(tool: Tool, **arguments: Any) -> Any:
    return json.loads(await tool.run(arguments))


async def refused(tool: Tool, **arguments: Any) -> str:
    with pytest.raises(ToolError) as error:
        await tool.run(arguments)
    return str(error.value)


def creation(path: str, text: str) -> str:
    lines = text.splitlines()
    added = "".join(f"+{line}\n" for line in lines)
    return f"--- /dev/null\n+++ {path}\n@@ -0,0 +1,{len(lines)} @@\n{added}"


def change(path: str, old: str, new: str, source: str | None = None) -> str:
    return f"--- {source or path}\n+++ {path}\n@@ -1,1 +1,1 @@\n-{old}\n+{new}\n"


# Escapes: each is refused for each tool, with its reason, and changes nothing anywhere.

# A label, the path, the reason the refusal gives, and a patch that names the path.
ESCAPES = [
    (
        "parent",
        "../outside/new.txt",
        "leaves the repository",
        creation("b/../outside/new.txt", "owned"),
    ),
    (
        "absolute",
        "{outside}/secret.txt",
        "is absolute",
        change("{outside}/secret.txt", SECRET.strip(), "owned"),
    ),
    (
        "symlink-outside",
        "link_out",
        "leads outside the repository through a symlink",
        change("b/link_out", SECRET.strip(), "owned", source="a/link_out"),
    ),
    (
        "git-config",
        ".git/config",
        "inside `.git`",
        change("b/.git/config", "[core]", "[owned]", source="a/.git/config"),
    ),
    (
        "outside-write-set",
        "src/other.py",
        "`src/other.py` is not in this task's write set (assets/logo.png, bin/run.sh,",
        change("b/src/other.py", OTHER_PY.strip(), "owned", source="a/src/other.py"),
    ),
]


def escape_calls() -> list[Any]:
    """Each escape through each tool: the tool's name, its arguments and the reason."""
    calls: list[Any] = []
    for label, path, reason, patch in ESCAPES:
        calls += [
            pytest.param("write_file", {"path": path, "content": "x"}, reason, id=f"write-{label}"),
            pytest.param("delete_file", {"path": path}, reason, id=f"delete-{label}"),
            pytest.param("apply_patch", {"patch": patch}, reason, id=f"patch-{label}"),
        ]
    return calls


@pytest.mark.parametrize(("name", "arguments", "reason"), escape_calls())
async def test_an_escape_is_refused_and_changes_nothing(
    tools: dict[str, Tool],
    tmp_path: Path,
    outside: Path,
    name: str,
    arguments: dict[str, str],
    reason: str,
) -> None:
    filled = {key: value.replace("{outside}", str(outside)) for key, value in arguments.items()}
    before = snapshot(tmp_path)

    message = await refused(tools[name], **filled)

    assert reason in message
    assert snapshot(tmp_path) == before


def test_the_write_set_refusal_names_the_path_and_the_files_allowed() -> None:
    write_set = WriteSet(["tests/test_app.py", "./src/app.py"])

    assert write_set.refusal("src/other.py") == (
        "`src/other.py` is not in this task's write set (src/app.py, tests/test_app.py); "
        "change only those files, or finish and say in notes what else needs changing"
    )
    assert "which is empty" in WriteSet([]).refusal("src/app.py")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        pytest.param("src/app.py", True, id="listed"),
        pytest.param("./src//app.py", True, id="spelled-otherwise"),
        pytest.param("src/other.py", False, id="not-listed"),
        pytest.param("src/x/../app.py", False, id="dotdot-never-collapsed"),
        pytest.param("src", False, id="folder-of-a-listed-file"),
    ],
)
def test_the_write_set_matches_files_not_folders(path: str, allowed: bool) -> None:
    assert WriteSet(["src/app.py"]).allows(path) is allowed


# write_file and delete_file.


async def test_write_file_replaces_a_file_and_keeps_its_mode(
    tools: dict[str, Tool], checkout: Path
) -> None:
    answer = await call(tools["write_file"], path="bin/run.sh", content="#!/bin/sh\necho é\n")

    assert answer == {"path": "bin/run.sh", "written": len("#!/bin/sh\necho é\n".encode())}
    assert (checkout / "bin/run.sh").read_text() == "#!/bin/sh\necho é\n"
    assert stat.S_IMODE((checkout / "bin/run.sh").stat().st_mode) == 0o755


async def test_write_file_creates_a_new_file_and_its_folders(
    tools: dict[str, Tool], checkout: Path
) -> None:
    answer = await call(tools["write_file"], path="./src/deep/er/new.py", content="")

    assert answer == {"path": "src/deep/er/new.py", "written": 0}
    assert (checkout / "src/deep/er/new.py").read_bytes() == b""
    assert sorted(path.name for path in (checkout / "src/deep/er").iterdir()) == ["new.py"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        pytest.param("link_in", "goes through the symlink `link_in`", id="file-symlink"),
        pytest.param("src_link/app.py", "goes through the symlink `src_link`", id="folder-symlink"),
        pytest.param("dir_out/secret.txt", "outside the repository through a symlink", id="out"),
        pytest.param("src", "`src` is a folder", id="folder"),
        pytest.param(".", "is the repository root", id="root"),
    ],
)
@pytest.mark.parametrize("name", ["write_file", "delete_file"])
async def test_no_file_is_written_through_a_symlink_or_over_a_folder(
    tools: dict[str, Tool], tmp_path: Path, name: str, path: str, reason: str
) -> None:
    before = snapshot(tmp_path)
    arguments = {"path": path, "content": "owned\n"} if name == "write_file" else {"path": path}

    assert reason in await refused(tools[name], **arguments)
    assert snapshot(tmp_path) == before


async def test_a_new_file_under_a_file_is_refused_and_leaves_no_folder(
    checkout: Path, tmp_path: Path
) -> None:
    write = edit_tools(checkout, WriteSet(["src/deep/app.py/new.py"]))[0]
    (checkout / "src/deep").mkdir()
    (checkout / "src/deep/app.py").write_text("")
    before = snapshot(tmp_path)

    assert "could not be written" in await refused(
        write, path="src/deep/app.py/new.py", content="x"
    )
    assert snapshot(tmp_path) == before


async def test_a_failed_write_removes_the_folders_it_made(checkout: Path, tmp_path: Path) -> None:
    too_long = "src/deep/er/" + "x" * 256  # folders are made, then the name is refused
    write = edit_tools(checkout, WriteSet([too_long]))[0]
    before = snapshot(tmp_path)

    assert "could not be written (File name too long)" in await refused(
        write, path=too_long, content="x"
    )
    assert snapshot(tmp_path) == before


async def test_delete_file_deletes_a_file_of_the_write_set(
    tools: dict[str, Tool], checkout: Path
) -> None:
    assert await call(tools["delete_file"], path="tests/test_app.py") == {
        "path": "tests/test_app.py",
        "deleted": True,
    }
    assert not (checkout / "tests/test_app.py").exists()
    assert "nothing to delete" in await refused(tools["delete_file"], path="tests/test_app.py")


async def test_arguments_are_checked_by_name_and_type(tools: dict[str, Tool]) -> None:
    assert "has no argument text" in await refused(tools["write_file"], path="src/app.py", text="x")
    assert "needs content" in await refused(tools["write_file"], path="src/app.py")
    assert "content must be a string" in await refused(
        tools["write_file"], path="src/app.py", content=3
    )
    assert "patch must be a non-empty string" in await refused(tools["apply_patch"], patch="")
    assert "content holds a character UTF-8 cannot store at index 1" in await refused(
        tools["write_file"], path="src/app.py", content="a\ud800"
    )


def test_each_tool_has_a_one_sentence_description_and_an_object_schema(checkout: Path) -> None:
    specs = [tool.spec for tool in edit_tools(checkout, WriteSet([]))]

    assert [spec.name for spec in specs] == ["write_file", "delete_file", "apply_patch"]
    for spec in specs:
        assert spec.description.endswith(".")
        assert spec.description.count(". ") == 0
        assert spec.input_schema["type"] == "object"
        assert spec.input_schema["additionalProperties"] is False
        assert set(spec.input_schema["required"]) <= set(spec.input_schema["properties"])


# apply_patch.

MODIFY_CREATE_DELETE = """\
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -2,3 +2,4 @@
 line 2
-line 3
+line three
+line three and a half
 line 4
diff --git a/src/new_module.py b/src/new_module.py
new file mode 100644
--- /dev/null
+++ b/src/new_module.py
@@ -0,0 +1,2 @@
+def new() -> None:
+    pass
diff --git a/tests/test_app.py b/tests/test_app.py
deleted file mode 100644
--- a/tests/test_app.py
+++ /dev/null
@@ -1,2 +0,0 @@
-def test_app() -> None:
-    assert True
"""


async def test_a_patch_modifies_creates_and_deletes(tools: dict[str, Tool], checkout: Path) -> None:
    answer = await call(tools["apply_patch"], patch=MODIFY_CREATE_DELETE)

    assert answer == {
        "files": ["src/app.py", "src/new_module.py", "tests/test_app.py"],
        "added": 4,
        "removed": 3,
    }
    assert (checkout / "src/app.py").read_text() == APP_PY.replace(
        "line 3\n", "line three\nline three and a half\n"
    )
    assert (checkout / "src/new_module.py").read_text() == "def new() -> None:\n    pass\n"
    assert not (checkout / "tests/test_app.py").exists()


async def test_a_plain_diff_with_miscounted_hunks_and_no_prefixes_applies(
    tools: dict[str, Tool], checkout: Path
) -> None:
    # Two files with no `diff` lines between them, counts wrong, paths without a/ and b/.
    patch = (
        "--- src/app.py\n+++ src/app.py\n@@ -1,9 +1,9 @@\n line 1\n-line 2\n+line two\n line 3\n"
        "--- tests/test_app.py\n+++ tests/test_app.py\n@@ -1 +1 @@\n def test_app() -> None:\n"
        "-    assert True\n+    assert 1\n\n\n"
    )

    answer = await call(tools["apply_patch"], patch=patch)

    assert answer == {"files": ["src/app.py", "tests/test_app.py"], "added": 2, "removed": 2}
    assert (checkout / "src/app.py").read_text().startswith("line 1\nline two\nline 3\n")
    assert (checkout / "tests/test_app.py").read_text().endswith("    assert 1\n")


STALE_SECOND_HUNK = """\
--- a/tests/test_app.py
+++ b/tests/test_app.py
@@ -1,2 +1,2 @@
 def test_app() -> None:
-    assert True
+    assert 1
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,3 @@
 line 1
-line 2
+line two
 line 3
@@ -10,3 +10,3 @@
 line 10
-line eleven
+line 11 changed
 line 12
"""


async def test_a_patch_that_does_not_apply_names_the_hunk_and_changes_nothing(
    tools: dict[str, Tool], checkout: Path, tmp_path: Path
) -> None:
    before = snapshot(tmp_path)

    message = await refused(tools["apply_patch"], patch=STALE_SECOND_HUNK)

    assert message == (
        "the patch was not applied and no file changed: hunk 2 of src/app.py "
        "(@@ -10,3 +10,3 @@) does not apply: the lines it expects are not there; "
        "read the file again and send a new patch or use write_file"
    )
    assert snapshot(tmp_path) == before
    # The way out the message offers works on the same file.
    answer = await call(tools["write_file"], path="src/app.py", content="line two\n")
    assert answer == {"path": "src/app.py", "written": 9}
    assert (checkout / "src/app.py").read_text() == "line two\n"


async def test_a_patch_creating_a_file_that_exists_says_so(
    tools: dict[str, Tool], tmp_path: Path
) -> None:
    before = snapshot(tmp_path)

    message = await refused(tools["apply_patch"], patch=creation("b/src/app.py", "new"))

    assert "src/app.py: already exists in working directory" in message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        pytest.param(
            "@@ -1 +1 @@\n-line 1\n+line one\n", "is not a unified diff", id="hunk-without-file"
        ),
        pytest.param("please change line 1 to line one\n", "names no file", id="prose"),
        pytest.param(
            "--- a/src/app.py\n+++ b/src/app.py\n@@ line 1 @@\n-line 1\n+line one\n",
            "`@@ line 1 @@` is not a hunk header",
            id="bad-hunk-header",
        ),
        pytest.param(
            "diff --git a/src/app.py b/src/app.py\n--- a/src/app.py\n+++ b/src/app.py\n"
            "@@ -1 +1 @@\n-line 1\n+line one\nthis is not a hunk line\n-line 2\n",
            "line 7 of the patch, `this is not a hunk line`, is not a hunk line",
            id="garbage-inside",
        ),
    ],
)
async def test_a_patch_that_cannot_be_read_is_refused(
    tools: dict[str, Tool], tmp_path: Path, patch: str, reason: str
) -> None:
    before = snapshot(tmp_path)

    assert reason in await refused(tools["apply_patch"], patch=patch)
    assert snapshot(tmp_path) == before


def binary_diff(seed: Path) -> str:
    """A real `git diff --binary` of a change to assets/logo.png."""
    (seed / "assets/logo.png").write_bytes(LOGO + b"\x00more")
    return git("diff", "--binary", cwd=seed) + "\n"


@pytest.mark.parametrize("form", ["git-binary-patch", "binary-files-differ"])
async def test_a_binary_patch_is_refused(
    tools: dict[str, Tool], seed: Path, tmp_path: Path, form: str
) -> None:
    patch = binary_diff(seed)
    if form == "binary-files-differ":
        patch = git("diff", cwd=seed) + "\n"
    before = snapshot(tmp_path)

    message = await refused(tools["apply_patch"], patch=patch)

    assert "`assets/logo.png` as a binary file; binary patches are refused" in message
    assert snapshot(tmp_path) == before


RENAME = """\
diff --git a/src/app.py b/src/moved.py
similarity index 100%
rename from src/app.py
rename to src/moved.py
"""

SYMLINK = """\
diff --git a/src/new_module.py b/src/new_module.py
new file mode 120000
--- /dev/null
+++ b/src/new_module.py
@@ -0,0 +1 @@
+../../outside/secret.txt
\\ No newline at end of file
"""


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        pytest.param(RENAME, "`src/moved.py` is not in this task's write set", id="rename-out"),
        pytest.param(
            RENAME.replace("src/app.py", "src/other.py").replace("src/moved.py", "src/app.py"),
            "`src/other.py` is not in this task's write set",
            id="rename-in",
        ),
        pytest.param(SYMLINK, "makes a symlink or submodule (mode 120000)", id="symlink"),
        pytest.param(
            MODIFY_CREATE_DELETE + change("b/src/other.py", "other = 1", "x", "a/src/other.py"),
            "`src/other.py` is not in this task's write set",
            id="one-file-of-many",
        ),
    ],
)
async def test_a_patch_touching_a_file_it_may_not_write_is_refused(
    tools: dict[str, Tool], tmp_path: Path, patch: str, reason: str
) -> None:
    before = snapshot(tmp_path)

    assert reason in await refused(tools["apply_patch"], patch=patch)
    assert snapshot(tmp_path) == before


async def test_a_rename_inside_the_write_set_applies(checkout: Path) -> None:
    tools = {
        tool.spec.name: tool
        for tool in edit_tools(checkout, WriteSet(["src/app.py", "src/moved.py"]))
    }

    answer = await call(tools["apply_patch"], patch=RENAME)

    assert answer == {"files": ["src/moved.py"], "added": 0, "removed": 0}
    assert (checkout / "src/moved.py").read_text() == APP_PY
    assert not (checkout / "src/app.py").exists()


async def test_a_patch_over_the_size_limit_is_refused(checkout: Path) -> None:
    apply_patch = edit_tools(checkout, WriteSet(["src/app.py"]), max_patch_chars=50)[2]

    message = await refused(apply_patch, patch=MODIFY_CREATE_DELETE)

    assert f"the patch is {len(MODIFY_CREATE_DELETE)} characters, over the limit of 50" in message
