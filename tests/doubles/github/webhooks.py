"""Webhook deliveries, signed as GitHub signs them, and the payloads of the ones the double
builds from its own state (`pull_request`, `pull_request_review`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from tests.doubles.github.state import _Pull, _Repository, _State

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


class _Deliveries:
    """Signed webhook deliveries, as GitHub sends them to the App."""

    _state: _State
    _views: _Views
    _lock: threading.RLock

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
        key = (self._state.webhook_secret if secret is None else secret).encode()
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/8e03811",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "512345678",
            "X-GitHub-Hook-Installation-Target-ID": str(self._state.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
        }
        return httpx.post(target_url, content=body, headers=headers, timeout=30)

    def pull_request_payload(
        self, full_name: str, number: int, action: str, sender: str
    ) -> dict[str, Any]:
        """A `pull_request` delivery's payload for the pull request as it stands, as GitHub
        sends it to the App: `action`, `number`, the whole pull request (`state`, `merged`,
        `head` and `base` with their `ref` and `sha`, ...), the repository, its organization,
        the installation and `sender`, the person who acted."""
        with self._lock:
            repo = self._state.repository(full_name)
            pull = self._pull(repo, number)
            return {
                "action": action,
                "number": number,
                "pull_request": self._views.pull(repo, pull),
                **self._delivered_to(repo, sender),
            }

    def review_payload(self, full_name: str, review_id: int) -> dict[str, Any]:
        """The `pull_request_review` delivery (action `submitted`) for a review `add_review`
        made, as GitHub sends it: the review (its `state` in lower case, as webhooks give it),
        the pull request as it stands (`head.ref`, `head.sha`, ...), the repository, its
        organization, the installation and the reviewer as `sender`."""
        with self._lock:
            repo = self._state.repository(full_name)
            review = repo.reviews.get(review_id)
            if review is None:
                raise KeyError(f"{full_name} has no review {review_id}")
            pull = self._pull(repo, review.pull_number)
            return {
                "action": "submitted",
                "review": self._views.review(repo, review) | {"state": review.state.lower()},
                "pull_request": self._views.pull(repo, pull, full=False),
                **self._delivered_to(repo, review.user),
            }

    def send_review(
        self, target_url: str, full_name: str, review_id: int, delivery_id: str | None = None
    ) -> httpx.Response:
        """Deliver `review_payload` to `target_url` as a signed `pull_request_review` event."""
        body = self.review_payload(full_name, review_id)
        return self.send_webhook(target_url, "pull_request_review", body, delivery_id)

    def push_payload(
        self, full_name: str, branch: str, before: str, after: str, pusher: str = "alice"
    ) -> dict[str, Any]:
        """The `push` delivery for `branch` moving from `before` to `after`."""
        with self._lock:
            repo = self._state.repository(full_name)
            html = f"{self._views.web}/{full_name}"
            return {
                "ref": f"refs/heads/{branch}",
                "before": before,
                "after": after,
                "created": False,
                "deleted": False,
                "forced": False,
                "base_ref": None,
                "compare": f"{html}/compare/{before[:12]}...{after[:12]}",
                "commits": [],
                "head_commit": None,
                "pusher": {"name": pusher, "email": f"{pusher}@example.com"},
                **self._delivered_to(repo, pusher),
            }

    def send_push(
        self, target_url: str, full_name: str, branch: str, before: str, after: str
    ) -> httpx.Response:
        body = self.push_payload(full_name, branch, before, after)
        return self.send_webhook(target_url, "push", body)

    def _pull(self, repo: _Repository, number: int) -> _Pull:
        pull = repo.pulls.get(number)
        if pull is None:
            raise KeyError(f"{repo.full_name} has no pull request #{number}")
        return pull

    def _delivered_to(self, repo: _Repository, sender: str) -> dict[str, Any]:
        """What every delivery about `repo` ends with: the repository, its organization (when
        an organization owns it), the person who acted and the App's installation."""
        views = self._views
        owner = views.user(repo.owner, "Organization")
        ends: dict[str, Any] = {"repository": views.repository(repo, full=True)}
        if owner["type"] == "Organization":
            api = f"{views.api}/orgs/{repo.owner}"
            ends["organization"] = {
                "login": owner["login"],
                "id": owner["id"],
                "node_id": owner["node_id"],
                "url": api,
                "repos_url": f"{api}/repos",
                "events_url": f"{api}/events",
                "hooks_url": f"{api}/hooks",
                "issues_url": f"{api}/issues",
                "members_url": f"{api}/members{{/member}}",
                "public_members_url": f"{api}/public_members{{/member}}",
                "avatar_url": owner["avatar_url"],
                "description": None,
            }
        ends["sender"] = views.user(sender)
        # GitHub's legacy global id of the installation, as deliveries carry it.
        legacy = f"023:IntegrationInstallation{repo.installation_id}".encode()
        ends["installation"] = {
            "id": repo.installation_id,
            "node_id": base64.b64encode(legacy).decode(),
        }
        return ends
