"""`GET /runs` and `GET /runs/{id}` over HTTP, on rows written straight into the database, and
who may see them: only requests with the operator's session or the dashboard token."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import Session

from bot.settings import Settings
from bot.store.models import (
    ModelCall,
    PlanRevision,
    Run,
    RunState,
    Task,
    TaskAttempt,
    TimelineEvent,
    ToolCall,
)
from tests.setup_browser import signed_in_browser
from tests.support import FAST, serve
from webhooks.access import OperatorAccess
from webhooks.app import create_app

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PLAN_R1: dict[str, Any] = {
    "summary": "Export invoices as CSV",
    "tasks": [{"id": "T1", "title": "Write the CSV exporter", "role": "implementer"}],
}
PLAN_R2: dict[str, Any] = {
    "summary": "Test the exporter, as the review asked",
    "tasks": [{"id": "T2", "title": "Test the exporter", "role": "test_writer"}],
}
# Newest first: run-d and run-e were created in the same instant, so the id breaks the tie.
NEWEST_FIRST = ["run-e", "run-d", "run-c", "run-b", "run-a"]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def a_run(run_id: str, issue: int, minutes: float, **fields: Any) -> Run:
    defaults: dict[str, Any] = {
        "repository_id": 2**40,
        "repository": "octo-org/widgets",
        "issue_title": f"Issue {issue}",
        "branch": f"baton/issue-{issue}",
        "created_at": at(minutes),
        "updated_at": at(minutes + 1),
    }
    return Run(id=run_id, issue_number=issue, **(defaults | fields))


def model_call(
    run_id: str,
    role: str,
    name: str,
    usage: tuple[int, int, int, int],
    cost: float | None,
    task: Task | None = None,
    attempt: TaskAttempt | None = None,
) -> ModelCall:
    provider, model = name.split("/", 1)
    inputs, outputs, reads, writes = usage
    return ModelCall(
        run_id=run_id,
        task_id=task.id if task else None,
        attempt_id=attempt.id if attempt else None,
        role=role,
        provider=provider,
        model=model,
        input_tokens=inputs,
        output_tokens=outputs,
        cache_read_tokens=reads,
        cache_write_tokens=writes,
        cost_usd=cost,
    )


def row_id(row: PlanRevision | Task) -> int:
    assert row.id is not None, "flush before using a row's id"
    return row.id


def added(session: Session, *rows: Any) -> None:
    """Add rows and flush, so the next level can refer to their ids."""
    session.add_all(rows)
    session.flush()


def seed_runs(session: Session) -> None:
    added(
        session,
        a_run("run-a", 7, 0, issue_title="Add CSV export", state=RunState.executing),
        a_run(
            "run-b",
            3,
            60,
            repository="octo-org/gadgets",
            state=RunState.done,
            active=False,
            pull_request_number=12,
            ended_at=at(90),
        ),
        a_run("run-c", 8, 120, state=RunState.failed, active=False, error="no test command"),
        a_run("run-d", 9, 180),
        a_run("run-e", 10, 180),
    )
    # run-c's only call had no known price, so its cost is unknown rather than zero.
    added(session, model_call("run-c", "planner", "acme/unlisted", (100, 10, 0, 0), None))


def seed_run_a(session: Session) -> None:
    """Two plan revisions, a task from each, three attempts with tool and model calls."""
    r1 = PlanRevision(
        run_id="run-a",
        number=1,
        summary=PLAN_R1["summary"],
        plan=PLAN_R1,
        approved_by="maintainer",
        approved_at=at(10),
        created_at=at(5),
    )
    r2 = PlanRevision(
        run_id="run-a",
        number=2,
        source="review",
        summary=PLAN_R2["summary"],
        plan=PLAN_R2,
        approved_by="reviewer",
        approved_at=at(28),
        created_at=at(28),
    )
    added(session, r1, r2)
    t1 = Task(
        run_id="run-a",
        revision_id=row_id(r1),
        key="T1",
        title="Write the CSV exporter",
        role="implementer",
        files=["app/export.py"],
        effort=4,
        state="accepted",
        attempts=2,
        commit_sha="a" * 40,
    )
    t2 = Task(
        run_id="run-a",
        revision_id=row_id(r2),
        key="T2",
        title="Test the exporter",
        role="test_writer",
        depends_on=["T1"],
        files=["tests/test_export.py"],
        state="running",
        attempts=1,
    )
    added(session, t1, t2)
    first = TaskAttempt(
        task_id=row_id(t1),
        run_id="run-a",
        number=1,
        role="implementer",
        status="retried",
        input_summary="T1: Write the CSV exporter",
        tests={"command": "pytest", "exit_code": 1, "passed": False},
        review_verdict="revise",
        review_feedback="handle invoices with no lines",
        error="tests failed",
        started_at=at(20),
        ended_at=at(21.5),
    )
    second = TaskAttempt(
        task_id=row_id(t1),
        run_id="run-a",
        number=2,
        role="implementer",
        status="succeeded",
        confidence=0.9,
        summary="Exporter written",
        host="worker-2",
        process=4242,
        commit_sha="a" * 40,
        diff_stat={"files_changed": 1, "insertions": 40, "deletions": 2},
        tests={"command": "pytest", "exit_code": 0, "passed": True},
        review_verdict="accept",
        review_feedback="",
        started_at=at(22),
        ended_at=at(24),
    )
    running = TaskAttempt(
        task_id=row_id(t2), run_id="run-a", number=1, role="test_writer", started_at=at(30)
    )
    added(session, second, first, running)
    added(
        session,
        ToolCall(
            run_id="run-a",
            attempt_id=first.id,
            sequence=1,
            tool="apply_patch",
            ok=False,
            outcome="patch does not apply",
        ),
        ToolCall(
            run_id="run-a",
            attempt_id=second.id,
            sequence=2,
            tool="run_tests",
            outcome="x" * 500,
            duration_ms=1500.0,
        ),
        ToolCall(
            run_id="run-a",
            attempt_id=second.id,
            sequence=1,
            tool="read_file",
            outcome="def export(): ...",
            duration_ms=2.5,
        ),
    )
    codex, opus = "openai/gpt-5.3-codex", "anthropic/claude-opus-4-6"
    added(
        session,
        model_call("run-a", "planner", opus, (1000, 200, 0, 500), 0.5),
        model_call("run-a", "implementer", codex, (2000, 300, 100, 0), 0.25, t1, first),
        model_call("run-a", "implementer", codex, (1500, 250, 400, 0), 0.125, t1, second),
        model_call("run-a", "implementer", codex, (500, 50, 0, 0), 0.125, t1, second),
        model_call("run-a", "reviewer", opus, (800, 50, 0, 0), None, t1, second),
        model_call(
            "run-a",
            "test_writer",
            "openai/meta-llama/Llama-3.3-70B",
            (600, 60, 0, 0),
            None,
            t2,
            running,
        ),
    )
    added(
        session,
        TimelineEvent(
            run_id="run-a",
            kind="task.accepted",
            task_key="T1",
            message="T1 accepted",
            created_at=at(25),
        ),
        TimelineEvent(
            run_id="run-a",
            kind="run.started",
            message="@maintainer labelled #7; planning",
            created_at=at(0),
        ),
        TimelineEvent(
            run_id="run-a",
            kind="plan.approved",
            message="r1 approved by @maintainer",
            created_at=at(10),
        ),
    )


TOKEN = "let-me-see"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----\n"


@pytest.fixture
def operator() -> OperatorAccess:
    return OperatorAccess(setup_mode=False)


@contextmanager
def guarded_baton(settings: Settings, operator: OperatorAccess | None = None) -> Iterator[str]:
    """A configured Baton with a dashboard token, whose sign-in link `operator` holds."""
    configured = settings.model_copy(
        update={
            "github_app_id": 42,
            "github_private_key": SecretStr(PEM),
            "dashboard_token": SecretStr(TOKEN),
        }
    )
    with serve(create_app(configured, FAST, operator=operator)) as url:
        yield url


@pytest.fixture
def guarded_url(settings: Settings, operator: OperatorAccess) -> Iterator[str]:
    with guarded_baton(settings, operator) as url:
        yield url


@pytest.fixture
def viewer(guarded_url: str) -> Iterator[httpx.Client]:
    """A script reading run data with the dashboard token."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=guarded_url, headers=bearer, timeout=30) as client:
        yield client


