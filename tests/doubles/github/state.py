"""What the double knows: GitHub's constants, the records of its in-memory state, and the
tokens and requests it notes.
"""

from __future__ import annotations

import base64
import functools
import itertools
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tests.support import SECRET

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
    "actions": "write",
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
APP_EVENTS = [
    "issues",
    "issue_comment",
    "pull_request_review",
    "pull_request_review_comment",
    "check_suite",
    "check_run",
    "workflow_run",
    "push",
]
SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
# Accounts that appear in tests/payloads, so API answers and webhook payloads agree.
KNOWN_ACCOUNTS = {
    "alice": (1042871, "MDQ6VXNlcjEwNDI4NzE=", "User"),
    "octo-org": (91827364, "O_kgDOBXkspA", "Organization"),
    "baton-bot[bot]": (198765432, "BOT_kgDOC9jreA", "Bot"),
}


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


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_id(prefix: str, number: int) -> str:
    packed = base64.urlsafe_b64encode(number.to_bytes(8, "big")).decode().rstrip("=")
    return f"{prefix}_kwDO{packed}"


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
    # Set when a person merges it (GitHubDouble.close_pull_request with merged=True).
    merged_at: str | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None


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
    app: str = ""  # the slug of the app that made it; "" for the double's own App (Baton)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""  # an Actions job's log
    reruns: int = 0


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
    verified_commits: set[str] = field(default_factory=set)  # made and signed by GitHub

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
    # The App's OAuth client, and who is signed in to the double's web pages (None: nobody).
    client_id: str = "Iv23liBatonDoubleClient"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    browser_login: str | None = None
    callback_urls: list[str] = field(default_factory=list)
    # OAuth code -> (login, redirect_uri); user access token -> login.
    oauth_codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    user_tokens: dict[str, str] = field(default_factory=dict)
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
