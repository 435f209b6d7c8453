"""The FastAPI application: one router per concern, joined here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from bot.executor.local import ExecutorTuning
from bot.integrations import Integrations
from bot.service import Baton
from bot.settings import Settings, env_file_for_writing
from webhooks import github, insights, ops, pages, runs, setup, sign_in
from webhooks.access import OperatorAccess, add_sign_in_links
from webhooks.github import BodyLimits
from webhooks.relay import relaying


def create_app(
    settings: Settings,
    tuning: ExecutorTuning | None = None,
    *,
    env_path: Path | None = None,
    integrations: Integrations | None = None,
    operator: OperatorAccess | None = None,
    body_limits: BodyLimits | None = None,
) -> github.WebhookEndpoint:
    """Build the app; its store, executor and recorder start with the app and stop with it.

    In setup mode the new App's credentials are written to `env_path` (default: `./.env`, or
    the data directory's `.env` when the working directory is not writable).
    `integrations` replaces the GitHub, git and model clients made from the settings.
    `operator` holds the code whose sign-in link the operator was shown (default: a new one,
    which nobody has seen). `body_limits` replaces how webhook bodies are read, from the settings.
    With `webhook_proxy_url` set, deliveries read from that relay reach the same endpoint.
    """
    access = operator or OperatorAccess(setup_mode=not settings.has_app_credentials)
    env_path = env_path or _env_file(settings)
    api = _create_api(settings, tuning, env_path, integrations, access)
    endpoint = github.WebhookEndpoint(api, body_limits or BodyLimits.from_settings(settings))
    # The lifespan's relay hands its deliveries to this very endpoint, as GitHub's arrive.
    api.state.webhook_endpoint = endpoint
    return endpoint


def _env_file(settings: Settings) -> Path:
    path = env_file_for_writing(settings)
    if not settings.has_app_credentials:
        # With PostgreSQL nothing else may have made the data directory yet.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _create_api(
    settings: Settings,
    tuning: ExecutorTuning | None,
    env_path: Path,
    integrations: Integrations | None,
    access: OperatorAccess,
) -> FastAPI:

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        baton = Baton(settings, tuning, integrations)
        app.state.baton = baton
        await baton.start()
        try:
            async with relaying(settings.webhook_proxy_url, app.state.webhook_endpoint):
                yield
        finally:
            await baton.stop()

    app = FastAPI(title="Baton", lifespan=lifespan, docs_url=None, redoc_url=None)
    add_sign_in_links(app, access)
    app.include_router(ops.router)
    app.include_router(pages.router)
    app.include_router(runs.router)
    app.include_router(insights.router)
    app.include_router(sign_in.router)
    app.include_router(setup.create_router(settings, env_path))
    return app
