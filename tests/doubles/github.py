"""A loopback GitHub: REST laid out as GitHub Enterprise Server lays it out (`/api/v3`), git over
smart HTTP, the App Manifest flow and signed webhook deliveries, all from in-memory state.

Answers are GitHub's wire format, so githubkit's generated models parse them, and auth follows
GitHub's rules: App routes need the App's JWT, everything else an unexpired installation token
whose installation holds the repository. A token asked for some repositories sees only those (any
other answers 404), and one asked for some permissions is refused what needs others (403), over
REST and git alike. Branches and file contents live only in bare repositories under `root`, read
with `git`, so a push through the git server is what the REST routes see next.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import math
import os
import random
import re
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar
from urllib.parse import parse_qsl, urlencode

import anyio.to_thread
import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from starlette.types import Message, Receive, Scope, Send

from tests.doubles.git_http import GitHttpBackend, GitRefusal, init_bare_repository
from tests.support import SECRET, serve

API_PREFIX = "/api/v3"
API_VERSION = "2022-11-28"
DOCS = "https://docs.github.com/rest"
RATE_LIMIT = 5000
JWT_MAX_LIFETIME = 600  # GitHub refuses a JWT that lives longer than ten minutes
JWT_CLOCK_SKEW = 60
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
# GitHub's `permission` field predates the maintain and triage roles and folds them.
FOLDED_PERMISSION = {"maintain": "write", "triage": "read"}
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
CHECK_STATUSES = ("queued", "in_progress", "completed", "waiting", "requested", "pending")
CHECK_CONCLUSIONS = (
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
)
REVIEW_STATES = ("APPROVED", "CHANGES_REQUESTED", "COMMENTED")
APP_PERMISSIONS = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}
# GitHub's levels of one permission, weakest first; a stronger level grants the weaker ones.
ACCESS_LEVELS = ("read", "write", "admin")
NOT_ACCESSIBLE = "Resource not accessible by integration"
NOT_GRANTED = "The permissions requested are not granted to this installation."
NOT_IN_INSTALLATION = (
    "There is at least one repository that does not exist or is not accessible to the parent "
    "installation."
)
APP_EVENTS = ["issues", "issue_comment", "pull_request_review", "pull_request_review_comment"]
SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
# Accounts that appear in tests/payloads, so API answers and webhook payloads agree.
KNOWN_ACCOUNTS = {
    "alice": (1042871, "MDQ6VXNlcjEwNDI4NzE=", "User"),
    "octo-org": (91827364, "O_kgDOBXkspA", "Organization"),
    "baton-bot[bot]": (198765432, "BOT_kgDOC9jreA", "Bot"),
}
_GIT_PATH = re.compile(r"/[^/]+/[^/]+/(?:info/refs|git-upload-pack|git-receive-pack)")


class RecordedRequest(NamedTuple):
    """One request the double answered.

    `path` is the REST path without `/api/v3` when `api` is true (as `fail_next` matches it),
    else the full path. `route` names what answered, e.g. "POST /repos/{owner}/{repo}/pulls",
    "git" for the git server, and is None when no route matched (answered 404).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int
    at: float  # time.monotonic() when the request arrived
    route: str | None
    api: bool


class IssuedToken(NamedTuple):
    """An installation token as the double issued it, with what it was asked to reach."""

    token: str
    installation_id: int
    expires_at: datetime
    repository_ids: frozenset[int] | None  # None: every repository of the installation
    permissions: Mapping[str, str]  # name -> level, as granted (metadata always at least read)

    def sees(self, repo: _Repository) -> bool:
        """True when the token may reach `repo` at all (GitHub answers 404 otherwise)."""
        held = repo.installation_id == self.installation_id
        return held and (self.repository_ids is None or repo.id in self.repository_ids)

    def grants(self, permission: str, level: str) -> bool:
        """True when the token holds `permission` at `level` or a stronger one."""
        held = self.permissions.get(permission)
        return held in ACCESS_LEVELS and _at_least(held, level)


def _at_least(held: str, level: str) -> bool:
    return ACCESS_LEVELS.index(held) >= ACCESS_LEVELS.index(level)


@functools.cache
def _app_private_key() -> str:
    # Generating a 2048-bit key is slow; one serves every double in the test process.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    return pem.decode()


@functools.cache
def _public_key(private_key_pem: str) -> rsa.RSAPublicKey:
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key()


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(prefix: str, number: int) -> str:
    packed = base64.urlsafe_b64encode(number.to_bytes(8, "big")).decode().rstrip("=")
    return f"{prefix}_kwDO{packed}"


def _new_token() -> str:
    # Real tokens change format now and then; a random length and alphabet keeps clients honest.
    return "ghs_" + secrets.token_urlsafe(96)[: random.randint(36, 120)]


# --- state ---------------------------------------------------------------------------------


@dataclass
class _Installation:
    id: int
    account: str
    created_at: str


@dataclass
class _Issue:
    number: int
    id: int
    title: str
    body: str | None
    user: str
    labels: list[str]
    created_at: str
    updated_at: str
    state: str = "open"
    closed_at: str | None = None


@dataclass
class _Pull:
    number: int
    id: int
    issue_id: int
    title: str
    body: str | None
    user: str
    head: str
    base: str
    draft: bool
    head_sha: str
    base_sha: str
    created_at: str
    updated_at: str
    state: str = "open"
    closed_at: str | None = None
    maintainer_can_modify: bool = False


@dataclass
class _Comment:
    id: int
    number: int
    body: str
    user: str
    created_at: str
    updated_at: str


@dataclass
class _Reaction:
    id: int
    content: str
    user: str
    created_at: str
    issue_number: int | None = None
    comment_id: int | None = None

    def key(self) -> tuple[int | None, int | None, str, str]:
        """What makes a reaction the same one: its subject, content and user."""
        return self.issue_number, self.comment_id, self.content, self.user


@dataclass
class _Label:
    id: int
    name: str
    color: str
    description: str | None = None


@dataclass
class _CheckRun:
    id: int
    suite_id: int
    name: str
    head_sha: str
    status: str
    conclusion: str | None
    started_at: str | None
    completed_at: str | None
    output: dict[str, Any]
    details_url: str | None
    external_id: str


@dataclass
class _Review:
    id: int
    pull_number: int
    user: str
    state: str
    body: str
    commit_id: str
    submitted_at: str


@dataclass
class _ReviewComment:
    id: int
    review_id: int
    pull_number: int
    user: str
    path: str
    line: int | None
    body: str
    commit_id: str
    created_at: str
    updated_at: str
    in_reply_to_id: int | None = None


@dataclass
class _Repository:
    id: int
    owner: str
    name: str
    installation_id: int
    default_branch: str
    path: Path
    created_at: str
    private: bool = True
    issues: dict[int, _Issue] = field(default_factory=dict)
    pulls: dict[int, _Pull] = field(default_factory=dict)
    comments: dict[int, _Comment] = field(default_factory=dict)
    reactions: list[_Reaction] = field(default_factory=list)
    check_runs: dict[int, _CheckRun] = field(default_factory=dict)
    reviews: dict[int, _Review] = field(default_factory=dict)
    review_comments: dict[int, _ReviewComment] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)  # by lowercased name

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def next_number(self) -> int:
        # Issues and pull requests share one sequence of numbers, as on GitHub.
        return max([0, *self.issues, *self.pulls]) + 1


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    retry_after: int | None
    message: str | None
    rate_limit_remaining: int | None
    after_route: bool


@dataclass
class _State:
    root: Path
    app_id: int = 424242
    app_slug: str = "baton-bot"
    app_name: str = "Baton"
    app_owner: str = "octo-org"
    private_key_pem: str = field(default_factory=_app_private_key)
    webhook_secret: str = SECRET
    token_lifetime: timedelta = timedelta(hours=1)
    web_url: str = ""
    api_url: str = ""
    created_at: str = field(default_factory=lambda: _iso(_utc_now()))
    installations: dict[int, _Installation] = field(default_factory=dict)
    repositories: dict[str, _Repository] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    tokens_issued: list[IssuedToken] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    failures: list[_Failure] = field(default_factory=list)
    # code -> (manifest, owner login, owner type)
    manifest_codes: dict[str, tuple[dict[str, Any], str, str]] = field(default_factory=dict)
    registered_manifests: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    rate_limit_used: int = 0
    rate_limit_reset: int = field(default_factory=lambda: int(time.time()) + 3600)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(3_000_000_001))

    @property
    def bot_login(self) -> str:
        return f"{self.app_slug}[bot]"

    def new_id(self) -> int:
        return next(self.ids)

    def repository(self, full_name: str) -> _Repository:
        found = self.repositories.get(full_name.lower())
        if found is None:
            raise KeyError(f"repository {full_name} was not added: call add_repository first")
        return found

    def live_token(self, token: str) -> IssuedToken | None:
        """A token issued here, not expired and not revoked; None for anything else."""
        issued = self.tokens.get(token)
        if issued is None or token in self.revoked or issued.expires_at <= datetime.now(UTC):
            return None
        return issued


# --- answers -------------------------------------------------------------------------------


class _Answer(NamedTuple):
    status: int
    body: bytes
    headers: list[tuple[str, str]]


