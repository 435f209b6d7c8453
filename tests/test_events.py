"""Routing: which events Baton acts on, read tolerantly from real payload shapes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bot.events import _ROUTES, IssueLabeled, PayloadError, decide
from bot.jobs import JOBS
from tests.support import payload


def _body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


ACTED_ON = {
    ("issues", "issues.labeled"): "start_run",
    ("issue_comment", "issue_comment.created"): "handle_issue_comment",
    ("pull_request_review", "pull_request_review.submitted"): "handle_review",
    ("installation", "installation.created"): "sync_installation",
    ("installation", "installation.deleted"): "sync_installation",
    (
        "installation_repositories",
        "installation_repositories.added",
    ): "sync_installation_repositories",
    (
        "installation_repositories",
        "installation_repositories.removed",
    ): "sync_installation_repositories",
    ("push", "push"): "handle_push",
}


@pytest.mark.parametrize(("event", "name"), list(ACTED_ON), ids=[name for _, name in ACTED_ON])
def test_real_payloads_of_acted_on_events_route_to_their_job(event: str, name: str) -> None:
    decision = decide(event, _body(payload(name)))

    assert decision.job == ACTED_ON[(event, name)]
    assert decision.reason is None
    assert decision.job in JOBS


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("issues", "issues.opened"),
        ("ping", "ping"),
        ("pull_request_review_comment", "pull_request_review_comment.created"),
    ],
)
def test_other_events_are_ignored_with_a_reason(event: str, name: str) -> None:
    decision = decide(event, _body(payload(name)))

    assert decision.job is None
    assert decision.fields is None
    assert decision.reason is not None
    assert decision.reason.startswith("Baton does not act on")


def test_real_labels_without_archived_at_are_read() -> None:
    body = payload("issues.labeled")
    assert all("archived_at" not in label for label in body["issue"]["labels"])

    event = IssueLabeled.model_validate(body)

    assert event.label.name == "baton"
    assert event.issue.number == body["issue"]["number"]


def _mutated(change: Any) -> dict[str, Any]:
    body = copy.deepcopy(payload("issues.labeled"))
    change(body)
    return body


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda b: b.pop("installation"), "installation"),
        (lambda b: b["issue"].pop("number"), "issue.number"),
        (lambda b: b.update(label=None), "label"),
        (lambda b: b["repository"].update(id=-1), "repository.id"),
        (lambda b: b["sender"].update(login=7), "sender.login"),
    ],
    ids=["no installation", "no issue number", "null label", "negative id", "login not text"],
)
def test_missing_or_odd_fields_mean_ignored_naming_the_field(change: Any, problem: str) -> None:
    decision = decide("issues", _body(_mutated(change)))

    assert decision.job is None
    assert decision.reason is not None
    assert f"lacks what Baton reads: {problem}" in decision.reason


def test_added_fields_are_ignored() -> None:
    body = _mutated(lambda b: b.update(brand_new_field={"x": 1}, issue={**b["issue"], "extra": 2}))

    assert decide("issues", _body(body)).job == "start_run"


@pytest.mark.parametrize(
    "change",
    [{"ref": "refs/heads/feature"}, {"deleted": True}, {"ref": "refs/tags/v1"}],
    ids=["another-branch", "deleted", "a-tag"],
)
def test_a_push_that_does_not_move_the_default_branch_is_ignored(change: dict[str, Any]) -> None:
    decision = decide("push", _body({**payload("push"), **change}))

    assert decision.job is None
    assert decision.reason == "Baton acts only on pushes that move a repository's default branch"
    assert decision.repository == payload("push")["repository"]["full_name"]


def test_who_and_where_are_read_tolerantly() -> None:
    odd = decide("push", b'{"installation": "x", "repository": [], "sender": {"login": null}}')
    real = decide("issues", _body(payload("issues.labeled")))

    assert (odd.installation_id, odd.repository, odd.sender) == (None, None, None)
    assert (real.installation_id, real.repository, real.sender) == (
        51234567,
        "octo-org/widgets",
        "alice",
    )


def test_the_job_gets_only_the_fields_it_reads() -> None:
    decision = decide("issues", _body(payload("issues.labeled")))

    assert decision.fields is not None
    assert json.loads(decision.fields) == IssueLabeled.model_validate(
        payload("issues.labeled")
    ).model_dump(mode="json")
    assert len(decision.fields) < len(_body(payload("issues.labeled"))) / 10


@pytest.mark.parametrize(("event", "name"), list(ACTED_ON), ids=[name for _, name in ACTED_ON])
def test_the_fields_kept_are_what_the_jobs_model_reads(event: str, name: str) -> None:
    model = _ROUTES[event][2]

    decision = decide(event, _body(payload(name)))

    assert decision.fields is not None
    kept = json.loads(decision.fields)
    assert kept == model.model_validate(payload(name)).model_dump(mode="json")


@pytest.mark.parametrize(("event", "name"), list(ACTED_ON), ids=[name for _, name in ACTED_ON])
def test_each_field_a_job_needs_is_named_when_missing(event: str, name: str) -> None:
    model = _ROUTES[event][2]
    needed = [f for f, info in model.model_fields.items() if info.is_required() and f != "action"]

    for field in needed:
        body = payload(name)
        body.pop(field)
        decision = decide(event, _body(body))

        assert decision.job is None
        assert decision.reason == f"{event} payload lacks what Baton reads: {field}: Field required"
        assert decision.action == body.get("action")  # a push has none


@pytest.mark.parametrize(
    "body",
    [b"action=labeled", b'{"action": "labeled"', b'{"action": "labeled"} trailing', b"", b"[1,"],
)
def test_a_body_that_is_not_json_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError, match="body is not JSON"):
        decide("issues", body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[1, 2]", "a JSON array, not an object"),
        (b'"labeled"', "a JSON string, not an object"),
        (b"null", "JSON null, not an object"),
        (b"-1.5", "a JSON number, not an object"),
        (b"\n false", "a JSON boolean, not an object"),
        (b"[" * 1000 + b"]" * 1000, "JSON nested deeper than Baton reads"),
        (b'{"issue": ' + b"[" * 300 + b"]" * 300 + b"}", "JSON nested deeper than Baton reads"),
    ],
    ids=["array", "string", "null", "number", "boolean", "deep-array", "deep-in-object"],
)
@pytest.mark.parametrize("event", ["issues", "issue_comment", "push"])
def test_json_of_no_events_shape_is_ignored_saying_why(
    event: str, body: bytes, reason: str
) -> None:
    decision = decide(event, body)

    assert (decision.job, decision.fields, decision.sender) == (None, None, None)
    assert decision.reason == f"{event} body is {reason}"


@pytest.mark.parametrize(
    ("event", "name"),
    [("issue_comment", "issue_comment.created"), ("issues", "issues.labeled")],
)
def test_events_a_bot_caused_are_ignored(event: str, name: str) -> None:
    body = payload(name)
    body["sender"] = {"login": "baton-bot[bot]", "id": 9000, "type": "Bot"}
    decision = decide(event, json.dumps(body).encode())
    assert decision.job is None
    assert decision.reason == f"{name} was caused by the bot baton-bot[bot]"
