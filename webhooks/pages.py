"""The one layout of every HTML page, its stylesheet and scripts, and when a request wants HTML.

Pages are usable without JavaScript; every interpolated value is escaped by the caller. Assets
ship inside the package and are served under names carrying a hash of their content, so a browser
may keep them for a year and still sees a new version the moment it changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from html import escape
from importlib import resources

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

# Nothing but this server's own stylesheet and scripts: no inline script, no other origin.
# No `form-action`: the setup and sign-in forms go on to GitHub (or an Enterprise Server at any
# address), and Chromium applies `form-action` to a form's redirects too.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# Pages carry one-use states, sign-in codes and forms: keep them out of caches, out of other
# sites' frames, and their addresses out of the Referer of links followed from them.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
}
ASSET_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
NAV = (("Runs", "/runs"), ("Insights", "/insights"))

router = APIRouter()


@dataclass(frozen=True)
class Asset:
    """A file of `webhooks/static`, with the hashed address it is served under."""

    name: str
    content: bytes

    @property
    def url(self) -> str:
        stem, dot, suffix = self.name.rpartition(".")
        digest = hashlib.sha256(self.content).hexdigest()[:12]
        return f"/static/{stem}.{digest}{dot}{suffix}"

    @property
    def media_type(self) -> str:
        return ASSET_TYPES["." + self.name.rpartition(".")[2]]


@cache
def asset(name: str) -> Asset:
    """The packaged asset `name` (read once: a wheel's files do not change while it runs)."""
    return Asset(name, resources.files("webhooks.static").joinpath(name).read_bytes())


@cache
def _assets_by_url() -> dict[str, Asset]:
    names = ("baton.css", "run.js")
    return {asset(name).url: asset(name) for name in names}


@router.get("/static/{file_name}", include_in_schema=False)
async def static_file(file_name: str) -> Response:
    """A packaged asset by its hashed name; any other name is 404, so no path reaches the disk."""
    found = _assets_by_url().get(f"/static/{file_name}")
    if found is None:
        raise HTTPException(404, "no such asset")
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    return Response(found.content, media_type=found.media_type, headers=headers)


def wants_html(request: Request) -> bool:
    """True when the client prefers `text/html` to JSON: a browser. No Accept, `*/*` or
    `application/json` keep the JSON answer scripts rely on."""
    best_html, best_json = 0.0, 0.0
    for media, quality in _accepted(request.headers.get("accept", "")):
        if media == "text/html":
            best_html = max(best_html, quality)
        elif media == "application/json":
            best_json = max(best_json, quality)
    return best_html > best_json


def _accepted(header: str) -> list[tuple[str, float]]:
    accepted = []
    for part in header.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                quality = _quality(value)
        accepted.append((media.lower(), quality))
    return accepted


def _quality(value: str) -> float:
    try:
        return min(max(float(value), 0.0), 1.0)
    except ValueError:
        return 0.0


def state_badge(state: str) -> str:
    """A run's or task's state in words, coloured by the stylesheet's class for it."""
    css_class = "".join(char for char in state if char.isalnum() or char == "_")
    return f'<span class="state state-{css_class}">{escape(state.replace("_", " "))}</span>'


def page(
    title: str, body: str, status: int = 200, *, script: str | None = None, live: bool = False
) -> HTMLResponse:
    """A whole page titled `title` around `body` (HTML the caller has already escaped), in the
    shared layout; `script` names a packaged script (such as `run.js`) the page loads, and
    `live` tells it the page is still changing."""
    live_flag = "true" if live else "false"
    scripts = f'<script src="{asset(script).url}" defer></script>' if script else ""
    html = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · Baton</title>"
        f'<link rel=stylesheet href="{asset("baton.css").url}">{scripts}</head><body>\n'
        f"{_header()}<main data-live={live_flag}>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n"
        "</body></html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _header() -> str:
    links = "".join(f'<a href="{href}">{name}</a>' for name, href in NAV)
    return f'<header><a class=brand href="/runs">Baton</a><nav>{links}</nav></header>\n'
