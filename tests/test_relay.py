"""Webhooks through a relay (`BATON_WEBHOOK_PROXY_URL`): deliveries read from a smee.io-style
event stream take GitHub's own path, signature check included, and the stream outlives drops."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from bot.events import decide
from bot.settings import Settings, SettingsError, load_settings
from tests.doubles.relay import CHANNEL, RelayDouble
from tests.support import FAST, count_rows, delivery_headers, payload, serve, sign, wait_for
from webhooks.app import create_app
from webhooks.relay import Backoff, MalformedEvent, github_bytes, relayed_delivery
from webhooks.sse import SseDecoder, SseEvent


def github_body(text: str) -> bytes:
    """A labeled-issue body as GitHub writes it, its title the JSON string text `text` as is."""
    labeled = payload("issues.labeled")
    labeled["issue"]["title"] = "TITLE"
    written = json.dumps(labeled, ensure_ascii=False, separators=(",", ":"))
    return written.replace('"TITLE"', f'"{text}"', 1).encode()


# Non-ASCII as UTF-8, markup as is, a control character as GitHub escapes it (upper-case hex),
# which JavaScript's JSON.stringify writes in lower case.
LABELED = github_body(r"Dial \u001B[1mnow\u001B[0m … <!-- why --> & ✓")


def stored(engine: sa.Engine) -> tuple[int, int]:
    """(deliveries, jobs) rows in the store."""
    return count_rows(engine, "deliveries"), count_rows(engine, "jobs")


def counted(baton: str, outcome: str, event: str) -> float:
    """Deliveries Baton's metrics count with `outcome`."""
    wanted = f'baton_webhook_deliveries_total{{event="{event}",outcome="{outcome}"}} '
    for line in httpx.get(f"{baton}/metrics").text.splitlines():
        if line.startswith(wanted):
            return float(line.removeprefix(wanted))
    return 0.0


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [record.getMessage() for record in caplog.records if text in record.getMessage()]


@pytest.fixture
def relay() -> Iterator[RelayDouble]:
    # A short `retry:` keeps reconnections quick.
    with RelayDouble(retry_ms=50) as double:
        yield double


@pytest.fixture
def baton(settings: Settings, relay: RelayDouble) -> Iterator[str]:
    """Baton served with its relay reading `relay`, once the stream is open; its base URL."""
    relayed = settings.model_copy(update={"webhook_proxy_url": relay.url})
    with serve(create_app(relayed, FAST)) as url:
        wait_for(lambda: relay.open_streams == 1)
        yield url


# Over the relay


def test_a_relayed_delivery_is_stored_and_queued_as_github_s_own(
    baton: str, relay: RelayDouble, engine: sa.Engine
) -> None:
    assert relay.send_delivery(delivery_headers("issues", "d-relayed", LABELED), LABELED) == 1

    wait_for(lambda: stored(engine) == (1, 1))
    with engine.connect() as connection:
        delivery = connection.execute(sa.text("SELECT * FROM deliveries")).mappings().one()
        job = connection.execute(sa.text("SELECT * FROM jobs")).mappings().one()
    assert (delivery["delivery_id"], delivery["event"], delivery["outcome"]) == (
        "d-relayed",
        "issues",
        "queued",
    )
    assert bytes(delivery["payload"]) == decide("issues", LABELED).fields
    assert job["name"] == "start_run"
    assert counted(baton, "queued", "issues") == 1


def test_a_delivery_relayed_twice_is_stored_once(
    baton: str, relay: RelayDouble, engine: sa.Engine
) -> None:
    headers = delivery_headers("issues", "d-twice", LABELED)
    relay.send_delivery(headers, LABELED)
    relay.send_delivery(headers, LABELED)

    wait_for(lambda: counted(baton, "duplicate", "issues") == 1)
    assert stored(engine) == (1, 1)


