"""Registering Baton on GitHub through the App Manifest flow, and saving what GitHub gives back.

The flow: the setup page builds a manifest from `app.yml` (shipped inside the package) and a
`state`; the person's browser posts it to GitHub, which creates the App and sends the browser back
with a `code`; the code is exchanged for the App's id, private key and webhook secret, which go
into `.env`. A state stays good until its registration is saved, so a callback whose exchange
failed (GitHub or the network down) can be opened again.

Only the operator registers: each state is remembered with the operator's session that began
the flow, and a callback is completed only in that same session. The GitHub address is where the
code is exchanged and what Baton trusts afterwards, so a typed one must be https (plain http only
on this machine's loopback, and only when the operator allows it); the address the operator set
as `BATON_GITHUB_URL` is theirs to choose.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import yaml
from dotenv import dotenv_values, set_key, unset_key
from githubkit import GitHub, UnauthAuthStrategy
from githubkit.exception import GitHubException, RequestFailed
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, field_validator

from bot.github.client import API_VERSION, USER_AGENT
from bot.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

# Package data, so an installed wheel (or a container image) registers the same App.
APP_YML = files("bot.github") / "app.yml"
GITHUB_COM = "https://github.com"
GITHUB_COM_API = "https://api.github.com"
SIGN_IN_CALLBACK_PATH = "/sign-in/callback"
MANIFEST_KEYS = ("name", "description", "public", "default_events", "default_permissions")
# GitHub's manifest codes last an hour; a state need not outlive the code it comes back with.
STATE_LIFETIME_SECONDS = 3600.0
# Setup pages may be reachable by anyone; this bounds the memory their states can take.
MAX_PENDING_STATES = 100
EXCHANGE_TIMEOUT_SECONDS = 30.0
LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
CODE = re.compile(r"[A-Za-z0-9_-]{1,200}")


class SetupError(Exception):
    """Registration cannot go on; the message says what was wrong and what to do."""


class ChoiceError(SetupError):
    """A field typed on a setup page (owner, addresses, an App's credentials) is unusable."""


class ManifestError(SetupError):
    """`app.yml` is missing or does not describe an App."""


class UnknownState(SetupError):
    """A callback whose state this session never began, already used, or let expire."""


class AlreadyRegistered(SetupError):
    """This process has already saved an App's credentials; it must restart to use them."""


class ExchangeError(SetupError):
    """GitHub did not turn the code into credentials; nothing was written. The App may exist on
    GitHub all the same; `choice` is the registration that was being completed, when known."""

    def __init__(self, message: str, *, bad_code: bool) -> None:
        super().__init__(message)
        self.bad_code = bad_code  # the code itself was unusable, not GitHub or the network
        self.choice: RegistrationChoice | None = None


class CredentialsNotSaved(SetupError):
    """GitHub created the App, but its credentials could not be written."""


@dataclass(frozen=True)
class GitHubSite:
    """Where an App is registered: the web address people use and the REST API's address."""

    web_url: str
    api_url: str

    @property
    def is_github_com(self) -> bool:
        return self.web_url == GITHUB_COM


@dataclass(frozen=True)
class RegistrationChoice:
    """What the person chose on the setup page, checked."""

    site: GitHubSite
    organization: str | None  # None: the person's own account
    public_url: str
    relay_url: str | None = None  # a webhook relay's channel, for a server GitHub cannot reach

    @property
    def apps_page(self) -> str:
        """GitHub's page listing the owner's Apps, where an App made by this choice shows."""
        if self.organization is None:
            return f"{self.site.web_url}/settings/apps"
        return f"{self.site.web_url}/organizations/{quote(self.organization)}/settings/apps"


@dataclass(frozen=True)
class RegistrationForm:
    """The form the browser posts to GitHub: where, and the manifest it carries."""

    action: str
    manifest: dict[str, Any]


class CreatedApp(BaseModel):
    """The fields Baton needs from GitHub's answer to the code exchange (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: int
    name: str
    html_url: str
    pem: SecretStr
    webhook_secret: SecretStr
    # The App's OAuth client, for "Sign in with GitHub"; absent when an App is imported by id.
    client_id: str | None = None
    client_secret: SecretStr | None = None

    @field_validator("html_url")
    @classmethod
    def _web_address(cls, value: str) -> str:
        # The address becomes a link on the success page, so only http(s) is accepted.
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected an http(s) URL")
        return value.rstrip("/")


def choose(
    settings: Settings,
    *,
    account: str,
    organization: str,
    github_url: str,
    public_url: str,
    relay_url: str = "",
) -> RegistrationChoice:
    """Check the setup page's fields; `ChoiceError` says which one is wrong and why."""
    if account not in ("personal", "organization"):
        raise ChoiceError("choose a personal account or an organization as the App's owner")
    login = organization.strip()
    if account == "organization" and not LOGIN.fullmatch(login):
        raise ChoiceError(
            "type the organization's login (letters, digits and hyphens, as in its GitHub address)"
        )
    return RegistrationChoice(
        site=github_site(github_url, settings),
        organization=login if account == "organization" else None,
        public_url=_web_address("public address", public_url),
        relay_url=relay_address(relay_url),
    )


def github_site(typed: str, settings: Settings) -> GitHubSite:
    """The GitHub a typed address names; `ChoiceError` unless it may be trusted."""
    web_url = _github_address(typed, settings)
    return GitHubSite(web_url, api_url_for(web_url, settings))


def api_url_for(web_url: str, settings: Settings) -> str:
    """The REST API that goes with a GitHub web address (github.com or Enterprise Server)."""
    if web_url == settings.github_url:
        return settings.github_api_url
    if web_url == GITHUB_COM:
        return GITHUB_COM_API
    return f"{web_url}/api/v3"


def _github_address(typed: str, settings: Settings) -> str:
    """The typed GitHub address: https; the operator's own `GITHUB_URL` as it is; plain http only
    for a loopback host with `SETUP_ALLOW_HTTP_GITHUB`."""
    url = _web_address("GitHub address", typed)
    parts = urlsplit(url)
    if url == settings.github_url or parts.scheme == "https":
        return url
    if settings.setup_allow_http_github and parts.hostname in LOOPBACK_HOSTS:
        return url
    raise ChoiceError(
        "the GitHub address must be an https address, such as https://github.com or your "
        f"Enterprise Server's (plain http only on this machine, with {ENV_PREFIX}"
        "SETUP_ALLOW_HTTP_GITHUB=true)"
    )


def relay_address(typed: str) -> str | None:
    """A webhook relay's channel: blank for none, else an https address."""
    if not typed.strip():
        return None
    url = _web_address("webhook relay address", typed)
    if not url.startswith("https://"):
        raise ChoiceError(
            "the webhook relay address must be an https address, such as a channel made at "
            "https://smee.io/new"
        )
    return url


def _web_address(what: str, typed: str) -> str:
    url = typed.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ChoiceError(f"the {what} must be an http(s) address such as https://example.com")
    if parts.query or parts.fragment:
        raise ChoiceError(f"the {what} must not have a query or fragment ('?' or '#')")
    return url


def load_app_yml(path: Traversable = APP_YML) -> dict[str, Any]:
    """The App description in `app.yml`; `ManifestError` when it is missing or malformed."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ManifestError(
            f"cannot read the App description {path}: {error.strerror}; "
            "reinstall Baton (pip install . in its checkout, or its wheel)"
        ) from None
    except yaml.YAMLError as error:
        raise ManifestError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("name"), str):
        raise ManifestError(f"{path} must be a mapping with at least a `name`")
    return loaded


def build_manifest(
    app_yml: Mapping[str, Any], *, home_url: str, hook_url: str, redirect_url: str
) -> dict[str, Any]:
    """The manifest GitHub receives: `app.yml`'s description, pointed at this server."""
    manifest = {key: app_yml[key] for key in MANIFEST_KEYS if key in app_yml}
    hook_attributes = dict(app_yml.get("hook_attributes") or {})
    hook_attributes["url"] = hook_url
    manifest.update(url=home_url, hook_attributes=hook_attributes, redirect_url=redirect_url)
    # GitHub sends people back only to a registered callback after "Sign in with GitHub".
    manifest["callback_urls"] = [home_url.rstrip("/") + SIGN_IN_CALLBACK_PATH]
    return manifest


def registration_url(site: GitHubSite, organization: str | None, state: str) -> str:
    """GitHub's page that creates an App from a posted manifest, for an account or organization."""
    if organization is None:
        return f"{site.web_url}/settings/apps/new?state={state}"
    return f"{site.web_url}/organizations/{quote(organization)}/settings/apps/new?state={state}"


@dataclass(frozen=True)
class _Pending:
    expiry: float
    choice: RegistrationChoice
    session: str


class PendingStates:
    """States handed to the operator's browser: each is good in the session that began it,
    within its lifetime, until it is forgotten."""

    def __init__(
        self,
        lifetime: float = STATE_LIFETIME_SECONDS,
        limit: int = MAX_PENDING_STATES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lifetime = lifetime
        self._limit = limit
        self._clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def issue(self, choice: RegistrationChoice, session: str) -> str:
        """A new unguessable state remembering `choice` and `session`; the oldest is forgotten
        past the limit."""
        self._forget_expired()
        while len(self._pending) >= self._limit:
            self._pending.popitem(last=False)
        state = secrets.token_urlsafe(32)
        self._pending[state] = _Pending(self._clock() + self._lifetime, choice, session)
        return state

    def find(self, state: str, session: str) -> RegistrationChoice | None:
        """The choice remembered with `state` in the session that began it; None when unknown,
        forgotten, expired or begun in another session."""
        self._forget_expired()
        entry = self._pending.get(state)
        if entry is None or not hmac.compare_digest(entry.session, session):
            return None
        return entry.choice

    def forget(self, state: str) -> None:
        """`state` is good no more."""
        self._pending.pop(state, None)

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._pending and next(iter(self._pending.values())).expiry <= now:
            self._pending.popitem(last=False)


class ManifestFlow:
    """One process's registration: issues states and completes at most one registration."""

    def __init__(
        self, settings: Settings, env_path: Path, app_yml_path: Traversable = APP_YML
    ) -> None:
        self.settings = settings
        self.env_path = env_path
        self.app_yml_path = app_yml_path
        self.states = PendingStates()
        self.registered: CreatedApp | None = None
        self.imported = False  # the registered App existed before: typed in, not created
        self._completing = asyncio.Lock()

    def begin(
        self, choice: RegistrationChoice, session: str, *, hook_url: str, redirect_url: str
    ) -> RegistrationForm:
        """The form to post to GitHub, with a fresh state remembered with `session` for the
        callback. `hook_url` is where GitHub sends webhooks: the relay's channel when the
        choice has one."""
        self.refuse_if_registered()
        manifest = build_manifest(
            load_app_yml(self.app_yml_path),
            home_url=choice.public_url,
            hook_url=choice.relay_url or hook_url,
            redirect_url=redirect_url,
        )
        state = self.states.issue(choice, session)
        return RegistrationForm(registration_url(choice.site, choice.organization, state), manifest)

    def refuse_if_registered(self) -> None:
        """`AlreadyRegistered` once this process has saved an App: it must restart to use it."""
        if self.registered is not None:
            raise AlreadyRegistered(
                f"the GitHub App {self.registered.name!r} is already registered and saved to "
                f"{self.env_path}; restart Baton (make run) to use it"
            )

    async def complete(self, code: str, state: str, session: str) -> CreatedApp:
        """Exchange `code` and save the App's credentials to `env_path`, when `state` was begun
        in `session`; once per process. A failed exchange leaves `state` good for a retry."""
        async with self._completing:
            self.refuse_if_registered()
            choice = self.states.find(state, session)
            if choice is None:
                raise UnknownState(
                    "this registration link is unknown, expired, already used or was begun in "
                    "another browser; start again from Baton's home page"
                )
            try:
                app = await exchange_code(code, choice.site.api_url)
            except ExchangeError as error:
                error.choice = choice  # the page then says where the App may already be
                raise
            self._save(app, credentials_for(app, choice.site, choice.relay_url))
            self.states.forget(state)
        return app

    async def adopt(self, app: CreatedApp, site: GitHubSite, relay_url: str | None) -> None:
        """Save an App that already exists on `site` (its credentials checked with GitHub by
        the caller) as this process's registration; once per process."""
        async with self._completing:
            self.refuse_if_registered()
            self._save(app, credentials_for(app, site, relay_url))
            self.imported = True

    def _save(self, app: CreatedApp, entries: Mapping[str, str | None]) -> None:
        save_credentials(self.env_path, entries)
        self.registered = app
        log.info("saved GitHub App %r (id %d): credentials in %s", app.name, app.id, self.env_path)


async def exchange_code(code: str, api_url: str) -> CreatedApp:
    """GitHub's answer to `POST /app-manifests/{code}/conversions`; `ExchangeError` otherwise."""
    if not CODE.fullmatch(code):
        raise ExchangeError(
            "GitHub's callback carried no usable code; start again from Baton's home page",
            bad_code=True,
        )
    github = GitHub(
        UnauthAuthStrategy(),
        base_url=api_url + "/",
        user_agent=USER_AGENT,
        timeout=EXCHANGE_TIMEOUT_SECONDS,
        http_cache=False,
        # A code works once: a retried POST could only be refused.
        auto_retry=False,
    )
    try:
        response = await github.rest(API_VERSION).apps.async_create_from_manifest(code)
    except RequestFailed as failure:
        raise _failed_exchange(api_url, failure.response.status_code) from None
    except GitHubException as error:
        raise ExchangeError(
            f"could not reach GitHub at {api_url} ({_cause(error)}); check the address and this "
            "machine's network, then start again from Baton's home page",
            bad_code=False,
        ) from None
    return _created_app(response.raw_response, api_url)


def _failed_exchange(api_url: str, status: int) -> ExchangeError:
    if 400 <= status < 500:
        return ExchangeError(
            f"GitHub at {api_url} refused the code (HTTP {status}): it is unknown, expired "
            "(codes last an hour) or already used; start again from Baton's home page",
            bad_code=True,
        )
    return ExchangeError(
        f"GitHub at {api_url} failed to exchange the code (HTTP {status}); wait a minute, then "
        "start again from Baton's home page",
        bad_code=False,
    )


def _cause(error: GitHubException) -> str:
    cause = getattr(error, "exc", None) or error
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


def _created_app(response: httpx.Response, api_url: str) -> CreatedApp:
    try:
        return CreatedApp.model_validate_json(response.content)
    except ValidationError as error:
        # Inputs are left out of the message: they include the private key.
        problems = error.errors(include_url=False, include_input=False)
        fields = ", ".join(
            ".".join(str(part) for part in problem["loc"]) or "body" for problem in problems
        )
        raise ExchangeError(
            f"GitHub at {api_url} answered the code exchange without a usable {fields}; "
            "delete the new App in GitHub's settings and start again",
            bad_code=False,
        ) from None


def credentials_for(
    app: CreatedApp, site: GitHubSite, relay_url: str | None = None
) -> dict[str, str | None]:
    """`.env` entries for `app` on `site`, its webhooks coming through `relay_url` if any; None
    removes an entry left from an earlier setup."""
    enterprise = not site.is_github_com
    entries: dict[str, str | None] = {
        "GITHUB_APP_ID": str(app.id),
        "GITHUB_PRIVATE_KEY": app.pem.get_secret_value(),
        "GITHUB_PRIVATE_KEY_PATH": None,
        "WEBHOOK_SECRET": app.webhook_secret.get_secret_value(),
        "GITHUB_CLIENT_ID": app.client_id,
        "GITHUB_CLIENT_SECRET": app.client_secret.get_secret_value() if app.client_secret else None,
        "GITHUB_URL": site.web_url if enterprise else None,
        "GITHUB_API_URL": site.api_url if enterprise else None,
        "WEBHOOK_PROXY_URL": relay_url,
    }
    return {ENV_PREFIX + key: value for key, value in entries.items()}


def save_credentials(env_path: Path, entries: Mapping[str, str | None]) -> None:
    """Set (or, for None, remove) `entries` in the `.env` file, keeping its other lines.

    The file is replaced in one rename; the new file is readable by its owner only from the
    moment it exists. `CredentialsNotSaved` names the file and the reason.
    """
    try:
        _replace_env_file(env_path, entries)
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise CredentialsNotSaved(
            f"GitHub created the App, but its credentials could not be written to {env_path}: "
            f"{reason}; make that file (UTF-8 text) and its directory writable, delete the new "
            "App in GitHub's settings and start again"
        ) from None


def _replace_env_file(env_path: Path, entries: Mapping[str, str | None]) -> None:
    # mkstemp creates the file 0600 whatever the umask, so the key is never world-readable.
    handle, name = tempfile.mkstemp(prefix=".env.", dir=env_path.parent)
    draft = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(_current_text(env_path))
        present = dotenv_values(draft, interpolate=False)
        for key, value in entries.items():
            if value is not None:
                set_key(draft, key, value)
            elif key in present:
                unset_key(draft, key)
        os.replace(draft, env_path)
    except BaseException:
        draft.unlink(missing_ok=True)
        raise


def _current_text(env_path: Path) -> str:
    try:
        return env_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
