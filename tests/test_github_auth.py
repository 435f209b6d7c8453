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
from bot.github.scopes import EXECUTE, PLAN, Permissions, TokenScope

WIDGETS = TokenScope(7, "octo-org/widgets", PLAN)


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
        self.calls: list[TokenScope] = []

    async def __call__(self, scope: TokenScope) -> InstallationToken:
        self.calls.append(scope)
        token = f"ghs_{len(self.calls)}.x-y"
        await asyncio.sleep(0)  # let concurrent callers pile up, as a real fetch would
        return InstallationToken(token, self.clock() + self.lifetime)


async def test_a_token_is_fetched_once_and_reused() -> None:
    clock = FakeClock()
    fetch = CountingFetch(clock)
    cache = TokenCache(fetch, clock=clock)
    tokens = {await cache.token(WIDGETS) for _ in range(5)}
    assert tokens == {"ghs_1.x-y"}
    assert fetch.calls == [WIDGETS]


async def test_a_token_near_expiry_is_replaced_before_it_runs_out() -> None:
    clock = FakeClock()
    fetch = CountingFetch(clock)
    cache = TokenCache(fetch, clock=clock, refresh_margin=300)
    first = await cache.token(WIDGETS)
    clock.now += 3600 - 301  # still 301 s left: keep it
    assert await cache.token(WIDGETS) == first
    clock.now += 2  # 299 s left: inside the margin
    assert await cache.token(WIDGETS) == "ghs_2.x-y"
    assert fetch.calls == [WIDGETS, WIDGETS]


# Each differs from WIDGETS in one part of the scope: installation, repository, permissions.
OTHER_SCOPES = [
    TokenScope(8, "octo-org/widgets", PLAN),
    TokenScope(7, "octo-org/gadgets", PLAN),
    TokenScope(7, "octo-org/widgets", EXECUTE),
    TokenScope(7, "octo-org/widgets", Permissions(contents="read", issues="write")),
]


async def test_concurrent_callers_share_one_fetch_per_scope_and_scopes_share_no_token() -> None:
    clock = FakeClock()
    fetch = CountingFetch(clock)
    cache = TokenCache(fetch, clock=clock)
    scopes = [WIDGETS, *OTHER_SCOPES[:3]]
    tokens = await asyncio.gather(*(cache.token(scope) for scope in scopes * 10))
    assert sorted(map(str, fetch.calls)) == sorted(map(str, scopes))
    first_round = tokens[: len(scopes)]
    assert tokens == first_round * 10
    assert len(set(first_round)) == len(scopes)
    # The same permissions spelled anew are the same scope, and get the cached token.
    assert await cache.token(OTHER_SCOPES[3]) == first_round[0]


async def test_forgetting_a_refused_token_leaves_a_newer_one_and_other_scopes_alone() -> None:
    clock = FakeClock()
    cache = TokenCache(CountingFetch(clock), clock=clock)
    old = await cache.token(WIDGETS)
    other = await cache.token(OTHER_SCOPES[2])
    cache.forget(WIDGETS, old)
    new = await cache.token(WIDGETS)
    cache.forget(WIDGETS, old)  # a second request that failed with the old token arrives late
    cache.forget(OTHER_SCOPES[2], old)  # a refusal names the scope it was for
    assert await cache.token(WIDGETS) == new != old
    assert await cache.token(OTHER_SCOPES[2]) == other


def test_a_scope_needs_an_owner_and_a_repository() -> None:
    for wrong in ["widgets", "octo-org/", "/widgets", "octo-org/widgets/extra"]:
        with pytest.raises(ValueError, match="'owner/name'"):
            TokenScope(7, wrong, PLAN)
    assert TokenScope(7, "octo-org/widgets", PLAN).repository_name == "widgets"
    assert str(PLAN) == "contents:read, issues:write, metadata:read"


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
