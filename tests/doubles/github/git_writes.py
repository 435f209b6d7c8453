"""Git Data writes as GitHub's REST API makes them: blobs, trees, commits (signed by GitHub,
so Verified, when no author or committer is given) and references that only move forward
unless forced. Every change of a branch, by this API or a push, is in the repository's reflog
(`core.logAllRefUpdates=always`), which `ref_updates` reads."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tests.doubles.github.git_data import _commit_details, _commit_sha, _git, _is_ancestor
from tests.doubles.github.rest import (
    _Answer,
    _ApiError,
    _Call,
    _handles,
    _json_answer,
    _not_found,
    _validation_failed,
)
from tests.doubles.github.state import _node_id, _Repository, _State

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views

ZERO = "0" * 40
FILE_MODES = {"100644": "blob", "100755": "blob", "120000": "blob", "160000": "commit"}


class RefUpdate(NamedTuple):
    ref: str
    old: str  # ZERO when the reference was made
    new: str
    message: str
    fast_forward: bool = True

    @property
    def forced(self) -> bool:
        """Whether the update dropped commits: it did not move the branch forward."""
        return self.old != ZERO and not self.fast_forward


def ref_updates(repository: Path, branch: str) -> list[RefUpdate]:
    """Every update of `branch`, oldest first, each marked forced when it dropped commits."""
    ref = f"refs/heads/{branch}"
    log = repository / "logs" / ref
    if not log.is_file():
        return []
    updates = []
    for line in log.read_text().splitlines():
        header, _, message = line.partition("\t")
        old, new = header.split()[:2]
        forward = old == ZERO or new == ZERO or _is_ancestor(repository, old, new)
        updates.append(RefUpdate(ref, old, new, message, forward))
    return updates


def keep_ref_log(repository: Path) -> None:
    """Have git record every reference update of the bare repository, pushes included."""
    _git(repository, "config", "core.logAllRefUpdates", "always")


class _GitWriteViews:
    api: str
    web: str

    def git_commit(self, repo: _Repository, sha: str) -> dict[str, Any]:
        details = _commit_details(repo.path, sha)
        api = f"{self.api}/repos/{repo.full_name}"
        verified = sha in repo.verified_commits
        return {
            "sha": sha,
            "node_id": _node_id("C", int(sha[:15], 16)),
            "url": f"{api}/git/commits/{sha}",
            "html_url": f"{self.web}/{repo.full_name}/commit/{sha}",
            "author": details.author,
            "committer": details.committer,
            "tree": {"sha": details.tree, "url": f"{api}/git/trees/{details.tree}"},
            "message": details.message,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{api}/git/commits/{parent}",
                    "html_url": f"{self.web}/{repo.full_name}/commit/{parent}",
                }
                for parent in details.parents
            ],
            "verification": verification(verified),
        }

    def git_ref(self, repo: _Repository, ref: str, sha: str) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        return {
            "ref": ref,
            "node_id": _node_id("REF", abs(hash(ref)) % 10**9),
            "url": f"{api}/git/{ref}",
            "object": {"type": "commit", "sha": sha, "url": f"{api}/git/commits/{sha}"},
        }


def verification(verified: bool) -> dict[str, Any]:
    return {
        "verified": verified,
        "reason": "valid" if verified else "unsigned",
        "signature": "-----BEGIN PGP SIGNATURE-----\n...\n" if verified else None,
        "payload": "tree ...\n" if verified else None,
        "verified_at": "2026-01-01T00:00:00Z" if verified else None,
    }


class _GitWriteRoutes:
    """POST blobs, trees and commits; POST and PATCH references."""

    state: _State
    views: _Views

    @_handles("POST", "/repos/{owner}/{repo}/git/blobs", needs="contents:write")
    def create_blob(self, call: _Call) -> _Answer:
        fields = call.fields()
        content, encoding = fields.get("content"), fields.get("encoding", "utf-8")
        if not isinstance(content, str) or encoding not in ("utf-8", "base64"):
            raise _validation_failed({"resource": "Blob", "field": "content", "code": "invalid"})
        data = base64.b64decode(content) if encoding == "base64" else content.encode()
        sha = _write_blob(call.repo.path, data)
        url = f"{self.state.api_url}/repos/{call.repo.full_name}/git/blobs/{sha}"
        return _json_answer(201, {"sha": sha, "url": url})

    @_handles("POST", "/repos/{owner}/{repo}/git/trees", needs="contents:write")
    def create_tree(self, call: _Call) -> _Answer:
        fields = call.fields()
        entries = fields.get("tree")
        if not isinstance(entries, list):
            raise _validation_failed({"resource": "Tree", "field": "tree", "code": "missing"})
        sha = _write_tree(call.repo.path, fields.get("base_tree"), entries)
        url = f"{self.state.api_url}/repos/{call.repo.full_name}/git/trees/{sha}"
        return _json_answer(201, {"sha": sha, "url": url, "tree": [], "truncated": False})

    @_handles("POST", "/repos/{owner}/{repo}/git/commits", needs="contents:write")
    def create_commit(self, call: _Call) -> _Answer:
        fields = call.fields()
        message, tree, parents = fields.get("message"), fields.get("tree"), fields.get("parents")
        if not isinstance(message, str) or not isinstance(tree, str):
            raise _validation_failed({"resource": "Commit", "field": "tree", "code": "missing"})
        if not isinstance(parents, list) or not all(_exists(call.repo.path, p) for p in parents):
            raise _ApiError(422, "Parent SHA does not exist or is not a commit object")
        if _object_type(call.repo.path, tree) != "tree":
            raise _ApiError(422, "Tree SHA does not exist")
        # Without an author or committer GitHub makes and signs the commit as the App's bot.
        signed = "author" not in fields and "committer" not in fields
        author = fields.get("author") or self._bot()
        committer = fields.get("committer") or {"name": "GitHub", "email": "noreply@github.com"}
        sha = _commit_tree(call.repo.path, tree, parents, message, author, committer)
        if signed:
            call.repo.verified_commits.add(sha)
        return _json_answer(201, self.views.git_commit(call.repo, sha))

    @_handles("GET", "/repos/{owner}/{repo}/git/commits/{sha}", needs="contents:read")
    def get_git_commit(self, call: _Call) -> _Answer:
        sha = call.params["sha"]
        if _object_type(call.repo.path, sha) != "commit":
            raise _not_found()
        return _json_answer(200, self.views.git_commit(call.repo, sha))

    @_handles("POST", "/repos/{owner}/{repo}/git/refs", needs="contents:write")
    def create_ref(self, call: _Call) -> _Answer:
        fields = call.fields()
        ref, sha = fields.get("ref"), fields.get("sha")
        if not isinstance(ref, str) or not ref.startswith("refs/") or ref.count("/") < 2:
            raise _ApiError(422, "ref must be formatted as refs/heads/<name>")
        if not isinstance(sha, str) or _object_type(call.repo.path, sha) != "commit":
            raise _ApiError(422, "Object does not exist")
        made = _git(call.repo.path, "update-ref", "-m", "create via API", ref, sha, ZERO)
        if made.returncode != 0:
            raise _ApiError(422, "Reference already exists")
        return _json_answer(201, self.views.git_ref(call.repo, ref, sha))

    @_handles("PATCH", "/repos/{owner}/{repo}/git/refs/{ref+}", needs="contents:write")
    def update_ref(self, call: _Call) -> _Answer:
        ref = "refs/" + call.params["ref"]
        fields = call.fields()
        sha, force = fields.get("sha"), fields.get("force", False)
        old = _commit_sha(call.repo.path, ref)
        if old is None:
            raise _ApiError(422, "Reference does not exist")
        if not isinstance(sha, str) or _object_type(call.repo.path, sha) != "commit":
            raise _ApiError(422, "Object does not exist")
        if not force and not _is_ancestor(call.repo.path, old, sha):
            raise _ApiError(422, "Update is not a fast forward")
        moved = _git(call.repo.path, "update-ref", "-m", "update via API", ref, sha, old)
        if moved.returncode != 0:
            raise _ApiError(422, "Update is not a fast forward")
        return _json_answer(200, self.views.git_ref(call.repo, ref, sha))

    def _bot(self) -> dict[str, str]:
        login = f"{self.state.app_slug}[bot]"
        return {"name": login, "email": f"{self.state.app_id}+{login}@users.noreply.github.com"}


def _write_blob(repository: Path, data: bytes) -> str:
    done = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=repository,
        input=data,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def _write_tree(repository: Path, base_tree: object, entries: list[Any]) -> str:
    """The tree `base_tree` (or an empty one) with `entries` set or, with a null sha, removed."""
    with tempfile.TemporaryDirectory() as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if base_tree is not None:
            if not isinstance(base_tree, str) or _object_type(repository, base_tree) != "tree":
                raise _ApiError(422, "base_tree is not a valid tree oid")
            _indexed(repository, index, "read-tree", base_tree)
        for entry in entries:
            _indexed(repository, index, *_index_change(repository, entry))
        return _indexed(repository, index, "write-tree").strip()


def _index_change(repository: Path, entry: Any) -> list[str]:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise _validation_failed({"resource": "Tree", "field": "path", "code": "missing"})
    path, mode = entry["path"], entry.get("mode")
    if mode not in FILE_MODES or entry.get("type") != FILE_MODES[mode]:
        raise _ApiError(422, f"tree.mode or tree.type of {path!r} is not valid")
    if "content" in entry:
        sha = _write_blob(repository, str(entry["content"]).encode())
    else:
        sha = entry.get("sha")
    if sha is None:
        return ["update-index", "--force-remove", "--", path]
    if not isinstance(sha, str) or _object_type(repository, sha) != FILE_MODES[mode]:
        raise _ApiError(422, f"tree.sha {sha} is not a valid {FILE_MODES[mode]}")
    return ["update-index", "--add", "--cacheinfo", f"{mode},{sha},{path}"]


def _indexed(repository: Path, index: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=repository,
        env={**os.environ, **index},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise _ApiError(422, f"GitRPC::BadObjectState: {done.stderr.strip()[:200]}")
    return done.stdout


def _commit_tree(
    repository: Path,
    tree: str,
    parents: list[str],
    message: str,
    author: dict[str, str],
    committer: dict[str, str],
) -> str:
    identity = {
        "GIT_AUTHOR_NAME": author["name"],
        "GIT_AUTHOR_EMAIL": author["email"],
        "GIT_COMMITTER_NAME": committer["name"],
        "GIT_COMMITTER_EMAIL": committer["email"],
    }
    parent_args = [arg for parent in parents for arg in ("-p", parent)]
    done = subprocess.run(
        ["git", "commit-tree", tree, *parent_args],
        cwd=repository,
        env={**os.environ, **identity},
        input=message.encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def _object_type(repository: Path, sha: str) -> str | None:
    if len(sha) != 40 or any(char not in "0123456789abcdef" for char in sha):
        return None
    done = _git(repository, "cat-file", "-t", sha)
    return done.stdout.decode().strip() if done.returncode == 0 else None


def _exists(repository: Path, sha: object) -> bool:
    return isinstance(sha, str) and _object_type(repository, sha) == "commit"
