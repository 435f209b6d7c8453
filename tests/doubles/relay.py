"""A loopback webhook relay speaking smee.io's event stream, driven by the test.

`GET /{channel}` with `Accept: text/event-stream` (smee.io compares the header whole) opens a
stream: `id: N` counts the events of each connection from 0, `event: ready` comes first, and a
delivery is a message without an `event:` field whose data is smee.io's JSON: the request's
headers under lower-case names, `body` (the payload as JavaScript parsed it), `query` and
`timestamp`. The test pushes deliveries to every open stream, or closes them all. Any other
path answers 404.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any, NamedTuple, Self

from starlette.types import Receive, Scope, Send

from tests.doubles.git_http import _answer_lifespan
from tests.support import serve

CHANNEL = "aBcD3fGh1jKlMn0p"
_CLOSE = None  # put on a stream's queue: end that stream


class _Stream(NamedTuple):
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | None]


class RelayDouble:
    """smee.io on loopback: `with RelayDouble() as relay:` serves channel `CHANNEL` at
    `relay.url`. `connections` holds each stream request's headers (lower-case names);
    `retry_ms`, when given, is sent as the stream's `retry:` field."""

    def __init__(self, retry_ms: int | None = None) -> None:
        self.retry_ms = retry_ms
        self.connections: list[dict[str, str]] = []
        self._streams: dict[int, _Stream] = {}
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._base = ""

    def __enter__(self) -> Self:
        self._base = self._stack.enter_context(serve(self))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close_streams()  # the server waits for open responses before it stops
        self._stack.close()
        self._base = ""

    @property
    def url(self) -> str:
        if not self._base:
            raise RuntimeError("the relay double is not serving: use it as a context manager")
        return f"{self._base}/{CHANNEL}"

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def send_delivery(self, headers: Mapping[str, str], body: bytes) -> int:
        """Relay a webhook request as smee.io does; returns how many streams it went to."""
        message: dict[str, Any] = {name.lower(): value for name, value in headers.items()}
        message |= {"body": json.loads(body), "query": {}, "timestamp": int(time.time() * 1000)}
        # JavaScript's JSON.stringify: compact, non-ASCII as is, control characters as \u00xx.
        return self.send_event(json.dumps(message, ensure_ascii=False, separators=(",", ":")))

    def send_event(self, data: str, event: str | None = None) -> int:
        """Send one event with `data` (and `event:` when given) to every open stream."""
        field = f"event: {event}\n" if event else ""
        lines = "".join(f"data: {line}\n" for line in data.split("\n"))
        return self._broadcast(f"{field}{lines}\n")

    def close_streams(self) -> None:
        """End every open stream, as smee.io does when it restarts."""
        self._broadcast(_CLOSE)

    def _broadcast(self, text: str | None) -> int:
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, text)
        return len(streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _answer_lifespan(receive, send)
            return
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        if scope["path"] != f"/{CHANNEL}":
            await _send_text(send, 404, "text/plain", "Not Found")
        elif headers.get("accept") != "text/event-stream":
            await _send_text(send, 200, "text/html; charset=utf-8", "<!doctype html><p>smee")
        else:
            await self._stream(headers, receive, send)

    async def _stream(self, headers: dict[str, str], receive: Receive, send: Send) -> None:
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            self.connections.append(headers)
            self._streams[id(stream)] = stream
        watcher = asyncio.create_task(_close_on_disconnect(receive, stream.queue))
        try:
            await self._serve_events(send, stream.queue)
        finally:
            with self._lock:
                del self._streams[id(stream)]
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _serve_events(self, send: Send, queue: asyncio.Queue[str | None]) -> None:
        start = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        opening = f"retry: {self.retry_ms}\n" if self.retry_ms is not None else ""
        text: str | None = opening + "event: ready\ndata: {}\n\n"
        count = 0
        while text is not _CLOSE:
            chunk = f"id: {count}\n{text}".encode()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            count += 1
            text = await queue.get()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close_on_disconnect(receive: Receive, queue: asyncio.Queue[str | None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    queue.put_nowait(_CLOSE)


async def _send_text(send: Send, status: int, kind: str, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
