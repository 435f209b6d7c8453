"""Installation tokens: fetched with the App's JWT, cached, refreshed before they expire.

githubkit's own installation auth caches tokens too, but only inside its HTTP flow and for a whole
installation; Baton narrows each token to one repository and one step's permissions
(`bot.github.scopes`) and hands the same token to git, so one cache here, keyed by scope, serves
both and a 401 renews it for both.
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

from bot.github.scopes import TokenScope

if TYPE_CHECKING:
    from githubkit import GitHubCore

# GitHub's tokens live an hour; renewing five minutes early covers clock skew and long git pushes.
REFRESH_MARGIN_SECONDS = 300.0


class TokenRefused(Exception):
    """GitHub would not issue a token for a scope: the App or the installation lacks a
    permission the scope asks for, the repository is not installed, or the App's key is wrong.
    Asking again changes nothing until a person changes that."""


class InstallationToken(NamedTuple):
    value: str
    expires_at: float  # seconds since the epoch


FetchToken = Callable[[TokenScope], Awaitable[InstallationToken]]


def parse_expiry(expires_at: datetime | str) -> float:
    """GitHub's `expires_at` (a datetime, or ISO 8601 text with `Z`) as seconds since the epoch."""
    if isinstance(expires_at, str):
        expires_at = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    return expires_at.timestamp()


class TokenCache:
    """One live token per scope (installation, repository, permissions); concurrent callers of
    one scope share a single fetch, and scopes never share a token."""

    def __init__(
        self,
        fetch: FetchToken,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = REFRESH_MARGIN_SECONDS,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._tokens: dict[TokenScope, InstallationToken] = {}
        self._locks: dict[TokenScope, asyncio.Lock] = {}

    async def token(self, scope: TokenScope) -> str:
        """A token for `scope` valid for at least the refresh margin, fetched only when needed."""
        cached = self._fresh(scope)
        if cached is not None:
            return cached
        async with self._locks.setdefault(scope, asyncio.Lock()):
            cached = self._fresh(scope)
            if cached is not None:
                return cached
            fetched = await self._fetch(scope)
            self._drop_expired()
            self._tokens[scope] = fetched
            return fetched.value

    def forget(self, scope: TokenScope, token: str) -> None:
        """Drop `token` after GitHub refused it, unless a newer one already replaced it."""
        cached = self._tokens.get(scope)
        if cached is not None and cached.value == token:
            del self._tokens[scope]

    def _fresh(self, scope: TokenScope) -> str | None:
        cached = self._tokens.get(scope)
        if cached is None or cached.expires_at - self._clock() < self._refresh_margin:
            return None
        return cached.value

    def _drop_expired(self) -> None:
        # Scopes come and go with repositories; their dead tokens need not stay in memory.
        now = self._clock()
        for scope in [scope for scope, held in self._tokens.items() if held.expires_at <= now]:
            del self._tokens[scope]


@dataclass
class InstallationTokenAuth(BaseAuthStrategy):
    """githubkit auth strategy that signs each request with the scope's cached token."""

    tokens: TokenCache
    scope: TokenScope

    def get_auth_flow(self, github: GitHubCore[Any]) -> httpx.Auth:
        return _TokenFlow(self.tokens, self.scope)


@dataclass
class _TokenFlow(httpx.Auth):
    tokens: TokenCache
    scope: TokenScope
    requires_response_body: bool = field(default=False, init=False)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise TypeError("Baton talks to GitHub with the async client only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.tokens.token(self.scope)
        request.headers["Authorization"] = f"token {token}"
        response = yield request
        if response.status_code != httpx.codes.UNAUTHORIZED:
            return
        # Revoked or expired early (e.g. the clock was off): renew once and try again.
        self.tokens.forget(self.scope, token)
        request.headers["Authorization"] = f"token {await self.tokens.token(self.scope)}"
        yield request
