"""The App's clients: one signed with the App's JWT, one per installation with its token."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Final, NamedTuple, TypeVar

import httpx
from githubkit import AppAuthStrategy, GitHub
from githubkit.auth.base import BaseAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException, RequestFailed
from githubkit.retry import RetryChainDecision, RetryRateLimit, RetryServerError
from githubkit.typing import RetryDecisionFunc, RetryOption

from bot.github.auth import (
    REFRESH_MARGIN_SECONDS,
    InstallationToken,
    InstallationTokenAuth,
    TokenCache,
    parse_expiry,
)
from bot.github.pacing import WritePacer
from bot.settings import Settings, SettingsError

# Every supported GitHub Enterprise Server release accepts this REST API version.
API_VERSION: Final = "2022-11-28"
USER_AGENT = "baton-bot"

MINIMUM_RETRY_WAIT = timedelta(seconds=1)
# Sent twice, these leave GitHub as sending them once does.
REPEATABLE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
# POSTs that are too: a new installation token leaves nothing a person sees, and GitHub
# answers a repeated reaction with the one it already has.
REPEATABLE_POSTS: Final = re.compile(r".*/(app/installations/\d+/access_tokens|reactions)")
AuthT = TypeVar("AuthT", bound=BaseAuthStrategy)


class GitHubTuning(NamedTuple):
    """How hard Baton leans on GitHub; tests shorten the waits."""

    write_interval: float = 1.0
    max_concurrency: int = 4
    rate_limit_retries: int = 3
    server_error_retries: int = 3
    timeout_seconds: float = 30.0
    refresh_margin: float = REFRESH_MARGIN_SECONDS


class GitHubApp:
    """Clients for one GitHub App: the App itself, and each installation (created on first use)."""

    def __init__(
        self,
        settings: Settings,
        tuning: GitHubTuning | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.github_app_id is None:
            raise SettingsError("BATON_GITHUB_APP_ID is needed to talk to GitHub")
        self.settings = settings
        self.tuning = tuning or GitHubTuning()
        auth = AppAuthStrategy(settings.github_app_id, settings.private_key_pem())
        self.app_client = self._client(auth, WritePacer(0.0, self.tuning.max_concurrency))
        self.tokens = TokenCache(self._fetch_token, clock, self.tuning.refresh_margin)
        self._installations: dict[int, GitHub[InstallationTokenAuth]] = {}

    def installation(self, installation_id: int) -> GitHub[InstallationTokenAuth]:
        """The client for one installation; its writes are paced apart from other installations'."""
        client = self._installations.get(installation_id)
        if client is None:
            pacer = WritePacer(self.tuning.write_interval, self.tuning.max_concurrency)
            client = self._client(InstallationTokenAuth(self.tokens, installation_id), pacer)
            self._installations[installation_id] = client
        return client

    async def installation_token(self, installation_id: int) -> str:
        """The installation's current token, for git; the same one its REST client uses."""
        return await self.tokens.token(installation_id)

    async def _fetch_token(self, installation_id: int) -> InstallationToken:
        rest = self.app_client.rest(API_VERSION)
        answer = await rest.apps.async_create_installation_access_token(installation_id)
        token = answer.parsed_data
        return InstallationToken(token.token, parse_expiry(token.expires_at))

    def _client(self, auth: AuthT, pacer: WritePacer) -> GitHub[AuthT]:
        return GitHub(
            auth,
            base_url=self.settings.github_api_url + "/",
            user_agent=USER_AGENT,
            timeout=self.tuning.timeout_seconds,
            # GitHub marks answers cacheable for a minute; Baton must see its own writes at once.
            http_cache=False,
            throttler=pacer,
            auto_retry=_never_zero(
                RetryChainDecision(
                    RetryRateLimit(self.tuning.rate_limit_retries),
                    _only_repeatable(RetryServerError(self.tuning.server_error_retries)),
                )
            ),
            # githubkit's default cache is process-wide; each App keeps its own JWT.
            cache_strategy=MemCacheStrategy(),
        )


def _only_repeatable(decide: RetryDecisionFunc) -> RetryDecisionFunc:
    """GitHub may have made the comment, check run or pull request it then answered 5xx for:
    such a POST is not sent again. The error reaches the job, whose next attempt finds what
    was made (by marker, branch or commit) before making it."""

    def decision(error: GitHubException, retry_count: int) -> RetryOption:
        if isinstance(error, RequestFailed) and not _repeatable(error.request):
            return RetryOption(False)
        return decide(error, retry_count)

    return decision


def _repeatable(request: httpx.Request) -> bool:
    if request.method in REPEATABLE_METHODS:
        return True
    return request.method == "POST" and REPEATABLE_POSTS.fullmatch(request.url.path) is not None


def _never_zero(decide: RetryDecisionFunc) -> RetryDecisionFunc:
    """githubkit waits a whole minute when told to wait zero (`Retry-After: 0`, a past reset)."""

    def decision(error: GitHubException, retry_count: int) -> RetryOption:
        option = decide(error, retry_count)
        if option.do_retry and not option.retry_after:
            return RetryOption(True, MINIMUM_RETRY_WAIT)
        return option

    return decision
