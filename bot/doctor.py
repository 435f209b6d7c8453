"""What stands between this installation and a working bot, each with its fix in one line.

`baton doctor` prints every check; `baton serve` runs them at start, refuses to start on a
fatal one (the process could not do anything right) and warns about the rest; the home page
shows the same list to the signed-in operator.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.disk import disk_problem
from bot.llm.registry import provider_key_problem
from bot.llm.types import split_model_name
from bot.settings import Settings, SettingsError
from bot.store.db import create_engine
from bot.store.migrate import current_revision, head_revision


@dataclass(frozen=True)
class Finding:
    """One check's answer: `problem` is None when it holds, and `fix` says what to do if not."""

    name: str
    problem: str | None = None
    fix: str = ""
    detail: str = ""
    # Serving makes no sense with it: `baton serve` stops with the problem and its fix.
    fatal: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        if self.problem is None:
            return f"ok    {self.name}{f': {self.detail}' if self.detail else ''}"
        return f"FIX   {self.name}: {self.problem}. {self.fix}"


def examine(settings: Settings, *, ask_github: bool = True) -> list[Finding]:
    """Every check, in the order a newcomer meets them. `ask_github` also shows the App's id
    and key to GitHub (one request), which proves they belong together."""
    findings = [_app_credentials(settings)]
    if settings.has_app_credentials:
        # Setup writes the secret with the App; before that its absence is expected.
        findings.append(_webhook_secret(settings))
    if ask_github and findings[0].ok and settings.has_app_credentials:
        findings.append(_app_on_github(settings))
    findings.extend(_model_keys(settings))
    findings.extend([_database(settings), _git(), _sandbox(), _data_disk(settings)])
    return findings


def fatal(findings: Iterable[Finding]) -> list[Finding]:
    return [finding for finding in findings if not finding.ok and finding.fatal]


def _app_credentials(settings: Settings) -> Finding:
    name = "GitHub App"
    if settings.github_app_id is None and not _has_key_setting(settings):
        return Finding(
            name,
            "no App is registered yet (setup mode)",
            "Open the sign-in link `baton serve` prints and register one, or import an "
            "existing App there.",
        )
    if settings.github_app_id is None:
        return Finding(
            name, "BATON_GITHUB_APP_ID is not set", "Set it to the App's id.", fatal=True
        )
    try:
        pem = settings.private_key_pem()
    except SettingsError as error:
        return Finding(
            name, str(error), "Set BATON_GITHUB_PRIVATE_KEY_PATH to the App's key file.", fatal=True
        )
    problem = _key_problem(pem)
    if problem is not None:
        return Finding(
            name,
            f"{_key_variable(settings)} {problem}",
            "Download a new private key from the App's settings page on GitHub and point "
            "BATON_GITHUB_PRIVATE_KEY_PATH at it.",
            fatal=True,
        )
    return Finding(name, detail=f"App id {settings.github_app_id} with an RSA private key")


def _has_key_setting(settings: Settings) -> bool:
    return settings.github_private_key is not None or settings.github_private_key_path is not None


def _key_variable(settings: Settings) -> str:
    if settings.github_private_key is not None:
        return "BATON_GITHUB_PRIVATE_KEY"
    return f"BATON_GITHUB_PRIVATE_KEY_PATH ({settings.github_private_key_path})"


def _key_problem(pem: str) -> str | None:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return "does not hold a PEM private key"
    if not isinstance(key, RSAPrivateKey):
        return "holds a key that is not RSA; GitHub Apps sign with RSA keys"
    return None


def _webhook_secret(settings: Settings) -> Finding:
    name = "Webhook secret"
    if settings.webhook_secret is None:
        return Finding(
            name,
            "BATON_WEBHOOK_SECRET is not set, so every delivery is refused",
            "Set it to the secret in the App's webhook settings (setup writes it for you).",
        )
    return Finding(name, detail="set")


def _app_on_github(settings: Settings) -> Finding:
    """GitHub's `GET /app` answered with the App's JWT: the id and the key belong together."""
    from bot.github.app_import import AppNotConfirmed, describe_app

    name = "App on GitHub"
    assert settings.github_app_id is not None  # has_app_credentials
    try:
        # Called outside any event loop: from the command line, or a server's worker thread.
        app = asyncio.run(
            describe_app(
                settings.github_api_url, settings.github_app_id, settings.private_key_pem()
            )
        )
    except AppNotConfirmed as refused:
        fix = (
            "Check BATON_GITHUB_API_URL and this machine's way out to GitHub."
            if refused.unreachable
            else "Check that BATON_GITHUB_APP_ID and the private key belong to the same App."
        )
        return Finding(name, str(refused).split(";")[0], fix)
    return Finding(name, detail=f"GitHub knows the App as {app.name}")


def _model_keys(settings: Settings) -> list[Finding]:
    findings = []
    for provider, models in _providers_in_use(settings).items():
        name = f"Model key ({provider})"
        problem = provider_key_problem(provider, settings)
        if problem is None:
            findings.append(Finding(name, detail=f"for {', '.join(models)}"))
            continue
        variable = "ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY"
        findings.append(
            Finding(
                name,
                f"{problem} ({', '.join(models)})",
                f"Add {variable}=... to .env (or the environment) and restart Baton.",
            )
        )
    return findings


def _providers_in_use(settings: Settings) -> dict[str, list[str]]:
    providers: dict[str, list[str]] = {}
    for name in dict.fromkeys((settings.orchestrator_model, settings.worker_model)):
        providers.setdefault(split_model_name(name)[0], []).append(name)
    return providers


def _database(settings: Settings) -> Finding:
    name = "Database"
    engine = create_engine(settings.resolved_database_url)
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return Finding(
            name,
            f"BATON_DATABASE_URL: {_shown(engine)} cannot be reached ({reason})",
            "Check the address, user and database name; create the database if it is new.",
            fatal=True,
        )
    finally:
        engine.dispose()
    if revision != head_revision():
        return Finding(
            name,
            f"BATON_DATABASE_URL: {_shown(engine)} is at migration {revision or 'none'}, "
            f"not {head_revision()}",
            "Run `baton db upgrade` first (make run does).",
            fatal=True,
        )
    return Finding(name, detail=f"{engine.url.get_backend_name()} at migration {revision}")


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _git() -> Finding:
    found = _version("git", ["git", "--version"])
    if found is None:
        return Finding("git", "git is not installed", "Install it: apt-get install git.")
    return Finding("git", detail=found)


def _sandbox() -> Finding:
    from bot.sandbox import sandbox_available

    problem = sandbox_available()
    if problem is not None:
        return Finding("Sandbox", problem, "Workers cannot run commands until it works.")
    return Finding("Sandbox", detail=_version("bwrap", ["bwrap", "--version"]) or "bubblewrap")


def _data_disk(settings: Settings) -> Finding:
    problem = disk_problem(settings.data_dir, settings.min_free_disk_mb)
    if problem is not None:
        return Finding("Data disk", problem, "Free space or move BATON_DATA_DIR.")
    return Finding("Data disk", detail=str(settings.data_dir.resolve()))


def _version(program: str, argv: list[str]) -> str | None:
    if shutil.which(program) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or program


Report = Callable[[str], None]


def print_findings(findings: Iterable[Finding], report: Report) -> int:
    """Print each finding's line; the number of problems."""
    problems = 0
    for finding in findings:
        report(finding.line())
        problems += not finding.ok
    return problems
