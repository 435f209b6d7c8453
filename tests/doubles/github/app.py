"""The App, its installations and their tokens: how GitHub renders them, the routes that need
the App's JWT, and the checks of that JWT.
"""

from __future__ import annotations

import functools
import hashlib
import random
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.doubles.github.rest import (
    APP_AUTH,
    _Answer,
    _ApiError,
    _Call,
    _handles,
    _invalid_request,
    _json_answer,
    _not_found,
    _page,
)
from tests.doubles.github.state import (
    ACCESS_LEVELS,
    APP_EVENTS,
    APP_PERMISSIONS,
    JWT_CLOCK_SKEW,
    JWT_MAX_LIFETIME,
    KNOWN_ACCOUNTS,
    NOT_GRANTED,
    NOT_IN_INSTALLATION,
    IssuedToken,
    _at_least,
    _Installation,
    _iso,
    _node_id,
    _Repository,
    _State,
    _utc_now,
)

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


@functools.cache
def _public_key(private_key_pem: str) -> rsa.RSAPublicKey:
    key = load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key()


def _new_token() -> str:
    # Real tokens change format now and then; a random length and alphabet keeps clients honest.
    return "ghs_" + secrets.token_urlsafe(96)[: random.randint(36, 120)]


class _AccountViews:
    """Accounts, the App and its installations as the REST API renders them."""

    def __init__(self, state: _State) -> None:
        self.state = state

    @property
    def web(self) -> str:
        return self.state.web_url

    @property
    def api(self) -> str:
        return self.state.api_url

    def user(self, login: str, kind: str = "User") -> dict[str, Any]:
        number, node_id, kind = KNOWN_ACCOUNTS.get(login, self._made_up_account(login, kind))
        api_user = f"{self.api}/users/{login}"
        html = f"{self.web}/apps/{login.removesuffix('[bot]')}" if kind == "Bot" else None
        return {
            "login": login,
            "id": number,
            "node_id": node_id,
            "avatar_url": f"{self.web}/avatars/u/{number}?v=4",
            "gravatar_id": "",
            "url": api_user,
            "html_url": html or f"{self.web}/{login}",
            "followers_url": f"{api_user}/followers",
            "following_url": f"{api_user}/following{{/other_user}}",
            "gists_url": f"{api_user}/gists{{/gist_id}}",
            "starred_url": f"{api_user}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api_user}/subscriptions",
            "organizations_url": f"{api_user}/orgs",
            "repos_url": f"{api_user}/repos",
            "events_url": f"{api_user}/events{{/privacy}}",
            "received_events_url": f"{api_user}/received_events",
            "type": kind,
            "user_view_type": "public",
            "site_admin": False,
        }

    def _made_up_account(self, login: str, kind: str) -> tuple[int, str, str]:
        number = 10_000_000 + int(hashlib.sha256(login.encode()).hexdigest()[:8], 16) % 90_000_000
        kind = "Bot" if login.endswith("[bot]") else kind
        prefix = {"User": "U", "Organization": "O", "Bot": "BOT"}[kind]
        return number, _node_id(prefix, number), kind

    def organization(self, login: str) -> dict[str, Any]:
        return self.user(login, "Organization")

    def app(self) -> dict[str, Any]:
        state = self.state
        return {
            "id": state.app_id,
            "slug": state.app_slug,
            "node_id": _node_id("A", state.app_id),
            "client_id": f"Iv23li{state.app_id:014d}",
            "owner": self.organization(state.app_owner),
            "name": state.app_name,
            "description": "Plans the work on a labelled issue and opens a draft pull request.",
            "external_url": f"{self.web}/apps/{state.app_slug}",
            "html_url": f"{self.web}/apps/{state.app_slug}",
            "created_at": state.created_at,
            "updated_at": state.created_at,
            "permissions": dict(APP_PERMISSIONS),
            "events": list(APP_EVENTS),
            "installations_count": len(state.installations),
        }

    def installation(self, installation: _Installation) -> dict[str, Any]:
        account = self.organization(installation.account)
        return {
            "id": installation.id,
            "client_id": f"Iv23li{self.state.app_id:014d}",
            "account": account,
            "repository_selection": "selected",
            "access_tokens_url": f"{self.api}/app/installations/{installation.id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": (
                f"{self.web}/organizations/{installation.account}"
                f"/settings/installations/{installation.id}"
            ),
            "app_id": self.state.app_id,
            "app_slug": self.state.app_slug,
            "target_id": account["id"],
            "target_type": account["type"],
            "permissions": dict(APP_PERMISSIONS),
            "events": list(APP_EVENTS),
            "created_at": installation.created_at,
            "updated_at": installation.created_at,
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "suspended_by": None,
            "suspended_at": None,
        }

    def actor_app(self, login: str) -> dict[str, Any] | None:
        return self.app() if login == self.state.bot_login else None


