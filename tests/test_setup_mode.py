"""CONTRACT §1 setup mode over real HTTP: registering Baton through the App Manifest flow."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from bot.github.manifest import (
    CreatedApp,
    GitHubSite,
    ManifestError,
    PendingStates,
    RegistrationChoice,
    api_url_for,
    credentials_for,
    load_app_yml,
    save_credentials,
)
from bot.settings import Settings
from tests.doubles.github import GitHubDouble
from tests.setup_browser import (
    APP_YML,
    Form,
    conversions,
    issued_state,
    manifest_page,
    only_form,
    operators_browser,
    post_to_github,
    register,
    setup_settings,
    signed_in_browser,
)
from tests.support import FAST, free_port, payload, serve
from webhooks.access import OperatorAccess
from webhooks.app import create_app

PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\nline two\n-----END RSA PRIVATE KEY-----\n"


def test_setup_page_defaults_to_this_server_and_the_configured_github(
    setup_client: httpx.Client,
) -> None:
    page = setup_client.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    form = only_form(page)
    assert (form.action, form.method) == ("/setup/manifest", "post")
    assert form.fields == {
        "account": "personal",
        "organization": "",
        "github_url": "https://github.com",
        "public_url": str(setup_client.base_url).rstrip("/"),
        "relay_url": "",
    }
    assert '<a href="/setup/import">I already have an App</a>' in page.text


def test_manifest_page_posts_app_yml_pointed_at_the_typed_public_address(
    setup_client: httpx.Client,
) -> None:
    page = manifest_page(setup_client, public_url="https://baton.example.org/")

    assert page.status_code == 200
    form = only_form(page)
    assert form.method == "post"
    assert form.action.startswith("https://github.com/settings/apps/new?state=")
    assert json.loads(form.fields["manifest"]) == {
        **{key: APP_YML[key] for key in ("name", "description", "public")},
        "default_events": APP_YML["default_events"],
        "default_permissions": APP_YML["default_permissions"],
        "url": "https://baton.example.org",
        "hook_attributes": {"url": "https://baton.example.org/api/github/webhooks", "active": True},
        "redirect_url": "https://baton.example.org/setup/callback",
        "callback_urls": ["https://baton.example.org/sign-in/callback"],
    }


def test_each_manifest_page_gets_its_own_state_for_an_organization(
    setup_client: httpx.Client,
) -> None:
    actions = [
        only_form(manifest_page(setup_client, account="organization", organization="acme")).action
        for _ in range(2)
    ]

    prefix = "https://github.com/organizations/acme/settings/apps/new"
    states = [parse_qs(urlsplit(action).query)["state"][0] for action in actions]
    assert all(action.startswith(prefix + "?state=") for action in actions)
    assert len(set(states)) == 2
    assert all(len(state) >= 32 for state in states)


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ({"account": "organization", "organization": ""}, "organization&#x27;s login"),
        ({"account": "organization", "organization": "a/b"}, "organization&#x27;s login"),
        ({"account": "someone"}, "personal account or an organization"),
        ({"github_url": "github.com"}, "GitHub address must be an http(s) address"),
        ({"public_url": "ftp://baton.example.org"}, "public address must be an http(s) address"),
        ({"public_url": "https://baton.example.org/?x=1"}, "must not have a query"),
    ],
    ids=["no-login", "bad-login", "no-owner", "github-no-scheme", "public-ftp", "public-query"],
)
def test_unusable_choice_shows_the_form_again_saying_what_to_fix(
    setup_client: httpx.Client, typed: dict[str, str], complaint: str
) -> None:
    page = manifest_page(setup_client, **typed)

    assert page.status_code == 400
    assert complaint in page.text
    assert only_form(page).action == "/setup/manifest"


def test_typed_values_are_escaped_on_every_page(setup_client: httpx.Client) -> None:
    hostile = 'https://baton.example.org/"><script>alert(1)</script>'

    refused = manifest_page(setup_client, account="organization", organization=hostile)
    accepted = manifest_page(setup_client, public_url=hostile)

    for page in (refused, accepted):
        assert "<script>" not in page.text
    assert only_form(refused).fields["organization"] == hostile
    manifest = json.loads(only_form(accepted).fields["manifest"])
    assert manifest["redirect_url"] == hostile + "/setup/callback"


@pytest.mark.parametrize(
    "query",
    [{"code": "abc", "state": "forged"}, {"code": "abc"}, {}],
    ids=["forged-state", "no-state", "nothing"],
)
def test_callback_with_a_state_never_issued_is_refused_and_writes_nothing(
    setup_client: httpx.Client, env_path: Path, query: dict[str, str]
) -> None:
    page = setup_client.get("/setup/callback", params=query)

    assert page.status_code == 400
    assert "start again" in page.text
    assert not env_path.exists()


def test_configured_baton_shows_its_checklist_to_the_operator_only_and_has_no_setup_pages(
    settings: Settings, env_path: Path
) -> None:
    configured = settings.model_copy(
        update={"github_app_id": 42, "github_private_key": SecretStr(PEM)}
    )
    operator = OperatorAccess(setup_mode=False)

    with serve(create_app(configured, FAST, env_path=env_path, operator=operator)) as url:
        stranger = httpx.get(url + "/")
        with signed_in_browser(url, operator) as client:
            home = client.get("/")
            setup_pages = [client.get(path) for path in ("/setup/manifest", "/setup/callback")]

    assert stranger.status_code == 403
    assert "42" not in stranger.text
    assert home.status_code == 200
    assert "GitHub App id 42" in home.text
    # The test settings hold no model key, and a key that is no key: both are on the list.
    assert "ANTHROPIC_API_KEY is not set" in home.text
    assert "BATON_GITHUB_PRIVATE_KEY does not hold a PEM private key" in home.text
    for path in ("/runs", "/readyz", "/metrics"):
        assert f'href="{path}"' in home.text
    assert [page.status_code for page in setup_pages] == [404, 404]


def created_app(**fields: Any) -> CreatedApp:
    answer = {
        "id": 7,
        "name": "Baton",
        "html_url": "https://github.com/apps/baton",
        "pem": PEM,
        "webhook_secret": "hook-secret",
        "client_id": "Iv23liExample",
        "client_secret": "oauth-client-secret",
    }
    return CreatedApp.model_validate({**answer, **fields})


def test_saved_credentials_read_back_exactly_and_keep_other_lines(env_path: Path) -> None:
    env_path.write_text(
        "# my settings\nBATON_PORT=4000\nBATON_GITHUB_APP_ID=1\nBATON_GITHUB_URL=https://old.example\n"
        "OPENAI_API_KEY='sk-keep'"
    )
    env_path.chmod(0o644)
    site = GitHubSite("https://github.com", "https://api.github.com")

    save_credentials(env_path, credentials_for(created_app(), site))

    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    text = env_path.read_text()
    assert text.startswith("# my settings\nBATON_PORT=4000\n")
    assert "OPENAI_API_KEY='sk-keep'" in text
    assert text.count("BATON_GITHUB_APP_ID") == 1
    assert "BATON_GITHUB_URL" not in text
    read_back = Settings(_env_file=env_path)  # type: ignore[call-arg]
    assert read_back.port == 4000
    assert read_back.github_app_id == 7
    assert read_back.private_key_pem() == PEM
    assert read_back.webhook_secret is not None
    assert read_back.webhook_secret.get_secret_value() == "hook-secret"
    assert read_back.github_client_id == "Iv23liExample"
    assert read_back.github_client_secret is not None
    assert read_back.github_client_secret.get_secret_value() == "oauth-client-secret"
    assert read_back.github_url == "https://github.com"


def test_enterprise_server_credentials_name_its_addresses(env_path: Path) -> None:
    site = GitHubSite("https://ghe.example.com", "https://ghe.example.com/api/v3")

    save_credentials(env_path, credentials_for(created_app(), site))

    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    read_back = Settings(_env_file=env_path)  # type: ignore[call-arg]
    assert (read_back.github_url, read_back.github_api_url) == (site.web_url, site.api_url)
    assert [path.name for path in env_path.parent.iterdir()] == [".env"]


@pytest.mark.parametrize(
    ("web_url", "api_url"),
    [
        ("https://github.com", "https://api.github.com"),
        ("https://ghe.example.com", "https://ghe.example.com/api/v3"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/double-api"),
    ],
    ids=["github.com", "enterprise-server", "configured"],
)
def test_api_address_follows_the_github_address(web_url: str, api_url: str) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        github_url="http://127.0.0.1:9000",
        github_api_url="http://127.0.0.1:9000/double-api",
    )

    assert api_url_for(web_url, settings) == api_url


CHOICE = RegistrationChoice(
    GitHubSite("https://github.com", "https://api.github.com"), None, "https://baton.example.org"
)


def test_a_state_is_good_until_forgotten_and_only_within_its_lifetime() -> None:
    now = [0.0]
    states = PendingStates(lifetime=60.0, limit=2, clock=lambda: now[0])

    used, expiring = states.issue(CHOICE, "session-1"), states.issue(CHOICE, "session-1")
    assert states.find(used, "session-1") == CHOICE
    assert states.find(used, "session-1") == CHOICE  # a failed exchange may be tried again
    states.forget(used)
    assert states.find(used, "session-1") is None
    now[0] = 61.0
    assert states.find(expiring, "session-1") is None
    first, second, third = (states.issue(CHOICE, "session-1") for _ in range(3))
    assert states.find(first, "session-1") is None  # over the limit, the oldest is forgotten
    assert (states.find(second, "session-1"), states.find(third, "session-1")) == (CHOICE,) * 2


def test_a_state_is_good_only_in_the_session_that_began_it() -> None:
    states = PendingStates()
    state = states.issue(CHOICE, "session-1")

    assert states.find(state, "session-2") is None
    assert states.find(state, "session-1") == CHOICE  # kept for its own session


def test_unreachable_github_is_a_clear_error_and_writes_nothing(
    settings: Settings, env_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"

    with operators_browser(
        setup_settings(settings, nobody, nobody + "/api/v3"), env_path
    ) as client:
        state = issued_state(client)
        page = client.get("/setup/callback", params={"code": "abc123", "state": state})
        again = client.get("/setup/callback", params={"code": "abc123", "state": state})

    assert page.status_code == 502
    assert f"could not reach GitHub at {nobody}/api/v3" in page.text
    assert "start again" in page.text
    assert again.status_code == 502  # the state is kept for a retry, which fails the same way
    assert not env_path.exists()


# The whole flow against the GitHub double: Baton, a browser and GitHub over real HTTP.


def test_registering_on_github_saves_the_new_apps_credentials(
    baton: httpx.Client, double: GitHubDouble, env_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env_path.write_text("# mine\nOPENAI_API_KEY=sk-local\n")
    public_url = str(baton.base_url).rstrip("/")

    page = register(baton)

    assert page.status_code == 200, page.text
    assert f"GitHub created the App <strong>{APP_YML['name']}</strong>" in page.text
    assert f'href="{double.url}/apps/{double.app_slug}/installations/new"' in page.text
    assert "make run" in page.text
    [manifest] = double.registered_manifests
    assert manifest["url"] == public_url
    assert manifest["hook_attributes"]["url"] == public_url + "/api/github/webhooks"
    assert manifest["redirect_url"] == public_url + "/setup/callback"
    assert manifest["default_permissions"] == APP_YML["default_permissions"]
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    assert env_path.read_text().startswith("# mine\nOPENAI_API_KEY=sk-local\n")
    saved = Settings(_env_file=env_path)  # type: ignore[call-arg]
    assert saved.github_app_id == double.app_id
    assert saved.private_key_pem() == double.private_key_pem
    assert saved.webhook_secret is not None
    assert saved.webhook_secret.get_secret_value() == double.webhook_secret
    assert (saved.github_url, saved.github_api_url) == (double.url, double.api_url)
    assert "PRIVATE KEY" not in caplog.text
    assert double.webhook_secret not in caplog.text


def test_after_registering_no_other_callback_is_accepted(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    first, second = (post_to_github(only_form(manifest_page(baton))) for _ in range(2))

    assert baton.get(first.headers["location"]).status_code == 200
    saved = env_path.read_text()
    refused = baton.get(second.headers["location"])
    home = baton.get("/")

    assert refused.status_code == 409
    assert "restart Baton (make run)" in refused.text
    assert env_path.read_text() == saved
    assert len(conversions(double)) == 1
    assert "Baton is registered" in home.text
    assert baton.post("/setup/manifest").status_code == 409


def test_restarted_baton_uses_the_saved_app_and_takes_its_deliveries(
    baton: httpx.Client, double: GitHubDouble, settings: Settings, env_path: Path
) -> None:
    assert register(baton, account="organization", organization="octo-org").status_code == 200
    restarted = Settings(
        _env_file=env_path,  # type: ignore[call-arg]
        database_url=settings.database_url,
        data_dir=settings.data_dir,
    )

    operator = OperatorAccess(setup_mode=False)
    with serve(create_app(restarted, FAST, env_path=env_path, operator=operator)) as url:
        with signed_in_browser(url, operator) as client:
            home = client.get("/")
            callback = client.get("/setup/callback", params={"code": "c", "state": "s"})
        delivery = double.send_webhook(
            url + "/api/github/webhooks", "issues", payload("issues.labeled")
        )

    assert f"GitHub App id {double.app_id}" in home.text
    assert "GitHub knows the App as" in home.text
    assert callback.status_code == 404
    assert (delivery.status_code, delivery.json()) == (202, {"status": "queued"})


def test_callback_with_a_forged_state_is_refused_before_asking_github(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    form = only_form(manifest_page(baton))
    form.action = form.action.split("?")[0] + "?state=forged"

    page = baton.get(post_to_github(form).headers["location"])

    assert page.status_code == 400
    assert "unknown, expired, already used or was begun in another browser" in page.text
    assert conversions(double) == []
    assert not env_path.exists()


def test_code_github_does_not_know_is_a_clear_error_and_writes_nothing(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    env_path.write_text("BATON_PORT=4000\n")

    page = baton.get("/setup/callback", params={"code": "0badc0de", "state": issued_state(baton)})

    assert page.status_code == 400
    assert f"GitHub at {double.api_url} refused the code (HTTP 404)" in page.text
    assert "start again" in page.text
    assert [request.status for request in conversions(double)] == [404]
    assert env_path.read_text() == "BATON_PORT=4000\n"


def test_github_failing_the_exchange_is_not_retried_and_writes_nothing(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    double.fail_next("POST", "/app-manifests/.+/conversions", 502)
    github_answer = post_to_github(only_form(manifest_page(baton)))

    page = baton.get(github_answer.headers["location"])

    assert page.status_code == 502
    assert f"GitHub at {double.api_url} failed to exchange the code (HTTP 502)" in page.text
    assert len(conversions(double)) == 1
    assert not env_path.exists()


def test_credentials_that_cannot_be_written_are_a_clear_error(
    settings: Settings, double: GitHubDouble, tmp_path: Path
) -> None:
    env_path = tmp_path / "no-such-directory" / ".env"

    with operators_browser(
        setup_settings(settings, double.url, double.api_url), env_path
    ) as client:
        page = register(client)

    assert page.status_code == 500
    assert f"could not be written to {env_path}: No such file or directory" in page.text
    assert "delete the new App in GitHub&#x27;s settings and start again" in page.text
    assert not env_path.parent.exists()


def test_missing_app_yml_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"cannot read the App description {tmp_path}"):
        load_app_yml(tmp_path / "app.yml")


# Strangers: the setup pages are reachable through the tunnel they ask for, but are not for them.

STRANGERS_MANIFEST = {
    **APP_YML,
    "url": "https://evil.example",
    "hook_attributes": {"url": "https://evil.example/api/github/webhooks"},
    "redirect_url": "https://evil.example/setup/callback",
}


@pytest.fixture
def strangers_github(tmp_path: Path) -> Iterator[GitHubDouble]:
    """Another GitHub on loopback http, as a stranger's `http://127.0.0.1:9999` was."""
    with GitHubDouble(tmp_path / "strangers-github") as github:
        yield github