@pytest.fixture
def seeded(engine: sa.Engine) -> None:
    with Session(engine) as session:
        seed_runs(session)
        seed_run_a(session)
        session.commit()


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [run["id"] for run in response.json()]


@pytest.mark.usefixtures("seeded")
def test_the_list_is_newest_first_with_each_runs_usage(viewer: httpx.Client) -> None:
    runs = viewer.get("/runs").json()

    assert [run["id"] for run in runs] == NEWEST_FIRST
    assert runs[-1] == {
        "id": "run-a",
        "repository": "octo-org/widgets",
        "issue_number": 7,
        "issue_title": "Add CSV export",
        "state": "executing",
        "active": True,
        "branch": "baton/issue-7",
        "pull_request_number": None,
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:01:00Z",
        "cost_usd": 1.0,
        "unpriced_calls": 2,
        "tokens": {"input": 6400, "output": 910, "cache_read": 500, "cache_write": 500},
    }
    by_id = {run["id"]: run for run in runs}
    assert by_id["run-b"]["pull_request_number"] == 12
    assert (by_id["run-b"]["cost_usd"], by_id["run-b"]["unpriced_calls"]) == (0.0, 0)
    assert (by_id["run-c"]["cost_usd"], by_id["run-c"]["unpriced_calls"]) == (None, 1)
    assert by_id["run-c"]["tokens"] == {
        "input": 100,
        "output": 10,
        "cache_read": 0,
        "cache_write": 0,
    }


