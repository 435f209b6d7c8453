"""Installation token cache and write pacing, on their own (the GitHub double covers the wire)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from itertools import pairwise

import httpx
import pytest

from bot.github.auth import InstallationToken, TokenCache, parse_expiry
from bot.github.pacing import WritePacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class CountingFetch:
    """Hands out a new token per call, each valid for `lifetime` seconds from the clock's now."""

    def __init__(self, clock: FakeClock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls: list[int] = []

    async def __call__(self, installation_id: int) -> InstallationToken:
        self.calls.append(installation_id)
        token = f"ghs_{len(self.calls)}.x-y"
        await asyncio.sleep(0)  # let concurrent callers pile up, as a real fetch would
        return InstallationToken(token, self.clock() + self.lifetime)


async def test_a_token_is_fetched_once_and_reused() -> None:
    clock = FakeClock()
    fetch = CountingFetch(clock)
    cache = TokenCache(fetch, clock=clock)
    tokens = {await cache.token(7) for _ in range(5)}
    assert tokens == {"ghs_1.x-y"}
    assert fetch.calls == [7]


async def test_a_token_near_expiry_is_replaced_before_it_runs_out() -> None:
    clock = FakeClock()
    fetch = CountingFetch(clock)
    cache = TokenCache(fetch, clock=clock, refresh_margin=300)
    first = await cache.token(7)
    clock.now += 3600 - 301  # still 301 s left: keep it
    assert await cache.token(7) == first
    clock.now += 2  # 299 s left: inside the margin
    assert await cache.token(7) == "ghs_2.x-y"
    assert fetch.calls == [7, 7]


async def test_concurrent_callers_share_one_fetch_per_installation() -> None:
    clock = FakeClock()
    fetch = CountingFetch(clock)
    cache = TokenCache(fetch, clock=clock)
    tokens = await asyncio.gather(*(cache.token(installation) for installation in [1, 2] * 10))
    assert sorted(fetch.calls) == [1, 2]
    assert len(set(tokens)) == 2


async def test_forgetting_a_refused_token_leaves_a_newer_one_alone() -> None:
    clock = FakeClock()
    cache = TokenCache(CountingFetch(clock), clock=clock)
    old = await cache.token(7)
    cache.forget(7, old)
    new = await cache.token(7)
    cache.forget(7, old)  # a second request that failed with the old token arrives late
    assert await cache.token(7) == new != old


@pytest.mark.parametrize(
    "expires_at",
    ["2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, tzinfo=UTC)],
    ids=["text", "datetime"],
)
def test_expiry_is_read_as_text_or_datetime(expires_at: str | datetime) -> None:
    assert parse_expiry(expires_at) == datetime(2026, 11, 24, 10, tzinfo=UTC).timestamp()


async def _timed_requests(pacer: WritePacer, methods: list[str]) -> list[tuple[str, float]]:
    seen: list[tuple[str, float]] = []

    async def send(method: str) -> None:
        async with pacer.async_acquire(httpx.Request(method, "https://api.github.com/x")):
            seen.append((method, time.monotonic()))

    await asyncio.gather(*(send(method) for method in methods))
    return seen


async def test_writes_are_spaced_apart_and_reads_are_not_held_back_by_them() -> None:
    interval = 0.05
    seen = await _timed_requests(WritePacer(interval), ["POST", "GET", "PATCH", "GET", "DELETE"])
    writes = [at for method, at in seen if method != "GET"]
    assert len(writes) == 3
    assert all(later - earlier >= interval for earlier, later in pairwise(writes))
    # Both reads went through while the first write's pause was still running.
    reads = [at for method, at in seen if method == "GET"]
    assert max(reads) < writes[1]


async def test_concurrency_is_capped() -> None:
    pacer = WritePacer(0.0, max_concurrency=2)
    inside = 0
    most = 0

    async def read() -> None:
        nonlocal inside, most
        async with pacer.async_acquire(httpx.Request("GET", "https://api.github.com/x")):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(read() for _ in range(6)))
    assert most == 2
