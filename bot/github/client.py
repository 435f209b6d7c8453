"""The App's clients: one signed with the App's JWT, and one per token scope (an installation's
repository and a step's permissions) signed with that scope's installation token."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, NamedTuple, TypeVar, cast

import httpx
from githubkit import AppAuthStrategy, GitHub
from githubkit.auth.base import BaseAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException, RateLimitExceeded, RequestFailed
from githubkit.retry import RetryChainDecision, RetryRateLimit, RetryServerError
from githubkit.typing import RetryDecisionFunc, RetryOption

from bot.github.auth import (
    REFRESH_MARGIN_SECONDS,
    InstallationToken,
    InstallationTokenAuth,
    TokenCache,
    TokenRefused,
    parse_expiry,
)
from bot.github.pacing import WritePacer
from bot.github.scopes import TokenScope
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
# What a person can do when GitHub will not issue an installation token.
REFUSAL_HINTS: Final = {
    401: "; check BATON_GITHUB_APP_ID and the App's private key",
    404: "; the App is no longer installed there",
    422: (
        "; the App must hold these permissions, the installation must have accepted them, "
        "and it must include the repository"
    ),
}


class GitHubTuning(NamedTuple):
    """How hard Baton leans on GitHub; tests shorten the waits."""

    write_interval: float = 1.0
    max_concurrency: int = 4
    rate_limit_retries: int = 3
    server_error_retries: int = 3
    timeout_seconds: float = 30.0
    refresh_margin: float = REFRESH_MARGIN_SECONDS


class GitHubApp:
    """Clients for one GitHub App: the App itself, and each token scope (created on first use).

    Nothing here hands out a token for a whole installation: every token is asked for one
    repository and one permission set (`TokenScope`), and GitHub enforces both.
    """

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
        self._clients: dict[TokenScope, GitHub[InstallationTokenAuth]] = {}
        self._pacers: dict[int, WritePacer] = {}

    def client(self, scope: TokenScope) -> GitHub[InstallationTokenAuth]:
        """The REST client for one scope. Its writes are paced together with every other scope
        of the same installation (GitHub's limits count per installation), apart from other
        installations'."""
        client = self._clients.get(scope)
        if client is None:
            client = self._client(InstallationTokenAuth(self.tokens, scope), self._pacer(scope))
            self._clients[scope] = client
        return client

    async def token(self, scope: TokenScope) -> str:
        """The scope's current token, for git: the same one its REST client uses."""
        return await self.tokens.token(scope)

    def _pacer(self, scope: TokenScope) -> WritePacer:
        pacer = self._pacers.get(scope.installation_id)
        if pacer is None:
            pacer = WritePacer(self.tuning.write_interval, self.tuning.max_concurrency)
            self._pacers[scope.installation_id] = pacer
        return pacer

    async def _fetch_token(self, scope: TokenScope) -> InstallationToken:
        rest = self.app_client.rest(API_VERSION)
        try:
            answer = await rest.apps.async_create_installation_access_token(
                scope.installation_id,
                repositories=[scope.repository_name],
                # githubkit types this as a TypedDict of every permission GitHub knows.
                permissions=cast(Any, scope.permissions.as_request()),
            )
        except RequestFailed as failed:
            if isinstance(failed, RateLimitExceeded) or failed.response.status_code >= 500:
                raise  # GitHub's trouble, not a refusal: the job is tried again later
            raise _refusal(scope, failed) from None
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


def _refusal(scope: TokenScope, failed: RequestFailed) -> TokenRefused:
    status = failed.response.status_code
    try:
        reason = str(failed.response.json()["message"])
    except (ValueError, KeyError, TypeError):
        reason = failed.response.text[:200]
    hint = REFUSAL_HINTS.get(status, "")
    return TokenRefused(f"GitHub answered {status} to a token request for {scope}: {reason}{hint}")


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