@pytest.mark.usefixtures("seeded")
def test_pages_by_cursor_and_by_offset(viewer: httpx.Client) -> None:
    runs = "/runs"
    first = ids(viewer.get(runs, params={"limit": 2}))
    second = ids(viewer.get(runs, params={"limit": 2, "before": first[-1]}))
    third = ids(viewer.get(runs, params={"limit": 2, "before": second[-1]}))

    assert [first, second, third] == [NEWEST_FIRST[:2], NEWEST_FIRST[2:4], NEWEST_FIRST[4:]]
    assert ids(viewer.get(runs, params={"limit": 2, "offset": 2})) == NEWEST_FIRST[2:4]
    assert ids(viewer.get(runs, params={"offset": 5})) == []


@pytest.mark.usefixtures("seeded")
def test_filters_by_state_and_repository(viewer: httpx.Client) -> None:
    runs = "/runs"

    assert ids(viewer.get(runs, params={"state": "failed"})) == ["run-c"]
    assert ids(viewer.get(runs, params={"repository": "Octo-Org/Widgets"})) == [
        "run-e",
        "run-d",
        "run-c",
        "run-a",
    ]
    both = {"repository": "octo-org/gadgets", "state": "done"}
    assert ids(viewer.get(runs, params=both)) == ["run-b"]
    assert ids(viewer.get(runs, params={"state": "planning", "before": "run-e"})) == ["run-d"]
    assert ids(viewer.get(runs, params={"repository": "octo-org/none"})) == []


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"before": "run-e", "offset": 1}, 400, "page with ?before= or with ?offset=, not both"),
        ({"before": "run-zz"}, 400, "no run run-zz to page before"),
        ({"limit": 201}, 422, None),
        ({"limit": 0}, 422, None),
        ({"offset": -1}, 422, None),
        ({"state": "sleeping"}, 422, None),
    ],
    ids=["before-and-offset", "unknown-cursor", "limit-over-200", "limit-0", "offset-<0", "state"],
)
def test_bad_list_parameters_are_refused(
    viewer: httpx.Client, params: dict[str, Any], status: int, detail: str | None
) -> None:
    response = viewer.get("/runs", params=params)

    assert response.status_code == status
    if detail is not None:
        assert response.json() == {"detail": detail}


def test_the_list_is_empty_without_runs(viewer: httpx.Client) -> None:
    assert viewer.get("/runs").json() == []


