"""The run pages in headless Chromium: signed in with the operator's link, a run's task seen
changing state without a reload, nothing fetched from elsewhere, and JSON kept for scripts."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect
from sqlmodel import Session

from bot.settings import Settings
from bot.store.models import PlanRevision, RunState, Task, TimelineEvent
from tests.browser import screenshot
from tests.doubles.models import ModelReply, RecordedCall
from tests.test_runs_api import TOKEN, a_run, guarded_baton, seed_run_a, seed_runs
from tests.world import (
    FOUR_TASKS,
    approved,
    models_for,
    wait_explained,
    wait_for_run,
    who,
    world_of,
)
from webhooks.access import OperatorAccess

EXTERNAL_URL = re.compile(r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture
def operator() -> OperatorAccess:
    return OperatorAccess(setup_mode=False)


@pytest.fixture
def dashboard(settings: Settings, operator: OperatorAccess) -> Iterator[str]:
    with guarded_baton(settings, operator) as url:
        yield url


@pytest.fixture
def signed_in(page: Page, dashboard: str, operator: OperatorAccess) -> Page:
    page.goto(operator.sign_in_link(dashboard))
    return page


def executing_run(session: Session) -> None:
    """A run under way: T1 running, T2 waiting for it."""
    run = a_run("run-live", 7, 0, state=RunState.executing, created_at=datetime.now(UTC))
    session.add(run)
    session.flush()
    plan = {"summary": "Two steps", "tasks": []}
    revision = PlanRevision(
        run_id=run.id, number=1, source="planner", summary="Two steps", plan=plan
    )
    session.add(revision)
    session.flush()
    for key, state, depends in (("T1", "running", []), ("T2", "pending", ["T1"])):
        session.add(
            Task(
                run_id=run.id,
                revision_id=revision.id,
                key=key,
                title=f"Step {key}",
                role="implementer",
                state=state,
                depends_on=depends,
            )
        )
        session.add(TimelineEvent(run_id=run.id, task_key=key, kind=f"task.{state}", message=state))
    session.commit()


def move_task(engine: sa.Engine, key: str, state: str) -> None:
    with Session(engine) as session:
        session.execute(
            sa.update(Task).where(Task.run_id == "run-live", Task.key == key).values(state=state)  # type: ignore[arg-type]
        )
        session.add(
            TimelineEvent(run_id="run-live", task_key=key, kind=f"task.{state}", message=state)
        )
        session.commit()


def test_a_task_changes_state_on_the_open_page(
    signed_in: Page, dashboard: str, engine: sa.Engine
) -> None:
    with Session(engine) as session:
        executing_run(session)
    signed_in.goto(f"{dashboard}/runs/run-live")
    task = signed_in.locator("#task-T1")
    expect(task).to_have_attribute("data-state", "running")
    move_task(engine, "T1", "accepted")
    expect(task).to_have_attribute("data-state", "accepted", timeout=15_000)
    expect(task.locator(".state")).to_have_text("accepted")
    screenshot(signed_in, "run-page")


def test_a_task_of_a_real_run_changes_state_on_the_open_page(
    page: Page, tmp_path: Path, settings: Settings, engine: sa.Engine, operator: OperatorAccess
) -> None:
    """T1's worker holds its first model turn until the page shows T1 running; let go, the
    review accepts it and the same page shows that, with no reload."""
    let_go = threading.Event()
    answer = models_for(FOUR_TASKS)

    def held_at_t1(call: RecordedCall) -> ModelReply:
        if who(call) == ("worker", "T1") and len(call.json["messages"]) == 1:
            let_go.wait(timeout=120)
        return answer(call)

    with world_of(tmp_path, settings, operator=operator) as world:
        approved(world, engine, held_at_t1)
        wait_for_task(engine, "T1", "running")
        page.goto(operator.sign_in_link(world.base_url))
        page.goto(f"{world.base_url}/runs/{world_run_id(engine)}")
        task = page.locator("#task-T1")
        expect(task).to_have_attribute("data-state", "running")
        page.evaluate("window.notReloaded = true")
        let_go.set()
        expect(task).to_have_attribute("data-state", "integrated", timeout=60_000)
        expect(page.locator("#task-T4")).to_have_attribute(
            "data-state", "integrated", timeout=120_000
        )
        assert page.evaluate("window.notReloaded") is True
        screenshot(page, "run-page-live")
        wait_for_run(world, engine, "pr_open")


def wait_for_task(engine: sa.Engine, key: str, state: str) -> None:
    query = sa.text("SELECT state FROM tasks WHERE key = :key")

    def reached() -> bool:
        with engine.connect() as connection:
            return connection.execute(query, {"key": key}).scalar() == state

    wait_explained(engine, reached, f"have {key} {state}", timeout=120)


def world_run_id(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SELECT id FROM runs")).scalar_one())


def test_pages_load_only_their_own_assets_under_a_strict_policy(
    signed_in: Page, dashboard: str, engine: sa.Engine
) -> None:
    with Session(engine) as session:
        seed_runs(session)
        seed_run_a(session)
        session.commit()
    outside: list[str] = []
    signed_in.on(
        "request",
        lambda request: (
            outside.append(request.url) if not request.url.startswith(dashboard) else None
        ),
    )
    for path, name in (("/runs", "runs-list"), ("/runs/run-a", "run-a")):
        answer = signed_in.goto(dashboard + path)
        assert answer is not None
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert EXTERNAL_URL.search(signed_in.content()) is None
        screenshot(signed_in, name)
    assert outside == []


def test_a_phone_sees_the_list_without_sideways_scrolling(
    signed_in: Page, dashboard: str, engine: sa.Engine
) -> None:
    with Session(engine) as session:
        seed_runs(session)
        session.commit()
    signed_in.set_viewport_size({"width": 390, "height": 844})
    signed_in.goto(f"{dashboard}/runs")
    body_width = signed_in.evaluate("document.body.scrollWidth")
    assert body_width <= 390
    screenshot(signed_in, "runs-list-phone")


def test_json_is_unchanged_for_scripts(dashboard: str, engine: sa.Engine) -> None:
    with Session(engine) as session:
        seed_runs(session)
        session.commit()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=dashboard, headers=bearer, timeout=30) as client:
        for accept in ("application/json", "*/*", None):
            headers = {"Accept": accept} if accept else {}
            answer = client.get("/runs", headers=headers)
            assert answer.headers["content-type"] == "application/json"
            assert [run["id"] for run in answer.json()][:2] == ["run-e", "run-d"]
        html = client.get("/runs", headers={"Accept": "text/html"})
        assert html.headers["content-type"].startswith("text/html")


def test_filters_and_paging_in_html(dashboard: str, engine: sa.Engine) -> None:
    with Session(engine) as session:
        seed_runs(session)
        session.commit()
    bearer = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/html"}
    with httpx.Client(base_url=dashboard, headers=bearer, timeout=30) as client:
        first = client.get("/runs", params={"limit": 2}).text
        assert first.count('href="/runs/run-') == 2
        older = re.search(r'rel="next" href="([^"]+)"', first)
        assert older is not None
        second = client.get(older.group(1).replace("&amp;", "&")).text
        assert 'href="/runs/run-c"' in second
        assert 'href="/runs/run-e"' not in second
        single = client.get("/runs", params={"mode": "single"}).text
        assert 'href="/runs/run-' not in single
        assert "No runs match." in single
