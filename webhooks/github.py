"""`POST /api/github/webhooks`: verify, record, answer. The work itself happens in jobs.

The endpoint is a small ASGI app in front of the FastAPI app rather than a path operation:
`benchmarks/ingress.py` measured FastAPI's per-request machinery (request object, dependency
solving, middleware, and resuming a deep stack after awaiting the commit) at about 50 µs a
delivery, a third of the budget, and this endpoint needs none of it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI
from githubkit.webhooks import verify
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from bot.events import PayloadError, decide
from bot.ingress import Answer, NewDelivery
from bot.logs import log_context
from bot.service import Baton

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/github/webhooks"
MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
ENCODED_ANSWERS = {answer: json.dumps({"status": answer.value}).encode() for answer in Answer}
WANTED_HEADERS = frozenset(
    {b"x-github-event", b"x-github-delivery", b"x-hub-signature-256", b"content-length"}
)


class Refusal(Exception):
    """A delivery answered with an error status; nothing about it is stored."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class WebhookEndpoint:
    """Answers `POST /api/github/webhooks`; everything else (lifespan included) goes to `app`."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != WEBHOOK_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"detail": "webhook deliveries are POSTed"})
            return
        baton: Baton = self.app.state.baton
        headers = _headers(scope)
        with log_context(delivery_id=headers.get("x-github-delivery", "")[:200] or None):
            status, body = await _receive_delivery(baton, headers, receive)
        await _answer(send, status, body)


async def _receive_delivery(
    baton: Baton, headers: dict[str, str], receive: Receive
) -> tuple[int, dict[str, Any] | bytes]:
    """Answer one delivery as CONTRACT §2 says: (status, JSON body)."""
    try:
        delivery = await _verified_delivery(headers, receive, baton.settings.webhook_secret)
    except Refusal as refusal:
        log.warning("delivery refused: %s", refusal.detail, extra={"status": refusal.status})
        return refusal.status, {"detail": refusal.detail}
    try:
        answer = await baton.recorder.record(delivery)
    except Exception:
        log.exception("could not store the delivery")
        return 503, {"detail": "could not store the delivery; it can be redelivered"}
    baton.metrics.count_delivery(delivery.event, answer.value)
    if log.isEnabledFor(logging.INFO):
        reason = delivery.decision.reason
        log.info("delivery %s", answer.value, extra={"event": delivery.event, "reason": reason})
    return (200 if answer is Answer.duplicate else 202), ENCODED_ANSWERS[answer]


async def _verified_delivery(
    headers: dict[str, str], receive: Receive, secret: SecretStr | None
) -> NewDelivery:
    if secret is None:
        raise Refusal(503, "no webhook secret is configured (BATON_WEBHOOK_SECRET); refusing all")
    body = await _read_capped(headers, receive)
    _check_signature(secret.get_secret_value(), body, headers.get("x-hub-signature-256"))
    event = _header(headers, "X-GitHub-Event", EVENT_NAME)
    delivery_id = _header(headers, "X-GitHub-Delivery", DELIVERY_ID)
    try:
        decision = decide(event, body)
    except PayloadError as error:
        raise Refusal(400, str(error)) from None
    return NewDelivery(delivery_id=delivery_id, event=event, decision=decision)


def _headers(scope: Scope) -> dict[str, str]:
    """The few headers this endpoint reads (ASGI names are lower case; the first copy wins)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in WANTED_HEADERS:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return found


async def _read_capped(headers: dict[str, str], receive: Receive) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refusal(413, f"body over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise Refusal(400, "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_signature(secret: str, body: bytes, signature: str | None) -> None:
    if not signature:
        raise Refusal(401, "missing X-Hub-Signature-256")
    # Only SHA-256 signatures are accepted; githubkit's verify would also take legacy SHA-1.
    if not signature.startswith("sha256=") or not signature.isascii():
        raise Refusal(401, "X-Hub-Signature-256 is not a sha256= signature")
    if not verify(secret, body, signature):
        raise Refusal(401, "X-Hub-Signature-256 does not match the body")


def _header(headers: dict[str, str], name: str, shape: re.Pattern[str]) -> str:
    value = headers.get(name.lower())
    if not value:
        raise Refusal(400, f"missing {name}")
    if not shape.fullmatch(value):
        raise Refusal(400, f"{name} is malformed")
    return value


async def _answer(send: Send, status: int, body: dict[str, Any] | bytes) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
