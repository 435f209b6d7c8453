"""The `github` fixture: a served GitHub double holding the repository the payloads describe."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.settings import Settings
from tests.doubles.github import GitHubDouble
from tests.support import payload

INSTALLATION_ID = 51234567
REPOSITORY = "octo-org/widgets"
REPOSITORY_ID = 712345678
ISSUE_NUMBER = 42

# A tiny Python package, enough for a planner to read and a worker to test.
WIDGETS_FILES = {
    "README.md": "# Widgets\n\nWidget rendering helpers.\n",
    "pyproject.toml": (
        "[project]\n"
        'name = "widgets"\n'
        'version = "0.1.0"\n'
        'requires-python = ">=3.11"\n'
        "\n"
        "[tool.pytest.ini_options]\n"
        'pythonpath = ["src"]\n'
    ),
    "src/widgets/__init__.py": (
        '"""Widget rendering helpers."""\n'
        "\n"
        "\n"
        "def render(name: str) -> str:\n"
        '    return f"<widget>{name}</widget>"\n'
    ),
    "tests/test_widgets.py": (
        "from widgets import render\n"
        "\n"
        "\n"
        "def test_render_wraps_the_name() -> None:\n"
        '    assert render("dial") == "<widget>dial</widget>"\n'
    ),
}


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubDouble]:
    """A served GitHub double: installation 51234567 holds octo-org/widgets (id 712345678),
    whose issue 42 (from the `issues.labeled` payload) was opened by alice, who may write."""
    issue = payload("issues.labeled")["issue"]
    with GitHubDouble(tmp_path / "github") as double:
        double.add_installation(INSTALLATION_ID, "octo-org")
        double.add_repository(
            REPOSITORY, INSTALLATION_ID, WIDGETS_FILES, repository_id=REPOSITORY_ID
        )
        labels = [label["name"] for label in issue["labels"]]
        double.add_issue(REPOSITORY, ISSUE_NUMBER, issue["title"], issue["body"], "alice", labels)
        double.set_permission(REPOSITORY, "alice", "write")
        yield double


def as_app(settings: Settings, github: GitHubDouble) -> Settings:
    """`settings` with the double's App credentials and its Enterprise-Server-like addresses."""
    return settings.model_copy(
        update={
            "github_app_id": github.app_id,
            "github_private_key": SecretStr(github.private_key_pem),
            "github_api_url": github.api_url,
            "github_url": github.url,
        }
    )


def commit_files(
    github: GitHubDouble,
    files: Mapping[str, str],
    branch: str = "main",
    onto: str = "main",
    *,
    symlinks: Mapping[str, str] | None = None,
) -> str:
    """A commit on `branch` of the fixture's repository, made as a person pushing would;
    `symlinks` maps paths to the targets of symbolic links committed with them."""
    git_dir = github.root / f"{REPOSITORY}.git"
    person = {"GIT_AUTHOR_NAME": "Maintainer", "GIT_AUTHOR_EMAIL": "maintainer@example.com"}
    environment = {
        **os.environ,
        **person,
        "GIT_COMMITTER_NAME": "Maintainer",
        "GIT_COMMITTER_EMAIL": "maintainer@example.com",
    }
    with tempfile.TemporaryDirectory() as scratch:
        environment["GIT_INDEX_FILE"] = str(Path(scratch) / "index")

        def git(*args: str, stdin: str | None = None) -> str:
            done = subprocess.run(
                ["git", "--git-dir", str(git_dir), *args],
                input=stdin,
                capture_output=True,
                text=True,
                check=True,
                env=environment,
            )
            return done.stdout.strip()

        git("read-tree", onto)
        entries = [("100644", path, text) for path, text in files.items()]
        entries += [("120000", path, target) for path, target in (symlinks or {}).items()]
        for mode, path, content in entries:
            blob = git("hash-object", "-w", "--stdin", stdin=content)
            git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}")
        tree = git("write-tree")
        commit = git("commit-tree", tree, "-p", onto, "-m", "Maintainer's change")
        git("update-ref", f"refs/heads/{branch}", commit)
    return commit
