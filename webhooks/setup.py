"""`GET /`: the operator's checklist once Baton is registered; in setup mode, `/setup/...`:
registering Baton on GitHub (App Manifest flow), or importing an App that already exists
(`webhooks.setup_import`).

Setup mode is for the operator only: every setup page needs the session that Baton's printed
sign-in link opens (`webhooks.access`), and answers 403 without it, saying where the link is.
Pages are plain HTML forms, usable without JavaScript; every interpolated value is escaped.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from bot.doctor import Finding, examine
from bot.github.addresses import webhook_warning
from bot.github.manifest import (
    AlreadyRegistered,
    ChoiceError,
    CredentialsNotSaved,
    ExchangeError,
    ManifestError,
    ManifestFlow,
    RegistrationChoice,
    RegistrationForm,
    SetupError,
    UnknownState,
    choose,
)
from bot.settings import Settings
from webhooks import setup_import
from webhooks.access import OperatorSession, code_needed_page
from webhooks.github import WEBHOOK_PATH
from webhooks.pages import page
from webhooks.setup_import import IMPORT_PATH
from webhooks.setup_pages import alert, operator_only, registered_page, typed_fields

CALLBACK_PATH = "/setup/callback"
RELAY_BELOW = "give a webhook relay address below"
REGISTER_FIELDS = {
    "account": "personal",
    "organization": "",
    "github_url": "",
    "public_url": "",
    "relay_url": "",
}


def create_router(settings: Settings, env_path: Path) -> APIRouter:
    """Configured: `/` says so. Setup mode: `/` and `/setup/...` register Baton on GitHub."""
    if settings.has_app_credentials:
        return _configured_router(settings)
    return _setup_router(ManifestFlow(settings, env_path))


def _configured_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    async def home(session: OperatorSession) -> HTMLResponse:
        if session is None:
            return code_needed_page(
                "Baton",
                "Baton is running. Its checklist and runs are for its operator: this browser "
                "has not signed in with the link Baton printed when it started.",
            )
        findings = await run_in_threadpool(examine, settings)
        return page(_home_title(findings), _configured_body(settings, findings))

    return router


def _setup_router(flow: ManifestFlow) -> APIRouter:
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    async def home(request: Request, session: OperatorSession) -> HTMLResponse:
        if session is None:
            return operator_only()
        if flow.registered is not None:
            return registered_page(flow)
        fields = _default_fields(flow.settings, request)
        return page("Register Baton on GitHub", _register_body(fields))

    # A POST: the session cookie is SameSite=Lax, which a browser sends on another site's links
    # (GETs) but never on its forms, so no other site can start a registration for the operator.
    @router.post("/setup/manifest", response_class=HTMLResponse)
    async def manifest(request: Request, session: OperatorSession) -> HTMLResponse:
        if session is None:
            return operator_only()
        fields = typed_fields(await request.body(), REGISTER_FIELDS)
        try:
            flow.refuse_if_registered()
            choice = choose(flow.settings, **fields)
            form = flow.begin(
                choice,
                session,
                hook_url=choice.public_url + WEBHOOK_PATH,
                redirect_url=choice.public_url + CALLBACK_PATH,
            )
        except ChoiceError as error:
            return page("Register Baton on GitHub", _register_body(fields, str(error)), 400)
        except SetupError as error:
            return _error_page(error, flow.settings)
        return page("Create the App on GitHub", _manifest_body(choice, form))

    @router.get(CALLBACK_PATH, response_class=HTMLResponse)
    async def callback(session: OperatorSession, code: str = "", state: str = "") -> HTMLResponse:
        if session is None:
            return operator_only()
        try:
            await flow.complete(code, state, session)
        except SetupError as error:
            return _error_page(error, flow.settings)
        return registered_page(flow)

    router.include_router(setup_import.create_router(flow))
    return router


def _error_page(error: SetupError, settings: Settings) -> HTMLResponse:
    status, title = _error_status(error)
    body = f"<p>{escape(str(error))}.</p>\n"
    if isinstance(error, ExchangeError):
        body += setup_import.recovery_body(error, settings)
    elif isinstance(error, UnknownState):
        body += f'<p><a href="{IMPORT_PATH}">I already have an App</a></p>\n'
    body += '<p><a href="/">Back to the start</a></p>'
    return page(title, body, status)


def _error_status(error: SetupError) -> tuple[int, str]:
    """The page's status and title for each way registration can stop."""
    if isinstance(error, UnknownState):
        return 400, "Registration link not valid"
    if isinstance(error, AlreadyRegistered):
        return 409, "Baton is already registered"
    if isinstance(error, ExchangeError):
        return (400 if error.bad_code else 502), "GitHub did not hand over the App"
    if isinstance(error, CredentialsNotSaved):
        return 500, "Credentials not saved"
    if isinstance(error, ManifestError):
        return 500, "App description unusable"
    return 400, "Registration stopped"