class _ApiError(Exception):
    """A GitHub error answer raised from inside a handler."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}


def _json_answer(status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> _Answer:
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    content_type = ("content-type", "application/json; charset=utf-8")
    return _Answer(status, encoded, [content_type, *headers])


def _error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra, "documentation_url": DOCS, "status": str(status)}


def _not_found(message: str = "Not Found") -> _ApiError:
    return _ApiError(404, message)


def _validation_failed(*errors: Mapping[str, Any]) -> _ApiError:
    return _ApiError(422, "Validation Failed", errors=[dict(error) for error in errors])


def _invalid_request(message: str) -> _ApiError:
    return _ApiError(422, f"Invalid request.\n\n{message}")


# --- git -----------------------------------------------------------------------------------


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


# --- views: records as GitHub renders them -------------------------------------------------


class _Views:
    """Renders state records as the REST API's JSON bodies."""

    def __init__(self, state: _State) -> None:
        self.state = state

    @property
    def web(self) -> str:
        return self.state.web_url

    @property
    def api(self) -> str:
        return self.state.api_url

    def user(self, login: str, kind: str = "User") -> dict[str, Any]:
        number, node_id, kind = KNOWN_ACCOUNTS.get(login, self._made_up_account(login, kind))
        api_user = f"{self.api}/users/{login}"
        html = f"{self.web}/apps/{login.removesuffix('[bot]')}" if kind == "Bot" else None
        return {
            "login": login,
            "id": number,
            "node_id": node_id,
            "avatar_url": f"{self.web}/avatars/u/{number}?v=4",
            "gravatar_id": "",
            "url": api_user,
            "html_url": html or f"{self.web}/{login}",
            "followers_url": f"{api_user}/followers",
            "following_url": f"{api_user}/following{{/other_user}}",
            "gists_url": f"{api_user}/gists{{/gist_id}}",
            "starred_url": f"{api_user}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api_user}/subscriptions",
            "organizations_url": f"{api_user}/orgs",
            "repos_url": f"{api_user}/repos",
            "events_url": f"{api_user}/events{{/privacy}}",
            "received_events_url": f"{api_user}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _made_up_account(self, login: str, kind: str) -> tuple[int, str, str]:
        number = 10_000_000 + int(hashlib.sha256(login.encode()).hexdigest()[:8], 16) % 90_000_000
        kind = "Bot" if login.endswith("[bot]") else kind
        prefix = {"User": "U", "Organization": "O", "Bot": "BOT"}[kind]
        return number, _node_id(prefix, number), kind

    def organization(self, login: str) -> dict[str, Any]:
        return self.user(login, "Organization")

    def app(self) -> dict[str, Any]:
        state = self.state
        return {
            "id": state.app_id,
            "slug": state.app_slug,
            "node_id": _node_id("A", state.app_id),
            "client_id": f"Iv23li{state.app_id:014d}",
            "owner": self.organization(state.app_owner),
            "name": state.app_name,
            "description": "Plans the work on a labelled issue and opens a draft pull request.",
            "external_url": f"{self.web}/apps/{state.app_slug}",
            "html_url": f"{self.web}/apps/{state.app_slug}",
            "created_at": state.created_at,
            "updated_at": state.created_at,
            "permissions": dict(APP_PERMISSIONS),
            "events": list(APP_EVENTS),
            "installations_count": len(state.installations),
        }

    def installation(self, installation: _Installation) -> dict[str, Any]:
        account = self.organization(installation.account)
        return {
            "id": installation.id,
            "client_id": f"Iv23li{self.state.app_id:014d}",
            "account": account,
            "repository_selection": "selected",
            "access_tokens_url": f"{self.api}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": (
                f"{self.web}/organizations/{installation.account}"
                f"/settings/installations/{installation.id}"
            ),
            "app_id": self.state.app_id,
            "app_slug": self.state.app_slug,
            "target_id": account["id"],
            "target_type": account["type"],
            "permissions": dict(APP_PERMISSIONS),
            "events": list(APP_EVENTS),
            "created_at": installation.created_at,
            "updated_at": installation.created_at,
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    def repository(self, repo: _Repository, full: bool = False) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.web}/{repo.full_name}"
        host = self.web.split("://", 1)[-1]
        open_count = sum(issue.state == "open" for issue in repo.issues.values()) + sum(
            pull.state == "open" for pull in repo.pulls.values()
        )
        body: dict[str, Any] = {
            "id": repo.id,
            "node_id": _node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.organization(repo.owner),
            "html_url": html,
            "description": None,
            "fork": False,
            "url": api,
            **self._repository_urls(api),
            "git_url": f"git://{host}/{repo.full_name}.git",
            "ssh_url": f"git@{host}:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 1,
            "default_branch": repo.default_branch,
            "open_issues_count": open_count,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": repo.created_at,
            "created_at": repo.created_at,
            "updated_at": repo.created_at,
            "allow_forking": False,
            "web_commit_signoff_required": False,
            "license": None,
            "forks": 0,
            "open_issues": open_count,
            "watchers": 0,
        }
        if full:
            body |= {
                "temp_clone_token": None,
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": True,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
                "network_count": 0,
                "subscribers_count": 1,
            }
        return body

    @staticmethod
    def _repository_urls(api: str) -> dict[str, str]:
        templates = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "hooks_url": "/hooks",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
        }
        return {name: api + suffix for name, suffix in templates.items()}

    def commit(self, repo: _Repository, sha: str) -> dict[str, Any]:
        details = _commit_details(repo.path, sha)
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.web}/{repo.full_name}"
        return {
            "sha": details.sha,
            "node_id": _node_id("C", int(details.sha[:15], 16)),
            "url": f"{api}/commits/{details.sha}",
            "html_url": f"{html}/commit/{details.sha}",
            "comments_url": f"{api}/commits/{details.sha}/comments",
            "commit": {
                "url": f"{api}/git/commits/{details.sha}",
                "author": details.author,
                "committer": details.committer,
                "message": details.message,
                "comment_count": 0,
                "tree": {"sha": details.tree, "url": f"{api}/git/trees/{details.tree}"},
                "verification": {
                    "verified": False,
                    "reason": "unsigned",
                    "signature": None,
                    "payload": None,
                    "verified_at": None,
                },
            },
            "author": None,
            "committer": None,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{api}/commits/{parent}",
                    "html_url": f"{html}/commit/{parent}",
                }
                for parent in details.parents
            ],
        }

    def branch(self, repo: _Repository, name: str, sha: str) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/branches/{name}"
        return {
            "name": name,
            "commit": self.commit(repo, sha),
            "_links": {"self": api, "html": f"{self.web}/{repo.full_name}/tree/{name}"},
            "protected": False,
            "protection": {
                "enabled": False,
                "required_status_checks": {
                    "enforcement_level": "off",
                    "contexts": [],
                    "checks": [],
                },
            },
            "protection_url": f"{api}/protection",
        }

    def content_item(self, repo: _Repository, entry: _TreeEntry, ref: str) -> dict[str, Any]:
        kind = {"blob": "file", "tree": "dir", "commit": "submodule"}[entry.kind]
        if entry.mode == "120000":
            kind = "symlink"
        api = f"{self.api}/repos/{repo.full_name}"
        self_url = f"{api}/contents/{entry.path}?ref={ref}"
        git_url = f"{api}/git/{'trees' if kind == 'dir' else 'blobs'}/{entry.sha}"
        html = f"{self.web}/{repo.full_name}/{'tree' if kind == 'dir' else 'blob'}/{ref}/"
        raw = f"{self.web}/{repo.full_name}/raw/{ref}/{entry.path}"
        return {
            "name": entry.path.rsplit("/", 1)[-1],
            "path": entry.path,
            "sha": entry.sha,
            "size": entry.size,
            "url": self_url,
            "html_url": html + entry.path,
            "git_url": git_url,
            "download_url": raw if kind == "file" else None,
            "type": kind,
            "_links": {"self": self_url, "git": git_url, "html": html + entry.path},
        }

    def content_file(self, repo: _Repository, entry: _TreeEntry, ref: str) -> dict[str, Any]:
        encoded = base64.b64encode(_blob(repo.path, entry.sha)).decode()
        # GitHub wraps the base64 at 60 characters, newline-terminated.
        wrapped = "".join(f"{encoded[at : at + 60]}\n" for at in range(0, len(encoded), 60))
        return {**self.content_item(repo, entry, ref), "content": wrapped, "encoding": "base64"}

    def label(self, repo: _Repository, name: str) -> dict[str, Any]:
        """The repository's label `name`; an issue's label the repository lacked is made, as
        GitHub makes a label that an issue is given."""
        found = repo.labels.get(name.lower())
        if found is None:
            color = hashlib.sha256(name.encode()).hexdigest()[:6]
            found = repo.labels[name.lower()] = _Label(self.state.new_id(), name, color)
        return {
            "id": found.id,
            "node_id": _node_id("LA", found.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{found.name}",
            "name": found.name,
            "color": found.color,
            "default": False,
            "description": found.description,
            "archived_at": None,
            "archived_by": None,
        }

    def reactions_summary(
        self, repo: _Repository, url: str, issue: int | None = None, comment: int | None = None
    ) -> dict[str, Any]:
        chosen = [
            reaction.content
            for reaction in repo.reactions
            if (issue is not None and reaction.issue_number == issue)
            or (comment is not None and reaction.comment_id == comment)
        ]
        counts = {content: chosen.count(content) for content in REACTIONS}
        return {"url": f"{url}/reactions", "total_count": len(chosen), **counts}

    def author_association(self, repo: _Repository, login: str) -> str:
        return "MEMBER" if repo.roles.get(login.lower(), "none") != "none" else "NONE"

    def actor_app(self, login: str) -> dict[str, Any] | None:
        return self.app() if login == self.state.bot_login else None

    def issue(self, repo: _Repository, number: int) -> dict[str, Any]:
        """The issue, or the issue side of a pull request (with its `pull_request` key)."""
        pull = repo.pulls.get(number)
        record = repo.issues.get(number)
        if pull is not None:
            record = _Issue(
                number,
                pull.issue_id,
                pull.title,
                pull.body,
                pull.user,
                [],
                pull.created_at,
                pull.updated_at,
                pull.state,
                pull.closed_at,
            )
        if record is None:
            raise _not_found()
        api = f"{self.api}/repos/{repo.full_name}/issues/{number}"
        html = f"{self.web}/{repo.full_name}/{'pull' if pull else 'issues'}/{number}"
        body: dict[str, Any] = {
            "url": api,
            "repository_url": f"{self.api}/repos/{repo.full_name}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": html,
            "id": record.id,
            "node_id": _node_id("PR" if pull else "I", record.id),
            "number": number,
            "title": record.title,
            "user": self.user(record.user),
            "labels": [self.label(repo, name) for name in record.labels],
            "state": record.state,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": sum(comment.number == number for comment in repo.comments.values()),
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "closed_at": record.closed_at,
            "author_association": self.author_association(repo, record.user),
            "active_lock_reason": None,
            "body": record.body,
            "reactions": self.reactions_summary(repo, api, issue=number),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": self.actor_app(record.user),
            "state_reason": None,
        }
        if pull is not None:
            body["draft"] = pull.draft
            body["pull_request"] = {
                "url": f"{self.api}/repos/{repo.full_name}/pulls/{number}",
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": None,
            }
        return body

    def comment(self, repo: _Repository, comment: _Comment) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/issues/comments/{comment.id}"
        kind = "pull" if comment.number in repo.pulls else "issues"
        html = f"{self.web}/{repo.full_name}/{kind}/{comment.number}#issuecomment-{comment.id}"
        return {
            "url": api,
            "html_url": html,
            "issue_url": f"{self.api}/repos/{repo.full_name}/issues/{comment.number}",
            "id": comment.id,
            "node_id": _node_id("IC", comment.id),
            "user": self.user(comment.user),
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "author_association": self.author_association(repo, comment.user),
            "body": comment.body,
            "reactions": self.reactions_summary(repo, api, comment=comment.id),
            "performed_via_github_app": self.actor_app(comment.user),
        }

    def reaction(self, reaction: _Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": _node_id("REA", reaction.id),
            "user": self.user(reaction.user),
            "content": reaction.content,
            "created_at": reaction.created_at,
        }

    def collaborator_permission(self, repo: _Repository, login: str) -> dict[str, Any]:
        role = repo.roles.get(login.lower(), "none")
        rank = ROLES.index(role)
        user = self.user(login) | {
            "permissions": {
                "admin": rank <= ROLES.index("admin"),
                "maintain": rank <= ROLES.index("maintain"),
                "push": rank <= ROLES.index("write"),
                "triage": rank <= ROLES.index("triage"),
                "pull": rank <= ROLES.index("read"),
            },
            "role_name": role,
        }
        return {"permission": FOLDED_PERMISSION.get(role, role), "role_name": role, "user": user}

    def check_run(self, repo: _Repository, run: _CheckRun) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/check-runs/{run.id}"
        html = f"{self.web}/{repo.full_name}/runs/{run.id}"
        return {
            "id": run.id,
            "head_sha": run.head_sha,
            "node_id": _node_id("CR", run.id),
            "external_id": run.external_id,
            "url": api,
            "html_url": html,
            "details_url": run.details_url or html,
            "status": run.status,
            "conclusion": run.conclusion,
            "started_at": run.started_at,
            "completed_at": run.completed_at,
            "output": {
                "title": run.output.get("title"),
                "summary": run.output.get("summary"),
                "text": run.output.get("text"),
                "annotations_count": 0,
                "annotations_url": f"{api}/annotations",
            },
            "name": run.name,
            "check_suite": {"id": run.suite_id},
            "app": self.app(),
            "pull_requests": [
                self.pull_minimal(repo, pull)
                for pull in repo.pulls.values()
                if pull.state == "open" and self.head_sha(repo, pull) == run.head_sha
            ],
        }

    def head_sha(self, repo: _Repository, pull: _Pull) -> str:
        # An open pull request follows its branch; a closed one keeps its last head.
        if pull.state == "open":
            pull.head_sha = _branch_sha(repo.path, pull.head) or pull.head_sha
            pull.base_sha = _branch_sha(repo.path, pull.base) or pull.base_sha
        return pull.head_sha

    def pull_minimal(self, repo: _Repository, pull: _Pull) -> dict[str, Any]:
        repo_ref = {"id": repo.id, "url": f"{self.api}/repos/{repo.full_name}", "name": repo.name}
        return {
            "id": pull.id,
            "number": pull.number,
            "url": f"{self.api}/repos/{repo.full_name}/pulls/{pull.number}",
            "head": {"ref": pull.head, "sha": self.head_sha(repo, pull), "repo": repo_ref},
            "base": {"ref": pull.base, "sha": pull.base_sha, "repo": repo_ref},
        }

    def pull(self, repo: _Repository, pull: _Pull, full: bool = True) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/pulls/{pull.number}"
        issue_api = f"{self.api}/repos/{repo.full_name}/issues/{pull.number}"
        html = f"{self.web}/{repo.full_name}/pull/{pull.number}"
        head_sha = self.head_sha(repo, pull)
        statuses = f"{self.api}/repos/{repo.full_name}/statuses/{head_sha}"
        review_comment = f"{self.api}/repos/{repo.full_name}/pulls/comments{{/number}}"
        body: dict[str, Any] = {
            "url": api,
            "id": pull.id,
            "node_id": _node_id("PR", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_api,
            "commits_url": f"{api}/commits",
            "review_comments_url": f"{api}/comments",
            "review_comment_url": review_comment,
            "comments_url": f"{issue_api}/comments",
            "statuses_url": statuses,
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": self.user(pull.user),
            "body": pull.body,
            "labels": [],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
            "closed_at": pull.closed_at,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self._pull_end(repo, pull.head, head_sha),
            "base": self._pull_end(repo, pull.base, pull.base_sha),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": issue_api},
                "comments": {"href": f"{issue_api}/comments"},
                "review_comments": {"href": f"{api}/comments"},
                "review_comment": {"href": review_comment},
                "commits": {"href": f"{api}/commits"},
                "statuses": {"href": statuses},
            },
            "author_association": self.author_association(repo, pull.user),
            "auto_merge": None,
            "draft": pull.draft,
        }
        if full:
            body |= self._pull_details(repo, pull)
        return body

    def _pull_end(self, repo: _Repository, ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self.organization(repo.owner),
            "repo": self.repository(repo),
        }

    def _pull_details(self, repo: _Repository, pull: _Pull) -> dict[str, Any]:
        additions, deletions, files = _diff_stats(repo.path, pull.base_sha, pull.head_sha)
        return {
            "merged": False,
            "mergeable": None,
            "rebaseable": None,
            "mergeable_state": "draft" if pull.draft else "unknown",
            "merged_by": None,
            "comments": sum(comment.number == pull.number for comment in repo.comments.values()),
            "review_comments": sum(
                comment.pull_number == pull.number for comment in repo.review_comments.values()
            ),
            "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": _commit_count(repo.path, pull.base_sha, pull.head_sha),
            "additions": additions,
            "deletions": deletions,
            "changed_files": files,
        }

    def review(self, repo: _Repository, review: _Review) -> dict[str, Any]:
        pull_api = f"{self.api}/repos/{repo.full_name}/pulls/{review.pull_number}"
        html = (
            f"{self.web}/{repo.full_name}/pull/{review.pull_number}#pullrequestreview-{review.id}"
        )
        return {
            "id": review.id,
            "node_id": _node_id("PRR", review.id),
            "user": self.user(review.user),
            "body": review.body,
            "state": review.state,
            "html_url": html,
            "pull_request_url": pull_api,
            "author_association": self.author_association(repo, review.user),
            "_links": {"html": {"href": html}, "pull_request": {"href": pull_api}},
            "submitted_at": review.submitted_at,
            "commit_id": review.commit_id,
        }

    def review_comment(self, repo: _Repository, comment: _ReviewComment) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/pulls/comments/{comment.id}"
        pull_api = f"{self.api}/repos/{repo.full_name}/pulls/{comment.pull_number}"
        html = f"{self.web}/{repo.full_name}/pull/{comment.pull_number}#discussion_r{comment.id}"
        line = comment.line or 1
        body: dict[str, Any] = {
            "url": api,
            "pull_request_review_id": comment.review_id,
            "id": comment.id,
            "node_id": _node_id("PRRC", comment.id),
            "diff_hunk": f"@@ -{line},1 +{line},1 @@",
            "path": comment.path,
            "position": comment.line,
            "original_position": comment.line,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.commit_id,
            "user": self.user(comment.user),
            "body": comment.body,
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "html_url": html,
            "pull_request_url": pull_api,
            "author_association": self.author_association(repo, comment.user),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "pull_request": {"href": pull_api},
            },
            "reactions": self.reactions_summary(repo, api),
            "start_line": None,
            "original_start_line": None,
            "start_side": None,
            "line": comment.line,
            "original_line": comment.line,
            "side": "RIGHT",
            "subject_type": "line",
            "performed_via_github_app": self.actor_app(comment.user),
        }
        if comment.in_reply_to_id is not None:
            body["in_reply_to_id"] = comment.in_reply_to_id
        return body


