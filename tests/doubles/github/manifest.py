"""The App Manifest flow: the github.com form that registers the App and redirects with a
code, and the REST conversion of that code into the App's credentials.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from tests.doubles.github.rest import (
    NO_AUTH,
    _Answer,
    _Call,
    _error_body,
    _handles,
    _Incoming,
    _json_answer,
    _not_found,
    _parsed_json,
)
from tests.doubles.github.state import _State

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


class _ManifestRoutes:
    """The manifest flow's REST half: a code converted into the App's credentials."""

    state: _State
    views: _Views

    @_handles("POST", "/app-manifests/{code}/conversions", NO_AUTH)
    def convert_manifest(self, call: _Call) -> _Answer:
        registered = self.state.manifest_codes.pop(call.params["code"], None)
        if registered is None:
            raise _not_found()
        manifest, owner, kind = registered
        self.state.app_name = str(manifest.get("name") or self.state.app_name)
        self.state.callback_urls = [str(url) for url in manifest.get("callback_urls") or []]
        app = self.views.app() | {
            "name": self.state.app_name,
            "description": manifest.get("description"),
            "external_url": manifest["url"],
            "owner": self.views.user(owner, kind),
            "permissions": dict(manifest.get("default_permissions") or {}),
            "events": list(manifest.get("default_events") or []),
            "client_id": self.state.client_id,
            "client_secret": self.state.client_secret,
            "webhook_secret": self.state.webhook_secret,
            "pem": self.state.private_key_pem,
        }
        return _json_answer(201, app)


class _ManifestPages:
    """The manifest flow's web half, as github.com runs it: the form registers the App and
    redirects with a code."""

    _state: _State
    registered_manifests: list[dict[str, Any]]

    def _answer_web(self, incoming: _Incoming) -> tuple[_Answer, str | None]:
        route = _web_route(incoming.method, incoming.path)
        if route is None:
            return _json_answer(404, _error_body(404, "Not Found")), None
        # The personal flow registers the App for the signed-in user, here the payloads' alice.
        owner = (route[1], "Organization") if route[1] else ("alice", "User")
        return self._register_manifest(incoming, *owner), route[0]

    def _register_manifest(self, incoming: _Incoming, owner: str, kind: str) -> _Answer:
        form = dict(parse_qsl(incoming.body.decode("utf-8", "replace")))
        manifest = _parsed_json(form.get("manifest", "").encode())
        problem = _manifest_problem(manifest)
        if problem:
            return _Answer(400, problem.encode(), [("content-type", "text/plain; charset=utf-8")])
        self.registered_manifests.append(manifest)
        code = secrets.token_hex(10)
        self._state.manifest_codes[code] = (manifest, owner, kind)
        redirect = str(manifest["redirect_url"])
        given = {"code": code} | {k: v for k, v in incoming.query.items() if k == "state"}
        location = redirect + ("&" if "?" in redirect else "?") + urlencode(given)
        html = f'<html><body>You are being <a href="{location}">redirected</a>.</body></html>'
        headers = [("location", location), ("content-type", "text/html; charset=utf-8")]
        return _Answer(302, html.encode(), headers)


def _web_route(method: str, path: str) -> tuple[str, str | None] | None:
    """The web route's name and the organization it names, for the manifest flow's two pages."""
    if method != "POST":
        return None
    if path == "/settings/apps/new":
        return "POST /settings/apps/new", None
    found = re.fullmatch(r"/organizations/([^/]+)/settings/apps/new", path)
    if found:
        return "POST /organizations/{org}/settings/apps/new", found.group(1)
    return None


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return "The manifest field must be a JSON object."
    hook = manifest.get("hook_attributes")
    if not manifest.get("url"):
        return "The manifest needs a url."
    if not isinstance(hook, dict) or not hook.get("url"):
        return "The manifest needs hook_attributes.url."
    if not manifest.get("redirect_url"):
        return "The manifest needs a redirect_url."
    return None
