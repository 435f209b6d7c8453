"""The public address on the setup page: a warning when GitHub.com cannot deliver webhooks
there (never a refusal), and the webhook relay that then receives them for Baton."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bot.github.addresses import webhook_warning
from bot.settings import Settings
from tests.doubles.github import GitHubDouble
from tests.setup_browser import manifest_page, only_form, register

RELAY = "https://smee.io/Xq3vB9aZ1kLm"
CANNOT_DELIVER = "GitHub.com cannot deliver webhooks to"


@pytest.mark.parametrize(
    ("url", "warning"),
    [
        ("http://127.0.0.1:3000", "cannot deliver webhooks to 127.0.0.1: it is a loopback address"),
        ("http://localhost:3000", "to localhost: it is a loopback address"),
        ("https://[::1]:3000", "to ::1: it is a loopback address"),
        ("https://10.1.2.3", "to 10.1.2.3: it is a private network address"),
        ("http://172.16.0.9:3000", "to 172.16.0.9: it is a private network address"),
        ("http://192.168.1.20:3000", "to 192.168.1.20: it is a private network address"),
        ("https://[fd12::1]", "to fd12::1: it is a private network address"),
        ("http://169.254.10.1", "to 169.254.10.1: it is a link-local address"),
        ("https://100.64.7.1", "to 100.64.7.1: it is a carrier-grade NAT address"),
        ("https://baton.local", "to baton.local: it is a local network name (.local)"),
        ("https://buildbox", "to buildbox: it is a name only this network resolves"),
        ("http://baton.example.org", "to baton.example.org unencrypted: the address is plain http"),
        ("https://baton.example.org", None),
        ("https://203.0.113.9.nip.io:8443", None),
        ("https://8.8.8.8", None),
    ],
)
def test_addresses_github_com_cannot_reach_are_named(url: str, warning: str | None) -> None:
    found = webhook_warning(url)

    if warning is None:
        assert found is None
    else:
        assert found is not None
        assert warning in found


def test_the_proposed_loopback_address_is_warned_about_next_to_the_relay_field(
    setup_client: httpx.Client,
) -> None:
    page = setup_client.get("/")

    assert page.status_code == 200
    assert f"{CANNOT_DELIVER} 127.0.0.1: it is a loopback address" in page.text
    assert 'href="https://smee.io/new"' in page.text
    assert "Webhook relay address (optional)" in page.text
    assert only_form(page).fields["relay_url"] == ""


@pytest.mark.parametrize(
    "public_url", ["http://192.168.1.20:3000", "https://baton.local", "http://10.0.0.5"]
)
def test_a_private_public_address_is_warned_about_and_still_registers(
    setup_client: httpx.Client, public_url: str
) -> None:
    page = manifest_page(setup_client, public_url=public_url)

    assert page.status_code == 200  # a GitHub Enterprise Server on that network can reach it
    assert CANNOT_DELIVER in page.text
    assert 'href="/">go back</a> and give a webhook relay address' in page.text
    manifest = json.loads(only_form(page).fields["manifest"])
    assert manifest["hook_attributes"]["url"] == public_url + "/api/github/webhooks"


def test_a_public_https_address_is_not_warned_about(setup_client: httpx.Client) -> None:
    page = manifest_page(setup_client, public_url="https://baton.example.org")

    assert page.status_code == 200
    assert "cannot deliver" not in page.text
    assert "unencrypted" not in page.text


def test_webhooks_go_to_the_relay_and_its_address_is_saved(
    baton: httpx.Client, double: GitHubDouble, env_path: Path
) -> None:
    public_url = str(baton.base_url).rstrip("/")
    manifest = manifest_page(baton, relay_url=RELAY + "/")

    page = register(baton, relay_url=RELAY + "/")

    assert "cannot deliver" not in manifest.text  # the relay is GitHub's way in
    assert f"<code>{RELAY}</code> (the relay)" in manifest.text
    assert page.status_code == 200, page.text
    registered = double.registered_manifests[-1]
    assert registered["hook_attributes"]["url"] == RELAY
    assert registered["redirect_url"] == public_url + "/setup/callback"  # the browser's way back
    assert registered["url"] == public_url
    assert f"BATON_WEBHOOK_PROXY_URL='{RELAY}'" in env_path.read_text()


def test_registering_without_a_relay_drops_one_an_earlier_setup_saved(
    baton: httpx.Client, env_path: Path
) -> None:
    env_path.write_text(f"BATON_PORT=4000\nBATON_WEBHOOK_PROXY_URL={RELAY}\n")

    assert register(baton).status_code == 200

    text = env_path.read_text()
    assert "BATON_WEBHOOK_PROXY_URL" not in text
    assert Settings(_env_file=env_path).port == 4000  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "relay_url", ["http://smee.io/abc", "smee.io/abc", "https://smee.io/abc?x=1"]
)
def test_a_relay_address_must_be_https(
    setup_client: httpx.Client, env_path: Path, relay_url: str
) -> None:
    page = manifest_page(setup_client, relay_url=relay_url)

    assert page.status_code == 400
    assert "relay address must" in page.text
    assert only_form(page).fields["relay_url"] == relay_url
    assert not env_path.exists()
