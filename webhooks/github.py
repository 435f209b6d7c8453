"""`POST /api/github/webhooks`: verify, record, answer. The work itself happens in jobs."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from githubkit.webhooks import verify

from bot.events import PayloadError, decide
from bot.ingress import Answer, NewDelivery
from bot.logs import log_context
from bot.service import Baton

log = logging.getLogger(__name__)
router = APIRouter()

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
# Encoded once: this endpoint is the hot path of a webhook storm.
ANSWERS = {
    answer: Response(
        content=json.dumps({"status": answer.value}).encode(),
        status_code=200 if answer is Answer.duplicate else 202,
        media_type="application/json",
    )
    for answer in Answer
}


class Refusal(Exception):
    """A delivery answered with an error status; nothing about it is stored."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@router.post("/api/github/webhooks")
async def receive_delivery(request: Request) -> Response:
    baton: Baton = request.app.state.baton  # not a dependency: that would cost every delivery
    delivery_header = request.headers.get("x-github-delivery", "")
    with log_context(delivery_id=delivery_header[:200] or None):
        try:
            delivery = await _verified_delivery(request, baton.settings.webhook_secret)
        except Refusal as refusal:
            log.warning("delivery refused: %s", refusal.detail, extra={"status": refusal.status})
            return JSONResponse({"detail": refusal.detail}, status_code=refusal.status)
        answer = await baton.recorder.record(delivery)
        baton.metrics.deliveries.labels(delivery.event, answer.value).inc()
        log.info(
            "delivery %s",
            answer.value,
            extra={"event": delivery.event, "reason": delivery.decision.reason},
        )
        return ANSWERS[answer]


async def _verified_delivery(request: Request, secret: Any) -> NewDelivery:
    if secret is None:
        raise Refusal(503, "no webhook secret is configured (BATON_WEBHOOK_SECRET); refusing all")
    body = await _read_capped(request)
    _check_signature(secret.get_secret_value(), body, request.headers.get("x-hub-signature-256"))
    event = _header(request, "x-github-event", EVENT_NAME)
    delivery_id = _header(request, "x-github-delivery", DELIVERY_ID)
    try:
        decision = decide(event, body)
    except PayloadError as error:
        raise Refusal(400, str(error)) from None
    return NewDelivery(delivery_id=delivery_id, event=event, decision=decision)


async def _read_capped(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Refusal(413, f"body over {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise Refusal(413, f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_signature(secret: str, body: bytes, signature: str | None) -> None:
    if not signature:
        raise Refusal(401, "missing X-Hub-Signature-256")
    # Only SHA-256 signatures are accepted; githubkit's verify would also take legacy SHA-1.
    if not signature.startswith("sha256=") or not signature.isascii():
        raise Refusal(401, "X-Hub-Signature-256 is not a sha256= signature")
    if not verify(secret, body, signature):
        raise Refusal(401, "X-Hub-Signature-256 does not match the body")


def _header(request: Request, name: str, shape: re.Pattern[str]) -> str:
    value = request.headers.get(name)
    if not value:
        raise Refusal(400, f"missing {_title(name)}")
    if not shape.fullmatch(value):
        raise Refusal(400, f"{_title(name)} is malformed")
    return value


def _title(header: str) -> str:
    return "-".join(
        "GitHub" if part == "github" else part.capitalize() for part in header.split("-")
    )