@contextmanager
def served(settings: Settings, env_path: Path) -> Iterator[str]:
    with serve(create_app(settings, FAST, env_path=env_path)) as url:
        yield url


def offered_state(page: httpx.Response) -> str:
    """The state in a manifest page's form, or a made-up one when the page offered none."""
    if page.status_code != 200:
        return "made-up-state"
    return parse_qs(urlsplit(only_form(page).action).query)["state"][0]


def code_for(github: GitHubDouble, state: str) -> dict[str, list[str]]:
    """What `github` sends a browser back to Baton with after creating the stranger's App."""
    form = Form(f"{github.url}/settings/apps/new?state={state}", "post")
    form.fields["manifest"] = json.dumps(STRANGERS_MANIFEST)
    return parse_qs(urlsplit(post_to_github(form).headers["location"]).query)


def test_two_strangers_gets_register_nothing(
    settings: Settings, double: GitHubDouble, strangers_github: GitHubDouble, env_path: Path
) -> None:
    """The takeover that worked: `/setup/manifest?...` then `/setup/callback?code=..&state=..`
    with the stranger's own GitHub wrote the stranger's App, key and GitHub address to `.env`."""
    operators = setup_settings(settings, double.url, double.api_url)
    typed = {"account": "personal", "github_url": strangers_github.url}

    with served(operators, env_path) as url, httpx.Client(base_url=url, timeout=30) as stranger:
        manifest = stranger.post("/setup/manifest", data=typed)
        handed_back = code_for(strangers_github, offered_state(manifest))
        callback = stranger.get("/setup/callback", params=handed_back)

    assert not env_path.exists(), env_path.read_text()
    assert conversions(strangers_github) == []
    assert (manifest.status_code, callback.status_code) == (403, 403)
    for page in (manifest, callback):
        assert "setup code Baton printed when it started" in page.text
        assert "state=" not in page.text


