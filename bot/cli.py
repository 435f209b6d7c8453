"""`baton`: serve, check the installation, migrate the database."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING, NoReturn

import typer

from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, get_settings

if TYPE_CHECKING:
    from bot.doctor import Finding
    from webhooks.access import OperatorAccess
    from webhooks.github import WebhookEndpoint

app = typer.Typer(help="Baton: plans and runs coding work on GitHub issues.", no_args_is_help=True)
db = typer.Typer(help="Database commands.", no_args_is_help=True)
app.add_typer(db, name="db")
log = logging.getLogger("baton")
VERSION = version("baton-bot")


def _show_version(asked: bool) -> None:
    if asked:
        typer.echo(f"baton {VERSION}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Baton: plans and runs coding work on GitHub issues."""


@app.command()
def serve() -> None:
    """Serve webhooks, setup pages and the dashboard; run jobs in this process."""
    from bot.doctor import examine, fatal
    from bot.service import executor_problem
    from webhooks.access import OperatorAccess
    from webhooks.app import create_app

    settings = _settings()
    problem = executor_problem(settings)
    if problem:
        _stop(problem)
    findings = examine(settings, ask_github=False)
    for finding in fatal(findings):
        typer.echo(f"{finding.problem}. {finding.fix}", err=True)
    if fatal(findings):
        raise typer.Exit(2)
    # Bound before anything starts: a busy port stops this process, not its job runner.
    listener = _bind(settings.host, settings.port)
    operator = OperatorAccess(setup_mode=not settings.has_app_credentials)
    problems = [finding for finding in findings if not finding.ok]
    api = create_app(settings, operator=operator)
    _serve(api, listener, lambda: _banner(settings, operator, problems))


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. asyncio sets it only on sockets whose proto is TCP, which
    # this one (proto 0) is not: without it a two-part answer waits out the client's delayed ACK
    # (40 ms) on every keep-alive request.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            _stop(
                f"BATON_PORT: {host}:{port} is already in use (another Baton?); stop that "
                "program or choose another port"
            )
        _stop(f"BATON_HOST/BATON_PORT: cannot listen on {host}:{port} ({error.strerror})")
    listener.listen(2048)
    # Not inheritable (Python's default, stated because uvloop's subprocesses keep every
    # inheritable descriptor): no child (the delivery writer, git, a sandboxed command) may
    # accept Baton's connections or hold its port after it dies.
    listener.set_inheritable(False)
    return listener


def _serve(api: WebhookEndpoint, listener: socket.socket, announce: Callable[[], None]) -> None:
    """Serve on `listener`; `announce` once the application has started and takes requests.
    uvicorn picks the event loop (uvloop when installed), as `uvicorn.run` would."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:  # set when the application failed to start
                announce()

    config = uvicorn.Config(api, log_config=None, access_log=False, proxy_headers=True)
    AnnouncingServer(config).run(sockets=[listener])


def _banner(settings: Settings, operator: OperatorAccess, problems: list[Finding]) -> None:
    """Where to go next: a log line, and plain lines for a person at the terminal."""
    address = _browser_address(settings.host, settings.port)
    link = operator.sign_in_link(address)
    purpose = "register Baton on GitHub" if operator.setup_mode else "see Baton's runs"
    mode = "setup mode (no GitHub App yet)" if operator.setup_mode else "ready for webhooks"
    log.info("baton %s listening on %s: %s", VERSION, address, mode, extra={"link": link})
    for finding in problems:
        log.warning("%s: %s. %s", finding.name, finding.problem, finding.fix)
    lines = [
        f"Baton {VERSION} is listening on {address}: {mode}.",
        f"To {purpose}, open this link (it signs you in; a restart makes a new one): {link}",
    ]
    if problems:
        lines.append(f"{len(problems)} thing(s) to fix first; `baton doctor` lists them.")
    typer.echo("\n".join(lines), err=True)


@app.command()
def worker(
    concurrency: int = typer.Option(
        0, "--concurrency", help="Short steps run at once (default: BATON_JOB_CONCURRENCY)."
    ),
    attempts: int = typer.Option(
        0, "--attempts", help="Worker attempts run at once (default: BATON_MAX_PARALLEL)."
    ),
    stall_seconds: float = typer.Option(
        30.0, "--stall-seconds", help="A worker silent this long is dead; its jobs run again."
    ),
    grace_seconds: float = typer.Option(
        20.0, "--grace-seconds", help="On SIGTERM, how long running jobs may take to end."
    ),
) -> None:
    """Run jobs from the queue every machine shares (BATON_EXECUTOR=procrastinate)."""
    from bot.service import executor_problem
    from bot.worker import run_worker

    settings = _settings()
    if settings.executor != "procrastinate":
        _stop("baton worker runs jobs for many machines: set BATON_EXECUTOR=procrastinate")
    problem = executor_problem(settings)
    if problem:
        _stop(problem)
    lanes = (concurrency or settings.job_concurrency, attempts or settings.max_parallel)
    asyncio.run(run_worker(settings, *lanes, stall_seconds, grace_seconds))


@app.command()
def doctor(
    offline: bool = typer.Option(False, "--offline", help="Do not ask GitHub about the App."),
) -> None:
    """Check this installation: App, webhook secret, model keys, database, git, sandbox."""
    from bot.doctor import examine, print_findings

    settings = _settings()
    problems = print_findings(examine(settings, ask_github=not offline), typer.echo)
    if problems:
        typer.echo(f"{problems} problem(s) to fix.")
        raise typer.Exit(1)
    typer.echo("Everything Baton needs is in place.")


@app.command()
def report(
    since: str = typer.Option(
        "7d", "--since", help="Runs started since: an ISO date or time, or an age (7d, 24h, 2w)."
    ),
    until: str = typer.Option("", "--until", help="Runs started before this (default: now)."),
    repository: str = typer.Option("", "--repository", help="Only this owner/name."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of Markdown."),
) -> None:
    """Print whether orchestration paid: per mode, role and model, for a team's weekly review."""
    import json

    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import Session

    from bot.insights import PeriodError, period_scope, read_insights
    from bot.store.db import create_engine
    from bot.store.types import utcnow

    settings = _settings()
    try:
        scope = period_scope(since, until or None, utcnow(), repository or None)
    except PeriodError as error:
        _stop(str(error))
    engine = create_engine(settings.resolved_database_url)
    try:
        with Session(engine) as session:
            found = read_insights(session, scope)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        _stop(f"BATON_DATABASE_URL: cannot read the runs ({reason}); is it migrated?")
    finally:
        engine.dispose()
    typer.echo(json.dumps(found.as_json(), indent=2) if as_json else found.markdown(), nl=as_json)


def _stop(problem: str) -> NoReturn:
    typer.echo(problem, err=True)
    raise typer.Exit(2)


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
    from sqlalchemy.exc import SQLAlchemyError

    from bot.store.db import create_engine
    from bot.store.migrate import current_revision, upgrade

    settings = _settings()
    engine = create_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
        log.info("database at revision %s", current_revision(engine))
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        _stop(f"BATON_DATABASE_URL: the database cannot be migrated ({reason})")
    finally:
        engine.dispose()


def _settings() -> Settings:
    try:
        settings = get_settings()
    except SettingsError as error:
        _stop(str(error))
    configure_logging(settings.log_level)
    return settings


def main() -> None:
    app()


if __name__ == "__main__":
    main()
