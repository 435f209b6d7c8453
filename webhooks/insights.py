"""`GET /insights`: whether orchestration paid, over a period and a repository (`bot.insights`).

HTML for a browser, JSON for `Accept: application/json`; the same credentials as `/runs`.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from bot.insights import (
    MODE_COLUMNS,
    ROLE_COLUMNS,
    Insights,
    PeriodError,
    period_scope,
    read_insights,
)
from bot.store.types import utcnow
from webhooks.deps import BatonDep, ViewerDep, require_viewer
from webhooks.pages import page, wants_html

router = APIRouter(dependencies=[Depends(require_viewer)])

PERIOD_HELP = "an ISO date or time, or an age like 7d, 24h, 2w"


@router.get("/insights")
async def show_insights(
    request: Request,
    baton: BatonDep,
    viewer: ViewerDep,
    since: Annotated[str | None, Query(description=PERIOD_HELP, max_length=64)] = None,
    until: Annotated[str | None, Query(description=PERIOD_HELP, max_length=64)] = None,
    repository: Annotated[str | None, Query(description="owner/name", max_length=255)] = None,
) -> Response:
    """The figures of the runs started in the period (default: the last 7 days), of the
    repositories the viewer may read; 400 for a period that cannot be read."""
    try:
        scope = period_scope(since, until, utcnow(), repository, viewer.repositories)
    except PeriodError as error:
        raise HTTPException(400, str(error)) from None
    found = await baton.store.run(lambda session: read_insights(session, scope))
    if wants_html(request):
        return page("Insights", _body(found))
    return JSONResponse(found.as_json(), headers={"Cache-Control": "no-store"})


def _body(found: Insights) -> str:
    scope = found.scope
    where = f" of {escape(scope.repository)}" if scope.repository else ""
    parts = [
        f"<p>Runs{where} started from <time>{scope.since:%Y-%m-%d %H:%M}</time> to "
        f"<time>{scope.until:%Y-%m-%d %H:%M}</time> UTC.</p>",
        _period_form(found),
        "<h2>Orchestrated or one agent</h2>",
        _table(MODE_COLUMNS, (row.cells() for row in found.by_mode), "No runs in this period."),
        "<h2>Roles and models</h2>",
        _table(
            ROLE_COLUMNS,
            (row.cells() for row in found.by_role_and_model),
            "No finished attempts in this period.",
        ),
    ]
    return "\n".join(parts)


def _period_form(found: Insights) -> str:
    scope = found.scope
    return (
        '<form method=get action="/insights">'
        f'<label>Since <input name=since value="{scope.since:%Y-%m-%d}"></label> '
        f'<label>Until <input name=until value="{scope.until:%Y-%m-%dT%H:%M}"></label> '
        f'<label>Repository <input name=repository value="{escape(scope.repository or "")}">'
        "</label> <button>Show</button></form>"
    )


def _table(columns: Iterable[str], rows: Iterable[list[str]], empty: str) -> str:
    body = ["<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows]
    if not body:
        return f"<p>{escape(empty)}</p>"
    head = "".join(f"<th scope=col>{escape(name)}</th>" for name in columns)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