def test_the_default_page_is_fifty_and_the_largest_two_hundred(
    viewer: httpx.Client, engine: sa.Engine
) -> None:
    with Session(engine) as session:
        session.add_all(a_run(f"bulk-{n:03}", n, n) for n in range(210))
        session.commit()
    runs = "/runs"

    assert ids(viewer.get(runs))[:2] == ["bulk-209", "bulk-208"]
    assert len(ids(viewer.get(runs))) == 50
    assert len(ids(viewer.get(runs, params={"limit": 200}))) == 200


@pytest.mark.usefixtures("seeded")
def test_one_run_with_its_plan_tasks_attempts_and_timeline(viewer: httpx.Client) -> None:
    run = viewer.get("/runs/run-a").json()

    assert (run["id"], run["state"], run["cost_usd"], run["unpriced_calls"]) == (
        "run-a",
        "executing",
        1.0,
        2,
    )
    assert run["tokens"] == {"input": 6400, "output": 910, "cache_read": 500, "cache_write": 500}
    assert (run["triggered_by"], run["error"], run["ended_at"]) == (None, None, None)
    assert run["revisions"] == [
        {
            "number": 1,
            "source": "planner",
            "summary": "Export invoices as CSV",
            "approved_by": "maintainer",
            "approved_at": "2026-03-01T12:10:00Z",
            "created_at": "2026-03-01T12:05:00Z",
            "plan": PLAN_R1,
        },
        {
            "number": 2,
            "source": "review",
            "summary": "Test the exporter, as the review asked",
            "approved_by": "reviewer",
            "approved_at": "2026-03-01T12:28:00Z",
            "created_at": "2026-03-01T12:28:00Z",
            "plan": PLAN_R2,
        },
    ]
    assert run["timeline"] == [
        {
            "kind": "run.started",
            "message": "@maintainer labelled #7; planning",
            "task_key": None,
            "created_at": "2026-03-01T12:00:00Z",
        },
        {
            "kind": "plan.approved",
            "message": "r1 approved by @maintainer",
            "task_key": None,
            "created_at": "2026-03-01T12:10:00Z",
        },
        {
            "kind": "task.accepted",
            "message": "T1 accepted",
            "task_key": "T1",
            "created_at": "2026-03-01T12:25:00Z",
        },
    ]


@pytest.mark.usefixtures("seeded")
def test_tasks_carry_their_usage_and_attempts(viewer: httpx.Client) -> None:
    t1, t2 = viewer.get("/runs/run-a").json()["tasks"]

    assert {key: t1[key] for key in t1 if key != "attempts"} == {
        "key": "T1",
        "title": "Write the CSV exporter",
        "role": "implementer",
        "state": "accepted",
        "revision": 1,
        "depends_on": [],
        "files": ["app/export.py"],
        "effort": 4,
        "commit_sha": "a" * 40,
        "cost_usd": 0.5,
        "unpriced_calls": 1,
        "tokens": {"input": 4800, "output": 650, "cache_read": 500, "cache_write": 0},
    }
    assert (t2["key"], t2["revision"], t2["depends_on"], t2["state"], t2["effort"]) == (
        "T2",
        2,
        ["T1"],
        "running",
        None,
    )
    # Its only call had no known price: the cost is unknown, not zero.
    assert (t2["cost_usd"], t2["unpriced_calls"]) == (None, 1)
    assert [a["number"] for a in t1["attempts"]] == [1, 2]
    assert [a["number"] for a in t2["attempts"]] == [1]


