"""Insights over known runs: every figure on `/insights` and in `baton report --json` equals the
hand computation written here, for the period, the repository and what the viewer may read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from bot.insights import PeriodError, Scope, period_scope, read_insights
from bot.settings import Settings
from bot.store.models import (
    Delivery,
    DeliveryOutcome,
    ModelCall,
    PlanRevision,
    Run,
    Task,
    TaskAttempt,
    TimelineEvent,
)
from tests.test_runs_api import TOKEN, guarded_baton

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WEEK_AGO = NOW - timedelta(days=7)
WIDGETS, OTHER = "octo-org/widgets", "octo-org/other"
REPOSITORY_IDS = {WIDGETS: 712345678, OTHER: 712345679}
PASSED, FAILED = {"passed": True, "exit_code": 0}, {"passed": False, "exit_code": 1}


class Seeder:
    """Rows written straight into the database, each at a known time."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.deliveries = 0

    def run(self, run_id: str, repository: str, mode: str, state: str, days_ago: float) -> Run:
        started = NOW - timedelta(days=days_ago)
        run = Run(
            id=run_id,
            repository_id=REPOSITORY_IDS[repository],
            repository=repository,
            issue_number=int(run_id[1:]),
            mode=mode,
            state=state,
            active=state == "pr_open",
            created_at=started,
            updated_at=started,
        )
        self.session.add(run)
        self.session.flush()
        return run

    def approved(self, run: Run, minutes_after_start: float, to_pr_seconds: float | None) -> None:
        approved_at = run.created_at + timedelta(minutes=minutes_after_start)
        self.session.add(
            PlanRevision(
                run_id=run.id,
                number=1,
                plan={},
                approved_by="alice",
                approved_at=approved_at,
                created_at=run.created_at,
            )
        )
        # A later revision approved later: the first approval is where the clock starts.
        self.session.add(
            PlanRevision(
                run_id=run.id,
                number=2,
                plan={},
                approved_by="alice",
                approved_at=approved_at + timedelta(hours=5),
                created_at=run.created_at,
            )
        )
        if to_pr_seconds is not None:
            opened = approved_at + timedelta(seconds=to_pr_seconds)
            self.event(run, "run.pr_open", at=opened)
            self.event(run, "run.pr_open", at=opened + timedelta(hours=1))  # after a revision

    def event(
        self, run: Run, kind: str, *, by_person: bool = False, at: datetime | None = None
    ) -> None:
        delivery_id = None
        if by_person:
            self.deliveries += 1
            row = Delivery(
                delivery_id=f"d-{self.deliveries}",
                event="issue_comment",
                outcome=DeliveryOutcome.queued,
            )
            self.session.add(row)
            self.session.flush()
            delivery_id = row.id
        when = at or run.created_at + timedelta(minutes=self.deliveries)
        self.session.add(
            TimelineEvent(run_id=run.id, kind=kind, delivery_id=delivery_id, created_at=when)
        )

    def attempt(
        self,
        run: Run,
        key: str,
        role: str,
        model: str,
        status: str,
        verdict: str | None,
        tests: dict[str, Any],
        cost: float | None,
    ) -> None:
        task = self.session.exec(select(Task).where(Task.run_id == run.id, Task.key == key)).first()
        if task is None:
            task = Task(
                run_id=run.id, revision_id=self._revision(run), key=key, title=key, role=role
            )
            self.session.add(task)
            self.session.flush()
        earlier = self.session.exec(select(TaskAttempt).where(TaskAttempt.task_id == task.id))
        number = 1 + len(earlier.all())
        attempt = TaskAttempt(
            task_id=task.id or 0,
            run_id=run.id,
            number=number,
            role=role,
            model=model,
            status=status,
            review_verdict=verdict,
            tests=tests,
            started_at=run.created_at,
        )
        self.session.add(attempt)
        self.session.flush()
        self.call(run, cost, task, attempt)

    def call(
        self,
        run: Run,
        cost: float | None,
        task: Task | None = None,
        attempt: TaskAttempt | None = None,
    ) -> None:
        self.session.add(
            ModelCall(
                run_id=run.id,
                task_id=task.id if task else None,
                attempt_id=attempt.id if attempt else None,
                role=attempt.role if attempt else "orchestrator",
                provider="m",
                model="m/boss",
                input_tokens=100,
                output_tokens=10,
                cost_usd=cost,
                created_at=run.created_at,
            )
        )

    def _revision(self, run: Run) -> int:
        revision = self.session.exec(
            select(PlanRevision).where(PlanRevision.run_id == run.id)
        ).first()
        assert revision is not None
        assert revision.id is not None
        return revision.id


