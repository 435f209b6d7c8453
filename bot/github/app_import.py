"""Importing a GitHub App that already exists: its id, private key and webhook secret as the
operator types them, checked here and then with GitHub before anything is saved.

This is the way on when the App Manifest flow created an App but Baton could not take its
credentials (the code exchange failed, Baton restarted in between), or when the App was
registered by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from githubkit import AppAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import GitHubException, RequestFailed
from pydantic import BaseModel, ConfigDict, ValidationError

from bot.github.client import API_VERSION, USER_AGENT
from bot.github.manifest import (
    EXCHANGE_TIMEOUT_SECONDS,
    ChoiceError,
    CreatedApp,
    GitHubSite,
    SetupError,
    github_site,
    relay_address,
)
from bot.settings import Settings


class AppNotConfirmed(SetupError):
    """GitHub did not confirm the typed App; nothing was written."""

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # GitHub or the network failed, not the credentials


@dataclass(frozen=True)
class TypedApp:
    """An existing App's credentials as typed on the import page, checked for form."""

    site: GitHubSite
    app_id: int
    private_key: str
    webhook_secret: str
    relay_url: str | None


class AppAnswer(BaseModel):
    """The fields of `GET /app` Baton reads."""

    model_config = ConfigDict(extra="ignore")

    id: int
    name: str
    html_url: str


def check_typed(
    settings: Settings,
    *,
    github_url: str,
    app_id: str,
    private_key: str,
    webhook_secret: str,
    relay_url: str = "",
) -> TypedApp:
    """The import page's fields, checked; `ChoiceError` says which one is wrong and why."""
    return TypedApp(
        site=github_site(github_url, settings),
        app_id=_app_id(app_id),
        private_key=_rsa_private_key(private_key),
        webhook_secret=_webhook_secret(webhook_secret),
        relay_url=relay_address(relay_url),
    )


def _app_id(typed: str) -> int:
    text = typed.strip()
    if not text.isascii() or not text.isdigit() or int(text) <= 0:
        raise ChoiceError(
            "the App id must be a positive whole number: the App ID on the App's settings page"
        )
    return int(text)


def _rsa_private_key(typed: str) -> str:
    # A textarea sends CRLF line ends; the key is saved as the .pem file GitHub gave.
    pem = typed.replace("\r\n", "\n").strip() + "\n"
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, RSAPrivateKey):
        raise ChoiceError(
            "the private key must be the whole .pem file GitHub made for the App, from its "
            "-----BEGIN RSA PRIVATE KEY----- line to its END line (generate one under "
            "Private keys in the App's settings)"
        )
    return pem


def _webhook_secret(typed: str) -> str:
    secret = typed.strip()
    if not secret:
        raise ChoiceError(
            "type the App's webhook secret; if it is lost, set a new one in the App's settings "
            "and type that"
        )
    return secret


async def confirm_with_github(typed: TypedApp) -> CreatedApp:
    """The App as GitHub describes it to a token signed with the typed key (`GET /app`);
    `AppNotConfirmed` when GitHub refuses the key or cannot be asked."""
    answer = await describe_app(typed.site.api_url, typed.app_id, typed.private_key)
    secrets = {"pem": typed.private_key, "webhook_secret": typed.webhook_secret}
    return CreatedApp.model_validate(answer.model_dump() | secrets)


async def describe_app(api_url: str, app_id: int, private_key: str) -> AppAnswer:
    """`GET /app` with a token signed by `private_key` for `app_id`: proof that the id and the
    key belong together. `AppNotConfirmed` when GitHub refuses them or cannot be asked."""
    github = GitHub(
        AppAuthStrategy(app_id, private_key),
        base_url=api_url + "/",
        user_agent=USER_AGENT,
        timeout=EXCHANGE_TIMEOUT_SECONDS,
        http_cache=False,
        auto_retry=False,  # a person is waiting: one try, then say why
        # githubkit's default cache is process-wide: a token signed with a key typed earlier
        # for the same App id would be used again.
        cache_strategy=MemCacheStrategy(),
    )
    try:
        response = await github.rest(API_VERSION).apps.async_get_authenticated()
    except RequestFailed as failure:
        raise _refused(api_url, app_id, failure.response.status_code) from None
    except GitHubException as error:
        raise AppNotConfirmed(
            f"could not reach GitHub at {api_url} ({type(error).__name__}); check the address "
            "and this machine's network, then try again",
            unreachable=True,
        ) from None
    return _described(api_url, app_id, response.content)


def _refused(api_url: str, app_id: int, status: int) -> AppNotConfirmed:
    if status in (401, 403, 404):
        return AppNotConfirmed(
            f"GitHub at {api_url} did not accept a token signed with this private key "
            f"for App id {app_id} (HTTP {status}): check the App id, and that the key is "
            "one of that App's private keys",
            unreachable=False,
        )
    return AppNotConfirmed(
        f"GitHub at {api_url} answered HTTP {status} when asked about App id "
        f"{app_id}; wait a minute, then try again",
        unreachable=True,
    )


def _described(api_url: str, app_id: int, body: bytes) -> AppAnswer:
    try:
        answer = AppAnswer.model_validate_json(body)
        if answer.id != app_id:
            raise ValueError("another App's id")
    except (ValidationError, ValueError):
        raise AppNotConfirmed(
            f"GitHub at {api_url} did not describe App id {app_id} as expected; "
            "check the GitHub address and the App id",
            unreachable=True,
        ) from None
    return answer