@pytest.mark.usefixtures("seeded")
def test_attempts_show_what_contract_section_7_records(viewer: httpx.Client) -> None:
    t1, t2 = viewer.get("/runs/run-a").json()["tasks"]
    first, second = t1["attempts"]
    (running,) = t2["attempts"]

    assert second == {
        "number": 2,
        "role": "implementer",
        "model": "openai/gpt-5.3-codex",
        "status": "succeeded",
        "input_summary": "",
        "cost_usd": 0.25,
        "unpriced_calls": 1,
        "tokens": {"input": 2800, "output": 350, "cache_read": 400, "cache_write": 0},
        "started_at": "2026-03-01T12:22:00Z",
        "ended_at": "2026-03-01T12:24:00Z",
        "wall_seconds": 120.0,
        "host": "worker-2",
        "process": 4242,
        "confidence": 0.9,
        "summary": "Exporter written",
        "commit_sha": "a" * 40,
        "diff_stat": {"files_changed": 1, "insertions": 40, "deletions": 2},
        "tests": {"command": "pytest", "exit_code": 0, "passed": True},
        "review_verdict": "accept",
        "review_feedback": "",
        "error": None,
        "tool_calls": [
            {
                "sequence": 1,
                "tool": "read_file",
                "ok": True,
                "outcome": "def export(): ...",
                "duration_ms": 2.5,
            },
            {
                "sequence": 2,
                "tool": "run_tests",
                "ok": True,
                "outcome": "x" * 200 + "…",
                "duration_ms": 1500.0,
            },
        ],
    }
    assert (first["status"], first["error"], first["wall_seconds"]) == (
        "retried",
        "tests failed",
        90.0,
    )
    assert (first["review_verdict"], first["review_feedback"]) == (
        "revise",
        "handle invoices with no lines",
    )
    assert (first["cost_usd"], first["unpriced_calls"]) == (0.25, 0)
    assert [(c["tool"], c["ok"], c["outcome"]) for c in first["tool_calls"]] == [
        ("apply_patch", False, "patch does not apply")
    ]
    assert (running["status"], running["ended_at"], running["wall_seconds"]) == (
        "running",
        None,
        None,
    )
    assert (running["model"], running["cost_usd"], running["tool_calls"]) == (
        "openai/meta-llama/Llama-3.3-70B",
        None,
        [],
    )


@pytest.mark.usefixtures("seeded")
def test_a_run_without_plan_or_calls(viewer: httpx.Client) -> None:
    run = viewer.get("/runs/run-c").json()

    assert (run["state"], run["active"], run["error"]) == ("failed", False, "no test command")
    assert (run["revisions"], run["tasks"], run["timeline"]) == ([], [], [])
    assert (run["cost_usd"], run["unpriced_calls"]) == (None, 1)


