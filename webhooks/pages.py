"""Plain HTML pages: usable without JavaScript, every interpolated value escaped by the caller."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

# Pages carry one-use states, sign-in codes and forms: keep them out of caches, out of other
# sites' frames, and their addresses out of the Referer of links followed from them.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A whole page titled `title` around `body` (HTML the caller has already escaped)."""
    html = (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title></head><body>\n<h1>{escape(title)}</h1>\n{body}\n"
        "</body></html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
