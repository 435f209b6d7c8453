"""Setup mode when the App Manifest flow does not finish: a failed code exchange can be tried
again, says where the App may already be, and an App that exists can be imported, its id and
key checked with GitHub (the double) before anything is saved."""

from __future__ import annotations

import functools
import stat
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from bot.settings import Settings
from tests.doubles.github import GitHubDouble, RecordedRequest
from tests.setup_browser import (
    conversions,
    manifest_page,
    only_form,
    operators_browser,
    post_to_github,
    setup_settings,
)
from tests.support import free_port

CONVERSIONS = "/app-manifests/.+/conversions"


def callback_after_github(baton: httpx.Client, **typed: str) -> str:
    """Where GitHub sends the browser back once it created the App."""
    return str(post_to_github(only_form(manifest_page(baton, **typed))).headers["location"])


def app_lookups(double: GitHubDouble) -> list[RecordedRequest]:
    return [request for request in double.requests if request.route == "GET /app"]


def saved(env_path: Path) -> Settings:
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    return Settings(_env_file=env_path)  # type: ignore[call-arg]


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def import_fields(double: GitHubDouble, **typed: str) -> dict[str, str]:
    """The import form as the operator fills it for the double's App; the key pasted from a
    browser's textarea, with CRLF line ends."""
    return {
        "github_url": double.url,
        "app_id": str(double.app_id),
        "private_key": double.private_key_pem.replace("\n", "\r\n"),
        "webhook_secret": double.webhook_secret,
        "relay_url": "",
        **typed,
    }