def test_an_unknown_run_is_404(viewer: httpx.Client) -> None:
    response = viewer.get("/runs/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "no run nope"}


@pytest.fixture
def selects() -> Iterator[Counter[str]]:
    """SELECTs issued by any engine in this process, counted by the first table they read."""
    counts: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        found = re.search(r"^\s*SELECT .*?\bFROM (\w+)", statement, re.DOTALL)
        if found:
            counts[found.group(1)] += 1

    sa.event.listen(sa.Engine, "before_cursor_execute", count)
    yield counts
    sa.event.remove(sa.Engine, "before_cursor_execute", count)


@pytest.mark.usefixtures("seeded")
def test_one_query_per_kind_of_row(viewer: httpx.Client, selects: Counter[str]) -> None:
    viewer.get("/runs/run-a").raise_for_status()
    read = ["runs", "plan_revisions", "tasks", "task_attempts", "tool_calls", "model_calls"]

    assert {table: selects[table] for table in [*read, "timeline_events"]} == dict.fromkeys(
        [*read, "timeline_events"], 1
    )
    selects.clear()
    viewer.get("/runs", params={"before": "run-e"}).raise_for_status()

    # The cursor's own row, then the page; then one query for every run's usage.
    assert (selects["runs"], selects["model_calls"]) == (2, 1)


# Strangers: where a request seems to come from proves nothing, so run data needs credentials.

# What nginx's default `proxy_pass http://127.0.0.1:3000;` sends upstream for a stranger's request:
# its own connection from loopback, `Host` rewritten to the upstream, no X-Forwarded-* header.
NGINX_DEFAULT = {"Host": "127.0.0.1:3000", "Connection": "close", "User-Agent": "curl/8.5.0"}
STRANGERS = {
    "host of another site": {"Host": "evil.example"},
    "via a proxy": {"Via": "1.1 proxy"},
    "forwarded proto": {"X-Forwarded-Proto": "https"},
    "nginx default proxy_pass": NGINX_DEFAULT,
    "no header at all": {},
}


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("headers", list(STRANGERS.values()), ids=list(STRANGERS))
@pytest.mark.parametrize("path", ["/runs", "/runs/run-a"])
def test_run_data_is_refused_without_credentials(
    baton_url: str, headers: dict[str, str], path: str
) -> None:
    response = httpx.get(baton_url + path, headers=headers)

    assert response.status_code == 401, response.text
    assert "Add CSV export" not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "BATON_DASHBOARD_TOKEN" in response.json()["detail"]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("headers", list(STRANGERS.values()), ids=list(STRANGERS))
def test_without_credentials_a_configured_token_changes_nothing(
    guarded_url: str, headers: dict[str, str]
) -> None:
    response = httpx.get(f"{guarded_url}/runs/run-a", headers=headers)

    assert response.status_code == 401
    assert "Add CSV export" not in response.text


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("headers", list(STRANGERS.values()), ids=list(STRANGERS))
def test_the_token_or_the_operators_session_shows_run_data(
    guarded_url: str, operator: OperatorAccess, headers: dict[str, str]
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with signed_in_browser(guarded_url, operator) as browser:
        by_session = browser.get("/runs/run-a", headers=headers)
    by_token = httpx.get(f"{guarded_url}/runs/run-a", headers=headers | bearer)

    for response in (by_session, by_token):
        assert response.status_code == 200, response.text
        assert response.json()["issue_title"] == "Add CSV export"


@pytest.mark.usefixtures("seeded")
def test_the_sign_in_link_opens_a_strict_session_and_leaves_the_code_behind(
    guarded_url: str, operator: OperatorAccess
) -> None:
    with httpx.Client(base_url=guarded_url, timeout=30) as browser:
        opened = browser.get("/runs", params={"code": operator.code, "limit": 2})
        listed = browser.get(opened.headers["location"])

    assert (opened.status_code, opened.headers["location"]) == (303, "/runs?limit=2")
    cookie = {part.strip() for part in opened.headers["set-cookie"].split(";")}
    assert {"HttpOnly", "Path=/", "SameSite=strict"} <= cookie
    assert ids(listed) == NEWEST_FIRST[:2]


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(
    ("headers", "cookie"),
    [
        ({"Authorization": "Bearer not-it"}, None),
        ({"Authorization": f"Bearer {TOKEN}x"}, None),
        ({"Authorization": TOKEN}, None),
        ({}, "forged"),
        ({}, TOKEN),
        ({}, "the sign-in code"),
    ],
    ids=[
        "wrong-token",
        "longer-token",
        "not-bearer",
        "forged-cookie",
        "token-cookie",
        "code-cookie",
    ],
)
def test_a_wrong_token_or_cookie_is_refused(
    guarded_url: str, operator: OperatorAccess, headers: dict[str, str], cookie: str | None
) -> None:
    value = operator.code if cookie == "the sign-in code" else cookie
    cookies = {} if value is None else {"baton_session": value}
    with httpx.Client(base_url=guarded_url, cookies=cookies, timeout=30) as stranger:
        response = stranger.get("/runs/run-a", headers=headers)

    assert response.status_code == 401
    assert "Add CSV export" not in response.text


def test_a_wrong_sign_in_code_opens_no_session(guarded_url: str) -> None:
    with httpx.Client(base_url=guarded_url, timeout=30) as stranger:
        refused = stranger.get("/runs", params={"code": "guessed"})
        after = stranger.get("/runs")

    assert refused.status_code == 403
    assert "set-cookie" not in refused.headers
    assert "not this Baton" in refused.text
    assert after.status_code == 401


@pytest.mark.usefixtures("seeded")
def test_a_session_works_without_a_dashboard_token(settings: Settings) -> None:
    operator = OperatorAccess(setup_mode=True)
    with serve(create_app(settings, FAST, operator=operator)) as url:
        anonymous = httpx.get(f"{url}/runs")
        with httpx.Client(base_url=url, timeout=30) as browser:
            browser.get(f"/?code={operator.code}")
            by_session = browser.get("/runs")

    assert anonymous.status_code == 401
    assert ids(by_session) == NEWEST_FIRST
