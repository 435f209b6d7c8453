"""Who may use the operator's pages: setup mode and run data.

Where a request seems to come from proves nothing. Behind nginx's default `proxy_pass` a
stranger's request arrives from 127.0.0.1 with `Host` rewritten to the upstream and no
`X-Forwarded-*` header: byte for byte what the operator's own `curl` on this machine sends. So no
rule about addresses or headers can tell the two apart, and none is used. A request is the
operator's only when it carries something only the operator has:
- the one-time code Baton makes at start (`secrets`, kept in memory only) and prints on its
  terminal and in its log as a sign-in link, `http://HOST:PORT/?code=…` (it also works on
  `/runs`). Opening the link opens a session: an HttpOnly cookie, then a
  redirect to the same page without the code;
- for scripts, `Authorization: Bearer <BATON_DASHBOARD_TOKEN>` (checked in `webhooks.deps`).

The code is good until Baton stops; a restart makes a new one and forgets every session. These
sessions live in this process's memory on purpose: they are worth no more than the code, which
dies with the process. A team signs in with GitHub instead (`webhooks.sign_in`), whose sessions
are kept in the database and see only the runs of repositories each person can read.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from html import escape
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.middleware.base import RequestResponseEndpoint

from webhooks.pages import PAGE_HEADERS, page

log = logging.getLogger(__name__)

SIGN_IN_PARAMETER = "code"
SESSION_COOKIE = "baton_session"
# The pages a printed link opens; `/setup/callback` is not one: GitHub's own `code` arrives there.
SIGN_IN_PATHS = frozenset({"/", "/runs"})
SESSION_LIFETIME_SECONDS = 12 * 3600.0
# Only the code's holder opens sessions; this bounds what many sign-ins can take.
MAX_SESSIONS = 100


class OperatorAccess:
    """This process's one-time code and the sessions opened with it."""

    def __init__(
        self,
        *,
        setup_mode: bool,
        code: str | None = None,
        lifetime: float = SESSION_LIFETIME_SECONDS,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.code = code if code is not None else secrets.token_urlsafe(32)
        self.setup_mode = setup_mode
        self.lifetime = lifetime
        self._limit = limit
        self._clock = clock
        self._sessions: OrderedDict[str, float] = OrderedDict()  # session id -> expiry

    @property
    def same_site(self) -> Literal["lax", "strict"]:
        """The session cookie's SameSite: Lax in setup mode, where GitHub sends the browser back
        to the callback from its own site (a Strict cookie would not come along), else Strict."""
        return "lax" if self.setup_mode else "strict"

    def sign_in_link(self, base_url: str) -> str:
        """The link that signs the operator in: the home page, setup or the checklist."""
        return f"{base_url.rstrip('/')}/?{SIGN_IN_PARAMETER}={self.code}"

    def code_matches(self, given: str) -> bool:
        """True only for this process's code; compared in constant time."""
        return hmac.compare_digest(given.encode(), self.code.encode())

    def open_session(self) -> str:
        """A new session's secret, for its cookie; past the limit the oldest session closes."""
        self._forget_expired()
        while len(self._sessions) >= self._limit:
            self._sessions.popitem(last=False)
        secret = secrets.token_urlsafe(32)
        self._sessions[_session_id(secret)] = self._clock() + self.lifetime
        return secret

    def session_of(self, secret: str | None) -> str | None:
        """The id of the open session whose secret is `secret`, else None. The id is not the
        secret: pages may remember it (setup states do) without holding the cookie."""
        if not secret:
            return None
        self._forget_expired()
        session = _session_id(secret)
        return session if session in self._sessions else None

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._sessions and next(iter(self._sessions.values())) <= now:
            self._sessions.popitem(last=False)


def _session_id(secret: str) -> str:
    # Sessions are found by a digest of the cookie, so a lookup's timing tells nothing of a secret.
    return hashlib.sha256(secret.encode()).hexdigest()


def operator_access(request: Request) -> OperatorAccess:
    access: OperatorAccess = request.app.state.operator
    return access


def operator_session(request: Request) -> str | None:
    """The operator's session id when the request carries a live session cookie, else None."""
    return operator_access(request).session_of(request.cookies.get(SESSION_COOKIE))


OperatorSession = Annotated[str | None, Depends(operator_session)]


def add_sign_in_links(app: FastAPI, access: OperatorAccess) -> None:
    """Serve `access` to the app's routes and answer its links: a GET of `/` or `/runs` with
    `?code=` opens a session and redirects to the same page without the code (403 for a wrong
    code); any other request goes on unchanged."""
    app.state.operator = access

    @app.middleware("http")
    async def sign_in_by_link(request: Request, call_next: RequestResponseEndpoint) -> Response:
        code = request.query_params.get(SIGN_IN_PARAMETER)
        if code is None or request.method != "GET" or request.url.path not in SIGN_IN_PATHS:
            return await call_next(request)
        return sign_in(request, access, code)


def sign_in(request: Request, access: OperatorAccess, code: str) -> Response:
    """Open a session for the holder of `code`: its cookie and a redirect off the link."""
    if not access.code_matches(code):
        log.warning("refused a sign-in link whose code is not this process's")
        return code_needed_page(
            "Sign-in code not valid",
            "That code is not this Baton's: a restart makes a new one.",
            action=request.url.path,
        )
    response = RedirectResponse(_without_code(request), status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE,
        access.open_session(),
        max_age=int(access.lifetime),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite=access.same_site,
    )
    return response


def _without_code(request: Request) -> str:
    # A relative address: where the browser already is, whatever Host the request named.
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != SIGN_IN_PARAMETER]
    return request.url.path + (f"?{urlencode(kept)}" if kept else "")


def code_needed_page(title: str, why: str, *, action: str = "/") -> HTMLResponse:
    """403: says where the operator finds the code, with a form to type it."""
    body = f"""<p>{escape(why)}</p>
<p>When Baton starts it prints a sign-in link on its terminal (standard error) and in its log,
such as <code>http://127.0.0.1:3000{escape(action)}?code=…</code>. Open that link in this
browser, at the address you use to reach Baton, or type its code here.</p>
<form action="{escape(action)}" method="get">
<p><label>Sign-in code <input name="{SIGN_IN_PARAMETER}" size="50" autocomplete="off"
 required></label> <button type="submit">Sign in</button></p>
</form>"""
    return page(title, body, 403)
