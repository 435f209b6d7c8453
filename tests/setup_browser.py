"""A person's browser in setup mode: the operator signed in, filling Baton's forms and GitHub's
(the double's), as the setup tests drive them; and the fixtures that serve them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from bot.settings import Settings
from tests.doubles.github import GitHubDouble, RecordedRequest
from tests.support import FAST, serve
from webhooks.access import OperatorAccess
from webhooks.app import create_app

APP_YML = yaml.safe_load((Path(__file__).parents[1] / "bot" / "github" / "app.yml").read_text())


@dataclass
class Form:
    """One HTML form as a browser would submit it: checked radios and every other named input."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(found.get("action", ""), found.get("method", "get").lower()))
        elif tag == "input" and self.forms and "name" in found:
            if found.get("type") == "radio" and "checked" not in found:
                return
            self.forms[-1].fields[found["name"]] = found.get("value", "")


def only_form(page: httpx.Response) -> Form:
    reader = FormReader()
    reader.feed(page.text)
    assert len(reader.forms) == 1, page.text
    return reader.forms[0]


def setup_settings(
    settings: Settings, github_url: str, github_api_url: str, **more: Any
) -> Settings:
    """The fixture's database and data directory, no App credentials: setup mode."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        github_url=github_url,
        github_api_url=github_api_url,
        **more,
    )


@pytest.fixture
def env_path(tmp_path: Path) -> Path:
    return tmp_path / ".env"


@contextmanager
def signed_in_browser(url: str, operator: OperatorAccess) -> Iterator[httpx.Client]:
    """A browser that opened the operator's sign-in link."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        signed_in = browser.get(operator.sign_in_link(url))
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")
        yield browser


@contextmanager
def operators_browser(settings: Settings, env_path: Path) -> Iterator[httpx.Client]:
    """Baton served with `settings`, and a browser that opened the sign-in link it printed."""
    operator = OperatorAccess(setup_mode=not settings.has_app_credentials)
    app = create_app(settings, FAST, env_path=env_path, operator=operator)
    with serve(app) as url, signed_in_browser(url, operator) as browser:
        yield browser


@pytest.fixture
def setup_client(settings: Settings, env_path: Path) -> Iterator[httpx.Client]:
    """Baton in setup mode for github.com (never contacted by these tests), signed in."""
    github_com = setup_settings(settings, "https://github.com", "https://api.github.com")
    with operators_browser(github_com, env_path) as client:
        yield client


def manifest_page(client: httpx.Client, **typed: str) -> httpx.Response:
    """Fill the setup page's form as a person would and submit it."""
    form = only_form(client.get("/"))
    return client.request(form.method, form.action, data={**form.fields, **typed})


def issued_state(client: httpx.Client) -> str:
    """The state of a manifest page, as GitHub would hand it back."""
    action = only_form(manifest_page(client)).action
    return parse_qs(urlsplit(action).query)["state"][0]


@pytest.fixture
def double(tmp_path: Path) -> Iterator[GitHubDouble]:
    with GitHubDouble(tmp_path / "github") as double:
        yield double


@pytest.fixture
def baton(settings: Settings, double: GitHubDouble, env_path: Path) -> Iterator[httpx.Client]:
    """Baton in setup mode, its GitHub address the double's, and the operator signed in."""
    with operators_browser(
        setup_settings(settings, double.url, double.api_url), env_path
    ) as client:
        yield client


def post_to_github(form: Form) -> httpx.Response:
    """The browser posting the manifest page's form to GitHub, which answers with a redirect."""
    assert form.method == "post"
    answer = httpx.post(form.action, data=form.fields, timeout=30)
    assert answer.status_code == 302, answer.text
    return answer


def register(baton: httpx.Client, **typed: str) -> httpx.Response:
    """A person registering Baton: setup page, manifest page, GitHub, back to Baton's callback."""
    github_answer = post_to_github(only_form(manifest_page(baton, **typed)))
    return baton.get(github_answer.headers["location"])


def conversions(double: GitHubDouble) -> list[RecordedRequest]:
    return [r for r in double.requests if r.route == "POST /app-manifests/{code}/conversions"]
