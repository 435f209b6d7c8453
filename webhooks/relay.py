"""Webhooks through a relay: deliveries GitHub posted to a channel such as smee.io's (Probot's
`WEBHOOK_PROXY_URL`), read from its event stream and fed to this process's webhook endpoint.

With `BATON_WEBHOOK_PROXY_URL` set, the serving process keeps one server-sent-events stream open
to that address. smee.io sends `event: ready` on connect, `event: ping` every 30 s and, for each
delivery, a message whose data is a JSON object: the request's headers under lower-case names
(`x-github-event`, `x-github-delivery`, `x-hub-signature-256`, ...), `body` (the payload, parsed),
`query` and `timestamp`. Each delivery is handed, in process, to the same `WebhookEndpoint` that
answers `POST /api/github/webhooks`: signature check, body limits, deduplication by delivery id
and the answer are those of GitHub's own path, and neither `BATON_HOST` nor a proxy in front of
the port is in the way. Deliveries go one at a time, in the stream's order.

The signature covers the bytes GitHub sent, and smee.io passes on only the parsed payload, so the
bytes are rebuilt the way GitHub writes them: compact JSON (no spaces, no newline at the end),
non-ASCII characters as UTF-8, `\\n`, `\\t`, `\\r`, `\\b`, `\\f` as short escapes and other control
characters as `\\u` escapes with upper-case hex digits (`\\u001B`). Captured deliveries come out
byte for byte; `JSON.stringify`, which smee-client uses, writes `\\u001b` and so fails deliveries
holding such characters (octokit/webhooks.js issue 71). What smee.io's own parse loses cannot be
rebuilt: numbers with a fraction written another way (`1.0` arrives as `1`), integers past 2^53,
object keys that look like array indexes (JavaScript moves them first). Such a delivery fails the
check and is refused as a forgery would be, with a hint in the log. A relay that also sends the
raw body base64-encoded as `bodyB` (gosmee does) is taken byte for byte instead. smee.io itself
refuses payloads over 1 MiB (its web framework's default limit), which a large push can pass.

A dropped stream is opened again after 1 s (or the relay's `retry:`), doubling up to 60 s, with
`Last-Event-ID`. An address answering a redirect, a client error or something other than an
event stream is given up on with one line in the log; the server goes on without the relay.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from starlette.types import ASGIApp

from bot.settings import ENV_PREFIX, WEBHOOK_BODY_LIMIT
from webhooks.github import WEBHOOK_PATH
from webhooks.sse import SseDecoder, SseEvent

log = logging.getLogger(__name__)

# GitHub's largest body, base64-encoded (`bodyB`) or its strings escaped anew, and the headers.
MAX_EVENT_BYTES = 2 * WEBHOOK_BODY_LIMIT
# smee.io pings every 30 s: a stream silent for three pings is dead.
READ_TIMEOUT_SECONDS = 90.0
MIN_DELAY_SECONDS = 0.05
# The request headers passed on; the endpoint makes its own length and type.
_FORWARDED = re.compile(r"x-[a-z0-9-]{1,62}|user-agent")
# One escape of a JSON string: a pair is consumed whole, so `\\u` text is not taken for one.
_ESCAPE = re.compile(r"\\(?:u[0-9a-f]{4}|.)", re.DOTALL)
_SETTING = f"{ENV_PREFIX}WEBHOOK_PROXY_URL"


class MalformedEvent(ValueError):
    """A relayed event that holds no delivery; the message says why."""


class RelayedDelivery(NamedTuple):
    headers: dict[str, str]
    body: bytes


def relayed_delivery(data: str) -> RelayedDelivery:
    """The delivery in one smee.io message's data; `MalformedEvent` when it holds none."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError):
        raise MalformedEvent("its data is not JSON") from None
    if not isinstance(message, dict):
        raise MalformedEvent("its data is not a JSON object")
    return RelayedDelivery(_headers(message), _body(message))


def _headers(message: dict[str, Any]) -> dict[str, str]:
    forwarded = {
        name: value
        for name, value in message.items()
        if _FORWARDED.fullmatch(name)
        and isinstance(value, str)
        and value.isascii()
        and value.isprintable()
    }
    return {**forwarded, "content-type": "application/json"}


def _body(message: dict[str, Any]) -> bytes:
    raw = message.get("bodyB")
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise MalformedEvent("its bodyB is not base64") from None
    if "body" not in message:
        raise MalformedEvent("it carries no body")
    return github_bytes(message["body"])


def github_bytes(payload: object) -> bytes:
    """`payload` written as GitHub writes webhook bodies (see the module's docstring)."""
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return _ESCAPE.sub(_upper_hex, text).encode()
    except (ValueError, RecursionError):  # NaN, nesting too deep, text that is not Unicode
        raise MalformedEvent("its body cannot be written as JSON") from None


