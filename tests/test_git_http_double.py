"""The loopback git server: a real `git` clones, fetches and pushes through it as through GitHub."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.git_http import GitHttpBackend, init_bare_repository
from tests.support import serve

TOKEN = "ghs_double-test.token_0123456789"
REPO = "octo-org/widgets"


def git(
    *args: str, cwd: Path | None = None, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a real git; the token, when given, goes in as GitHub's Basic auth header."""
    auth = []
    if token is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        auth = ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
    environment = {
        "PATH": os.environ["PATH"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Maintainer",
        "GIT_AUTHOR_EMAIL": "maintainer@example.com",
        "GIT_COMMITTER_NAME": "Maintainer",
        "GIT_COMMITTER_EMAIL": "maintainer@example.com",
    }
    return subprocess.run(
        ["git", *auth, *args], cwd=cwd, env=environment, capture_output=True, text=True, check=False
    )


@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    root = tmp_path / "github"
    init_bare_repository(
        root / f"{REPO}.git", {"README.md": "# Widgets\n", "src/app.py": "x = 1\n"}
    )
    return root


@pytest.fixture
def backend(server_root: Path) -> GitHttpBackend:
    return GitHttpBackend(server_root, lambda full_name, token: token == TOKEN)


@pytest.fixture
def url(backend: GitHttpBackend) -> Iterator[str]:
    with serve(backend) as base:
        yield base


def test_initial_commit_is_deterministic(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {"a.txt": "a\n", "dir/b.bin": b"\x00\x01"}
    first = init_bare_repository(tmp_path / "one.git", files)
    second = init_bare_repository(tmp_path / "two.git", files, default_branch="trunk")
    assert first == second
    listed = git("ls-tree", "-r", "--name-only", "trunk", cwd=tmp_path / "two.git").stdout
    assert listed.split() == ["a.txt", "dir/b.bin"]


def test_clone_push_and_fetch_with_the_token(
    url: str, tmp_path: Path, server_root: Path, backend: GitHttpBackend
) -> None:
    work = tmp_path / "work"
    cloned = git("clone", f"{url}/{REPO}.git", str(work), token=TOKEN)
    assert cloned.returncode == 0, cloned.stderr
    assert (work / "src" / "app.py").read_text() == "x = 1\n"

    # Bigger than git's 1 MiB post buffer, so the push body arrives chunked, without a length.
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    git("add", "big.bin", cwd=work)
    git("commit", "-m", "Add a big file", cwd=work)
    pushed = git("push", "origin", "HEAD:refs/heads/feature", cwd=work, token=TOKEN)
    assert pushed.returncode == 0, pushed.stderr
    head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    on_server = git("rev-parse", "refs/heads/feature", cwd=server_root / f"{REPO}.git")
    assert on_server.stdout.strip() == head

    fetched = git("fetch", f"{url}/{REPO}", "feature", cwd=work, token=TOKEN)
    assert fetched.returncode == 0, fetched.stderr
    services = {(request.service, request.status) for request in backend.requests}
    assert services == {("git-upload-pack", 200), ("git-receive-pack", 200)}


@pytest.mark.parametrize("token", [None, "ghs_wrong"], ids=["no-credentials", "wrong-token"])
def test_refuses_clone_without_the_right_token(
    url: str, tmp_path: Path, backend: GitHttpBackend, token: str | None
) -> None:
    cloned = git("clone", f"{url}/{REPO}.git", str(tmp_path / "work"), token=token)
    assert cloned.returncode != 0
    assert [request.status for request in backend.requests] == [401]


def test_unknown_repository_is_not_found(url: str, tmp_path: Path) -> None:
    cloned = git("clone", f"{url}/octo-org/missing.git", str(tmp_path / "work"), token=TOKEN)
    assert cloned.returncode != 0
    assert "not found" in cloned.stderr.lower()
