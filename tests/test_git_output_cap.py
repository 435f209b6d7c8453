"""Git output a worker decides the size of (a diff of its change) is read only so far."""

from __future__ import annotations

from pathlib import Path

from bot.git.runner import GitRunner
from tests.support import git


def repository_with_a_big_commit(root: Path, size: int) -> Path:
    root.mkdir()
    git("init", "-q", cwd=root)
    (root / "big.txt").write_text("line of text\n" * (size // 13))
    git("add", "big.txt", cwd=root)
    git("commit", "-q", "-m", "big", cwd=root)
    return root


async def test_output_past_the_cap_is_cut_and_git_stopped(tmp_path: Path) -> None:
    repository = repository_with_a_big_commit(tmp_path / "repo", 8 * 1024 * 1024)

    shown, more = await GitRunner().run_capped(["show", "HEAD"], cwd=repository, max_bytes=100_000)

    assert more
    assert len(shown) == 100_000
    assert shown.startswith("commit ")


async def test_output_within_the_cap_is_whole(tmp_path: Path) -> None:
    repository = repository_with_a_big_commit(tmp_path / "repo", 1000)

    shown, more = await GitRunner().run_capped(["show", "HEAD"], cwd=repository, max_bytes=1 << 20)

    assert not more
    assert shown == git("show", "HEAD", cwd=repository) + "\n"
