"""Pacing of requests to GitHub, one pacer per installation client.

GitHub's secondary rate limits punish bursts of content-creating requests; its guidance is no
concurrent requests and at least a second between POST, PATCH, PUT and DELETE. githubkit's
`LocalThrottler` caps concurrency only, so this throttler also spaces the writes.

A write may wait its turn for a while (or its process be frozen meanwhile); `BEFORE_WRITE` lets
whoever runs the work veto it once its turn has come, just before it is sent.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import httpx
from githubkit.throttling import BaseThrottler

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

# Awaited before each write is sent, in the task that writes; raising stops the write. A job
# sets it so that a process whose job was taken over while it waited writes nothing late.
BEFORE_WRITE: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "before_write", default=None
)


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
                await _may_write()
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


async def _may_write() -> None:
    check = BEFORE_WRITE.get()
    if check is not None:
        await check()