# --- REST routes ---------------------------------------------------------------------------

APP_AUTH = "app"  # the App's JWT
INSTALLATION_AUTH = "installation"  # an installation token
NO_AUTH = "none"


@dataclass
class _Call:
    """One REST request, with what the route and its auth resolved."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    token: IssuedToken | None = None
    repository: _Repository | None = None

    @property
    def repo(self) -> _Repository:
        assert self.repository is not None, "route has no {owner}/{repo}"
        return self.repository

    def fields(self) -> dict[str, Any]:
        """The JSON object body ({} when empty); GitHub answers 400 for anything else."""
        if not self.body.strip():
            return {}
        fields = _parsed_json(self.body)
        if not isinstance(fields, dict):
            raise _ApiError(400, "Problems parsing JSON")
        return fields

    def int_param(self, name: str) -> int:
        value = self.params[name]
        if not value.isdigit():
            raise _not_found()
        return int(value)


Handler = Callable[[_Call], _Answer]
HandlerT = TypeVar("HandlerT", bound=Callable[..., _Answer])


# Any one of these (permission, level) pairs lets an installation token use a route.
Needs = tuple[tuple[str, str], ...]


class _Route(NamedTuple):
    method: str
    template: str
    auth: str
    needs: Needs
    handler: Handler
    pattern: re.Pattern[str]

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _route(method: str, template: str, auth: str, needs: str, handler: Handler) -> _Route:
    # `{name}` is one path segment; `{name+}` one or more, `{name*}` any (branches, file paths).
    pattern = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", template)
    pattern = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.*)", pattern)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return _Route(method, template, auth, _needs(needs), handler, re.compile(pattern))


def _needs(text: str) -> Needs:
    """`"issues:write or pull_requests:write"` as pairs; every token route must name one."""
    pairs = tuple(choice.partition(":")[::2] for choice in text.split(" or ") if choice)
    assert all(level in ACCESS_LEVELS for _, level in pairs), text
    return pairs


def _handles(
    method: str, template: str, auth: str = INSTALLATION_AUTH, needs: str = ""
) -> Callable[[HandlerT], HandlerT]:
    """Declare the REST route a `_RestApi` method answers; one method may answer several.

    `needs` names the permissions GitHub requires of an installation token for the route
    ("contents:read", or alternatives joined by " or "), as GitHub's docs list them per endpoint.
    """
    assert (auth == INSTALLATION_AUTH) == bool(needs), (
        f"{method} {template}: name its permissions if, and only if, tokens use it"
    )

    def mark(handler: HandlerT) -> HandlerT:
        handler.__dict__.setdefault("routes", []).append((method, template, auth, needs))
        return handler

    return mark


class _RestApi:
    """The REST routes the double serves, each a small handler over the state."""

    def __init__(self, state: _State, views: _Views) -> None:
        self.state = state
        self.views = views
        self.routes = [
            _route(method, template, auth, needs, getattr(self, name))
            for name, handler in vars(_RestApi).items()
            for method, template, auth, needs in getattr(handler, "routes", ())
        ]

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found and route.method == method:
                return route, found.groupdict()
        return None

    # App

    @_handles("GET", "/app", APP_AUTH)
    def get_app(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.app())

    @_handles("GET", "/app/installations", APP_AUTH)
    def list_installations(self, call: _Call) -> _Answer:
        installations = sorted(self.state.installations.values(), key=lambda found: found.id)
        page, link = _page(call, self.state.api_url, installations)
        return _json_answer(200, [self.views.installation(found) for found in page], link)

    @_handles("GET", "/app/installations/{installation_id}", APP_AUTH)
    def installation(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.installation(self._installation(call)))

    @_handles("POST", "/app/installations/{installation_id}/access_tokens", APP_AUTH)
    def create_token(self, call: _Call) -> _Answer:
        """A token for the installation, narrowed to the `repositories` (names) or
        `repository_ids` and the `permissions` the body asks for, as GitHub narrows it."""
        installation = self._installation(call)
        fields = call.fields()
        repositories = self._token_repositories(installation, fields)
        permissions = _token_permissions(fields.get("permissions"))
        expires_at = _utc_now() + self.state.token_lifetime
        ids = None if repositories is None else frozenset(repo.id for repo in repositories)
        issued = IssuedToken(_new_token(), installation.id, expires_at, ids, permissions)
        self.state.tokens[issued.token] = issued
        self.state.tokens_issued.append(issued)
        body: dict[str, Any] = {
            "token": issued.token,
            "expires_at": _iso(expires_at),
            "permissions": dict(permissions),
            "repository_selection": "all" if repositories is None else "selected",
        }
        if repositories is not None:
            body["repositories"] = [self.views.repository(repo) for repo in repositories]
        return _json_answer(201, body)

    def _token_repositories(
        self, installation: _Installation, fields: Mapping[str, Any]
    ) -> list[_Repository] | None:
        """The repositories a token request names, or None when it names none (all of them)."""
        names, ids = fields.get("repositories") or [], fields.get("repository_ids") or []
        if not _list_of(names, str) or not _list_of(ids, int):
            raise _invalid_request("'repositories' takes names and 'repository_ids' numbers.")
        if not names and not ids:
            return None
        held = [
            repo
            for repo in self.state.repositories.values()
            if repo.installation_id == installation.id
        ]
        by_name = {repo.name.lower(): repo for repo in held}
        by_id = {repo.id: repo for repo in held}
        wanted = [by_name.get(name.lower()) for name in names] + [by_id.get(i) for i in ids]
        found = [repo for repo in wanted if repo is not None]
        if len(found) != len(wanted):
            raise _ApiError(422, NOT_IN_INSTALLATION)
        return list({repo.id: repo for repo in found}.values())

    @_handles("GET", "/repos/{owner}/{repo}/installation", APP_AUTH)
    def repo_installation(self, call: _Call) -> _Answer:
        found = self.state.installations[call.repo.installation_id]
        return _json_answer(200, self.views.installation(found))

    def _installation(self, call: _Call) -> _Installation:
        found = self.state.installations.get(call.int_param("installation_id"))
        if found is None:
            raise _not_found()
        return found

    @_handles("POST", "/app-manifests/{code}/conversions", NO_AUTH)
    def convert_manifest(self, call: _Call) -> _Answer:
        registered = self.state.manifest_codes.pop(call.params["code"], None)
        if registered is None:
            raise _not_found()
        manifest, owner, kind = registered
        self.state.app_name = str(manifest.get("name") or self.state.app_name)
        app = self.views.app() | {
            "name": self.state.app_name,
            "description": manifest.get("description"),
            "external_url": manifest["url"],
            "owner": self.views.user(owner, kind),
            "permissions": dict(manifest.get("default_permissions") or {}),
            "events": list(manifest.get("default_events") or []),
            "client_secret": secrets.token_hex(20),
            "webhook_secret": self.state.webhook_secret,
            "pem": self.state.private_key_pem,
        }
        return _json_answer(201, app)

    # repositories and contents

    @_handles("GET", "/installation/repositories", needs="metadata:read")
    def installed_repos(self, call: _Call) -> _Answer:
        assert call.token is not None
        held = [repo for repo in self.state.repositories.values() if call.token.sees(repo)]
        page, link = _page(call, self.state.api_url, held)
        body = {
            "total_count": len(held),
            "repository_selection": "selected",
            "repositories": [self.views.repository(repo) for repo in page],
        }
        return _json_answer(200, body, link)

    @_handles("GET", "/repos/{owner}/{repo}", needs="metadata:read")
    def get_repository(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.repository(call.repo, full=True))

    @_handles("GET", "/repos/{owner}/{repo}/branches/{branch+}", needs="contents:read")
    def get_branch(self, call: _Call) -> _Answer:
        name = call.params["branch"]
        sha = _branch_sha(call.repo.path, name)
        if sha is None:
            raise _not_found("Branch not found")
        return _json_answer(200, self.views.branch(call.repo, name, sha))

    @_handles("GET", "/repos/{owner}/{repo}/contents", needs="contents:read")
    @_handles("GET", "/repos/{owner}/{repo}/contents/{path*}", needs="contents:read")
    def get_content(self, call: _Call) -> _Answer:
        repo = call.repo
        ref = call.query.get("ref") or repo.default_branch
        commit = _commit_sha(repo.path, ref)
        if commit is None:
            raise _not_found(f"No commit found for the ref {ref}")
        path = call.params.get("path", "").strip("/")
        if not path:
            return self._listing(repo, commit, "", ref)
        found = [entry for entry in _tree_entries(repo.path, commit, path) if entry.path == path]
        if not found:
            raise _not_found()
        entry = found[0]
        if entry.kind == "tree":
            return self._listing(repo, commit, path + "/", ref)
        # Symlinks and submodules are described, not inlined.
        is_file = entry.kind == "blob" and entry.mode != "120000"
        view = self.views.content_file if is_file else self.views.content_item
        return _json_answer(200, view(repo, entry, ref))

    def _listing(self, repo: _Repository, commit: str, directory: str, ref: str) -> _Answer:
        entries = _tree_entries(repo.path, commit, directory)
        return _json_answer(200, [self.views.content_item(repo, entry, ref) for entry in entries])

    # labels

    @_handles(
        "GET", "/repos/{owner}/{repo}/labels/{name}", needs="issues:read or pull_requests:read"
    )
    def get_label(self, call: _Call) -> _Answer:
        if call.params["name"].lower() not in call.repo.labels:
            raise _not_found()
        return _json_answer(200, self.views.label(call.repo, call.params["name"]))

    @_handles("POST", "/repos/{owner}/{repo}/labels", needs="issues:write or pull_requests:write")
    def create_label(self, call: _Call) -> _Answer:
        fields = call.fields()
        name = _required_text(fields, "name")
        color = str(fields.get("color") or "ededed").removeprefix("#").lower()
        description = fields.get("description")
        if not re.fullmatch(r"[0-9a-f]{6}", color):
            raise _validation_failed({"resource": "Label", "code": "invalid", "field": "color"})
        if description is not None and (not isinstance(description, str) or len(description) > 100):
            raise _validation_failed(
                {"resource": "Label", "code": "invalid", "field": "description"}
            )
        if name.lower() in call.repo.labels:
            raise _validation_failed(
                {"resource": "Label", "code": "already_exists", "field": "name"}
            )
        call.repo.labels[name.lower()] = _Label(self.state.new_id(), name, color, description)
        return _json_answer(201, self.views.label(call.repo, name))

    # issues, comments, reactions, permissions

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/issues/{number}",
        needs="issues:read or pull_requests:read",
    )
    def get_issue(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.issue(call.repo, call.int_param("number")))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/issues/{number}/comments",
        needs="issues:read or pull_requests:read",
    )
    def comments(self, call: _Call) -> _Answer:
        number = self._issue_number(call)
        found = [c for c in call.repo.comments.values() if c.number == number]
        page, link = _page(call, self.state.api_url, found)
        return _json_answer(200, [self.views.comment(call.repo, c) for c in page], link)

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/issues/{number}/comments",
        needs="issues:write or pull_requests:write",
    )
    def add_comment(self, call: _Call) -> _Answer:
        number = self._issue_number(call)
        body = _required_text(call.fields(), "body")
        comment = _new_comment(self.state, call.repo, number, body, self.state.bot_login)
        return _json_answer(201, self.views.comment(call.repo, comment))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        needs="issues:read or pull_requests:read",
    )
    def get_comment(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.comment(call.repo, self._comment(call)))

    @_handles(
        "PATCH",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        needs="issues:write or pull_requests:write",
    )
    def edit_comment(self, call: _Call) -> _Answer:
        comment = self._comment(call)
        comment.body = _required_text(call.fields(), "body")
        comment.updated_at = _iso(_utc_now())
        return _json_answer(200, self.views.comment(call.repo, comment))

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/issues/{number}/reactions",
        needs="issues:write or pull_requests:write",
    )
    def react_to_issue(self, call: _Call) -> _Answer:
        number = self._issue_number(call)
        return self._react(call, issue_number=number)

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
        needs="issues:write or pull_requests:write",
    )
    def react_to_comment(self, call: _Call) -> _Answer:
        return self._react(call, comment_id=self._comment(call).id)

    def _react(
        self, call: _Call, issue_number: int | None = None, comment_id: int | None = None
    ) -> _Answer:
        content = _required_text(call.fields(), "content")
        if content not in REACTIONS:
            raise _invalid_request(f'"{content}" is not a member of {list(REACTIONS)}.')
        user = self.state.bot_login
        reaction = _Reaction(
            self.state.new_id(), content, user, _iso(_utc_now()), issue_number, comment_id
        )
        for existing in call.repo.reactions:
            if existing.key() == reaction.key():
                return _json_answer(200, self.views.reaction(existing))
        call.repo.reactions.append(reaction)
        return _json_answer(201, self.views.reaction(reaction))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
        needs="metadata:read",
    )
    def permission(self, call: _Call) -> _Answer:
        login = call.params["username"]
        return _json_answer(200, self.views.collaborator_permission(call.repo, login))

    def _issue_number(self, call: _Call) -> int:
        number = call.int_param("number")
        if number not in call.repo.issues and number not in call.repo.pulls:
            raise _not_found()
        return number

    def _comment(self, call: _Call) -> _Comment:
        found = call.repo.comments.get(call.int_param("id"))
        if found is None:
            raise _not_found()
        return found

    # check runs

    @_handles("POST", "/repos/{owner}/{repo}/check-runs", needs="checks:write")
    def create_check_run(self, call: _Call) -> _Answer:
        fields = call.fields()
        name = _required_text(fields, "name")
        head_sha = _required_text(fields, "head_sha")
        if _commit_sha(call.repo.path, head_sha) != head_sha:
            raise _validation_failed(
                {"resource": "CheckRun", "field": "head_sha", "code": "invalid"}
            )
        run = _CheckRun(
            id=self.state.new_id(),
            suite_id=self.state.new_id(),
            name=name,
            head_sha=head_sha,
            status="queued",
            conclusion=None,
            started_at=_iso(_utc_now()),
            completed_at=None,
            output={},
            details_url=None,
            external_id="",
        )
        _apply_check_run_fields(run, fields)
        call.repo.check_runs[run.id] = run
        return _json_answer(201, self.views.check_run(call.repo, run))

    @_handles("PATCH", "/repos/{owner}/{repo}/check-runs/{id}", needs="checks:write")
    def update_check_run(self, call: _Call) -> _Answer:
        run = call.repo.check_runs.get(call.int_param("id"))
        if run is None:
            raise _not_found()
        _apply_check_run_fields(run, call.fields())
        return _json_answer(200, self.views.check_run(call.repo, run))

    @_handles("GET", "/repos/{owner}/{repo}/commits/{ref+}/check-runs", needs="checks:read")
    def check_runs(self, call: _Call) -> _Answer:
        repo = call.repo
        sha = _commit_sha(repo.path, call.params["ref"])
        if sha is None:
            raise _invalid_request(f"No commit found for SHA: {call.params['ref']}")
        runs = [run for run in repo.check_runs.values() if run.head_sha == sha]
        runs = [run for run in runs if call.query.get("check_name") in (None, run.name)]
        runs = [run for run in runs if call.query.get("status") in (None, run.status)]
        if call.query.get("filter", "latest") == "latest":
            newest = {run.name: run for run in runs}
            runs = [run for run in runs if newest[run.name] is run]
        page, link = _page(call, self.state.api_url, runs)
        body = {
            "total_count": len(runs),
            "check_runs": [self.views.check_run(repo, run) for run in page],
        }
        return _json_answer(200, body, link)

    # pull requests

    @_handles("GET", "/repos/{owner}/{repo}/pulls", needs="pull_requests:read")
    def list_pulls(self, call: _Call) -> _Answer:
        repo = call.repo
        state = call.query.get("state", "open")
        pulls = [pull for pull in repo.pulls.values() if state in ("all", pull.state)]
        head = call.query.get("head", "")
        # GitHub ignores a head filter without its `owner:` part.
        if ":" in head:
            owner, _, branch = head.partition(":")
            pulls = [p for p in pulls if owner.lower() == repo.owner.lower() and p.head == branch]
        if "base" in call.query:
            pulls = [pull for pull in pulls if pull.base == call.query["base"]]
        pulls.sort(key=lambda pull: pull.number, reverse=call.query.get("direction") != "asc")
        page, link = _page(call, self.state.api_url, pulls)
        return _json_answer(200, [self.views.pull(repo, p, full=False) for p in page], link)

    @_handles("POST", "/repos/{owner}/{repo}/pulls", needs="pull_requests:write")
    def create_pull(self, call: _Call) -> _Answer:
        repo = call.repo
        fields = call.fields()
        for name in ("title", "head", "base"):
            if not fields.get(name):
                raise _validation_failed(
                    {"resource": "PullRequest", "field": name, "code": "missing_field"}
                )
        head, base = _own_branch(repo, str(fields["head"])), str(fields["base"])
        head_sha, base_sha = _new_pull_ends(repo, head, base)
        now = _iso(_utc_now())
        pull = _Pull(
            number=repo.next_number(),
            id=self.state.new_id(),
            issue_id=self.state.new_id(),
            title=str(fields["title"]),
            body=fields.get("body"),
            user=self.state.bot_login,
            head=head,
            base=base,
            draft=bool(fields.get("draft", False)),
            head_sha=head_sha,
            base_sha=base_sha,
            created_at=now,
            updated_at=now,
            maintainer_can_modify=bool(fields.get("maintainer_can_modify", False)),
        )
        repo.pulls[pull.number] = pull
        return _json_answer(201, self.views.pull(repo, pull))

    @_handles("GET", "/repos/{owner}/{repo}/pulls/{number}", needs="pull_requests:read")
    def get_pull(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.pull(call.repo, self._pull(call)))

    @_handles("PATCH", "/repos/{owner}/{repo}/pulls/{number}", needs="pull_requests:write")
    def update_pull(self, call: _Call) -> _Answer:
        pull = self._pull(call)
        fields = call.fields()
        if "state" in fields and fields["state"] not in ("open", "closed"):
            raise _invalid_request(f'"{fields["state"]}" is not a member of ["open", "closed"].')
        pull.title = str(fields.get("title", pull.title))
        pull.body = fields.get("body", pull.body)
        if fields.get("state", pull.state) != pull.state:
            self.views.head_sha(call.repo, pull)  # remember the head it closes at
            pull.state = fields["state"]
            pull.closed_at = _iso(_utc_now()) if pull.state == "closed" else None
        pull.updated_at = _iso(_utc_now())
        return _json_answer(200, self.views.pull(call.repo, pull))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/reviews/{id}",
        needs="pull_requests:read",
    )
    def review(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.review(call.repo, self._review(call)))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/reviews/{id}/comments",
        needs="pull_requests:read",
    )
    def review_comments(self, call: _Call) -> _Answer:
        review = self._review(call)
        found = [
            comment
            for comment in call.repo.review_comments.values()
            if comment.review_id == review.id
        ]
        page, link = _page(call, self.state.api_url, found)
        return _json_answer(200, [self.views.review_comment(call.repo, c) for c in page], link)

    @_handles("GET", "/repos/{owner}/{repo}/pulls/{number}/comments", needs="pull_requests:read")
    def pull_review_comments(self, call: _Call) -> _Answer:
        """Every review comment on the pull request, replies included, in ascending order by
        id as GitHub lists them by default (`sort`, `direction` and `since` are not served)."""
        pull = self._pull(call)
        found = sorted(
            (c for c in call.repo.review_comments.values() if c.pull_number == pull.number),
            key=lambda comment: comment.id,
        )
        page, link = _page(call, self.state.api_url, found)
        return _json_answer(200, [self.views.review_comment(call.repo, c) for c in page], link)

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/pulls/{number}/comments/{id}/replies",
        needs="pull_requests:write",
    )
    def reply_to_review_comment(self, call: _Call) -> _Answer:
        pull = self._pull(call)
        parent = call.repo.review_comments.get(call.int_param("id"))
        if parent is None or parent.pull_number != pull.number:
            raise _not_found()
        body = _required_text(call.fields(), "body")
        reply = _new_reply(self.state, call.repo, parent, body, self.state.bot_login)
        return _json_answer(201, self.views.review_comment(call.repo, reply))

    def _pull(self, call: _Call) -> _Pull:
        found = call.repo.pulls.get(call.int_param("number"))
        if found is None:
            raise _not_found()
        return found

    def _review(self, call: _Call) -> _Review:
        found = call.repo.reviews.get(call.int_param("id"))
        if found is None or found.pull_number != self._pull(call).number:
            raise _not_found()
        return found


def _page(call: _Call, api_url: str, items: Sequence[Any]) -> tuple[Sequence[Any], list[Any]]:
    """One page of `items` by `per_page` and `page`, and GitHub's `Link` header for the rest."""
    per_page = min(_positive(call.query.get("per_page"), 30), 100)
    page = _positive(call.query.get("page"), 1)
    last = max(1, math.ceil(len(items) / per_page))
    chosen = items[(page - 1) * per_page : page * per_page]
    relations = []
    if page > 1:
        relations.append(("prev", page - 1))
    if page < last:
        relations += [("next", page + 1), ("last", last)]
    if page > 1:
        relations.append(("first", 1))
    if not relations:
        return chosen, []
    links = [
        f'<{api_url}{call.path}?{urlencode(call.query | {"page": str(number)})}>; rel="{rel}"'
        for rel, number in relations
    ]
    return chosen, [("link", ", ".join(links))]