@pytest.mark.parametrize("cookie", [None, "forged"], ids=["no-session", "forged-session"])
@pytest.mark.parametrize(
    "path", ["/", "/setup/manifest", "/setup/callback?code=abc&state=s"], ids=lambda p: p[:15]
)
def test_every_setup_page_needs_the_operators_session(
    settings: Settings, env_path: Path, path: str, cookie: str | None
) -> None:
    cookies = {"baton_session": cookie} if cookie else {}
    with served(
        setup_settings(settings, "https://github.com", "https://api.github.com"), env_path
    ) as url:
        method = "POST" if path == "/setup/manifest" else "GET"
        page = httpx.request(
            method, url + path, cookies=cookies, headers={"Host": "127.0.0.1:3000"}
        )

    assert page.status_code == 403
    assert page.headers["cache-control"] == "no-store"
    assert "printed when it started" in page.text
    assert only_form(page).action == "/"
    assert only_form(page).fields == {"code": ""}
    assert not env_path.exists()


def test_a_link_from_another_site_cannot_start_a_registration(
    setup_client: httpx.Client, env_path: Path
) -> None:
    """The operator's session cookie travels with another site's links (SameSite=Lax): such a
    link to the manifest page, naming the stranger's GitHub, must build no registration."""
    typed = {"account": "personal", "github_url": "https://github.evil.example"}

    followed = setup_client.get("/setup/manifest", params=typed)

    assert followed.status_code == 405
    assert "evil" not in followed.text
    assert not env_path.exists()


