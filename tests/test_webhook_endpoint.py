"""CONTRACT §2 over real HTTP: every answer of the webhook endpoint, and what it stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bot.events import decide
from bot.settings import Settings
from tests.support import FAST, SECRET, count_rows, delivery_headers, payload, serve, sign
from webhooks.app import create_app

URL = "/api/github/webhooks"
LABELED = json.dumps(payload("issues.labeled")).encode()


@pytest.fixture
def client(baton_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=baton_url, timeout=30) as client:
        yield client


def stored(engine: sa.Engine) -> tuple[int, int]:
    """(deliveries, jobs) rows in the store."""
    return count_rows(engine, "deliveries"), count_rows(engine, "jobs")


def post(client: httpx.Client, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post(URL, content=body, headers=headers)


def test_acted_on_event_is_queued_with_one_delivery_and_one_job(
    client: httpx.Client, engine: sa.Engine
) -> None:
    response = post(client, LABELED, delivery_headers("issues", "d-1", LABELED))

    assert response.status_code == 202
    assert response.json() == {"status": "queued"}
    assert stored(engine) == (1, 1)
    with engine.connect() as connection:
        delivery = connection.execute(sa.text("SELECT * FROM deliveries")).mappings().one()
        job = connection.execute(sa.text("SELECT * FROM jobs")).mappings().one()
    assert (delivery["delivery_id"], delivery["event"], delivery["action"]) == (
        "d-1",
        "issues",
        "labeled",
    )
    assert delivery["outcome"] == "queued"
    assert bytes(delivery["payload"]) == decide("issues", LABELED).fields
    assert job["name"] == "start_run"
    assert job["delivery_id"] == delivery["id"]


def test_second_copy_of_a_delivery_is_a_duplicate_and_stores_nothing(
    client: httpx.Client, engine: sa.Engine
) -> None:
    headers = delivery_headers("issues", "d-1", LABELED)
    assert post(client, LABELED, headers).status_code == 202

    response = post(client, LABELED, headers)

    assert response.status_code == 200
    assert response.json() == {"status": "duplicate"}
    assert stored(engine) == (1, 1)


async def test_copies_arriving_concurrently_are_queued_exactly_once(
    baton_url: str, engine: sa.Engine
) -> None:
    headers = delivery_headers("issues", "d-concurrent", LABELED)
    async with httpx.AsyncClient(base_url=baton_url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(URL, content=LABELED, headers=headers) for _ in range(20))
        )

    answers = sorted(response.json()["status"] for response in responses)
    assert answers == ["duplicate"] * 19 + ["queued"]
    assert sorted(response.status_code for response in responses) == [200] * 19 + [202]
    assert stored(engine) == (1, 1)


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("ping", "ping"),
        ("issues", "issues.opened"),
        ("pull_request_review_comment", "pull_request_review_comment.created"),
    ],
)
def test_events_baton_does_not_act_on_are_ignored(
    client: httpx.Client, engine: sa.Engine, event: str, name: str
) -> None:
    body = json.dumps(payload(name)).encode()

    response = post(client, body, delivery_headers(event, f"d-{name}", body))

    assert response.status_code == 202
    assert response.json() == {"status": "ignored"}
    assert stored(engine) == (1, 0)
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT outcome, reason, payload FROM deliveries")).one()
    assert row.outcome == "ignored"
    assert row.reason.startswith("Baton does not act on")
    assert row.payload is None


def test_acted_on_event_with_an_unexpected_shape_is_ignored_not_an_error(
    client: httpx.Client, engine: sa.Engine
) -> None:
    changed = payload("issues.labeled")
    del changed["label"]
    changed["issue"]["number"] = "forty-two"
    body = json.dumps(changed).encode()

    response = post(client, body, delivery_headers("issues", "d-odd", body))

    assert response.status_code == 202
    assert response.json() == {"status": "ignored"}
    with engine.connect() as connection:
        reason = connection.execute(sa.text("SELECT reason FROM deliveries")).scalar_one()
    assert "lacks what Baton reads" in reason
    assert stored(engine) == (1, 0)


def test_ignored_delivery_sent_again_is_a_duplicate(
    client: httpx.Client, engine: sa.Engine
) -> None:
    body = json.dumps(payload("ping")).encode()
    headers = delivery_headers("ping", "d-ping", body)
    assert post(client, body, headers).json() == {"status": "ignored"}

    response = post(client, body, headers)

    assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
    assert stored(engine) == (1, 0)


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


REFUSALS = {
    "missing signature": (
        lambda: _without(delivery_headers("issues", "d-x", LABELED), "X-Hub-Signature-256"),
        LABELED,
        401,
        "missing X-Hub-Signature-256",
    ),
    "wrong signature": (
        lambda: delivery_headers("issues", "d-x", LABELED, secret="not-the-secret"),
        LABELED,
        401,
        "does not match",
    ),
    "signature of another body": (
        lambda: {**delivery_headers("issues", "d-x", LABELED), "X-Hub-Signature-256": sign(b"{}")},
        LABELED,
        401,
        "does not match",
    ),
    "sha1 signature": (
        lambda: {**delivery_headers("issues", "d-x", LABELED), "X-Hub-Signature-256": "sha1=ab"},
        LABELED,
        401,
        "not a sha256",
    ),
    "missing event": (
        lambda: _without(delivery_headers("issues", "d-x", LABELED), "X-GitHub-Event"),
        LABELED,
        400,
        "missing X-GitHub-Event",
    ),
    "missing delivery id": (
        lambda: _without(delivery_headers("issues", "d-x", LABELED), "X-GitHub-Delivery"),
        LABELED,
        400,
        "missing X-GitHub-Delivery",
    ),
    "malformed delivery id": (
        lambda: delivery_headers("issues", "d" * 201, LABELED),
        LABELED,
        400,
        "X-GitHub-Delivery is malformed",
    ),
    "body not JSON": (
        lambda: delivery_headers("issues", "d-x", b"action=labeled"),
        b"action=labeled",
        400,
        "not JSON",
    ),
    "JSON cut short": (
        lambda: delivery_headers("issues", "d-x", b'{"action": "labeled"'),
        b'{"action": "labeled"',
        400,
        "not JSON",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_refused_deliveries_store_nothing(
    client: httpx.Client, engine: sa.Engine, case: str
) -> None:
    make_headers, body, status, detail = REFUSALS[case]

    response = post(client, body, make_headers())

    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert stored(engine) == (0, 0)


def test_body_over_25_mib_is_413_and_stores_nothing(
    client: httpx.Client, engine: sa.Engine
) -> None:
    body = b'{"pad": "' + b"x" * (25 * 1024 * 1024) + b'"}'

    response = post(client, body, delivery_headers("issues", "d-big", body))

    assert response.status_code == 413
    assert stored(engine) == (0, 0)


def test_chunked_body_over_25_mib_is_413_and_stores_nothing(
    client: httpx.Client, engine: sa.Engine
) -> None:
    chunk = b"x" * (1024 * 1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range(26):
            yield chunk
        yield b'"}'

    headers = delivery_headers("issues", "d-chunked", b"")
    response = client.post(URL, content=chunks(), headers=headers)

    assert response.status_code == 413
    assert stored(engine) == (0, 0)


def test_without_a_secret_every_delivery_is_refused_with_503(
    database_url: str, tmp_path: Path, engine: sa.Engine
) -> None:
    no_secret = Settings(_env_file=None, database_url=database_url, data_dir=tmp_path)  # type: ignore[call-arg]
    with serve(create_app(no_secret, FAST)) as url, httpx.Client(base_url=url) as client:
        signed = post(client, LABELED, delivery_headers("issues", "d-1", LABELED))
        unsigned = post(client, LABELED, {"X-GitHub-Event": "issues", "X-GitHub-Delivery": "d-2"})

    for response in (signed, unsigned):
        assert response.status_code == 503
        assert "no webhook secret" in response.json()["detail"]
    assert stored(engine) == (0, 0)


def test_blank_secret_counts_as_no_secret(database_url: str, tmp_path: Path) -> None:
    blank = Settings(_env_file=None, database_url=database_url, webhook_secret="  ")  # type: ignore[call-arg]

    assert blank.webhook_secret is None


def test_the_secret_never_reaches_the_logs(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    post(client, LABELED, delivery_headers("issues", "d-log", LABELED))
    post(client, LABELED, delivery_headers("issues", "d-bad", LABELED, secret="wrong"))
    post(client, b"[]", delivery_headers("issues", "d-array", b"[]"))

    assert caplog.records, "the endpoint logged nothing to check"
    logged = "\n".join(str(record.__dict__) for record in caplog.records)
    assert SECRET not in logged


ODD_SHAPES = {
    "array": (b"[]", "a JSON array"),
    "null": (b"null", "JSON null"),
    "number": (b"1", "a JSON number"),
    "string": (b'"x"', "a JSON string"),
    "boolean": (b" true", "a JSON boolean"),
    "100 000 nested arrays": (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
    "deep inside an object": (
        b'{"action": "labeled", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "nested deeper than",
    ),
}


@pytest.mark.parametrize("case", list(ODD_SHAPES), ids=list(ODD_SHAPES))
@pytest.mark.parametrize("event", ["issues", "push"])
def test_signed_json_of_an_odd_shape_is_ignored_and_recorded_with_why(
    client: httpx.Client, engine: sa.Engine, case: str, event: str
) -> None:
    body, why = ODD_SHAPES[case]

    response = post(client, body, delivery_headers(event, "d-odd-shape", body))

    assert (response.status_code, response.json()) == (202, {"status": "ignored"})
    assert stored(engine) == (1, 0)
    with engine.connect() as connection:
        row = connection.execute(sa.text("SELECT event, outcome, reason FROM deliveries")).one()
    assert (row.event, row.outcome) == (event, "ignored")
    assert why in row.reason


def test_refused_deliveries_are_counted_by_status(client: httpx.Client) -> None:
    post(client, LABELED, delivery_headers("issues", "d-1", LABELED, secret="wrong"))
    post(client, LABELED, delivery_headers("issues", "d-2", LABELED, secret="wrong"))
    post(client, b"nope", delivery_headers("issues", "d-3", b"nope"))

    lines = client.get("/metrics").text.splitlines()

    assert 'baton_webhook_deliveries_total{event="unknown",outcome="refused_401"} 2.0' in lines
    assert 'baton_webhook_deliveries_total{event="unknown",outcome="refused_400"} 1.0' in lines
