"""Fixtures for sandbox tests: a worktree inside a data directory, and a sandbox over it that
shows the test suite's own Python (standing in for a repository's toolchain)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bot.sandbox import Sandbox

PYTHON_PATHS = (Path(sys.prefix), Path(sys.base_prefix))
PYTHON = shlex.quote(sys.executable)


def make_mirror_and_worktree(root: Path) -> tuple[Path, Path]:
    """A bare mirror of a one-commit repository and a worktree of it, as Baton lays them out."""
    source, mirror = root / "source", root / "mirrors" / "app.git"
    worktree = root / "worktrees" / "run-1" / "T1"
    identity = ["-c", "user.name=Tester", "-c", "user.email=tester@example.com"]
    steps = [
        ["git", "init", "-q", str(source)],
        ["git", "-C", str(source), *identity, "commit", "-q", "--allow-empty", "-m", "first"],
        ["git", "clone", "-q", "--bare", str(source), str(mirror)],
        ["git", "-C", str(mirror), "worktree", "add", "-q", "--detach", str(worktree), "HEAD"],
    ]
    for step in steps:
        subprocess.run(step, check=True, capture_output=True)
    return mirror, worktree


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def worktree(data_dir: Path) -> Path:
    path = data_dir / "worktrees" / "run-1" / "T1"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def sandbox(worktree: Path) -> Sandbox:
    return Sandbox(worktree, extra_read_only=PYTHON_PATHS)
