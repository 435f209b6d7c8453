"""How an installation token reaches git: only through the environment of the one git process."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import quote

# Returns a current installation token; called again before every network operation.
TokenProvider = Callable[[], Awaitable[str]]

# GitHub takes an App installation token as the password of this user name.
TOKEN_USER = "x-access-token"
REDACTED = "[redacted]"


def basic_credentials(token: str) -> str:
    """`base64(x-access-token:TOKEN)`, the value after `Authorization: Basic`."""
    return base64.b64encode(f"{TOKEN_USER}:{token}".encode()).decode("ascii")


def token_environment(base_url: str, token: str) -> dict[str, str]:
    """Environment variables that make git send the token to `base_url`, and only there.

    Git reads them as configuration given for this process alone: nothing is written to a file,
    and the token is in no argument.
    """
    if not token:
        raise ValueError("the token provider returned an empty installation token")
    # Scoped to the GitHub base URL so the header never goes to any other host.
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"http.{base_url.rstrip('/')}/.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic_credentials(token)}",
    }


def secret_forms(token: str) -> tuple[str, ...]:
    """Every form of `token` git could echo back: as is, URL-quoted and inside Basic credentials."""
    return tuple(dict.fromkeys((token, quote(token, safe=""), basic_credentials(token))))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `[redacted]`, longest first."""
    for secret in sorted((secret for secret in secrets if secret), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