def _token_permissions(asked: Any) -> dict[str, str]:
    """What a token request's `permissions` grant: the App's own when it names none. GitHub
    refuses anything beyond the App's with 422, and adds metadata:read to every token."""
    if asked is None:
        return dict(APP_PERMISSIONS)
    if not isinstance(asked, dict) or not all(level in ACCESS_LEVELS for level in asked.values()):
        raise _invalid_request("'permissions' maps a permission to 'read' or 'write'.")
    for name, level in asked.items():
        granted = APP_PERMISSIONS.get(name)
        if granted is None or not _at_least(granted, level):
            raise _ApiError(422, NOT_GRANTED)
    return {"metadata": "read", **asked}


def _list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    )


def _positive(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else default


def _required_text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid_request(f'"{name}" wasn\'t supplied.')
    return value


def _own_branch(repo: _Repository, head: str) -> str:
    """The branch of `owner:branch` or `branch`; "" for another owner (forks are not served)."""
    owner, separator, branch = head.rpartition(":")
    if separator and owner.lower() != repo.owner.lower():
        return ""
    return branch


def _new_pull_ends(repo: _Repository, head: str, base: str) -> tuple[str, str]:
    """The head and base shas of a new pull request, or the 422 GitHub gives for a refused one."""
    head_sha, base_sha = _branch_sha(repo.path, head), _branch_sha(repo.path, base)
    if head_sha is None or base_sha is None:
        invalid = "head" if head_sha is None else "base"
        raise _validation_failed({"resource": "PullRequest", "field": invalid, "code": "invalid"})
    if any(pull.state == "open" and pull.head == head for pull in repo.pulls.values()):
        message = f"A pull request already exists for {repo.owner}:{head}."
        raise _validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
    if _is_ancestor(repo.path, head_sha, base_sha):
        message = f"No commits between {base} and {head}"
        raise _validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
    return head_sha, base_sha


def _new_reply(
    state: _State, repo: _Repository, parent: _ReviewComment, body: str, user: str
) -> _ReviewComment:
    """A reply in `parent`'s thread; a reply to a reply joins the thread's first comment."""
    now = _iso(_utc_now())
    reply = _ReviewComment(
        id=state.new_id(),
        # GitHub files a reply under a review of its own.
        review_id=state.new_id(),
        pull_number=parent.pull_number,
        user=user,
        path=parent.path,
        line=parent.line,
        body=body,
        commit_id=parent.commit_id,
        created_at=now,
        updated_at=now,
        in_reply_to_id=parent.in_reply_to_id or parent.id,
    )
    repo.review_comments[reply.id] = reply
    return reply


def _new_comment(state: _State, repo: _Repository, number: int, body: str, user: str) -> _Comment:
    now = _iso(_utc_now())
    comment = _Comment(state.new_id(), number, body, user, now, now)
    repo.comments[comment.id] = comment
    return comment


def _apply_check_run_fields(run: _CheckRun, fields: Mapping[str, Any]) -> None:
    """Create and update share GitHub's rules: a conclusion completes the run."""
    status = fields.get("status", run.status)
    # A run sent back to queued or in_progress drops the conclusion it had.
    reopened = "status" in fields and status != "completed"
    conclusion = fields.get("conclusion", None if reopened else run.conclusion)
    if status not in CHECK_STATUSES:
        raise _invalid_request(f'"{status}" is not a member of {list(CHECK_STATUSES)}.')
    if conclusion is not None and conclusion not in CHECK_CONCLUSIONS:
        raise _invalid_request(f'"{conclusion}" is not a member of {list(CHECK_CONCLUSIONS)}.')
    if conclusion is not None:
        status = "completed"
    if status == "completed" and conclusion is None:
        raise _invalid_request("A conclusion is required when the status is completed.")
    output = fields.get("output")
    if output is not None:
        if not isinstance(output, dict) or not output.get("title") or not output.get("summary"):
            raise _invalid_request('"output" needs "title" and "summary".')
        run.output = {key: output.get(key) for key in ("title", "summary", "text")}
    run.name = str(fields.get("name", run.name))
    run.status, run.conclusion = status, conclusion
    run.details_url = fields.get("details_url", run.details_url)
    run.external_id = str(fields.get("external_id", run.external_id))
    run.started_at = fields.get("started_at", run.started_at)
    completed_at = fields.get("completed_at") or run.completed_at or _iso(_utc_now())
    run.completed_at = completed_at if status == "completed" else None


# --- auth ----------------------------------------------------------------------------------


def _credential(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The scheme (lower case) and value of `Authorization`, or None without one."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    return (scheme.lower(), value.strip()) if value.strip() else None


def _jwt_problem(token: str, state: _State) -> str | None:
    """Why GitHub would refuse `token` as the App's JWT, or None when it is good."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "A JSON web token could not be decoded"
    if header.get("alg") != "RS256":
        return f"A JSON web token could not be decoded: it is signed with {header.get('alg')}"
    if str(claims.get("iss")) != str(state.app_id):
        issuer = claims.get("iss")
        return f"'Issuer' claim ('iss') must be this App's id {state.app_id}, not {issuer!r}"
    try:
        jwt.decode(
            token,
            _public_key(state.private_key_pem),
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_iss": False},
        )
    except jwt.PyJWTError:
        return "A JSON web token could not be decoded: the signature does not match the App's key"
    return _jwt_time_problem(claims.get("iat"), claims.get("exp"), time.time())


def _jwt_time_problem(issued_at: Any, expires: Any, now: float) -> str | None:
    if not _is_number(issued_at) or issued_at > now + JWT_CLOCK_SKEW:
        return (
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued (no later than now)"
        )
    if not _is_number(expires) or expires <= now:
        return (
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires"
        )
    if expires - issued_at > JWT_MAX_LIFETIME:
        return "'Expiration time' claim ('exp') is too far in the future (over 10 minutes)"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- the double ----------------------------------------------------------------------------


class _Incoming(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


class GitHubDouble:
    """GitHub on loopback for tests; `with GitHubDouble(tmp_path) as github:` serves it.

    REST lives under `api_url` (`url` + "/api/v3"), web pages and git under `url`. State is
    in memory, branches and files in bare repositories under `root`. Every request is recorded
    in `requests`. All state is guarded by one lock: the server answers from another thread.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._state = _State(root)
        self._views = _Views(self._state)
        self._api = _RestApi(self._state, self._views)
        self._lock = threading.RLock()
        self._git = GitHttpBackend(root, self._may_use_git, self._git_refusal)
        self._stack = ExitStack()
        self.requests = self._state.requests
        self.tokens_issued = self._state.tokens_issued
        self.registered_manifests = self._state.registered_manifests

    # serving

    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        base = self._stack.enter_context(serve(self))
        self._state.web_url, self._state.api_url = base, base + API_PREFIX
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stack.close()

    @property
    def url(self) -> str:
        """The web and git base, like BATON_GITHUB_URL."""
        return self._started(self._state.web_url)

    @property
    def api_url(self) -> str:
        """The REST base, like BATON_GITHUB_API_URL on GitHub Enterprise Server."""
        return self._started(self._state.api_url)

    @staticmethod
    def _started(base: str) -> str:
        if not base:
            raise RuntimeError("the GitHub double is not serving: use it as a context manager")
        return base

    @property
    def app_id(self) -> int:
        return self._state.app_id

    @property
    def app_slug(self) -> str:
        return self._state.app_slug

    @property
    def private_key_pem(self) -> str:
        return self._state.private_key_pem

    @property
    def webhook_secret(self) -> str:
        return self._state.webhook_secret

    @property
    def token_lifetime(self) -> timedelta:
        return self._state.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, lifetime: timedelta) -> None:
        with self._lock:
            self._state.token_lifetime = lifetime

    @property
    def rate_limit_reset(self) -> int:
        """When the rate limit window ends (`x-ratelimit-reset`), in seconds since the epoch."""
        return self._state.rate_limit_reset

    @rate_limit_reset.setter
    def rate_limit_reset(self, reset: int) -> None:
        with self._lock:
            self._state.rate_limit_reset = reset

    # arranging state

    def add_installation(self, installation_id: int, account: str) -> None:
        with self._lock:
            created = _iso(_utc_now())
            self._state.installations[installation_id] = _Installation(
                installation_id, account, created
            )

    def add_repository(
        self,
        full_name: str,
        installation_id: int,
        files: Mapping[str, str | bytes] | None = None,
        default_branch: str = "main",
        *,
        repository_id: int | None = None,
        private: bool = True,
    ) -> int:
        """A repository held by the installation, with one commit of `files`; returns its id."""
        owner, _, name = full_name.partition("/")
        with self._lock:
            if installation_id not in self._state.installations:
                raise KeyError(
                    f"installation {installation_id} was not added: call add_installation"
                )
            path = self.root / owner / f"{name}.git"
            init_bare_repository(path, files or {"README.md": f"# {name}\n"}, default_branch)
            repo = _Repository(
                id=repository_id or self._state.new_id(),
                owner=owner,
                name=name,
                installation_id=installation_id,
                default_branch=default_branch,
                path=path,
                created_at=_iso(_utc_now()),
                private=private,
            )
            self._state.repositories[full_name.lower()] = repo
            return repo.id

    def add_issue(
        self,
        full_name: str,
        number: int,
        title: str,
        body: str,
        user: str = "alice",
        labels: Sequence[str] = (),
    ) -> dict[str, Any]:
        """An open issue; returns it as the REST API shows it."""
        with self._lock:
            repo = self._state.repository(full_name)
            if number in repo.issues or number in repo.pulls:
                raise ValueError(f"{full_name}#{number} already exists")
            now = _iso(_utc_now())
            issue_id = self._state.new_id()
            repo.issues[number] = _Issue(
                number, issue_id, title, body, user, list(labels), now, now
            )
            return self._views.issue(repo, number)

    def add_issue_comment(
        self, full_name: str, number: int, body: str, user: str = "alice"
    ) -> dict[str, Any]:
        """A comment on an issue or pull request; returns it as the REST API shows it."""
        with self._lock:
            repo = self._state.repository(full_name)
            if number not in repo.issues and number not in repo.pulls:
                raise KeyError(f"{full_name}#{number} does not exist: add the issue first")
            comment = _new_comment(self._state, repo, number, body, user)
            return self._views.comment(repo, comment)

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        """The user's role on the repository: admin, maintain, write, triage, read or none."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        with self._lock:
            self._state.repository(full_name).roles[login.lower()] = role

    def add_review(
        self,
        full_name: str,
        pull_number: int,
        user: str,
        state: str,
        body: str,
        comments: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """A submitted review on the pull request's current head, with `{path, line, body}`
        comments. Returns the review as the REST API shows it, plus `comments`: its review
        comments as the REST API shows them."""
        review_state = state.upper()
        if review_state not in REVIEW_STATES:
            raise ValueError(f"state must be one of {', '.join(REVIEW_STATES)}, got {state!r}")
        with self._lock:
            repo = self._state.repository(full_name)
            pull = repo.pulls.get(pull_number)
            if pull is None:
                raise KeyError(f"{full_name} has no pull request #{pull_number}")
            now = _iso(_utc_now())
            head = self._views.head_sha(repo, pull)
            review = _Review(self._state.new_id(), pull_number, user, review_state, body, head, now)
            repo.reviews[review.id] = review
            added = [self._add_review_comment(repo, review, comment) for comment in comments]
            rendered = [self._views.review_comment(repo, comment) for comment in added]
            return self._views.review(repo, review) | {"comments": rendered}

    def _add_review_comment(
        self, repo: _Repository, review: _Review, comment: Mapping[str, Any]
    ) -> _ReviewComment:
        added = _ReviewComment(
            id=self._state.new_id(),
            review_id=review.id,
            pull_number=review.pull_number,
            user=review.user,
            path=str(comment["path"]),
            line=comment.get("line"),
            body=str(comment["body"]),
            commit_id=review.commit_id,
            created_at=review.submitted_at,
            updated_at=review.submitted_at,
        )
        repo.review_comments[added.id] = added
        return added

    def add_review_reply(
        self, full_name: str, comment_id: int, body: str, user: str = "alice"
    ) -> dict[str, Any]:
        """A person's reply in a review comment's thread; returns it as the REST API shows it."""
        with self._lock:
            repo = self._state.repository(full_name)
            parent = repo.review_comments.get(comment_id)
            if parent is None:
                raise KeyError(f"{full_name} has no review comment {comment_id}")
            reply = _new_reply(self._state, repo, parent, body, user)
            return self._views.review_comment(repo, reply)

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int,
        times: int = 1,
        retry_after: int | None = None,
        message: str | None = None,
        *,
        rate_limit_remaining: int | None = None,
        after_route: bool = False,
    ) -> None:
        """Answer the next `times` REST requests whose method is `method` and whose path after
        /api/v3 matches `path_pattern` in full (`re.fullmatch`) with `status`, before auth and
        the route run. A 403 with `retry_after` is GitHub's secondary rate limit; with
        `rate_limit_remaining=0` it is the primary one. With `after_route` the route runs and
        keeps what it made, and only its answer is replaced: GitHub did the work, then a 502
        or 504 from its front end reached the client instead."""
        failure = _Failure(
            method.upper(),
            re.compile(path_pattern),
            status,
            times,
            retry_after,
            message,
            rate_limit_remaining,
            after_route,
        )
        with self._lock:
            self._state.failures.append(failure)

    def clear_failures(self) -> None:
        """Forget every failure `fail_next` still had to answer: GitHub is back."""
        with self._lock:
            self._state.failures.clear()

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 401 Bad credentials; new ones work."""
        with self._lock:
            self._state.revoked.update(self._state.tokens)

    # webhooks

    def send_webhook(
        self,
        target_url: str,
        event: str,
        payload: Mapping[str, Any],
        delivery_id: str | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """POST a delivery to `target_url` with GitHub's headers and signatures."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        key = (self.webhook_secret if secret is None else secret).encode()
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/8e03811",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "512345678",
            "X-GitHub-Hook-Installation-Target-ID": str(self.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        }
        return httpx.post(target_url, content=body, headers=headers, timeout=30)

    # reading state

    def unknown_requests(self) -> list[RecordedRequest]:
        """Requests answered 404 because no route matched."""
        with self._lock:
            return [request for request in self.requests if request.route is None]

    def issue_comments(self, full_name: str, number: int) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._state.repository(full_name)
            found = [c for c in repo.comments.values() if c.number == number]
            return [self._views.comment(repo, comment) for comment in found]

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._state.repository(full_name)
            return [self._views.pull(repo, pull) for pull in repo.pulls.values()]

    def check_runs(self, full_name: str) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._state.repository(full_name)
            return [self._views.check_run(repo, run) for run in repo.check_runs.values()]

    def reactions(self, full_name: str) -> list[dict[str, Any]]:
        """Every reaction, as the REST API shows it, plus `issue_number` or `comment_id` (the
        other None) naming what it is on."""
        with self._lock:
            repo = self._state.repository(full_name)
            return [
                self._views.reaction(reaction)
                | {"issue_number": reaction.issue_number, "comment_id": reaction.comment_id}
                for reaction in repo.reactions
            ]

    def review_comment_replies(self, full_name: str, pull_number: int) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._state.repository(full_name)
            return [
                self._views.review_comment(repo, comment)
                for comment in repo.review_comments.values()
                if comment.pull_number == pull_number and comment.in_reply_to_id is not None
            ]

    def labels(self, full_name: str) -> list[dict[str, Any]]:
        """The repository's labels as the REST API shows them."""
        with self._lock:
            repo = self._state.repository(full_name)
            return [self._views.label(repo, label.name) for label in repo.labels.values()]

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        with self._lock:
            return _branch_sha(self._state.repository(full_name).path, branch)

    # the server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The double as an ASGI app: REST, web pages and git on one server."""
        if scope["type"] == "lifespan":
            await _answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        at = time.monotonic()
        if _GIT_PATH.fullmatch(scope["path"]):
            await self._serve_git(scope, receive, send, at)
            return
        incoming = _Incoming(
            scope["method"],
            scope["path"],
            dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
            _headers(scope),
            await _read_body(receive),
            at,
        )
        # Handlers run git; a worker thread keeps the loop free for git traffic meanwhile.
        answer = await anyio.to_thread.run_sync(self._answer, incoming)
        headers = [(name.encode(), value.encode()) for name, value in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _serve_git(self, scope: Scope, receive: Receive, send: Send, at: float) -> None:
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self._git(scope, receive, send_and_note)
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        record = RecordedRequest(
            scope["method"], scope["path"], query, _headers(scope), None, status, at, "git", False
        )
        with self._lock:
            self.requests.append(record)

    def _may_use_git(self, full_name: str, token: str) -> bool:
        """Any live token signs in; what it may then do is `_git_refusal`'s to say."""
        with self._lock:
            return self._state.live_token(token) is not None

    def _git_refusal(self, full_name: str, token: str, service: str) -> GitRefusal | None:
        """GitHub's answer to a live token that may not run `service` on the repository:
        404 when it cannot see it or read its contents, 403 for a push without contents:write."""
        with self._lock:
            repo = self._state.repositories.get(full_name.lower())
            issued = self._state.live_token(token)
            if repo is None or issued is None or not issued.sees(repo):
                return GitRefusal(404, "Repository not found.")
            if not issued.grants("contents", "read"):
                return GitRefusal(404, "Repository not found.")
            if service == "git-receive-pack" and not issued.grants("contents", "write"):
                return GitRefusal(
                    403, f"Permission to {full_name}.git denied to {self._state.bot_login}."
                )
            return None

    def _answer(self, incoming: _Incoming) -> _Answer:
        is_api = incoming.path == API_PREFIX or incoming.path.startswith(API_PREFIX + "/")
        path = incoming.path.removeprefix(API_PREFIX) if is_api else incoming.path
        with self._lock:
            if is_api:
                answer, route = self._answer_rest(incoming, path)
            else:
                answer, route = self._answer_web(incoming)
            record = RecordedRequest(
                incoming.method,
                path,
                incoming.query,
                incoming.headers,
                _parsed_json(incoming.body),
                answer.status,
                incoming.at,
                route,
                is_api,
            )
            self.requests.append(record)
            return answer

    def _answer_rest(self, incoming: _Incoming, path: str) -> tuple[_Answer, str | None]:
        matched = self._api.match(incoming.method, path)
        route_name = matched[0].name if matched else None
        failure = self._take_failure(incoming.method, path)
        if failure is not None and not failure.after_route:
            return self._failure_answer(failure), route_name
        if matched is None:
            return self._with_rate_limit(_json_answer(404, _error_body(404, "Not Found"))), None
        route, params = matched
        call = _Call(incoming.method, path, incoming.query, incoming.body, params)
        try:
            self._authorize(route, call, incoming.headers)
            answer = route.handler(call)
        except _ApiError as error:
            answer = _json_answer(error.status, _error_body(error.status, **error.body))
        if failure is not None:
            return self._failure_answer(failure), route_name
        return self._with_rate_limit(answer), route_name

    def _authorize(self, route: _Route, call: _Call, headers: Mapping[str, str]) -> None:
        """Fill in the caller's token and repository, or raise GitHub's refusal: 401 for the
        credentials, 404 for a repository the token cannot see, 403 for a missing permission."""
        credential = _credential(headers)
        if route.auth == APP_AUTH:
            problem = self._app_auth_problem(credential)
            if problem:
                raise _ApiError(401, problem)
        elif route.auth == INSTALLATION_AUTH:
            if credential is None:
                raise _ApiError(401, "Requires authentication")
            scheme, token = credential
            call.token = self._state.live_token(token)
            if scheme not in ("token", "bearer") or call.token is None:
                raise _ApiError(401, "Bad credentials")
        if "owner" in call.params:
            self._resolve_repository(call)
        if call.token is not None and not any(call.token.grants(*need) for need in route.needs):
            raise _ApiError(403, NOT_ACCESSIBLE)

    def _app_auth_problem(self, credential: tuple[str, str] | None) -> str | None:
        if credential is None:
            return "Requires authentication"
        scheme, token = credential
        if scheme != "bearer":
            return "A JSON web token could not be decoded: send it as 'Authorization: Bearer'"
        return _jwt_problem(token, self._state)

    def _resolve_repository(self, call: _Call) -> None:
        full_name = f"{call.params['owner']}/{call.params['repo']}"
        repo = self._state.repositories.get(full_name.lower())
        # Like GitHub for a private repository: one the token cannot reach (another
        # installation's, or one of its own installation the token was not asked for) is not there.
        if repo is None or (call.token is not None and not call.token.sees(repo)):
            raise _not_found()
        call.repository = repo

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._state.failures:
            if failure.method == method and failure.pattern.fullmatch(path):
                failure.times -= 1
                if failure.times <= 0:
                    self._state.failures.remove(failure)
                return failure
        return None

    def _failure_answer(self, failure: _Failure) -> _Answer:
        headers = []
        message = failure.message
        if failure.retry_after is not None:
            headers.append(("retry-after", str(failure.retry_after)))
            if failure.status in (403, 429):
                message = message or SECONDARY_RATE_LIMIT
        if failure.rate_limit_remaining == 0 and failure.status in (403, 429):
            message = message or "API rate limit exceeded for installation."
        if failure.status == 403:
            message = message or "Resource not accessible by integration"
        message = message or HTTPStatus(failure.status).phrase
        answer = _json_answer(failure.status, _error_body(failure.status, message), headers)
        return self._with_rate_limit(answer, failure.rate_limit_remaining)

    def _with_rate_limit(self, answer: _Answer, remaining: int | None = None) -> _Answer:
        state = self._state
        state.rate_limit_used += 1
        if remaining is None:
            remaining = max(1, RATE_LIMIT - state.rate_limit_used)
        headers = [
            ("x-github-api-version-selected", API_VERSION),
            ("x-github-media-type", "github.v3; format=json"),
            ("x-github-request-id", uuid.uuid4().hex[:20].upper()),
            ("x-ratelimit-limit", str(RATE_LIMIT)),
            ("x-ratelimit-remaining", str(remaining)),
            ("x-ratelimit-reset", str(state.rate_limit_reset)),
            ("x-ratelimit-used", str(RATE_LIMIT - remaining)),
            ("x-ratelimit-resource", "core"),
        ]
        return answer._replace(headers=[*answer.headers, *headers])

    # the App Manifest flow, as github.com runs it

    def _answer_web(self, incoming: _Incoming) -> tuple[_Answer, str | None]:
        route = _web_route(incoming.method, incoming.path)
        if route is None:
            return _json_answer(404, _error_body(404, "Not Found")), None
        # The personal flow registers the App for the signed-in user, here the payloads' alice.
        owner = (route[1], "Organization") if route[1] else ("alice", "User")
        return self._register_manifest(incoming, *owner), route[0]

    def _register_manifest(self, incoming: _Incoming, owner: str, kind: str) -> _Answer:
        form = dict(parse_qsl(incoming.body.decode("utf-8", "replace")))
        manifest = _parsed_json(form.get("manifest", "").encode())
        problem = _manifest_problem(manifest)
        if problem:
            return _Answer(400, problem.encode(), [("content-type", "text/plain; charset=utf-8")])
        self.registered_manifests.append(manifest)
        code = secrets.token_hex(10)
        self._state.manifest_codes[code] = (manifest, owner, kind)
        redirect = str(manifest["redirect_url"])
        given = {"code": code} | {k: v for k, v in incoming.query.items() if k == "state"}
        location = redirect + ("&" if "?" in redirect else "?") + urlencode(given)
        html = f'<html><body>You are being <a href="{location}">redirected</a>.</body></html>'
        headers = [("location", location), ("content-type", "text/html; charset=utf-8")]
        return _Answer(302, html.encode(), headers)


def _web_route(method: str, path: str) -> tuple[str, str | None] | None:
    """The web route's name and the organization it names, for the manifest flow's two pages."""
    if method != "POST":
        return None
    if path == "/settings/apps/new":
        return "POST /settings/apps/new", None
    found = re.fullmatch(r"/organizations/([^/]+)/settings/apps/new", path)
    if found:
        return "POST /organizations/{org}/settings/apps/new", found.group(1)
    return None


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return "The manifest field must be a JSON object."
    hook = manifest.get("hook_attributes")
    if not manifest.get("url"):
        return "The manifest needs a url."
    if not isinstance(hook, dict) or not hook.get("url"):
        return "The manifest needs hook_attributes.url."
    if not manifest.get("redirect_url"):
        return "The manifest needs a redirect_url."
    return None


def _parsed_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
