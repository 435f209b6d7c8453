"""`GitHubDouble`: the double tests hold, to arrange state, read it back and serve it."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from tests.doubles.git_http import GitHttpBackend, init_bare_repository
from tests.doubles.github.ci import _CiDeliveries
from tests.doubles.github.git_data import _branch_sha
from tests.doubles.github.git_writes import RefUpdate, keep_ref_log, ref_updates
from tests.doubles.github.issues import _new_comment
from tests.doubles.github.pulls import _close_pull, _new_reply
from tests.doubles.github.server import _RestApi, _Server, _Views
from tests.doubles.github.state import (
    API_PREFIX,
    REVIEW_STATES,
    ROLES,
    RecordedRequest,
    _Failure,
    _Installation,
    _iso,
    _Issue,
    _Repository,
    _Review,
    _ReviewComment,
    _State,
    _utc_now,
)
from tests.doubles.github.webhooks import _Deliveries
from tests.support import serve


class GitHubDouble(_Server, _Deliveries, _CiDeliveries):
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
        # Called with (method, path, status) once a REST request is answered, before the
        # answer leaves: a test makes something happen "at the same moment" as a request.
        # Git requests too, with their full path, before the last of the answer leaves.
        self.before_replying: list[Callable[[str, str, int], None]] = []

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
            keep_ref_log(path)
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

    @property
    def oauth_client(self) -> tuple[str, str]:
        """The App's OAuth client id and secret, as the manifest flow hands them over."""
        return self._state.client_id, self._state.client_secret

    def sign_in_browser(self, login: str | None, callback_url: str | None = None) -> None:
        """Who is signed in to the double's web pages: its authorize page sends that person
        straight back with a code (None: nobody, and the page says so). `callback_url` is the
        App's registered callback (the manifest flow registers one too)."""
        with self._lock:
            self._state.browser_login = login
            if callback_url is not None:
                self._state.callback_urls = [callback_url]

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

    def close_pull_request(
        self,
        target_url: str,
        full_name: str,
        number: int,
        *,
        merged: bool = False,
        by: str = "alice",
        delivery_id: str | None = None,
    ) -> httpx.Response:
        """`by` closes the open pull request, or merges it with `merged` (a merge commit on its
        base branch, as GitHub's merge button makes; a draft is marked ready first, as a person
        must), and GitHub delivers `pull_request` (action `closed`) to `target_url`.

        Raises ValueError for a pull request that is not open, or one whose head conflicts
        with its base (GitHub would not merge it either)."""
        with self._lock:
            repo = self._state.repository(full_name)
            pull = self._pull(repo, number)
            if pull.state != "open":
                raise ValueError(f"{full_name}#{number} is already closed")
            _close_pull(self._views, repo, pull, merged_by=by if merged else None)
            body = self.pull_request_payload(full_name, number, "closed", by)
        return self.send_webhook(target_url, "pull_request", body, delivery_id)

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

    def user(self, login: str) -> dict[str, Any]:
        """The account as `GET /users/{login}` shows it."""
        with self._lock:
            return self._views.user(login)

    def ref_updates(self, full_name: str, branch: str) -> list[RefUpdate]:
        """Every update of `branch` since the repository was added, by the API or a push."""
        with self._lock:
            return ref_updates(self._state.repository(full_name).path, branch)

    def commit(self, full_name: str, sha: str) -> dict[str, Any]:
        """The commit as `GET /repos/{owner}/{repo}/commits/{sha}` shows it."""
        with self._lock:
            return self._views.commit(self._state.repository(full_name), sha)

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        with self._lock:
            return _branch_sha(self._state.repository(full_name).path, branch)
