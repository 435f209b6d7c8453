"""`POST /api/github/webhooks`: verify, record, answer. The work itself happens in jobs.

The endpoint is a small ASGI app in front of the FastAPI app rather than a path operation:
`benchmarks/ingress.py` measured FastAPI's per-request machinery (request object, dependency
solving, middleware, and resuming a deep stack after awaiting the commit) at about 50 µs a
delivery, a third of the budget, and this endpoint needs none of it.

Anyone can send a body, and it must be held until its signature is checked, so what the process
holds is bounded: each body by 25 MiB (413), all unverified bodies together by a budget (503 with
Retry-After past it; the refused body is let go at once). A refused body's rest is read and
dropped, within limits of bytes and time, before the answer: a client that sends its whole body
before reading (most do) then reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from githubkit.webhooks import verify
from pydantic import SecretStr
from starlette.types import Message, Receive, Scope, Send

from bot.events import PayloadError, decide
from bot.ingress import Answer, NewDelivery
from bot.logs import log_context
from bot.service import Baton
from bot.settings import WEBHOOK_BODY_LIMIT, Settings

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/api/github/webhooks"
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
ENCODED_ANSWERS = {answer: json.dumps({"status": answer.value}).encode() for answer in Answer}
WANTED_HEADERS = frozenset(
    {b"x-github-event", b"x-github-delivery", b"x-hub-signature-256", b"content-length"}
)


@dataclass(frozen=True)
class BodyLimits:
    """How much of a body the endpoint reads and holds before its signature is checked."""

    max_body_bytes: int = WEBHOOK_BODY_LIMIT
    # Unverified bodies held at once, over all connections of the process.
    budget_bytes: int = 4 * WEBHOOK_BODY_LIMIT
    # At most this much of a refused body is read and dropped, for at most this long.
    drain_bytes: int = 2 * WEBHOOK_BODY_LIMIT
    drain_seconds: float = 10.0
    # A body must arrive within this (GitHub itself waits 10 s for the answer): a stranger
    # sending slowly cannot hold the budget long.
    read_seconds: float = 10.0
    # A quarter of the budget only bodies declared at most `small_body_bytes` may use, so large
    # or unsized ones (a stranger's) cannot crowd out GitHub's usual deliveries.
    small_body_bytes: int = 1024 * 1024
    retry_after_seconds: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(budget_bytes=settings.webhook_buffer_bytes)

    @property
    def reserve_bytes(self) -> int:
        return self.budget_bytes // 4


class BodyBudget:
    """Bytes of unverified bodies held now; one per process (its event loop is its only user).
    The last `reserve` bytes of the limit are for small bodies only."""

    def __init__(self, limit: int, reserve: int = 0) -> None:
        self.limit = limit
        self.reserve = reserve
        self.held = 0

    def take(self, size: int, small: bool = True) -> bool:
        """Count `size` more bytes as held, unless that would pass the limit (for a body not
        known to be small: the limit less the reserve)."""
        limit = self.limit if small else self.limit - self.reserve
        if self.held + size > limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


class Refusal(Exception):
    """A delivery answered with an error status; nothing about it is stored."""

    def __init__(self, status: int, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        self.closes = False  # the body was not read to its end: the connection cannot be reused


class WebhookEndpoint:
    """Answers `POST /api/github/webhooks`; everything else (lifespan included) goes to `app`."""

    def __init__(self, app: FastAPI, limits: BodyLimits | None = None) -> None:
        self.app = app
        self.limits = limits or BodyLimits()
        self.body_budget = BodyBudget(self.limits.budget_bytes, self.limits.reserve_bytes)

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
            try:
                delivery = await self._verified_delivery(headers, receive, baton)
            except Refusal as refusal:
                log.warning(
                    "delivery refused: %s", refusal.detail, extra={"status": refusal.status}
                )
                baton.metrics.count_delivery("unknown", f"refused_{refusal.status}")
                await _answer(
                    send, refusal.status, {"detail": refusal.detail}, _headers_of(refusal)
                )
                return
            status, body = await _record(baton, delivery)
        await _answer(send, status, body)

    async def _verified_delivery(
        self, headers: dict[str, str], receive: Receive, baton: Baton
    ) -> NewDelivery:
        secret = baton.settings.webhook_secret
        if secret is None:
            detail = "no webhook secret is configured (BATON_WEBHOOK_SECRET); refusing all"
            raise await _after_draining(Refusal(503, detail), receive, self.limits, 0)
        try:
            _check_headers(headers)  # before any byte of the body is held
        except Refusal as refusal:
            raise await _after_draining(refusal, receive, self.limits, 0) from None
        body = await _read_body(headers, receive, self.limits, self.body_budget)
        try:
            return _delivery(secret, headers, body)
        finally:
            self.body_budget.give_back(len(body))


async def _record(baton: Baton, delivery: NewDelivery) -> tuple[int, dict[str, Any] | bytes]:
    """Store a verified delivery and answer it as CONTRACT §2 says: (status, JSON body)."""
    try:
        answer = await baton.recorder.record(delivery)
    except Exception:
        log.exception("could not store the delivery")
        baton.metrics.count_delivery(delivery.event, "refused_503")
        return 503, {"detail": "could not store the delivery; it can be redelivered"}
    baton.metrics.count_delivery(delivery.event, answer.value)
    # Most of what GitHub sends an App is ignored (every push, check and comment of its
    # repositories): those lines are for debugging; the deliveries table keeps every reason.
    level = logging.INFO if answer is Answer.queued else logging.DEBUG
    if log.isEnabledFor(level):
        reason = delivery.decision.reason
        log.log(
            level, "delivery %s", answer.value, extra={"event": delivery.event, "reason": reason}
        )
    return (200 if answer is Answer.duplicate else 202), ENCODED_ANSWERS[answer]


def _delivery(secret: SecretStr, headers: dict[str, str], body: bytes) -> NewDelivery:
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


async def _read_body(
    headers: dict[str, str], receive: Receive, limits: BodyLimits, budget: BodyBudget
) -> bytes:
    """The whole body, its size taken from `budget` (the caller gives it back); a `Refusal` for
    a body over the limit (413) or over the budget (503), having let go of what it held."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise await _after_draining(_too_large(limits), receive, limits, int(declared))
    small = declared.isdigit() and int(declared) <= limits.small_body_bytes
    held = _Held(budget, small)
    try:
        async with asyncio.timeout(limits.read_seconds):
            return await _read_within_budget(receive, limits, held)
    except TimeoutError:
        held.release()
        refusal = Refusal(408, f"the body did not arrive within {limits.read_seconds:g} s")
        refusal.closes = True
        raise refusal from None
    except _Unread as unread:
        # Drained outside the read's deadline: the drain has its own bounds.
        raise await _after_draining(unread.refusal, receive, limits, 0) from None