def test_the_sign_in_link_opens_a_session_and_leaves_the_code_out_of_the_address(
    settings: Settings, env_path: Path
) -> None:
    operator = OperatorAccess(setup_mode=True)
    github_com = setup_settings(settings, "https://github.com", "https://api.github.com")
    app = create_app(github_com, FAST, env_path=env_path, operator=operator)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as browser:
        signed_in = browser.get("/", params={"code": operator.code})
        home = browser.get("/")
        # Behind a proxy on this machine that says the browser used https.
        over_https = httpx.get(operator.sign_in_link(url), headers={"X-Forwarded-Proto": "https"})

    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith("baton_session=")
    assert operator.code not in cookie
    assert {"HttpOnly", "Path=/", "SameSite=lax"} <= {part.strip() for part in cookie.split(";")}
    assert "secure" not in cookie.lower()
    assert "Secure" in over_https.headers["set-cookie"]
    assert home.status_code == 200
    assert "Register Baton on GitHub" in home.text


def test_a_wrong_code_opens_no_session(settings: Settings, env_path: Path) -> None:
    github_com = setup_settings(settings, "https://github.com", "https://api.github.com")
    with served(github_com, env_path) as url, httpx.Client(base_url=url, timeout=30) as browser:
        refused = browser.get("/", params={"code": "guessed"})
        home = browser.get("/")

    assert refused.status_code == 403
    assert "set-cookie" not in refused.headers
    assert "not this Baton" in refused.text
    assert home.status_code == 403