def seed(session: Session) -> None:
    """Six runs: four in widgets this week (two orchestrated, two single), one in another
    repository this week, and one in widgets before the period."""
    s = Seeder(session)
    r1 = s.run("r1", WIDGETS, "orchestrated", "done", days_ago=1)
    s.approved(r1, 10, to_pr_seconds=600)
    s.call(r1, 1.00)  # planning
    s.attempt(r1, "T1", "implementer", "m/worker", "retried", "revise", FAILED, 0.30)
    s.attempt(r1, "T1", "implementer", "m/worker", "succeeded", "accept", PASSED, 0.50)
    s.attempt(r1, "T2", "test_writer", "m/worker", "succeeded", "accept", PASSED, 0.20)
    s.event(r1, "plan.approved", by_person=True)  # the first approval: not an intervention
    s.event(r1, "task.retry", by_person=True)
    s.event(r1, "plan.from_review")
    s.event(r1, "comment.received", by_person=True)  # a comment that steered nothing

    r2 = s.run("r2", WIDGETS, "orchestrated", "pr_open", days_ago=2)
    s.approved(r2, 5, to_pr_seconds=1200)
    s.call(r2, 0.50)
    s.attempt(r2, "T1", "implementer", "m/worker", "escalated", None, {}, 0.40)
    s.attempt(r2, "T2", "implementer", "m/other", "succeeded", "escalate", FAILED, 0.10)
    s.attempt(r2, "T3", "implementer", "m/worker", "running", None, FAILED, 0.05)
    s.event(r2, "plan.approved", by_person=True)
    s.event(r2, "plan.approved", by_person=True)  # approved again after a revision
    s.event(r2, "plan.revision_requested", by_person=True)
    s.event(r2, "plan.revised")  # the planner's new revision: no person's doing
    s.event(r2, "command.refused", by_person=True)  # refused: it changed nothing

    r3 = s.run("r3", WIDGETS, "single", "done", days_ago=3)
    s.approved(r3, 1, to_pr_seconds=300)
    s.call(r3, 0.60)
    s.call(r3, None)  # a model of unknown price
    s.attempt(r3, "T1", "implementer", "m/worker", "failed", None, FAILED, 0.20)
    s.attempt(r3, "T1", "implementer", "m/worker", "succeeded", "accept", PASSED, 0.20)
    s.event(r3, "plan.approved", by_person=True)

    r4 = s.run("r4", WIDGETS, "single", "cancelled", days_ago=4)
    s.approved(r4, 1, to_pr_seconds=None)
    s.call(r4, 0.40)
    s.attempt(r4, "T1", "implementer", "m/worker", "cancelled", None, {}, 0.0)
    s.event(r4, "plan.approved", by_person=True)
    s.event(r4, "run.cancelled", by_person=True)

    r5 = s.run("r5", OTHER, "orchestrated", "done", days_ago=5)
    s.approved(r5, 1, to_pr_seconds=900)
    s.call(r5, 4.00)
    s.attempt(r5, "T1", "implementer", "m/worker", "succeeded", "accept", PASSED, 1.00)
    s.event(r5, "plan.approved", by_person=True)

    r6 = s.run("r6", WIDGETS, "orchestrated", "done", days_ago=8)  # before the period
    s.approved(r6, 1, to_pr_seconds=60)
    s.call(r6, 7.00)
    s.attempt(r6, "T1", "implementer", "m/worker", "succeeded", "accept", PASSED, 1.00)
    session.commit()


def mode_row(mode: str, **figures: Any) -> dict[str, Any]:
    return {"mode": mode, **figures}


