"""`baton`: serve, migrate the database."""

from __future__ import annotations

import logging

import typer

from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, get_settings

app = typer.Typer(help="Baton: plans and runs coding work on GitHub issues.", no_args_is_help=True)
db = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db, name="db")
log = logging.getLogger("baton")


@app.command()
def serve() -> None:
    """Serve webhooks, setup pages and the dashboard; run jobs in this process."""
    import uvicorn

    from webhooks.app import create_app

    settings = _settings()
    if settings.executor != "local":
        # Fail here with the reason, not as a traceback from inside the server's startup.
        typer.echo(
            f"BATON_EXECUTOR={settings.executor!r}: only 'local' is available so far", err=True
        )
        raise typer.Exit(2)
    mode = "ready" if settings.has_app_credentials else "setup mode (no GitHub App credentials)"
    log.info("serving on http://%s:%d: %s", settings.host, settings.port, mode)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest migration."""
    from bot.store.db import create_engine
    from bot.store.migrate import current_revision, upgrade

    settings = _settings()
    engine = create_engine(settings.resolved_database_url)
    upgrade(engine)
    log.info("database at revision %s", current_revision(engine))
    engine.dispose()


def _settings() -> Settings:
    try:
        settings = get_settings()
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)
    return settings


def main() -> None:
    app()


if __name__ == "__main__":
    main()
