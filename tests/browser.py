"""Headless Chromium for page tests: Debian's `/usr/bin/chromium` driven by Playwright's Python
client (its own driver, no browser download), and pages that cannot reach beyond this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless. Per module: Playwright's sync driver holds an event loop
    on this thread while it lives, and the async tests of later modules need the thread free."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


def _loopback_only(route: Route) -> None:
    # A page that asks the internet for anything fails the test's premise: abort it, visibly.
    if urlsplit(route.request.url).hostname in LOOPBACK:
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.route("**/*", _loopback_only)
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(opened: Page, name: str) -> Path:
    """Save what `opened` shows, whole, as `tests/artifacts/<name>.png` for a reviewer."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    opened.screenshot(path=str(path), full_page=True)
    return path
