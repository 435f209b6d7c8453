"""Installation tokens: fetched with the App's JWT, cached, refreshed before they expire.

githubkit's own installation auth caches tokens too, but only inside its HTTP flow; Baton also
hands the same token to git, so one cache here serves both and a 401 renews it for both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
from githubkit.auth.base import BaseAuthStrategy

if TYPE_CHECKING:
    from githubkit import GitHubCore

# GitHub's tokens live an hour; renewing five minutes early covers clock skew and long git pushes.
REFRESH_MARGIN_SECONDS = 300.0


class InstallationToken(NamedTuple):
    value: str
    expires_at: float  # seconds since the epoch


FetchToken = Callable[[int], Awaitable[InstallationToken]]


def parse_expiry(expires_at: datetime | str) -> float:
    """GitHub's `expires_at` (a datetime, or ISO 8601 text with `Z`) as seconds since the epoch."""
    if isinstance(expires_at, str):
        expires_at = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    return expires_at.timestamp()


class TokenCache:
    """One live token per installation; concurrent callers share a single fetch."""

    def __init__(
        self,
        fetch: FetchToken,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._tokens: dict[int, InstallationToken] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def token(self, installation_id: int) -> str:
        """A token valid for at least the refresh margin, fetched only when needed."""
        cached = self._fresh(installation_id)
        if cached is not None:
            return cached
        async with self._locks.setdefault(installation_id, asyncio.Lock()):
            cached = self._fresh(installation_id)
            if cached is not None:
                return cached
            fetched = await self._fetch(installation_id)
            self._tokens[installation_id] = fetched
            return fetched.value

    def forget(self, installation_id: int, token: str) -> None:
        """Drop `token` after GitHub refused it, unless a newer one already replaced it."""
        cached = self._tokens.get(installation_id)
        if cached is not None and cached.value == token:
            del self._tokens[installation_id]

    def _fresh(self, installation_id: int) -> str | None:
        cached = self._tokens.get(installation_id)
        if cached is None or cached.expires_at - self._clock() < self._refresh_margin:
            return None
        return cached.value


@dataclass
class InstallationTokenAuth(BaseAuthStrategy):
    """githubkit auth strategy that signs each request with the installation's cached token."""

    tokens: TokenCache
    installation_id: int

    def get_auth_flow(self, github: GitHubCore[Any]) -> httpx.Auth:
        return _TokenFlow(self.tokens, self.installation_id)


@dataclass
class _TokenFlow(httpx.Auth):
    tokens: TokenCache
    installation_id: int
    requires_response_body: bool = field(default=False, init=False)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise TypeError("Baton talks to GitHub with the async client only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.tokens.token(self.installation_id)
        request.headers["Authorization"] = f"token {token}"
        response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED:
            return
        # Revoked or expired early (e.g. the clock was off): renew once and try again.
        self.tokens.forget(self.installation_id, token)
        request.headers["Authorization"] = f"token {await self.tokens.token(self.installation_id)}"
        yield request
