"""The App's installation token carries git to the GitHub double and back, leaving no trace."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.git import Mirrors
from bot.github.client import GitHubApp, GitHubTuning
from bot.github.repo import RepoClient
from bot.github.scopes import EXECUTE, TokenScope
from bot.settings import Settings
from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, as_app
from tests.doubles.github import GitHubDouble

BRANCH = "baton/issue-42"


def app_for(github: GitHubDouble) -> GitHubApp:
    settings = as_app(Settings(_env_file=None), github)  # type: ignore[call-arg]
    return GitHubApp(settings, GitHubTuning(write_interval=0.0))


def files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file() and not path.is_symlink()]


async def test_a_task_commit_is_pushed_and_becomes_a_draft_pull_request(
    github: GitHubDouble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = app_for(github)
    data_dir = tmp_path / "data"
    scope = TokenScope(INSTALLATION_ID, REPOSITORY, EXECUTE)
    mirror = Mirrors(data_dir, github.url).mirror(REPOSITORY, lambda: app.token(scope))
    assert await mirror.update() == "cloned"
    main = await mirror.resolve("main")
    worktree = await mirror.add_worktree("run1", "T1", main)
    (worktree.path / "src" / "widgets" / "dial.py").write_text("DIAL = 'dial'\n")
    commit = await worktree.commit("Add a dial")
    assert commit is not None
    await mirror.push(BRANCH, commit.sha, expected=None)
    await worktree.remove()

    assert github.branch_sha(REPOSITORY, BRANCH) == commit.sha
    assert await mirror.update() == "fetched"
    repo = RepoClient(app.client(scope), REPOSITORY)
    pull = await repo.open_draft_pull_request(BRANCH, "main", "Add a dial", "Closes #42")
    assert (pull.head_sha, pull.draft) == (commit.sha, True)

    # REST and git shared one token, and it is written nowhere and logged nowhere.
    (issued,) = github.tokens_issued
    for path in files_under(data_dir):
        assert issued.token.encode() not in path.read_bytes(), path
    assert all(issued.token not in record.getMessage() for record in caplog.records)