def test_a_state_begun_in_another_browser_is_refused_and_writes_nothing(
    settings: Settings, double: GitHubDouble, env_path: Path
) -> None:
    operator = OperatorAccess(setup_mode=True)
    app = create_app(
        setup_settings(settings, double.url, double.api_url),
        FAST,
        env_path=env_path,
        operator=operator,
    )
    with serve(app) as url:
        with signed_in_browser(url, operator) as first, signed_in_browser(url, operator) as second:
            handed_back = post_to_github(only_form(manifest_page(first))).headers["location"]
            elsewhere = second.get(handed_back)
            written_then = env_path.exists()
            where_begun = first.get(handed_back)

    assert elsewhere.status_code == 400
    assert "begun in another browser" in elsewhere.text
    assert not written_then
    assert where_begun.status_code == 200, where_begun.text
    assert len(conversions(double)) == 1


@pytest.mark.parametrize(
    ("github_url", "allow_http"),
    [
        ("http://github.example", False),
        ("http://github.example", True),
        ("http://127.0.0.1:9999", False),
        ("http://localhost:9999", False),
    ],
    ids=["http-elsewhere", "http-elsewhere-allowed", "http-loopback", "http-localhost"],
)
def test_a_typed_github_address_must_be_https(
    settings: Settings, env_path: Path, github_url: str, allow_http: bool
) -> None:
    github_com = setup_settings(
        settings, "https://github.com", "https://api.github.com", setup_allow_http_github=allow_http
    )
    with operators_browser(github_com, env_path) as browser:
        page = manifest_page(browser, github_url=github_url)

    assert page.status_code == 400
    assert "GitHub address must be an https address" in page.text
    assert "BATON_SETUP_ALLOW_HTTP_GITHUB=true" in page.text


def test_http_on_loopback_is_for_an_operator_who_allows_it(
    settings: Settings, double: GitHubDouble, strangers_github: GitHubDouble, env_path: Path
) -> None:
    """With `SETUP_ALLOW_HTTP_GITHUB`, a typed GitHub on this machine's loopback registers."""
    allowing = setup_settings(
        settings, "https://github.com", "https://api.github.com", setup_allow_http_github=True
    )
    with operators_browser(allowing, env_path) as browser:
        page = register(browser, github_url=strangers_github.url)

    assert page.status_code == 200, page.text
    saved = Settings(_env_file=env_path)  # type: ignore[call-arg]
    assert (saved.github_url, saved.github_app_id) == (
        strangers_github.url,
        strangers_github.app_id,
    )
    assert conversions(double) == []
