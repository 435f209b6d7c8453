"""Git data for the REST routes: commits, trees, blobs and diffs, read from the bare
repositories with a real `git`.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from tests.doubles.github.state import _iso


class _TreeEntry(NamedTuple):
    mode: str
    kind: str  # blob, tree or commit (a submodule)
    sha: str
    size: int
    path: str


class _CommitDetails(NamedTuple):
    sha: str
    tree: str
    parents: list[str]
    author: dict[str, str]
    committer: dict[str, str]
    message: str


def _git(repository: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    environment = {
        "PATH": os.environ.get("PATH", os.defpath),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    command = ["git", *args]
    return subprocess.run(command, cwd=repository, env=environment, capture_output=True)


def _commit_sha(repository: Path, ref: str) -> str | None:
    """The commit `ref` names (a branch, tag or sha), or None."""
    if not ref or ref.startswith("-"):
        return None
    done = _git(repository, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return done.stdout.decode().strip() if done.returncode == 0 else None


def _branch_sha(repository: Path, branch: str) -> str | None:
    return _commit_sha(repository, f"refs/heads/{branch}") if branch else None


def _tree_entries(repository: Path, commit: str, path: str) -> list[_TreeEntry]:
    """ls-tree of `path` at `commit`: the entry itself, or a directory's children with `/`."""
    args = ["ls-tree", "-z", "--long", commit]
    if path:
        args += ["--", path]
    entries = []
    for record in _git(repository, *args).stdout.split(b"\0"):
        if not record:
            continue
        meta, _, name = record.partition(b"\t")
        mode, kind, sha, size = meta.decode().split()
        entries.append(_TreeEntry(mode, kind, sha, int(size) if size != "-" else 0, name.decode()))
    return entries


def _blob(repository: Path, sha: str) -> bytes:
    return _git(repository, "cat-file", "blob", sha).stdout


def _commit_details(repository: Path, sha: str) -> _CommitDetails:
    layout = "%H%x00%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B"
    text = _git(repository, "show", "-s", f"--format={layout}", sha).stdout.decode()
    sha, tree, parents, an, ae, ad, cn, ce, cd, message = text.split("\0", 9)
    return _CommitDetails(
        sha,
        tree,
        parents.split(),
        {"name": an, "email": ae, "date": _git_date(ad)},
        {"name": cn, "email": ce, "date": _git_date(cd)},
        message.rstrip("\n"),
    )


def _git_date(text: str) -> str:
    return _iso(datetime.fromisoformat(text).astimezone(UTC))


def _is_ancestor(repository: Path, ancestor: str, descendant: str) -> bool:
    return _git(repository, "merge-base", "--is-ancestor", ancestor, descendant).returncode == 0


def _commit_count(repository: Path, base: str, head: str) -> int:
    done = _git(repository, "rev-list", "--count", f"{base}..{head}")
    return int(done.stdout.decode().strip() or 0) if done.returncode == 0 else 0


def _diff_stats(repository: Path, base: str, head: str) -> tuple[int, int, int]:
    """Additions, deletions and changed files from the merge base to `head`, as GitHub counts."""
    done = _git(repository, "diff", "--numstat", f"{base}...{head}")
    additions = deletions = files = 0
    for line in done.stdout.decode().splitlines():
        added, deleted, _ = line.split("\t", 2)
        additions += int(added) if added.isdigit() else 0
        deletions += int(deleted) if deleted.isdigit() else 0
        files += 1
    return additions, deletions, files


def _merge(repository: Path, base: str, head_sha: str, message: str, author: str) -> str | None:
    """Merge `head_sha` into branch `base` as GitHub's merge button does: a merge commit by
    `author`, committed by GitHub, that `base` then points at. Returns its sha, or None when
    the two conflict (`base` is left as it was). Needs git 2.38 or newer (merge-tree)."""
    base_sha = _branch_sha(repository, base)
    if base_sha is None:
        return None
    merged = _git(repository, "merge-tree", "--write-tree", base_sha, head_sha)
    if merged.returncode != 0:
        return None
    tree = merged.stdout.decode().split()[0]
    identity = [
        *("-c", f"author.name={author}", "-c", f"author.email={author}@users.noreply.github.com"),
        *("-c", "committer.name=GitHub", "-c", "committer.email=noreply@github.com"),
    ]
    made = _git(
        repository, *identity, "commit-tree", tree, "-p", base_sha, "-p", head_sha, "-m", message
    )
    if made.returncode != 0:
        return None
    commit = made.stdout.decode().strip()
    moved = _git(repository, "update-ref", f"refs/heads/{base}", commit, base_sha)
    return commit if moved.returncode == 0 else None
