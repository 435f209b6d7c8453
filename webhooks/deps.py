"""Request dependencies shared by the routers."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from pydantic import SecretStr

from bot.service import Baton
from bot.store.models import WebSession
from bot.store.web_sessions import find_web_session
from webhooks.access import OperatorSession


async def get_baton(request: Request) -> Baton:
    baton: Baton = request.app.state.baton
    return baton


BatonDep = Annotated[Baton, Depends(get_baton)]

# The cookie of a person signed in with GitHub (`webhooks.sign_in`).
PERSON_COOKIE = "baton_person"

NEEDS_CREDENTIALS = (
    "run data needs credentials: sign in with GitHub at /sign-in, open the sign-in link Baton "
    "printed when it started (…/?code=…), or send Authorization: Bearer <BATON_DASHBOARD_TOKEN>"
)


@dataclass(frozen=True)
class Viewer:
    """Who is looking at run data. `repositories` (`owner/name`, lowercase) are the only ones
    whose runs they may see; None for the operator (code link or bearer token), who sees all."""

    login: str | None
    repositories: frozenset[str] | None


OPERATOR = Viewer(login=None, repositories=None)


async def person_session(request: Request, baton: BatonDep) -> WebSession | None:
    """The live session of the person signed in with GitHub, or None."""
    secret = request.cookies.get(PERSON_COOKIE)
    if not secret:
        return None
    return await baton.store.run(lambda session: find_web_session(session, secret))


PersonSession = Annotated[WebSession | None, Depends(person_session)]


async def require_viewer(
    request: Request, baton: BatonDep, session: OperatorSession, person: PersonSession
) -> Viewer:
    """Who may see run data: the operator (session cookie from the printed link, or the dashboard
    token), wherever the request seems to come from (see `webhooks.access` for why), or a person
    signed in with GitHub, limited to the repositories they could read; else 401."""
    if session is not None or _bearer_matches(request, baton.settings.dashboard_token):
        return OPERATOR
    if person is not None:
        return Viewer(login=person.login, repositories=frozenset(person.repositories))
    raise HTTPException(401, NEEDS_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})


ViewerDep = Annotated[Viewer, Depends(require_viewer)]


def _bearer_matches(request: Request, token: SecretStr | None) -> bool:
    if token is None:
        return False
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    return hmac.compare_digest(given.encode(), expected.encode())
