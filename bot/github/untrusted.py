"""Issue and comment text prepared for a model: what a person sees, nothing hidden, bounded.

Text written on GitHub is untrusted: it may hide instructions where a reader of the rendered page
would not see them (HTML comments, invisible characters, collapsed or hidden markup), or reorder
what is shown with bidirectional controls. A model must get what a person sees, and no more than
it can use.
"""

from __future__ import annotations

import re
import unicodedata

DEFAULT_LIMIT = 20_000
TRUNCATION_MARK = "\n[... truncated by Baton: {omitted} more characters ...]"

_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Markup GitHub renders as nothing a reader sees.
_HIDDEN_ELEMENT = re.compile(
    r"<(?P<tag>[a-z][a-z0-9]*)\b[^>]*\b(?:hidden\b|style\s*=\s*[\"'][^\"']*"
    r"(?:display\s*:\s*none|visibility\s*:\s*hidden)[^\"']*[\"'])[^>]*>.*?</(?P=tag)\s*>",
    re.DOTALL | re.IGNORECASE,
)
_INVISIBLE_CATEGORIES = {"Cf"}  # format characters: zero-width, bidi controls, tag characters
_KEPT_CONTROLS = {"\n", "\t"}


def prepare_untrusted(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """`text` without HTML comments, hidden elements and invisible or control characters,
    normalised (NFKC) and cut to at most `limit` characters, with a note saying so."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(char for char in text if _visible(char))
    # Invisible characters are gone first, so they cannot split `<!` from `--` to dodge this.
    text = _without_hidden_markup(text).strip()
    return capped(text, limit)


def _without_hidden_markup(text: str) -> str:
    previous = None
    # Repeat: removing one construct may join the halves of another around it.
    while previous != text:
        previous = text
        text = _HTML_COMMENT.sub("", text)
        text = _HIDDEN_ELEMENT.sub("", text)
    return text


def _visible(char: str) -> bool:
    if char in _KEPT_CONTROLS:
        return True
    category = unicodedata.category(char)
    return category not in _INVISIBLE_CATEGORIES and not category.startswith("C")


def capped(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, with a note saying how many were left out."""
    if len(text) <= limit:
        return text
    kept = limit - len(TRUNCATION_MARK.format(omitted=len(text)))
    if kept <= 0:
        return text[:limit]
    return text[:kept] + TRUNCATION_MARK.format(omitted=len(text) - kept)