def test_tampered_or_wrongly_signed_deliveries_are_refused_and_store_nothing(
    baton: str, relay: RelayDouble, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    tampered = LABELED.replace(b'"login":"alice"', b'"login":"mallory"')
    assert tampered != LABELED
    relay.send_delivery(delivery_headers("issues", "d-tampered", LABELED), tampered)
    relay.send_delivery(delivery_headers("issues", "d-wrong", LABELED, secret="other"), LABELED)

    wait_for(lambda: counted(baton, "refused_401", "unknown") == 2)
    assert stored(engine) == (0, 0)
    assert len(logged(caplog, "relayed delivery's signature did not match")) == 2


def test_after_the_stream_drops_the_next_delivery_still_arrives(
    baton: str, relay: RelayDouble, engine: sa.Engine
) -> None:
    relay.send_delivery(delivery_headers("issues", "d-before", LABELED), LABELED)
    wait_for(lambda: stored(engine) == (1, 1))

    relay.close_streams()
    wait_for(lambda: len(relay.connections) == 2 and relay.open_streams == 1)
    relay.send_delivery(delivery_headers("issues", "d-after", LABELED), LABELED)

    wait_for(lambda: stored(engine) == (2, 2))
    # The ready event was id 0 and the delivery id 1 on the first connection.
    assert relay.connections[1]["last-event-id"] == "1"
    assert "last-event-id" not in relay.connections[0]


def test_malformed_events_are_logged_and_skipped_and_the_relay_goes_on(
    baton: str, relay: RelayDouble, engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    relay.send_event("not JSON at all")
    relay.send_event("[1, 2]")
    relay.send_event(json.dumps({"x-github-event": "issues", "x-github-delivery": "d-x"}))
    relay.send_event(json.dumps({"x-github-event": "issues", "bodyB": "not base64!"}))
    relay.send_delivery({"X-Hub-Signature-256": sign(LABELED)}, LABELED)  # no event, no id
    relay.send_event("{}", event="an-event-baton-does-not-know")
    relay.send_delivery(delivery_headers("issues", "d-good", LABELED), LABELED)

    wait_for(lambda: stored(engine) == (1, 1))
    assert counted(baton, "refused_400", "unknown") == 1
    skipped = logged(caplog, "webhook relay skipped an event")
    assert [message.partition(": ")[2] for message in skipped] == [
        "its data is not JSON",
        "its data is not a JSON object",
        "it carries no body",
        "its bodyB is not base64",
    ]


def test_an_address_that_is_no_channel_is_given_up_and_baton_serves_on(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with RelayDouble() as relay:
        elsewhere = settings.model_copy(update={"webhook_proxy_url": relay.url + "-gone"})
        with serve(create_app(elsewhere, FAST)) as url:
            wait_for(lambda: logged(caplog, "webhook relay gave up"))
            assert httpx.get(f"{url}/healthz").status_code == 200

    [message] = logged(caplog, "webhook relay gave up")
    assert "answered 404" in message
    assert "BATON_WEBHOOK_PROXY_URL" in message
    # The channel is a capability: only the relay's host and port are logged.
    assert CHANNEL not in "\n".join(record.getMessage() for record in caplog.records)


def test_stopping_baton_closes_its_stream(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="webhooks.relay")
    with RelayDouble() as relay:
        relayed = settings.model_copy(update={"webhook_proxy_url": relay.url})
        with serve(create_app(relayed, FAST)):
            wait_for(lambda: logged(caplog, "webhook relay connected to 127.0.0.1:"))
        wait_for(lambda: relay.open_streams == 0)

    assert not logged(caplog, "webhook relay has no stream")
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# Rebuilding the bytes GitHub signed


@pytest.mark.parametrize(
    "written",
    [
        b'{"action":"labeled","number":42,"draft":false,"milestone":null,"labels":[]}',
        '{"title":"Caf\u00e9 \u2026 \U0001f680","body":"<!-- hidden --> a & b > c"}'.encode(),
        rb'{"body":"line\nnext\ttab \"quoted\" back\\slash /path","empty":{}}',
        b'{"title":"\\u001B[31mred\\u001B[0m \\u0000 \x7f done"}',
        rb'{"body":"text that reads \\u001b is no escape"}',
        rb'{"nested":[[1,[2,{"deep":[true,null]}]],-3,9007199254740991]}',
    ],
    ids=["plain", "utf-8", "short escapes", "control characters", "escaped backslash", "nested"],
)
def test_github_s_bytes_are_rebuilt_from_the_parsed_payload(written: bytes) -> None:
    assert github_bytes(json.loads(written)) == written


def test_a_relayed_delivery_keeps_only_request_headers_and_prefers_raw_bytes() -> None:
    raw = b'{"action": "labeled",  "n": 1.0}\n'  # not compact: only the raw bytes can match
    message = {
        "x-github-event": "issues",
        "X-Upper": "dropped",
        "x-hub-signature-256": sign(raw),
        "user-agent": "GitHub-Hookshot/8e03811",
        "host": "smee.io",
        "content-length": "3",
        "x-forwarded-for": ["not", "a", "string"],
        "x-bad": "line\r\nbreak",
        "body": {"action": "labeled", "n": 1},
        "bodyB": base64.b64encode(raw).decode(),
        "query": {},
        "timestamp": 1767225600000,
    }

    delivery = relayed_delivery(json.dumps(message))

    assert delivery.body == raw
    assert delivery.headers == {
        "x-github-event": "issues",
        "x-hub-signature-256": sign(raw),
        "user-agent": "GitHub-Hookshot/8e03811",
        "content-type": "application/json",
    }


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ('{"body": NaN}', "cannot be written as JSON"),
        ('{"body": "\\ud800"}', "cannot be written as JSON"),
        ('{"body": ' + "[" * 100_000 + "]" * 100_000 + "}", "not JSON"),
    ],
    ids=["NaN", "lone surrogate", "nested too deep"],
)
def test_a_body_that_cannot_be_github_s_is_malformed(data: str, why: str) -> None:
    with pytest.raises(MalformedEvent, match=why):
        relayed_delivery(data)


# The event stream


def feed_all(decoder: SseDecoder, *chunks: bytes) -> list[SseEvent]:
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_events_are_read_across_chunks_and_every_line_ending() -> None:
    decoder = SseDecoder(max_event_bytes=1000)

    events = feed_all(
        decoder,
        b"\xef\xbb\xbf: a comment\r",
        b"",
        b"\nretry: 250\rid: 7\revent: ready\ndata: {}\r\n\r",
        b"\ndata:first\ndata:  second\n\nid\nevent: ping\n\n",
        b"data: caf\xc3",
        b"\xa9\n\n",
    )

    assert events == [
        SseEvent("ready", "{}", "7"),
        SseEvent("message", "first\n second", "7"),
        SseEvent("message", "caf\u00e9", ""),
    ]
    assert (decoder.retry_ms, decoder.last_event_id) == (250, "")


def test_an_event_over_the_limit_is_reported_and_the_stream_goes_on() -> None:
    decoder = SseDecoder(max_event_bytes=100)

    events = feed_all(
        decoder,
        b"data: " + b"x" * 60 + b"\n",
        b"data: " + b"y" * 60,
        b"y" * 1000,
        b"\n\ndata: after\n\n",
    )

    assert events == [SseEvent("message", "", "", too_large=True), SseEvent("message", "after", "")]


def test_reconnections_wait_longer_each_time_up_to_a_cap_and_start_over_once_connected() -> None:
    backoff = Backoff(first=1.0, cap=60.0)

    delays = [backoff.next_delay() for _ in range(8)]
    backoff.reset()
    backoff.start_at(0.2)  # the relay's `retry: 200`
    from_retry = [backoff.next_delay() for _ in range(2)]
    backoff.reset()
    backoff.start_at(0.0)

    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert from_retry == [0.2, 0.4]
    assert backoff.next_delay() == 0.05


# The setting


@pytest.mark.parametrize(
    "url",
    [
        "https://smee.io/aBcD3fGh1jKlMn0p",
        "http://127.0.0.1:3001/c",
        "http://[::1]/c",
        "http://localhost/c",
    ],
)
def test_a_relay_address_is_https_or_loopback_http(url: str) -> None:
    assert load_settings(_env_file=None, webhook_proxy_url=url).webhook_proxy_url == url


@pytest.mark.parametrize(
    "url", ["http://smee.io/aBcD", "smee.io/aBcD", "ftp://smee.io/x", "https://", "https://[::1/x"]
)
def test_a_bad_relay_address_names_the_variable(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^BATON_WEBHOOK_PROXY_URL: expected a relay"):
        load_settings(_env_file=None, webhook_proxy_url=url)


def test_the_relay_address_is_read_from_the_environment_and_blank_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BATON_WEBHOOK_PROXY_URL", "https://smee.io/aBcD3fGh1jKlMn0p")
    assert load_settings(_env_file=None).webhook_proxy_url == "https://smee.io/aBcD3fGh1jKlMn0p"

    monkeypatch.setenv("BATON_WEBHOOK_PROXY_URL", "  ")
    assert load_settings(_env_file=None).webhook_proxy_url is None
