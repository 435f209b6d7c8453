"""Request dependencies shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from pydantic import SecretStr

from bot.service import Baton
from webhooks.access import OperatorSession


async def get_baton(request: Request) -> Baton:
    baton: Baton = request.app.state.baton
    return baton


BatonDep = Annotated[Baton, Depends(get_baton)]

NEEDS_CREDENTIALS = (
    "run data needs credentials: open the sign-in link Baton printed when it started "
    "(…/?code=…), or send Authorization: Bearer <BATON_DASHBOARD_TOKEN>"
)


async def require_viewer(request: Request, baton: BatonDep, session: OperatorSession) -> None:
    """Run data is for the operator: a request needs the operator's session cookie or the
    dashboard token, wherever it seems to come from (see `webhooks.access` for why)."""
    if session is None and not _bearer_matches(request, baton.settings.dashboard_token):
        raise HTTPException(401, NEEDS_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})


def _bearer_matches(request: Request, token: SecretStr | None) -> bool:
    if token is None:
        return False
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    return hmac.compare_digest(given.encode(), expected.encode())
