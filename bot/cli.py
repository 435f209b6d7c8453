"""`baton`: serve, migrate the database."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import typer

from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from webhooks.access import OperatorAccess

app = typer.Typer(help="Baton: plans and runs coding work on GitHub issues.", no_args_is_help=True)
db = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db, name="db")
log = logging.getLogger("baton")


@app.command()
def serve() -> None:
    """Serve webhooks, setup pages and the dashboard; run jobs in this process."""
    import uvicorn

    from webhooks.access import OperatorAccess
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
    operator = OperatorAccess(setup_mode=not settings.has_app_credentials)
    _show_sign_in_link(operator, settings)
    uvicorn.run(
        create_app(settings, operator=operator),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


def _show_sign_in_link(operator: OperatorAccess, settings: Settings) -> None:
    """The operator's sign-in link: a JSON log line, and a plain line for the terminal."""
    link = operator.sign_in_link(_browser_address(settings.host, settings.port))
    purpose = "register Baton on GitHub" if operator.setup_mode else "see Baton's runs"
    log.info("the operator's sign-in link: open it to %s", purpose, extra={"link": link})
    typer.echo(
        f"To {purpose}, open this link (it signs you in; a restart makes a new one): {link}",
        err=True,
    )


def _browser_address(host: str, port: int) -> str:
    # A wildcard address is not one a browser can open; this machine's loopback is.
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
