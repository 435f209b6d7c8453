"""What the setup pages share: the refusal for strangers, the page once an App is saved, and
reading a posted form."""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl

from fastapi.responses import HTMLResponse

from bot.github.manifest import ManifestFlow
from webhooks.access import code_needed_page
from webhooks.pages import page


def operator_only() -> HTMLResponse:
    """403 for a browser without the operator's session, saying where the sign-in link is."""
    return code_needed_page(
        "Setup is for Baton's operator",
        "Registering Baton on GitHub needs the setup code Baton printed when it started; this "
        "browser has not signed in with it here. GitHub sends the browser back to the public "
        "address you choose, so sign in and register at that same address.",
    )


def typed_fields(body: bytes, defaults: dict[str, str]) -> dict[str, str]:
    """The fields named in `defaults` from a urlencoded form body (the last copy of each wins;
    a missing one takes its default)."""
    typed = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return {name: typed.get(name, default) for name, default in defaults.items()}


def alert(error: str | None) -> str:
    """The problem a form is shown again for, or nothing."""
    return f'<p role="alert"><strong>{escape(error)}.</strong></p>\n' if error else ""


def registered_page(flow: ManifestFlow) -> HTMLResponse:
    """What to do next once this process saved an App's credentials."""
    app = flow.registered
    assert app is not None, "no App was saved"
    how = "Baton will use the App" if flow.imported else "GitHub created the App"
    body = f"""<p>{how} <strong>{escape(app.name)}</strong> (id {app.id}). Its id, private key
and webhook secret are saved in <code>{escape(str(flow.env_path))}</code>, readable by its owner
only.</p>
<ol>
<li><a href="{escape(app.html_url)}/installations/new">Install the App</a> on the repositories
Baton should work on.</li>
<li>Restart Baton (stop it, then <code>make run</code>, or restart its container) so it leaves
setup mode.</li>
</ol>"""
    return page("Baton is registered", body)