def test_a_failed_exchange_can_be_tried_again_and_then_registers(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    double.fail_next("POST", CONVERSIONS, 502)
    back_from_github = callback_after_github(baton)

    failed = baton.get(back_from_github)
    written_then = env_path.exists()
    again = baton.get(back_from_github)

    assert failed.status_code == 502
    assert "reload this page" in failed.text
    assert not written_then
    assert again.status_code == 200, again.text
    assert "GitHub created the App" in again.text
    assert [request.status for request in conversions(double)] == [502, 201]
    assert saved(env_path).github_app_id == double.app_id
    assert baton.get(back_from_github).status_code == 409  # saved once: no second registration


@pytest.mark.parametrize(
    ("typed", "apps_page"),
    [
        ({"account": "personal"}, "/settings/apps"),
        (
            {"account": "organization", "organization": "octo-org"},
            "/organizations/octo-org/settings/apps",
        ),
    ],
    ids=["personal", "organization"],
)
def test_a_used_code_says_where_the_app_may_be_and_offers_to_import_it(
    baton: httpx.Client,
    double: GitHubDouble,
    env_path: Path,
    typed: dict[str, str],
    apps_page: str,
) -> None:
    back_from_github = callback_after_github(baton, **typed)
    code = parse_qs(urlsplit(back_from_github).query)["code"][0]
    # GitHub hands an App over once: here the code was exchanged before Baton could.
    assert httpx.post(f"{double.api_url}/app-manifests/{code}/conversions").status_code == 201

    page = baton.get(back_from_github)

    assert page.status_code == 400
    assert "already used" in page.text
    assert "reload this page" not in page.text  # the same code cannot work a second time
    assert f'href="{double.url}{apps_page}"' in page.text
    form = only_form(page)
    assert (form.action, form.method) == ("/setup/import", "post")
    assert form.fields["github_url"] == double.url
    assert not env_path.exists()


def test_the_app_is_imported_from_the_failure_page_once_github_confirms_its_key(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    double.fail_next("POST", CONVERSIONS, 500)
    failed = baton.get(callback_after_github(baton))
    form = only_form(failed)

    imported = baton.post(form.action, data={**form.fields, **import_fields(double)})

    assert imported.status_code == 200, imported.text
    assert "Baton will use the App <strong>Baton</strong>" in imported.text
    assert f'href="{double.url}/apps/{double.app_slug}/installations/new"' in imported.text
    [lookup] = app_lookups(double)
    assert lookup.status == 200
    app = saved(env_path)
    assert app.github_app_id == double.app_id
    assert app.private_key_pem() == double.private_key_pem  # as GitHub made it, LF line ends
    assert app.webhook_secret is not None
    assert app.webhook_secret.get_secret_value() == double.webhook_secret
    assert double.private_key_pem.splitlines()[1] not in imported.text


def test_i_already_have_an_app_leads_from_the_start_page_to_the_import(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    env_path.write_text("# mine\nBATON_PORT=4000\n")
    start = baton.get("/")
    assert 'href="/setup/import">I already have an App</a>' in start.text

    form = only_form(baton.get("/setup/import"))
    imported = baton.post(form.action, data={**form.fields, **import_fields(double)})
    once_more = baton.post(form.action, data={**form.fields, **import_fields(double)})

    assert form.fields["github_url"] == double.url  # BATON_GITHUB_URL, the operator's GitHub
    assert imported.status_code == 200, imported.text
    assert env_path.read_text().startswith("# mine\nBATON_PORT=4000\n")
    assert saved(env_path).github_app_id == double.app_id
    assert once_more.status_code == 409
    assert len(app_lookups(double)) == 1
    assert "Baton is registered" in baton.get("/").text
    assert baton.post("/setup/manifest").status_code == 409


@functools.cache
def another_rsa_key() -> str:
    return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ({"app_id": "0"}, "App id must be a positive whole number"),
        ({"app_id": "-7"}, "App id must be a positive whole number"),
        ({"app_id": "baton"}, "App id must be a positive whole number"),
        ({"private_key": "ghp_not-a-key"}, "whole .pem file"),
        ({"private_key": pem_of(ec.generate_private_key(ec.SECP256R1()))}, "whole .pem file"),
        ({"webhook_secret": "  "}, "type the App&#x27;s webhook secret"),
        ({"github_url": "http://github.example"}, "GitHub address must be an https address"),
        ({"relay_url": "http://smee.io/abc"}, "relay address must be an https address"),
    ],
    ids=["id-zero", "id-negative", "id-text", "key-text", "key-ec", "no-secret", "http", "relay"],
)
def test_typed_credentials_are_checked_before_github_is_asked(
    baton: httpx.Client,
    double: GitHubDouble,
    env_path: Path,
    typed: dict[str, str],
    complaint: str,
) -> None:
    page = baton.post("/setup/import", data=import_fields(double, **typed))

    assert page.status_code == 400
    assert complaint in page.text
    assert only_form(page).action == "/setup/import"
    assert double.webhook_secret not in page.text
    assert app_lookups(double) == []
    assert not env_path.exists()


@pytest.mark.parametrize(
    "typed",
    [lambda: {"private_key": another_rsa_key()}, lambda: {"app_id": "12345"}],
    ids=["another-key", "another-app"],
)
def test_credentials_github_refuses_are_not_saved(
    baton: httpx.Client,
    double: GitHubDouble,
    env_path: Path,
    typed: Callable[[], dict[str, str]],
) -> None:
    page = baton.post("/setup/import", data=import_fields(double, **typed()))

    assert page.status_code == 400
    assert "did not accept a token signed with this private key" in page.text
    assert "not shown again" in page.text
    assert [lookup.status for lookup in app_lookups(double)] == [401]
    assert not env_path.exists()
    retried = baton.post("/setup/import", data=import_fields(double))
    assert retried.status_code == 200, retried.text  # the right key, typed next, is taken


def test_an_unreachable_github_is_said_and_nothing_saved(
    settings: Settings, double: GitHubDouble, env_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with operators_browser(setup_settings(settings, nobody, nobody + "/api/v3"), env_path) as baton:
        page = baton.post("/setup/import", data=import_fields(double, github_url=nobody))

    assert page.status_code == 502
    assert f"could not reach GitHub at {nobody}/api/v3" in page.text
    assert not env_path.exists()


def test_typed_values_are_escaped_on_the_import_page(
    baton: httpx.Client, double: GitHubDouble
) -> None:
    hostile = '"><script>alert(1)</script>'

    page = baton.post("/setup/import", data=import_fields(double, app_id=hostile))

    assert page.status_code == 400
    assert "<script>" not in page.text
    assert only_form(page).fields["app_id"] == hostile


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_import_is_for_the_operator_only(
    settings: Settings, double: GitHubDouble, env_path: Path, method: str
) -> None:
    operator = setup_settings(settings, double.url, double.api_url)
    with operators_browser(operator, env_path) as baton:
        stranger = httpx.request(
            method, str(baton.base_url) + "/setup/import", data=import_fields(double)
        )

    assert stranger.status_code == 403
    assert "printed when it started" in stranger.text
    assert app_lookups(double) == []
    assert not env_path.exists()
