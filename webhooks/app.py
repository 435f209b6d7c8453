"""The FastAPI application: one router per concern, joined here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.types import ASGIApp

from bot.executor.local import ExecutorTuning
from bot.service import Baton
from bot.settings import Settings
from webhooks import github, ops

SETUP_PAGE = """<!doctype html>
<html><head><title>Baton setup</title></head><body>
<h1>Baton is running in setup mode</h1>
<p>No GitHub App credentials are configured. Set <code>BATON_GITHUB_APP_ID</code>,
<code>BATON_GITHUB_PRIVATE_KEY</code> (or <code>BATON_GITHUB_PRIVATE_KEY_PATH</code>) and
<code>BATON_WEBHOOK_SECRET</code>, then restart. The README explains how to register the app.</p>
</body></html>"""


def create_app(settings: Settings, tuning: ExecutorTuning | None = None) -> ASGIApp:
    """Build the app; its store, executor and recorder start with the app and stop with it."""
    return github.WebhookEndpoint(_create_api(settings, tuning))


def _create_api(settings: Settings, tuning: ExecutorTuning | None) -> FastAPI:

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        baton = Baton(settings, tuning)
        app.state.baton = baton
        await baton.start()
        try:
            yield
        finally:
            await baton.stop()

    app = FastAPI(title="Baton", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.include_router(ops.router)

    @app.get("/", response_class=HTMLResponse)
    async def home() -> str:
        if settings.has_app_credentials:
            return "<!doctype html><title>Baton</title><h1>Baton</h1><p>Ready.</p>"
        return SETUP_PAGE

    return app