def _default_fields(settings: Settings, request: Request) -> dict[str, str]:
    # Behind a tunnel or proxy the address seen here is not GitHub's way in; the person can edit it.
    return REGISTER_FIELDS | {
        "github_url": settings.github_url,
        "public_url": str(request.base_url).rstrip("/"),
    }


def _register_body(fields: dict[str, str], error: str | None = None) -> str:
    personal = " checked" if fields["account"] != "organization" else ""
    organization = " checked" if fields["account"] == "organization" else ""
    return f"""{alert(error)}<p>Baton has no GitHub App credentials yet, so it is in
setup mode. This registers a GitHub App for it; GitHub then sends you back here and Baton saves
the App's id, private key, webhook secret and OAuth client to its <code>.env</code> file.
<a href="{IMPORT_PATH}">I already have an App</a>.</p>
<form action="/setup/manifest" method="post">
<fieldset><legend>Owner of the App</legend>
<label><input type="radio" name="account" value="personal"{personal}> My personal account
</label><br>
<label><input type="radio" name="account" value="organization"{organization}> The organization
</label> <input name="organization" value="{escape(fields["organization"])}"
 placeholder="organization login" aria-label="organization login">
</fieldset>
<p><label>GitHub address<br><input name="github_url" size="50" required
 value="{escape(fields["github_url"])}"></label><br>
<small>https://github.com, or your GitHub Enterprise Server's https address.</small></p>
<p><label>This server's public address<br><input name="public_url" size="50" required
 value="{escape(fields["public_url"])}"></label><br>
<small>GitHub sends webhooks here, and sends this browser back here once the App is created.
Behind a tunnel or proxy, type the address GitHub can reach, and open this page at that address
too: the sign-in does not carry over from one address to another.</small></p>
{_address_warning(fields["public_url"], RELAY_BELOW)}
<p><label>Webhook relay address (optional)<br><input name="relay_url" size="50"
 value="{escape(fields["relay_url"])}" placeholder="https://smee.io/…"></label><br>
<small>For a server GitHub cannot reach: a relay channel, such as one made at
<a href="https://smee.io/new">https://smee.io/new</a>. GitHub then sends webhooks to the relay
and Baton fetches them from it; your browser still comes back to the public address.</small></p>
<p><button type="submit">Continue</button></p>
</form>"""


def _address_warning(public_url: str, advice: str) -> str:
    """A warning when GitHub.com could not deliver webhooks to `public_url`, with `advice`
    (HTML); else nothing."""
    warning = webhook_warning(public_url)
    if warning is None:
        return ""
    return f"""<p role="status"><strong>{escape(warning)}.</strong> For GitHub.com, {advice} (a
GitHub Enterprise Server on your network may reach a private address).</p>"""


def _manifest_body(choice: RegistrationChoice, form: RegistrationForm) -> str:
    owner = f"the organization {choice.organization}" if choice.organization else "your account"
    manifest_json = json.dumps(form.manifest)
    hook = form.manifest["hook_attributes"]["url"]
    via = " (the relay)" if choice.relay_url else ""
    advice = '<a href="/">go back</a> and give a webhook relay address'
    warning = "" if choice.relay_url else _address_warning(choice.public_url, advice)
    return f"""{warning}<p>GitHub will show the App
<strong>{escape(str(form.manifest["name"]))}</strong> for {escape(owner)} on
{escape(choice.site.web_url)}, sending webhooks to <code>{escape(hook)}</code>{via}. Check it
there and create it; GitHub then sends you back here.</p>
<form action="{escape(form.action)}" method="post">
<input type="hidden" name="manifest" value="{escape(manifest_json)}">
<p><button type="submit">Create the App on GitHub</button></p>
</form>
<details><summary>The manifest</summary>
<pre>{escape(json.dumps(form.manifest, indent=2))}</pre></details>"""


def _home_title(findings: list[Finding]) -> str:
    problems = sum(not finding.ok for finding in findings)
    return f"Baton: {problems} thing(s) to fix" if problems else "Baton is ready"


def _configured_body(settings: Settings, findings: list[Finding]) -> str:
    items = "\n".join(_checklist_item(finding) for finding in findings)
    links = " · ".join(
        f'<a href="{path}">{label}</a>'
        for path, label in (("/runs", "Runs"), ("/readyz", "Readiness"), ("/metrics", "Metrics"))
    )
    return f"""<p>GitHub App id {escape(str(settings.github_app_id))} on
{escape(settings.github_url)}. Label an issue <code>baton</code> on a repository where the App is
installed to start a run.</p>
<ul>
{items}
</ul>
<p>{links}</p>"""


def _checklist_item(finding: Finding) -> str:
    if finding.ok:
        return f"<li>✓ <strong>{escape(finding.name)}</strong>: {escape(finding.detail)}</li>"
    return (
        f"<li>✗ <strong>{escape(finding.name)}</strong>: {escape(str(finding.problem))}. "
        f"{escape(finding.fix)}</li>"
    )
