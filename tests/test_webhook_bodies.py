"""How the webhook endpoint reads bodies, measured with real clients over loopback sockets: an
oversized body's 413 reaches a client that sends it whole, and unverified bodies in flight stay
within one process-wide budget."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from contextlib import closing

import pytest
import sqlalchemy as sa

from bot.settings import Settings, SettingsError, load_settings
from tests.support import FAST, count_rows, delivery_headers, payload, serve, wait_for
from webhooks.app import create_app
from webhooks.github import BodyLimits

URL = "/api/github/webhooks"
MIB = 1024 * 1024
LIMIT = 25 * MIB
LABELED = json.dumps(payload("issues.labeled")).encode()


def stored(engine: sa.Engine) -> tuple[int, int]:
    return count_rows(engine, "deliveries"), count_rows(engine, "jobs")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def oversized_chunks(size: int) -> Iterator[bytes]:
    """`size` bytes of a JSON body, a mebibyte at a time."""
    yield b'{"pad": "'
    sent = len(b'{"pad": "') + len(b'"}')
    while sent < size:
        step = min(MIB, size - sent)
        yield b"x" * step
        sent += step
    yield b'"}'


def post_whole(
    url: str, body: bytes | Iterator[bytes], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """POST with the standard library's HTTP client, which sends the whole body before reading
    the answer (`Content-Length` for bytes, chunked for an iterator)."""
    with closing(http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=120)) as client:
        chunked = not isinstance(body, bytes)
        client.request("POST", URL, body=body, headers=headers, encode_chunked=chunked)
        response = client.getresponse()
        return response.status, dict(response.getheaders()), response.read()


@pytest.mark.parametrize("connection", ["keep-alive", "close"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_client_sending_a_whole_body_over_25_mib_reads_the_413(
    baton_url: str, engine: sa.Engine, framing: str, connection: str
) -> None:
    size = LIMIT + 1
    body = (
        b"".join(oversized_chunks(size)) if framing == "content-length" else oversized_chunks(size)
    )
    headers = {**delivery_headers("issues", "d-big", b""), "Connection": connection}

    status, _, answer = post_whole(baton_url, body, headers)

    assert status == 413
    assert "over 26214400 bytes" in json.loads(answer)["detail"]
    assert stored(engine) == (0, 0)


def raw_request(url: str, head: str) -> socket.socket:
    """A connection that has sent `head` (request line and headers) and nothing more."""
    sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=120)
    sock.sendall(head.encode("latin-1") + b"\r\n")
    return sock


def read_status(sock: socket.socket) -> tuple[int, str]:
    """The status of the answer on `sock`, and the answer's head, once the server sends it."""
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    head = received.split(b"\r\n\r\n")[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head


def head_for(length: int, signature: str = "sha256=" + "0" * 64) -> str:
    return (
        f"POST {URL} HTTP/1.1\r\nHost: baton\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: d-raw\r\n"
        f"X-Hub-Signature-256: {signature}\r\n"
    )


def test_a_body_declared_far_over_the_limit_is_refused_before_it_is_sent(baton_url: str) -> None:
    with closing(raw_request(baton_url, head_for(1024 * MIB))) as sock:
        status, head = read_status(sock)

    assert status == 413
    assert "connection: close" in head.lower()


def test_a_body_that_stops_arriving_gets_its_413_when_the_drain_gives_up(
    settings: Settings,
) -> None:
    app = create_app(settings, FAST, body_limits=BodyLimits(drain_seconds=0.5))
    with serve(app) as url, closing(raw_request(url, head_for(LIMIT + 1))) as stalled:
        stalled.sendall(b"x" * MIB)
        status, head = read_status(stalled)

    assert status == 413
    assert "connection: close" in head.lower()


def test_a_body_that_stops_arriving_lets_go_of_the_budget_at_its_deadline(
    settings: Settings,
) -> None:
    app = create_app(settings, FAST, body_limits=BodyLimits(read_seconds=0.5))
    with serve(app) as url, closing(raw_request(url, head_for(2 * MIB))) as stalled:
        stalled.sendall(b"x" * MIB)  # then nothing more: a slow stranger holding memory
        status, head = read_status(stalled)
        held = app.body_budget.held

    assert status == 408
    assert "connection: close" in head.lower()
    assert held == 0


@pytest.fixture
def budget_settings(settings: Settings) -> Settings:
    """The smallest budget allowed: one full body."""
    return load_settings(
        _env_file=None,
        database_url=settings.database_url,
        data_dir=settings.data_dir,
        webhook_secret=settings.webhook_secret,
        webhook_buffer_bytes=LIMIT,
    )


def test_unverified_bodies_in_flight_stay_within_the_budget(
    budget_settings: Settings, engine: sa.Engine
) -> None:
    app = create_app(budget_settings, FAST)
    held_back = 18 * MIB  # within the three quarters of the budget any body may use
    with serve(app) as url, closing(raw_request(url, head_for(held_back + 10))) as slow:
        # A stranger's body, all but its last bytes sent: the server holds it, unverified.
        slow.sendall(b"x" * held_back)
        wait_for(lambda: app.body_budget.held >= held_back)

        over = b'{"pad": "' + b"x" * (2 * MIB) + b'"}'
        status, headers, answer = post_whole(url, over, delivery_headers("push", "d-over", over))
        # The refused body is let go: only the stranger's held bytes remain.
        wait_for(lambda: app.body_budget.held == held_back)
        # GitHub's usual small delivery still fits, in the quarter kept for small bodies.
        small = post_whole(url, LABELED, delivery_headers("issues", "d-small", LABELED))

        slow.sendall(b"x" * 10)
        slow_status, _ = read_status(slow)
        wait_for(lambda: app.body_budget.held == 0)

    assert status == 503
    assert int(headers["retry-after"]) > 0
    assert "bodies in flight" in json.loads(answer)["detail"]
    assert small[0] == 202
    assert slow_status == 401
    assert stored(engine) == (1, 1)


def test_a_delivery_without_its_headers_is_refused_before_its_body_is_held(
    settings: Settings,
) -> None:
    app = create_app(settings, FAST)
    unsigned = head_for(4 * MIB).replace("X-Hub-Signature-256: sha256=" + "0" * 64 + "\r\n", "")
    with serve(app) as url, closing(raw_request(url, unsigned)) as stranger:
        stranger.sendall(b"x" * MIB)  # the rest never comes
        status, head = read_status(stranger)
        held = app.body_budget.held

    assert status == 401
    assert "connection: close" in head.lower()
    assert held == 0


def test_a_budget_smaller_than_one_body_is_refused() -> None:
    with pytest.raises(SettingsError, match="BATON_WEBHOOK_BUFFER_BYTES"):
        load_settings(_env_file=None, webhook_buffer_bytes=LIMIT - 1)
