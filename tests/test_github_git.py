"""The App's installation token carries git to the GitHub double and back, leaving no trace."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.git import Mirrors
from bot.git.runner import GitOutput, GitRunner
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


class TimedRunner(GitRunner):
    """A git runner that notes when each command began and ended, and adds worktrees slowly."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[str, float, float]] = []
        self.adding = asyncio.Event()

    async def run(self, args: Sequence[str], **options: Any) -> GitOutput:
        started = time.monotonic()
        if list(args[:2]) == ["worktree", "add"]:
            self.adding.set()
            await asyncio.sleep(0.05)  # a slow disk: the window a fetch must not fall into
        try:
            return await super().run(args, **options)
        finally:
            self.spans.append((" ".join(args[:2]), started, time.monotonic()))


async def test_bundles_are_taken_while_no_worktree_is_half_added(
    github: GitHubDouble, tmp_path: Path
) -> None:
    app = app_for(github)
    scope = TokenScope(INSTALLATION_ID, REPOSITORY, EXECUTE)
    maker = Mirrors(tmp_path / "east", github.url).mirror(REPOSITORY, lambda: app.token(scope))
    await maker.update()
    main = await maker.resolve("main")
    bundles = []
    for key in ("T1", "T2", "T3", "T4"):
        worktree = await maker.add_worktree("run1", key, main)
        (worktree.path / f"{key}.txt").write_text(key)
        assert await worktree.commit(f"Add {key}") is not None
        bundles.append((key, await maker.bundle("run1", key, main)))
    runner = TimedRunner()
    taker = Mirrors(tmp_path / "west", github.url, runner).mirror(
        REPOSITORY, lambda: app.token(scope)
    )
    await taker.update()

    async def take_bundles_once_adding() -> None:
        await runner.adding.wait()
        await asyncio.gather(*(taker.take_bundle("run1", key, data) for key, data in bundles))

    # The bundles are taken while other runs' worktrees are added, as integrations do.
    await asyncio.gather(
        *(taker.add_worktree(f"run{n}", "integration", main) for n in range(2, 6)),
        take_bundles_once_adding(),
    )

    fetches = [(start, end) for name, start, end in runner.spans if name == "fetch --quiet"]
    adds = [(start, end) for name, start, end in runner.spans if name == "worktree add"]
    assert (len(fetches), len(adds)) == (4, 4)
    assert not [(f, a) for f in fetches for a in adds if f[0] < a[1] and a[0] < f[1]]