class _Held:
    """The bytes of one body taken from the budget so far; the caller gives them back."""

    def __init__(self, budget: BodyBudget, small: bool) -> None:
        self.budget = budget
        self.small = small
        self.size = 0

    def take(self, size: int) -> bool:
        if not self.budget.take(size, self.small):
            return False
        self.size += size
        return True

    def release(self) -> None:
        self.budget.give_back(self.size)
        self.size = 0


class _Unread(Exception):
    """A body refused before its end arrived: the rest must be drained before the answer."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


async def _read_within_budget(receive: Receive, limits: BodyLimits, held: _Held) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            held.release()
            raise Refusal(400, "the client went away before sending the whole body")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        too_large = held.size + len(chunk) > limits.max_body_bytes
        if too_large or not held.take(len(chunk)):
            held.release()
            chunks.clear()  # the body is let go before its rest is waited for
            refusal = _too_large(limits) if too_large else _busy(limits)
            raise _Unread(refusal) if more else refusal
        chunks.append(chunk)
        if not more:
            return b"".join(chunks)


def _too_large(limits: BodyLimits) -> Refusal:
    return Refusal(413, f"body over {limits.max_body_bytes} bytes")


def _busy(limits: BodyLimits) -> Refusal:
    return Refusal(
        503,
        "too many webhook bodies in flight; retry later",
        retry_after=limits.retry_after_seconds,
    )


async def _after_draining(
    refusal: Refusal, receive: Receive, limits: BodyLimits, declared: int
) -> Refusal:
    """`refusal`, once the rest of the body is read and dropped (so that a client sending it
    whole reads the answer); marked to close the connection when the rest was not all read."""
    if declared > limits.drain_bytes or not await _drain(receive, limits):
        refusal.closes = True
    return refusal


async def _drain(receive: Receive, limits: BodyLimits) -> bool:
    """Read and drop the request's body to its end: True, or False when the client went away or
    the body passed `drain_bytes` or `drain_seconds`."""
    dropped = 0
    try:
        async with asyncio.timeout(limits.drain_seconds):
            while dropped <= limits.drain_bytes:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    return False
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
    except TimeoutError:
        pass
    return False


def _check_headers(headers: dict[str, str]) -> None:
    """A delivery's headers are all there and well formed; `Refusal` otherwise."""
    signature = headers.get("x-hub-signature-256")
    if not signature:
        raise Refusal(401, "missing X-Hub-Signature-256")
    # Only SHA-256 signatures are accepted; githubkit's verify would also take legacy SHA-1.
    if not signature.startswith("sha256=") or not signature.isascii():
        raise Refusal(401, "X-Hub-Signature-256 is not a sha256= signature")
    _header(headers, "X-GitHub-Event", EVENT_NAME)
    _header(headers, "X-GitHub-Delivery", DELIVERY_ID)


def _check_signature(secret: str, body: bytes, signature: str | None) -> None:
    if not signature or not verify(secret, body, signature):
        raise Refusal(401, "X-Hub-Signature-256 does not match the body")


def _header(headers: dict[str, str], name: str, shape: re.Pattern[str]) -> str:
    value = headers.get(name.lower())
    if not value:
        raise Refusal(400, f"missing {name}")
    if not shape.fullmatch(value):
        raise Refusal(400, f"{name} is malformed")
    return value


def _headers_of(refusal: Refusal) -> list[tuple[bytes, bytes]]:
    extra = [(b"connection", b"close")] if refusal.closes else []
    if refusal.retry_after is not None:
        extra.append((b"retry-after", str(refusal.retry_after).encode()))
    return extra


async def _answer(
    send: Send,
    status: int,
    body: dict[str, Any] | bytes,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers + (extra_headers or []),
        }
    )
    await send({"type": "http.response.body", "body": content})
