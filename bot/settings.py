"""One settings object for the whole process, read from the environment and `.env` on demand.

Where the files are (`env_files`, `env_file_for_writing`, `default_data_dir`) is decided here
only: Baton may run from a folder it cannot write to (a package installed system-wide, a
container's `/app`), and then keeps `.env` and its data in the data directory instead.
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from ipaddress import IPv4Network, ip_network
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

ENV_PREFIX = "BATON_"
ENV_FILE = ".env"
DATA_DIR_VARIABLE = ENV_PREFIX + "DATA_DIR"
MODEL_PROVIDERS = ("anthropic", "openai")
# GitHub caps webhook payloads at 25 MB; a larger body is answered 413.
WEBHOOK_BODY_LIMIT = 25 * 1024 * 1024


class SettingsError(ValueError):
    """A setting has a value Baton cannot use; the message names the variable."""


def working_directory_writable() -> bool:
    """True when Baton may create files in the folder it was started from."""
    return os.access(Path.cwd(), os.W_OK | os.X_OK)


def default_data_dir() -> Path:
    """`./.baton` when the working directory is writable, else a per-user folder:
    `$XDG_DATA_HOME/baton`, or `~/.local/share/baton`."""
    if working_directory_writable():
        return Path(".baton")
    xdg = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "baton"


def configured_data_dir() -> Path:
    """`BATON_DATA_DIR` from the environment, else from `./.env`, else `default_data_dir()`."""
    typed = os.environ.get(DATA_DIR_VARIABLE) or dotenv_values(ENV_FILE).get(DATA_DIR_VARIABLE)
    return Path(typed) if typed else default_data_dir()


def env_files(data_dir: Path | None = None) -> tuple[Path, Path]:
    """The `.env` files settings are read from, the later winning: the data directory's, then
    the working directory's. Environment variables win over both.

    The working directory's file wins because it is the one a person writes by hand where they
    start Baton; the data directory's holds what setup mode saved when it could not write there.
    """
    return (data_dir or configured_data_dir()) / ENV_FILE, Path(ENV_FILE)


def env_file_for_writing(settings: Settings) -> Path:
    """Where setup mode saves the new App's credentials: `./.env` when the working directory
    is writable, else `.env` in the data directory (whose folder may not exist yet)."""
    if working_directory_writable():
        return Path(ENV_FILE)
    return settings.data_dir / ENV_FILE


class Settings(BaseSettings):
    """Process-wide settings (CONTRACT §3). Secrets are `SecretStr` so they never print."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # Which files are read is `load_settings`'s choice (`env_files`); `Settings()` reads none.
        env_file=None,
        env_file_encoding="utf-8",
        extra="ignore",
        # The providers' variables below have their own names; tests may pass field names.
        populate_by_name=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(default=3000, ge=1, le=65535)
    github_app_id: int | None = None
    github_private_key: SecretStr | None = None
    github_private_key_path: Path | None = None
    webhook_secret: SecretStr | None = None
    # The App's OAuth client (saved by the manifest flow): people "Sign in with GitHub" with it.
    github_client_id: str | None = None
    github_client_secret: SecretStr | None = None
    # Bearer token for `/runs`, for scripts; people sign in with the link Baton prints at start.
    dashboard_token: SecretStr | None = None
    # Setup mode accepts only https GitHub addresses; true also allows http on a loopback host
    # (a GitHub stand-in on this machine). BATON_GITHUB_URL itself is always accepted.
    setup_allow_http_github: bool = False
    # Bytes of webhook bodies held before their signature is checked, over all connections of
    # this process; a delivery that would pass it is answered 503 with Retry-After.
    webhook_buffer_bytes: int = Field(default=4 * WEBHOOK_BODY_LIMIT, ge=WEBHOOK_BODY_LIMIT)
    # A channel of a webhook relay such as smee.io: its deliveries are taken as GitHub's, for a
    # server GitHub cannot reach.
    webhook_proxy_url: str | None = None
    github_api_url: str = "https://api.github.com"
    github_url: str = "https://github.com"
    database_url: str | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    executor: Literal["local", "procrastinate"] = "local"
    orchestrator_model: str = "anthropic/claude-opus-4-6"
    worker_model: str = "anthropic/claude-sonnet-4-6"
    max_parallel: int = Field(default=4, ge=1)
    job_concurrency: int = Field(default=4, ge=1)
    # How long a dead process's job waits before another process takes it over.
    job_lease_seconds: float = Field(default=60.0, ge=1.0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Below this much free space on the data directory's disk Baton reports itself not ready.
    min_free_disk_mb: int = Field(default=1024, ge=0)
    # Deliveries, finished jobs, timeline rows and tool-call outcomes are kept this many days.
    retention_days: int = Field(default=90, ge=1)
    # Price overrides, dollars per million tokens, as JSON: {"openai/my-model": {"input": 0.5,
    # "output": 1.5, "cache_read": 0.05}}; models absent here and from the list cost null.
    model_prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Dollar limits where `.github/baton.yml` sets none: room for an Opus-class planning, and per
    # task for two rounds of a few dozen Sonnet-class turns and their reviews (README: Budgets).
    default_run_budget_usd: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    default_task_budget_usd: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    # What model calls of all runs may cost in one UTC day; unset or blank: no cap.
    daily_budget_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # Folders the sandbox shows read-only besides the system ones, as JSON: interpreters and
    # SDKs a repository's tests need, e.g. ["/opt/python3.12", "/opt/node"].
    sandbox_toolchains: list[Path] = Field(default_factory=list)
    # Networks the setup command may reach besides the internet (an internal package mirror),
    # as comma-separated IPv4 CIDRs; one of the host's own addresses only when listed as a /32.
    sandbox_allowed_networks: Annotated[tuple[IPv4Network, ...], NoDecode] = ()
    # The model providers' own variables, also read from `.env`; kept here and handed to the
    # SDKs, never put into the process environment that git and other commands inherit.
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")

    @field_validator(
        "webhook_secret",
        "github_private_key",
        "dashboard_token",
        "github_client_secret",
        "anthropic_api_key",
        "openai_api_key",
        mode="after",
    )
    @classmethod
    def _blank_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty secret must behave as no secret, so the endpoint fails closed.
        if value is None or not value.get_secret_value().strip():
            return None
        return value

    @field_validator("daily_budget_usd", mode="before")
    @classmethod
    def _blank_is_no_cap(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("orchestrator_model", "worker_model")
    @classmethod
    def _provider_and_model(cls, value: str) -> str:
        provider, _, model = value.partition("/")
        if provider not in MODEL_PROVIDERS or not model:
            raise ValueError(
                f"expected 'provider/model' with provider one of {', '.join(MODEL_PROVIDERS)}, "
                f"got {value!r}"
            )
        return value

    @field_validator("anthropic_base_url", "openai_base_url")
    @classmethod
    def _blank_or_http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return cls._http_url(value.strip())

    @field_validator("webhook_proxy_url")
    @classmethod
    def _relay_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _usable_relay_url(value.strip())

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return _usable_database_url(value.strip())

    @field_validator("data_dir", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        # `BATON_DATA_DIR=` would otherwise be the working directory itself.
        return default_data_dir() if isinstance(value, str) and not value.strip() else value

    @field_validator("sandbox_allowed_networks", mode="before")
    @classmethod
    def _ipv4_networks(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value  # pydantic says what it expects
        return tuple(_ipv4_network(str(item).strip()) for item in items if str(item).strip())

    @field_validator("github_api_url", "github_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        """`DATABASE_URL`, or the embedded SQLite file inside `DATA_DIR`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'baton.db').resolve()}"

    @property
    def has_app_credentials(self) -> bool:
        """True with an App id and a private key; without them Baton is in setup mode."""
        has_key = self.github_private_key is not None or self.github_private_key_path is not None
        return self.github_app_id is not None and has_key

    def private_key_pem(self) -> str:
        """The App's private key: `GITHUB_PRIVATE_KEY`, else the `GITHUB_PRIVATE_KEY_PATH` file."""
        if self.github_private_key is not None:
            return self.github_private_key.get_secret_value()
        if self.github_private_key_path is None:
            raise SettingsError(
                f"{ENV_PREFIX}GITHUB_PRIVATE_KEY or {ENV_PREFIX}GITHUB_PRIVATE_KEY_PATH is needed"
            )
        try:
            return self.github_private_key_path.read_text()
        except OSError as error:
            raise SettingsError(
                f"{ENV_PREFIX}GITHUB_PRIVATE_KEY_PATH: cannot read {self.github_private_key_path}: "
                f"{error.strerror}"
            ) from None


def _ipv4_network(text: str) -> IPv4Network:
    try:
        network = ip_network(text)
    except ValueError as error:
        raise ValueError(
            f"{error}; expected IPv4 CIDRs separated by commas, e.g. 10.20.0.0/16,192.168.5.7/32"
        ) from None
    if not isinstance(network, IPv4Network):
        raise ValueError(f"{text!r} is an IPv6 network; the sandbox's network is IPv4 only")
    return network


_DATABASE_EXAMPLES = "sqlite:////path/to/baton.db or postgresql+psycopg://user@host:5432/baton"


def _usable_database_url(value: str) -> str:
    """`value` if SQLAlchemy can parse it and has its driver, else a ValueError saying so."""
    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError(f"not a database URL; expected {_DATABASE_EXAMPLES}") from None
    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"unknown database kind {url.drivername!r}; expected {_DATABASE_EXAMPLES}"
        ) from None
    except ImportError as error:
        raise ValueError(f"the driver for {url.drivername!r} is not installed ({error})") from None
    return value


def _usable_relay_url(value: str) -> str:
    """`value` if it is an https address, or http to this machine; a ValueError otherwise."""
    try:
        parts = urlsplit(value)
        secure = parts.scheme == "https" and bool(parts.hostname)
        local = parts.scheme == "http" and _is_loopback(parts.hostname)
    except ValueError:  # a malformed host or port
        secure = local = False
    if (secure or local) and value.isprintable() and " " not in value:
        return value
    raise ValueError(
        "expected a relay channel's https address, such as https://smee.io/CHANNEL "
        "(plain http only on a loopback host)"
    )


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment and `env_files()`, turning every problem into one
    line per variable that names it."""
    overrides = {"_env_file": env_files(), **overrides}
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
    except SourceError as error:
        raise SettingsError(_describe_unparsable(error)) from None


def variable_name(field: str) -> str:
    """The environment variable that sets `field` (the providers' own ones keep their names)."""
    alias = Settings.model_fields[field].alias if field in Settings.model_fields else None
    return alias or f"{ENV_PREFIX}{field.upper()}"


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        name = field if field.isupper() else variable_name(field)
        lines.append(f"{name}: {problem['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _describe_unparsable(error: SourceError) -> str:
    # pydantic-settings names the field in its message and keeps the JSON error as the cause.
    named = re.search(r'field "(\w+)"', str(error))
    name = variable_name(named.group(1)) if named else "a setting"
    cause = error.__cause__
    reason = f"not valid JSON ({cause})" if cause is not None else str(error)
    return f"{name}: {reason}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return load_settings()
