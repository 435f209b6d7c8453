"""Pacing of requests to GitHub, one pacer per installation client.

GitHub's secondary rate limits punish bursts of content-creating requests; its guidance is no
concurrent requests and at least a second between POST, PATCH, PUT and DELETE. githubkit's
`LocalThrottler` caps concurrency only, so this throttler also spaces the writes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
from githubkit.throttling import BaseThrottler

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class WritePacer(BaseThrottler):
    """At most `max_concurrency` requests at once, and writes `write_interval` seconds apart."""

    def __init__(
        self,
        write_interval: float = 1.0,
        max_concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write_interval = write_interval
        self._clock = clock
        self._concurrency = anyio.Semaphore(max_concurrency)
        self._write_turn = anyio.Lock()
        self._last_write: float | None = None

    @contextmanager
    def acquire(self, request: httpx.Request) -> Generator[None, Any, Any]:
        raise TypeError("Baton talks to GitHub with the async client only")
        yield  # pragma: no cover - makes this a generator, as the base class declares

    @asynccontextmanager
    async def async_acquire(self, request: httpx.Request) -> AsyncGenerator[None, Any]:
        async with self._concurrency:
            if request.method not in WRITE_METHODS:
                yield
                return
            async with self._write_turn:
                await self._wait_for_write_slot()
                try:
                    yield
                finally:
                    self._last_write = self._clock()

    async def _wait_for_write_slot(self) -> None:
        if self._last_write is None:
            return
        wait = self._last_write + self.write_interval - self._clock()
        if wait > 0:
            await anyio.sleep(wait)
