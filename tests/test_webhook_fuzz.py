"""Random headers and bodies at the endpoint: never a 5xx, and the server keeps answering."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import SECRET, delivery_headers, payload, sign

URL = "/api/github/webhooks"
EVENTS = ["issues", "issue_comment", "pull_request_review", "installation", "push", "ping"]

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
).filter(lambda value: value == value.strip())  # HTTP itself forbids edge whitespace
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mangled_payloads(draw: st.DrawFn) -> bytes:
    """A real payload with random fields replaced by random JSON, or random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    body = payload(
        draw(st.sampled_from(["issues.labeled", "issue_comment.created", "installation.created"]))
    )
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=3)):
        body[key] = draw(json_values)
    return json.dumps(body).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    body = draw(mangled_payloads())
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["X-GitHub-Event"] = draw(st.sampled_from(EVENTS) | header_text)
    if draw(st.booleans()):
        headers["X-GitHub-Delivery"] = draw(st.uuids().map(str) | header_text)
    signature = draw(st.sampled_from(["valid", "random", "none"]))
    if signature == "valid":
        headers["X-Hub-Signature-256"] = sign(body, SECRET)
    elif signature == "random":
        headers["X-Hub-Signature-256"] = draw(header_text)
    return headers, body


@pytest.fixture
def client(baton_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=baton_url, timeout=30) as client:
        yield client


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_random_deliveries_never_get_a_5xx(
    client: httpx.Client, request: tuple[dict[str, str], bytes]
) -> None:
    headers, body = request

    # Sent as raw bytes: GitHub's headers are ASCII, but a hostile client's need not be.
    raw = {name: value.encode("latin-1") for name, value in headers.items()}
    response = client.post(URL, content=body, headers=raw)

    assert response.status_code in {200, 202, 400, 401}, response.text
    assert client.get("/healthz").status_code == 200


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values, event=st.sampled_from(EVENTS))
def test_any_signed_json_is_answered_202_whatever_its_shape(
    client: httpx.Client, value: object, event: str
) -> None:
    body = json.dumps(value).encode()
    # A new delivery each time, also when Hypothesis tries the same value again.
    headers = delivery_headers(event, str(uuid.uuid4()), body)

    response = client.post(URL, content=body, headers=headers)

    assert response.status_code == 202, response.text
    assert response.json()["status"] in {"ignored", "queued"}
