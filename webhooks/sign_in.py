"""'Sign in with GitHub' for a team: `/sign-in` (a button), GitHub's consent, `/sign-in/callback`
(a session), `POST /sign-out`.

The button is a POST form, so no other site can start a sign-in with a link or image. The
`state` sent to GitHub is random and also kept in a short-lived cookie of this browser: a
callback whose state is not that cookie's is refused, so nobody can sign a victim's browser in
with the attacker's account. Session cookies are HttpOnly, Secure over https, SameSite=Lax (the
callback is a navigation from GitHub's site; Strict would leave the first page signed out), and
nothing changes state on a GET. Signing out needs the session's CSRF token, derived from the
session's secret, so it is never stored and no other page can sign a person out.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bot.github.manifest import SIGN_IN_CALLBACK_PATH
from bot.github.oauth import OAuthClient, SignInFailed
from bot.store.models import WebSession
from bot.store.web_sessions import close_web_session, open_web_session
from webhooks.deps import PERSON_COOKIE, BatonDep, PersonSession
from webhooks.pages import PAGE_HEADERS, page
from webhooks.setup_pages import typed_fields

log = logging.getLogger(__name__)

STATE_COOKIE = "baton_oauth_state"
# Visibility is read from GitHub at sign-in, so a session is as fresh as its sign-in: after an
# hour it ends and the person signs in again (one click; GitHub does not ask twice).
PERSON_SESSION = timedelta(hours=1)
STATE_LIFETIME_SECONDS = 600

router = APIRouter()


def csrf_token(secret: str) -> str:
    """The token a sign-out form carries for the session whose cookie is `secret`."""
    return hmac.new(secret.encode(), b"baton sign-out", hashlib.sha256).hexdigest()


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, baton: BatonDep, person: PersonSession) -> Response:
    if OAuthClient.from_settings(baton.settings) is None:
        return _not_configured()
    if person is not None:
        return _signed_in_page(person, request.cookies[PERSON_COOKIE])
    body = """<p>Sign in with your GitHub account to see the runs of repositories you can read.</p>
<form method="post" action="/sign-in"><button type="submit">Sign in with GitHub</button></form>"""
    return page("Sign in to Baton", body)


@router.post("/sign-in")
async def start_sign_in(request: Request, baton: BatonDep) -> Response:
    """Send the browser to GitHub with a fresh state, remembered in this browser's cookie."""
    client = OAuthClient.from_settings(baton.settings)
    if client is None:
        return _not_configured()
    state = secrets.token_urlsafe(32)
    response = RedirectResponse(client.authorize_url(state), 303, headers=PAGE_HEADERS)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=STATE_LIFETIME_SECONDS,
        path=SIGN_IN_CALLBACK_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return response


@router.get(SIGN_IN_CALLBACK_PATH)
async def finish_sign_in(
    request: Request, baton: BatonDep, code: str = "", state: str = ""
) -> Response:
    """Open a session for the person GitHub sends back, when the state is this browser's."""
    client = OAuthClient.from_settings(baton.settings)
    if client is None:
        return _not_configured()
    expected = request.cookies.get(STATE_COOKIE, "")
    if not expected or not state or not hmac.compare_digest(state.encode(), expected.encode()):
        log.warning("refused a sign-in callback whose state is not this browser's")
        return _failed("This sign-in was not started in this browser, or it took too long.")
    if not code:
        return _failed("GitHub sent no code back: the sign-in was cancelled.")
    try:
        person = await client.sign_in(code)
    except SignInFailed as failure:
        log.warning("sign-in with GitHub failed: %s", failure)
        return _failed(str(failure))
    secret = await baton.store.run(
        lambda session: open_web_session(session, person.login, person.repositories, PERSON_SESSION)
    )
    log.info("%s signed in with GitHub (%d repositories)", person.login, len(person.repositories))
    response = RedirectResponse("/runs", 303, headers=PAGE_HEADERS)
    response.delete_cookie(STATE_COOKIE, path=SIGN_IN_CALLBACK_PATH)
    response.set_cookie(
        PERSON_COOKIE,
        secret,
        max_age=int(PERSON_SESSION.total_seconds()),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, baton: BatonDep) -> Response:
    """End the session whose cookie came along, when the form carries its CSRF token."""
    csrf = typed_fields(await request.body(), {"csrf": ""})["csrf"]
    secret = request.cookies.get(PERSON_COOKIE, "")
    if not secret or not hmac.compare_digest(csrf.encode(), csrf_token(secret).encode()):
        return page("Not signed out", "<p>This form is not from your session.</p>", 403)
    await baton.store.run(lambda session: close_web_session(session, secret))
    response = RedirectResponse("/sign-in", 303, headers=PAGE_HEADERS)
    response.delete_cookie(PERSON_COOKIE, path="/")
    return response


def _signed_in_page(person: WebSession, secret: str) -> HTMLResponse:
    body = f"""<p>Signed in as <strong>{escape(person.login)}</strong>.
<a href="/runs">See the runs</a>.</p>
<form method="post" action="/sign-out"><input type="hidden" name="csrf"
 value="{csrf_token(secret)}"><button type="submit">Sign out</button></form>"""
    return page("Signed in", body)


def _failed(why: str) -> HTMLResponse:
    body = f'<p>{escape(why)}</p><p><a href="/sign-in">Sign in again</a>.</p>'
    return page("Sign-in failed", body, 400)


def _not_configured() -> HTMLResponse:
    body = """<p>Signing in with GitHub needs the App's OAuth client: set
<code>BATON_GITHUB_CLIENT_ID</code> and <code>BATON_GITHUB_CLIENT_SECRET</code> (the setup pages
save them when they register the App). The operator can use the sign-in link Baton prints.</p>"""
    return page("Sign-in with GitHub not set up", body, 404)
