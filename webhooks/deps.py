"""Request dependencies shared by the routers."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from bot.service import Baton


async def get_baton(request: Request) -> Baton:
    baton: Baton = request.app.state.baton
    return baton


BatonDep = Annotated[Baton, Depends(get_baton)]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


async def require_viewer(request: Request, baton: BatonDep) -> None:
    """Run data is for people Baton trusts: a bearer token when one is set, else only requests
    made on this machine directly (a proxy or tunnel in front would make everyone local)."""
    token = baton.settings.dashboard_token
    if token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(401, "send the dashboard token as `Authorization: Bearer ...`")
        return
    client = request.client.host if request.client else ""
    if client not in LOOPBACK or any(name in request.headers for name in PROXY_HEADERS):
        raise HTTPException(
            403, "runs are shown only on this machine; set BATON_DASHBOARD_TOKEN to allow others"
        )
