"""Request dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bot.service import Baton


async def get_baton(request: Request) -> Baton:
    baton: Baton = request.app.state.baton
    return baton


BatonDep = Annotated[Baton, Depends(get_baton)]