def _upper_hex(escape: re.Match[str]) -> str:
    text = escape.group()
    return "\\u" + text[2:].upper() if text.startswith("\\u") else text


class Backoff:
    """Seconds to wait before each new attempt: `first`, doubling, at most `cap`."""

    def __init__(self, first: float = 1.0, cap: float = 60.0) -> None:
        self.first = first
        self.cap = cap
        self._failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.first * 2.0 ** min(self._failures, 32))
        self._failures += 1
        return delay

    def reset(self) -> None:
        self._failures = 0

    def start_at(self, seconds: float) -> None:
        """Make `seconds` the first delay, within bounds: a relay's `retry: 0` must not turn
        a failing address into a busy loop."""
        self.first = min(max(seconds, MIN_DELAY_SECONDS), self.cap)


class _GiveUp(Exception):
    """The address cannot serve a stream, and asking again would not change that."""


class _Dropped(Exception):
    """The stream could not be opened this time."""


class WebhookRelay:
    """Reads a relay's event stream and hands each delivery to `endpoint`, until stopped."""

    def __init__(self, url: str, endpoint: ASGIApp) -> None:
        self.url = url
        # The channel's path is a capability (anyone holding it reads the deliveries): only
        # the host is logged.
        self.where = urlsplit(url).netloc.rpartition("@")[2]
        self._endpoint = endpoint
        self._backoff = Backoff()
        self._last_event_id = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-relay")

    async def stop(self) -> None:
        """Close the stream and wait until the relay has let go of everything."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        local = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._endpoint), base_url="http://baton"
        )
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS)
        remote = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        async with local, remote:
            while True:
                try:
                    reason = await self._listen(remote, local)
                except _GiveUp as error:
                    log.error("webhook relay gave up on %s: %s", self.where, error)
                    return
                except (_Dropped, httpx.HTTPError) as error:
                    reason = str(error) or type(error).__name__
                except Exception as error:  # a fault here must never take the server down
                    log.exception("webhook relay failed")
                    reason = type(error).__name__
                delay = self._backoff.next_delay()
                log.warning(
                    "webhook relay has no stream from %s (%s); trying again in %g s",
                    self.where,
                    reason,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _listen(self, remote: httpx.AsyncClient, local: httpx.AsyncClient) -> str:
        """Read one connection's events to its end; returns why it ended."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._last_event_id:
            headers["Last-Event-ID"] = self._last_event_id
        async with remote.stream("GET", self.url, headers=headers) as response:
            _check_stream(response)
            log.info("webhook relay connected to %s", self.where)
            self._backoff.reset()
            decoder = SseDecoder(MAX_EVENT_BYTES, self._last_event_id)
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    await self._on_event(event, local)
                self._last_event_id = decoder.last_event_id
                if decoder.retry_ms is not None:
                    self._backoff.start_at(decoder.retry_ms / 1000)
        return "the relay closed the stream"

    async def _on_event(self, event: SseEvent, local: httpx.AsyncClient) -> None:
        if event.type != "message":
            return  # `ready` on connect, `ping` to keep the connection open
        if event.too_large:
            log.warning("webhook relay skipped an event over %d bytes", MAX_EVENT_BYTES)
            return
        try:
            # Parsing and writing a body of up to 25 MiB would hold up the event loop.
            delivery = await asyncio.to_thread(relayed_delivery, event.data)
        except MalformedEvent as error:
            log.warning("webhook relay skipped an event: %s", error)
            return
        try:
            answer = await local.post(WEBHOOK_PATH, content=delivery.body, headers=delivery.headers)
        except Exception:  # the endpoint's fault; the next delivery may fare better
            log.exception("webhook relay could not hand over a delivery")
            return
        if answer.status_code == 401:
            log.warning(
                "a relayed delivery's signature did not match: check %sWEBHOOK_SECRET; a relay "
                "that rewrites the payload's JSON can also cause this",
                ENV_PREFIX,
            )


def _check_stream(response: httpx.Response) -> None:
    """Nothing when `response` is an event stream; `_Dropped` when it may be one next time,
    `_GiveUp` when it will not."""
    status = response.status_code
    if status in (408, 429) or status >= 500:
        raise _Dropped(f"it answered {status}")
    if status != 200:
        raise _GiveUp(f"it answered {status}; set {_SETTING} to a channel's own address")
    kind = response.headers.get("content-type", "")
    if not kind.startswith("text/event-stream"):
        raise _GiveUp(f"it answered {kind or 'no content type'}, not an event stream")


@asynccontextmanager
async def relaying(url: str | None, endpoint: ASGIApp) -> AsyncIterator[WebhookRelay | None]:
    """Within the block, deliveries from the relay at `url` reach `endpoint` (none without a
    `url`); on leaving it the stream is closed."""
    if url is None:
        yield None
        return
    relay = WebhookRelay(url, endpoint)
    relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