# By hand, for the week with every repository (r1, r2, r3, r4, r5):
# orchestrated r1, r2, r5: pull requests 600, 1200 and 900 s after approval; interventions
# r1 2 (a retry, a review), r2 2 (a second approval, a revision asked), r5 0; attempts that ran
# tests r1 3 (1 failed), r2 1 (failed; its running attempt does not count), r5 1; dollars
# 2.00 + 1.00 + 5.00 = 8.00 (r2's running attempt adds 0.05: 8.05), merged r1 and r5.
ORCHESTRATED = mode_row(
    "orchestrated",
    runs=3,
    runs_with_pull_request=3,
    median_seconds_to_pull_request=900.0,
    interventions=4,
    interventions_per_run=4 / 3,
    attempts_with_tests=5,
    attempts_tests_failed=2,
    tests_failed_share=2 / 5,
    cost_usd=8.05,
    cost_per_run=8.05 / 3,
    merged=2,
    cost_per_merged_change=8.05 / 2,
)
# single r3, r4: one pull request 300 s after approval; interventions r4's /cancel; tests r3 2
# (1 failed), r4's cancelled attempt none; dollars 1.00 + 0.40 (the unpriced call adds none).
SINGLE = mode_row(
    "single",
    runs=2,
    runs_with_pull_request=1,
    median_seconds_to_pull_request=300.0,
    interventions=1,
    interventions_per_run=0.5,
    attempts_with_tests=2,
    attempts_tests_failed=1,
    tests_failed_share=0.5,
    cost_usd=1.40,
    cost_per_run=0.70,
    merged=1,
    cost_per_merged_change=1.40,
)


def role_row(role: str, model: str, *counts: int, cost: float) -> dict[str, Any]:
    attempts, accepted, retried, escalated, failed = counts
    return {
        "role": role,
        "model": model,
        "attempts": attempts,
        "accepted": accepted,
        "retried": retried,
        "escalated": escalated,
        "failed": failed,
        "acceptance_rate": accepted / attempts,
        "retry_rate": retried / attempts,
        "escalation_rate": escalated / attempts,
        "failure_rate": failed / attempts,
        "cost_usd": cost,
        "cost_per_accepted_task": cost / accepted if accepted else None,
    }


# Finished attempts: r1 retried + accepted (implementer), accepted (test writer); r2 escalated by
# its budget (m/worker) and by its review (m/other); r3 failed + accepted; r5 accepted.
ROLES = [
    role_row("implementer", "m/other", 1, 0, 0, 1, 0, cost=0.10),
    role_row(
        "implementer", "m/worker", 6, 3, 1, 1, 1, cost=0.30 + 0.50 + 0.40 + 0.20 + 0.20 + 1.00
    ),
    role_row("test_writer", "m/worker", 1, 1, 0, 0, 0, cost=0.20),
]


@pytest.fixture
def seeded(engine: sa.Engine) -> None:
    with Session(engine) as session:
        seed(session)


def approx(found: Any) -> Any:
    """Dollars and ratios are sums of floats: compare them as numbers, not bit patterns."""
    if isinstance(found, dict):
        return {key: approx(value) for key, value in found.items()}
    if isinstance(found, list):
        return [approx(value) for value in found]
    if isinstance(found, float):
        return pytest.approx(found)
    return found


def week(**scope: Any) -> Scope:
    return Scope(WEEK_AGO, NOW, **scope)


@pytest.mark.usefixtures("seeded")
def test_every_figure_equals_the_hand_computation(engine: sa.Engine) -> None:
    with Session(engine) as session:
        found = read_insights(session, week()).as_json()

    assert found["by_mode"] == approx([ORCHESTRATED, SINGLE])
    assert found["by_role_and_model"] == approx(ROLES)


@pytest.mark.usefixtures("seeded")
def test_runs_a_viewer_may_not_read_count_in_no_figure(engine: sa.Engine) -> None:
    with Session(engine) as session:
        found = read_insights(session, week(visible=frozenset({"Octo-Org/Widgets"}))).as_json()

    # Without r5: orchestrated is r1 and r2 alone.
    assert found["by_mode"][0] == approx(
        mode_row(
            "orchestrated",
            runs=2,
            runs_with_pull_request=2,
            median_seconds_to_pull_request=900.0,
            interventions=4,
            interventions_per_run=2.0,
            attempts_with_tests=4,
            attempts_tests_failed=2,
            tests_failed_share=0.5,
            cost_usd=3.05,
            cost_per_run=3.05 / 2,
            merged=1,
            cost_per_merged_change=3.05,
        )
    )
    assert found["by_mode"][1] == approx(SINGLE)
    worker = found["by_role_and_model"][1]
    assert (worker["model"], worker["attempts"], worker["accepted"]) == ("m/worker", 5, 2)
    assert worker["cost_per_accepted_task"] == pytest.approx(1.60 / 2)


