"""'Sign in with GitHub' through the App's own OAuth client: the address that asks GitHub, and
what a returning person's code tells Baton (who they are, which repositories they can read).

Visibility comes from the user's token: `GET /user/installations` and, for each, `GET
/user/installations/{id}/repositories`. GitHub lists there exactly the repositories that both the
App is installed on and the person can read, so it is the whole answer (runs exist only for the
App's repositories) in one call per installation and a page per hundred repositories, however many
runs there are; asking `GET /repos/{owner}/{repo}` per run's repository would cost a call per
repository on every refresh. The token is used at sign-in and then dropped: nothing keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from githubkit import GitHub, OAuthWebAuthStrategy
from githubkit.exception import AuthExpiredError, GitHubException, RequestError, RequestFailed

from bot.github.client import API_VERSION, USER_AGENT
from bot.settings import Settings

SIGN_IN_TIMEOUT_SECONDS = 20.0
PER_PAGE = 100


class SignInFailed(Exception):
    """GitHub did not sign the person in; the message says why, for the sign-in page."""


@dataclass(frozen=True)
class Person:
    """Someone GitHub signed in, and the repositories (`owner/name`, lowercase) they can read."""

    login: str
    repositories: frozenset[str]


@dataclass(frozen=True)
class OAuthClient:
    """The App's OAuth client on the configured GitHub (github.com or Enterprise Server)."""

    client_id: str
    client_secret: str
    web_url: str
    api_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> OAuthClient | None:
        """None when the App's client id or secret is not configured."""
        if not settings.github_client_id or settings.github_client_secret is None:
            return None
        return cls(
            settings.github_client_id,
            settings.github_client_secret.get_secret_value(),
            settings.github_url.rstrip("/"),
            settings.github_api_url.rstrip("/"),
        )

    def authorize_url(self, state: str) -> str:
        """Where the browser goes to be asked by GitHub; `state` comes back with the code. No
        `redirect_uri`: GitHub then sends the person to the App's registered callback, the one
        address it would accept anyway, whatever Host this request named."""
        query = {"client_id": self.client_id, "state": state}
        return f"{self.web_url}/login/oauth/authorize?{urlencode(query)}"

    async def sign_in(self, code: str) -> Person:
        """Exchange `code` (once only) and read who the person is and what they can read."""
        auth = OAuthWebAuthStrategy(self.client_id, self.client_secret, code)
        try:
            # githubkit exchanges the code (at the API host's root: the web host) on the first
            # request and signs the next ones with the user's token.
            async with self._github(auth) as github:
                login = (await github.rest(API_VERSION).users.async_get_authenticated()).json()
                repositories = await _readable_repositories(github)
        except GitHubException as error:
            raise SignInFailed(_why(error)) from None
        return Person(str(login["login"]), repositories)

    def _github(self, auth: Any) -> GitHub[Any]:
        return GitHub(
            auth,
            base_url=self.api_url + "/",
            user_agent=USER_AGENT,
            timeout=SIGN_IN_TIMEOUT_SECONDS,
            http_cache=False,
            auto_retry=False,
        )


def _why(error: GitHubException) -> str:
    # A refused code surfaces from inside the request's auth flow, wrapped in a RequestError.
    cause = error.exc if isinstance(error, RequestError) else error
    if isinstance(cause, AuthExpiredError):
        return "GitHub refused the sign-in code: it was used or expired"
    if isinstance(error, RequestFailed):
        return f"GitHub answered {error.response.status_code} while signing in"
    return f"GitHub could not be reached ({type(cause).__name__})"


async def _readable_repositories(github: GitHub[Any]) -> frozenset[str]:
    rest = github.rest(API_VERSION)
    installations = github.rest.paginate(
        rest.apps.async_list_installations_for_authenticated_user,
        map_func=lambda answer: answer.parsed_data.installations,
        per_page=PER_PAGE,
    )
    names: set[str] = set()
    async for installation in installations:
        repositories = github.rest.paginate(
            rest.apps.async_list_installation_repos_for_authenticated_user,
            map_func=lambda answer: answer.parsed_data.repositories,
            installation_id=installation.id,
            per_page=PER_PAGE,
        )
        names.update([repo.full_name.lower() async for repo in repositories])
    return frozenset(names)