class _AppRoutes:
    """The App's routes: itself, its installations and their tokens."""

    state: _State
    views: _Views

    @_handles("GET", "/app", APP_AUTH)
    def get_app(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.app())

    @_handles("GET", "/app/installations", APP_AUTH)
    def list_installations(self, call: _Call) -> _Answer:
        installations = sorted(self.state.installations.values(), key=lambda found: found.id)
        page, link = _page(call, self.state.api_url, installations)
        return _json_answer(200, [self.views.installation(found) for found in page], link)

    @_handles("GET", "/app/installations/{installation_id}", APP_AUTH)
    def installation(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.installation(self._installation(call)))

    @_handles("POST", "/app/installations/{installation_id}/access_tokens", APP_AUTH)
    def create_token(self, call: _Call) -> _Answer:
        """A token for the installation, narrowed to the `repositories` (names) or
        `repository_ids` and the `permissions` the body asks for, as GitHub narrows it."""
        installation = self._installation(call)
        fields = call.fields()
        repositories = self._token_repositories(installation, fields)
        permissions = _token_permissions(fields.get("permissions"))
        expires_at = _utc_now() + self.state.token_lifetime
        ids = None if repositories is None else frozenset(repo.id for repo in repositories)
        issued = IssuedToken(_new_token(), installation.id, expires_at, ids, permissions)
        self.state.tokens[issued.token] = issued
        self.state.tokens_issued.append(issued)
        body: dict[str, Any] = {
            "token": issued.token,
            "expires_at": _iso(expires_at),
            "permissions": dict(permissions),
            "repository_selection": "all" if repositories is None else "selected",
        }
        if repositories is not None:
            body["repositories"] = [self.views.repository(repo) for repo in repositories]
        return _json_answer(201, body)

    def _token_repositories(
        self, installation: _Installation, fields: Mapping[str, Any]
    ) -> list[_Repository] | None:
        """The repositories a token request names, or None when it names none (all of them)."""
        names, ids = fields.get("repositories") or [], fields.get("repository_ids") or []
        if not _list_of(names, str) or not _list_of(ids, int):
            raise _invalid_request("'repositories' takes names and 'repository_ids' numbers.")
        if not names and not ids:
            return None
        held = [
            repo
            for repo in self.state.repositories.values()
            if repo.installation_id == installation.id
        ]
        by_name = {repo.name.lower(): repo for repo in held}
        by_id = {repo.id: repo for repo in held}
        wanted = [by_name.get(name.lower()) for name in names] + [by_id.get(i) for i in ids]
        found = [repo for repo in wanted if repo is not None]
        if len(found) != len(wanted):
            raise _ApiError(422, NOT_IN_INSTALLATION)
        return list({repo.id: repo for repo in found}.values())

    @_handles("GET", "/repos/{owner}/{repo}/installation", APP_AUTH)
    def repo_installation(self, call: _Call) -> _Answer:
        found = self.state.installations[call.repo.installation_id]
        return _json_answer(200, self.views.installation(found))

    def _installation(self, call: _Call) -> _Installation:
        found = self.state.installations.get(call.int_param("installation_id"))
        if found is None:
            raise _not_found()
        return found


def _token_permissions(asked: Any) -> dict[str, str]:
    """What a token request's `permissions` grant: the App's own when it names none. GitHub
    refuses anything beyond the App's with 422, and adds metadata:read to every token."""
    if asked is None:
        return dict(APP_PERMISSIONS)
    if not isinstance(asked, dict) or not all(level in ACCESS_LEVELS for level in asked.values()):
        raise _invalid_request("'permissions' maps a permission to 'read' or 'write'.")
    for name, level in asked.items():
        granted = APP_PERMISSIONS.get(name)
        if granted is None or not _at_least(granted, level):
            raise _ApiError(422, NOT_GRANTED)
    return {"metadata": "read", **asked}


def _list_of(value: Any, kind: type) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, kind) and not isinstance(item, bool) for item in value
    )


def _credential(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """The scheme (lower case) and value of `Authorization`, or None without one."""
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    return (scheme.lower(), value.strip()) if value.strip() else None


def _jwt_problem(token: str, state: _State) -> str | None:
    """Why GitHub would refuse `token` as the App's JWT, or None when it is good."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return "A JSON web token could not be decoded"
    if header.get("alg") != "RS256":
        return f"A JSON web token could not be decoded: it is signed with {header.get('alg')}"
    if str(claims.get("iss")) != str(state.app_id):
        issuer = claims.get("iss")
        return f"'Issuer' claim ('iss') must be this App's id {state.app_id}, not {issuer!r}"
    try:
        jwt.decode(
            token,
            _public_key(state.private_key_pem),
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "verify_iss": False},
        )
    except jwt.PyJWTError:
        return "A JSON web token could not be decoded: the signature does not match the App's key"
    return _jwt_time_problem(claims.get("iat"), claims.get("exp"), time.time())


def _jwt_time_problem(issued_at: Any, expires: Any, now: float) -> str | None:
    if not _is_number(issued_at) or issued_at > now + JWT_CLOCK_SKEW:
        return (
            "'Issued at' claim ('iat') must be an Integer representing the time that the "
            "assertion was issued (no later than now)"
        )
    if not _is_number(expires) or expires <= now:
        return (
            "'Expiration time' claim ('exp') must be a numeric value representing the future "
            "time at which the assertion expires"
        )
    if expires - issued_at > JWT_MAX_LIFETIME:
        return "'Expiration time' claim ('exp') is too far in the future (over 10 minutes)"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
