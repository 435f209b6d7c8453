"""`GET` and `POST /setup/import`: saving a GitHub App that already exists, in setup mode.

The way on when GitHub created the App but Baton never got its credentials (the code exchange
failed, or Baton restarted in between), or when the App was registered by hand. The typed id and
key are checked with GitHub (`GET /app` with a token signed by that key) before anything is
saved, to the same `.env` the manifest flow writes. Same rules as every setup page: the
operator's session only, the form POSTed, every value escaped; the key and secret are never
shown back.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from bot.github.app_import import AppNotConfirmed, check_typed, confirm_with_github
from bot.github.manifest import ChoiceError, ExchangeError, ManifestFlow, SetupError
from bot.settings import Settings
from webhooks.access import OperatorSession
from webhooks.pages import page
from webhooks.setup_pages import alert, operator_only, registered_page, typed_fields

IMPORT_PATH = "/setup/import"
TITLE = "Import an existing App"
IMPORT_FIELDS = {
    "github_url": "",
    "app_id": "",
    "private_key": "",
    "webhook_secret": "",
    "relay_url": "",
}


def create_router(flow: ManifestFlow) -> APIRouter:
    router = APIRouter()

    @router.get(IMPORT_PATH, response_class=HTMLResponse)
    async def import_page(session: OperatorSession) -> HTMLResponse:
        if session is None:
            return operator_only()
        if flow.registered is not None:
            return registered_page(flow)
        return page(TITLE, import_form(IMPORT_FIELDS | {"github_url": flow.settings.github_url}))

    @router.post(IMPORT_PATH, response_class=HTMLResponse)
    async def import_app(request: Request, session: OperatorSession) -> HTMLResponse:
        if session is None:
            return operator_only()
        fields = typed_fields(await request.body(), IMPORT_FIELDS)
        try:
            flow.refuse_if_registered()
            typed = check_typed(flow.settings, **fields)
            app = await confirm_with_github(typed)
            await flow.adopt(app, typed.site, typed.relay_url)
        except ChoiceError as error:
            return page(TITLE, import_form(fields, str(error)), 400)
        except AppNotConfirmed as error:
            return page(TITLE, import_form(fields, str(error)), 502 if error.unreachable else 400)
        except SetupError as error:
            back = '<p><a href="/">Back to the start</a></p>'
            return page("Import stopped", f"<p>{escape(str(error))}.</p>\n{back}", 409)
        return registered_page(flow)

    return router


def recovery_body(error: ExchangeError, settings: Settings) -> str:
    """After a failed code exchange: where the App may already be, and the form to import it."""
    choice = error.choice
    apps_page = choice.apps_page if choice else f"{settings.github_url}/settings/apps"
    fields = IMPORT_FIELDS | {
        "github_url": choice.site.web_url if choice else settings.github_url,
        "relay_url": (choice.relay_url if choice else None) or "",
    }
    retry = (
        ""
        if error.bad_code
        else "<p>Opening GitHub's link back to Baton again (reload this page) tries again.</p>\n"
    )
    return f"""{retry}<p>GitHub may have created the App all the same: look in
<a href="{escape(apps_page)}">your Apps on GitHub</a>. If it is there, import it below, or delete
it there and start again.</p>
<h2>{TITLE}</h2>
{import_form(fields)}"""


def import_form(fields: dict[str, str], error: str | None = None) -> str:
    """The import form with `fields` filled in, except the key and secret, which are never shown
    back."""
    again = " For safety the key and secret are not shown again: paste them again." if error else ""
    return f"""{alert(error)}<p>Baton needs the App's id, one of its private keys and its webhook
secret, all on the App's settings page on GitHub. GitHub checks the id and key before anything is
saved to Baton's <code>.env</code> file.{escape(again)}</p>
<form action="{IMPORT_PATH}" method="post">
<p><label>GitHub address<br><input name="github_url" size="50" required
 value="{escape(fields["github_url"])}"></label></p>
<p><label>App ID<br><input name="app_id" size="12" required inputmode="numeric"
 value="{escape(fields["app_id"])}"></label><br>
<small>The number shown as “App ID” at the top of the App's settings page.</small></p>
<p><label>Private key<br><textarea name="private_key" rows="8" cols="66" required
 autocomplete="off" placeholder="-----BEGIN RSA PRIVATE KEY-----"></textarea></label><br>
<small>Under “Private keys”, generate a key: GitHub downloads a .pem file; paste all of it.
</small></p>
<p><label>Webhook secret<br><input name="webhook_secret" type="password" size="50" required
 autocomplete="off"></label><br>
<small>If you do not know it (the App Manifest flow makes one nobody sees), set a new one under
“Webhook” on the App's settings page and type it here.</small></p>
<p><label>Webhook relay address (optional)<br><input name="relay_url" size="50"
 value="{escape(fields["relay_url"])}" placeholder="https://smee.io/…"></label><br>
<small>Only when the App's webhook URL is a relay channel, such as one from smee.io.</small></p>
<p><button type="submit">Check with GitHub and save</button></p>
</form>"""
