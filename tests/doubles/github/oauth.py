"""The OAuth web flow of a GitHub App ("Sign in with GitHub") and the REST routes a user access
token reaches: who the user is, and which of the App's installations and repositories they can
read. The double's browser is signed in as `state.browser_login`, and an App the person already
authorized sends them straight back, as GitHub does.
"""

from __future__ import annotations

import hmac
import json
import secrets
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from tests.doubles.github.rest import (
    USER_AUTH,
    _Answer,
    _Call,
    _handles,
    _Incoming,
    _json_answer,
    _not_found,
    _page,
)
from tests.doubles.github.state import _Installation, _Repository, _State

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views

AUTHORIZE_PATH = "/login/oauth/authorize"
ACCESS_TOKEN_PATH = "/login/oauth/access_token"
BAD_CODE = {
    "error": "bad_verification_code",
    "error_description": "The code passed is incorrect or expired.",
    "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code",
}
BAD_CLIENT = {
    "error": "incorrect_client_credentials",
    "error_description": "The client_id and/or client_secret passed are incorrect.",
    "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#incorrect-client-credentials",
}


def can_read(repo: _Repository, login: str) -> bool:
    """A private repository is readable by its owner and by anyone given a role on it."""
    return repo.owner.lower() == login.lower() or repo.roles.get(login.lower(), "none") != "none"


class _OAuthPages:
    """The web half, on the web host: the authorize page and the code exchange."""

    _state: _State

    def _answer_oauth(self, incoming: _Incoming) -> tuple[_Answer, str] | None:
        if incoming.method == "GET" and incoming.path == AUTHORIZE_PATH:
            return self._authorize_page(incoming.query), f"GET {AUTHORIZE_PATH}"
        if incoming.method == "POST" and incoming.path == ACCESS_TOKEN_PATH:
            return self._exchange(incoming), f"POST {ACCESS_TOKEN_PATH}"
        return None

    def _authorize_page(self, query: dict[str, str]) -> _Answer:
        if query.get("client_id") != self._state.client_id:
            return _html(404, "<h1>404</h1><p>This is not the web page you are looking for.</p>")
        registered = self._state.callback_urls
        redirect = query.get("redirect_uri") or (registered[0] if registered else "")
        if redirect not in registered:
            return _html(200, "<h1>The redirect_uri is not associated with this application.</h1>")
        login = self._state.browser_login
        if login is None or not redirect:
            return _html(200, "<h1>Sign in to GitHub</h1><p>Nobody is signed in.</p>")
        code = secrets.token_hex(10)
        self._state.oauth_codes[code] = (login, redirect)
        given = {"code": code} | ({"state": query["state"]} if "state" in query else {})
        location = redirect + ("&" if "?" in redirect else "?") + urlencode(given)
        body = (
            f'<html><body>You are being <a href="{escape(location)}">redirected</a>.</body></html>'
        )
        return _Answer(302, body.encode(), [("location", location), *_HTML])

    def _exchange(self, incoming: _Incoming) -> _Answer:
        fields = _form_or_json(incoming)
        client_ok = fields.get("client_id") == self._state.client_id and hmac.compare_digest(
            str(fields.get("client_secret", "")).encode(), self._state.client_secret.encode()
        )
        if not client_ok:
            return _token_answer(incoming, BAD_CLIENT)
        # A code works once, whatever the outcome.
        issued = self._state.oauth_codes.pop(str(fields.get("code", "")), None)
        if issued is None:
            return _token_answer(incoming, BAD_CODE)
        login, redirect = issued
        if fields.get("redirect_uri") not in (None, redirect):
            return _token_answer(incoming, BAD_CODE)
        token = "ghu_" + secrets.token_urlsafe(27)
        self._state.user_tokens[token] = login
        return _token_answer(incoming, {"access_token": token, "token_type": "bearer", "scope": ""})


class _UserRoutes:
    """REST routes a user access token reaches."""

    state: _State
    views: _Views

    @_handles("GET", "/user", USER_AUTH)
    def authenticated_user(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.user(_login(call)))

    @_handles("GET", "/user/installations", USER_AUTH)
    def user_installations(self, call: _Call) -> _Answer:
        login = _login(call)
        found = [
            installation
            for installation in sorted(self.state.installations.values(), key=lambda i: i.id)
            if self._readable(installation, login)
        ]
        page, link = _page(call, self.state.api_url, found)
        body = {
            "total_count": len(found),
            "installations": [self.views.installation(item) for item in page],
        }
        return _json_answer(200, body, link)

    @_handles("GET", "/user/installations/{installation_id}/repositories", USER_AUTH)
    def user_installation_repositories(self, call: _Call) -> _Answer:
        installation = self.state.installations.get(int(call.params["installation_id"]))
        login = _login(call)
        if installation is None or not self._readable(installation, login):
            raise _not_found()
        found = self._repositories(installation, login)
        page, link = _page(call, self.state.api_url, found)
        body = {
            "total_count": len(found),
            "repository_selection": "selected",
            "repositories": [self.views.repository(repo) for repo in page],
        }
        return _json_answer(200, body, link)

    def _readable(self, installation: _Installation, login: str) -> bool:
        return bool(self._repositories(installation, login))

    def _repositories(self, installation: _Installation, login: str) -> list[_Repository]:
        repositories = sorted(self.state.repositories.values(), key=lambda repo: repo.id)
        return [
            repo
            for repo in repositories
            if repo.installation_id == installation.id and can_read(repo, login)
        ]


def _login(call: _Call) -> str:
    assert call.user is not None, "a user route resolved no user"
    return call.user


def _form_or_json(incoming: _Incoming) -> dict[str, Any]:
    # GitHub takes the exchange's fields as a form, as JSON or in the query.
    text = incoming.body.decode("utf-8", "replace")
    fields: dict[str, Any] = dict(incoming.query)
    if incoming.headers.get("content-type", "").startswith("application/json"):
        parsed = json.loads(text or "{}")
        return fields | (parsed if isinstance(parsed, dict) else {})
    return fields | dict(parse_qsl(text))


def _token_answer(incoming: _Incoming, body: dict[str, str]) -> _Answer:
    # Errors are 200 too; without `Accept: application/json` GitHub answers a form-encoded body.
    if "application/json" in incoming.headers.get("accept", ""):
        return _json_answer(200, body)
    return _Answer(
        200,
        urlencode(body).encode(),
        [("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
    )


_HTML = [("content-type", "text/html; charset=utf-8")]


def _html(status: int, body: str) -> _Answer:
    return _Answer(status, f"<html><body>{body}</body></html>".encode(), list(_HTML))