@pytest.mark.usefixtures("seeded")
def test_one_repository_and_an_empty_period(engine: sa.Engine) -> None:
    with Session(engine) as session:
        other = read_insights(session, week(repository="OCTO-ORG/other")).as_json()
        nothing = read_insights(session, Scope(NOW, NOW + timedelta(days=1))).as_json()

    (only,) = other["by_mode"]
    assert (only["mode"], only["runs"], only["cost_usd"]) == ("orchestrated", 1, 5.0)
    assert [row["attempts"] for row in other["by_role_and_model"]] == [1]
    assert nothing["by_mode"] == []
    assert nothing["by_role_and_model"] == []


def test_a_period_is_read_from_dates_times_and_ages() -> None:
    assert period_scope(None, None, NOW) == Scope(WEEK_AGO, NOW)
    assert period_scope("24h", None, NOW).since == NOW - timedelta(hours=24)
    assert period_scope("2w", "1d", NOW) == Scope(NOW - timedelta(weeks=2), NOW - timedelta(days=1))
    assert period_scope("2026-11-01", "2026-11-02T06:00+01:00", NOW) == Scope(
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC)
    )
    with pytest.raises(PeriodError, match="since takes an ISO date or time"):
        period_scope("last week", None, NOW)
    with pytest.raises(PeriodError, match="must come before until"):
        period_scope("1d", "2d", NOW)


@pytest.fixture
def guarded_url(settings: Settings) -> Iterator[str]:
    with guarded_baton(settings) as url:
        yield url


def insights_client(url: str, accept: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": accept}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


PERIOD = {"since": WEEK_AGO.isoformat(), "until": NOW.isoformat()}


@pytest.mark.usefixtures("seeded")
def test_the_insights_page_shows_the_same_figures_as_json_and_html(guarded_url: str) -> None:
    with insights_client(guarded_url, "application/json") as client:
        found = client.get("/insights", params=PERIOD)
        refused = client.get("/insights", params={"since": "yesterday-ish"})
    with insights_client(guarded_url, "text/html,application/xhtml+xml,*/*;q=0.8") as browser:
        page = browser.get("/insights", params=PERIOD)
    anonymous = httpx.get(f"{guarded_url}/insights", params=PERIOD, timeout=30)

    assert found.status_code == 200
    assert found.json()["by_mode"] == approx([ORCHESTRATED, SINGLE])
    assert found.json()["by_role_and_model"] == approx(ROLES)
    assert refused.status_code == 400
    assert "since takes an ISO date or time" in refused.json()["detail"]
    assert anonymous.status_code == 401
    assert page.headers["content-type"].startswith("text/html")
    # 900 s is 15 min; 4 interventions over 3 runs; $8.05 over 3 runs and over 2 merged.
    assert (
        "<tr><td>orchestrated</td><td>3</td><td>15 min</td><td>1.33</td><td>40%</td>"
        "<td>$2.68</td><td>$4.03</td></tr>"
    ) in page.text
    assert (
        "<tr><td>single</td><td>2</td><td>5 min</td><td>0.50</td><td>50%</td>"
        "<td>$0.70</td><td>$1.40</td></tr>"
    ) in page.text
    assert (
        "<tr><td>implementer</td><td>m/worker</td><td>6</td><td>50%</td><td>17%</td>"
        "<td>17%</td><td>17%</td><td>$0.87</td></tr>"
    ) in page.text


def report(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`baton report` in its own process, on the test's database."""
    environment = {
        **os.environ,
        "BATON_DATABASE_URL": settings.database_url or "",
        "BATON_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "report", *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


@pytest.mark.usefixtures("seeded")
def test_baton_report_prints_the_same_figures(settings: Settings) -> None:
    period = ["--since", WEEK_AGO.isoformat(), "--until", NOW.isoformat()]
    as_json = report(settings, *period, "--json")
    as_markdown = report(settings, *period, "--repository", WIDGETS)
    wrong = report(settings, "--since", "the dawn of time")

    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert found["by_mode"] == approx([ORCHESTRATED, SINGLE])
    assert found["by_role_and_model"] == approx(ROLES)
    assert as_markdown.returncode == 0, as_markdown.stderr
    assert as_markdown.stdout.startswith(f"# Baton report in {WIDGETS}\n")
    assert "| single | 2 | 5 min | 0.50 | 50% | $0.70 | $1.40 |" in as_markdown.stdout
    assert wrong.returncode == 2
    assert "since takes an ISO date or time" in wrong.stderr
    assert wrong.stdout == ""
