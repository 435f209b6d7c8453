"""Webhook deliveries, signed as GitHub signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx

from tests.doubles.github.state import _State

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
