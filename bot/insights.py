"""Whether orchestration paid: figures over the runs of a period, per worker role and model and
per run mode (orchestrated or one agent), for the insights page and `baton report`.

Every figure is read in six queries (runs, approvals, pull requests, steering events, attempts,
model-call costs), each over the runs in scope, and summed here; a run outside the scope (its
period, its repository, or the repositories the viewer may read) counts in no figure.

Definitions, per attempt (worker attempts at tasks; one still running, or cancelled with its run,
counts in none of them):
- accepted: its review said accept; sent back: its review asked for another attempt (retried);
  escalated: its review escalated it, or it stopped at a budget; failed: it failed, or its review
  still asked for changes after the last round;
- each rate is that count over the finished attempts of the role and model;
- cost per accepted task: the priced model calls of those attempts (the worker's and its
  reviewer's) over the accepted attempts.
Per run mode:
- time from approval to draft pull request: from the run's first approved plan revision to the
  first time it reached `pr_open`, median over the runs that did;
- human interventions: commands a person gave that steered the run (`/approve-plan` after the
  first, `/revise-plan`, `/edit-plan`, `/approve-task`, `/retry`, `/skip`, `/cancel`) and reviews
  that became new tasks; the first approval every run needs is not one;
- tests failed: the share of finished attempts that ran the tests whose last test run failed;
- cost per run: every priced model call of the runs (planning and reviews included) over the
  runs; cost per merged change: the same dollars over the runs whose pull request was merged.
A figure with nothing to divide by is None.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from bot.store.models import (
    AttemptStatus,
    ModelCall,
    PlanRevision,
    Run,
    RunMode,
    RunState,
    TaskAttempt,
    TimelineEvent,
)

# Timeline events a person's command records, with its delivery, when it takes effect.
STEERING_KINDS = (
    "plan.approved",
    "plan.revision_requested",
    "plan.revised",
    "task.approve-task",
    "task.retry",
    "task.skip",
    f"run.{RunState.cancelled}",
)
FROM_REVIEW = "plan.from_review"  # a person's review became new tasks
PR_OPENED = f"run.{RunState.pr_open}"
UNFINISHED = (AttemptStatus.running, AttemptStatus.cancelled)


@dataclass(frozen=True)
class Scope:
    """Runs started in [since, until), of one repository or all, and only of `visible`
    repositories (full names) unless it is None (the operator sees every one)."""

    since: datetime
    until: datetime
    repository: str | None = None
    visible: frozenset[str] | None = None


DEFAULT_PERIOD = timedelta(days=7)
_RELATIVE = re.compile(r"(?P<amount>\d{1,4})(?P<unit>[hdw])")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


class PeriodError(ValueError):
    """A period that cannot be read; the message says what is expected."""


def period_scope(
    since: str | None,
    until: str | None,
    now: datetime,
    repository: str | None = None,
    visible: frozenset[str] | None = None,
) -> Scope:
    """The scope `--since`/`?since=` and `--until`/`?until=` name: each an ISO date or time (UTC
    unless it says otherwise) or an age like `7d`, `24h`, `2w`; by default the last 7 days."""
    end = _moment(until, now, "until") if until else now
    start = _moment(since, now, "since") if since else end - DEFAULT_PERIOD
    if start >= end:
        raise PeriodError(
            f"since ({start:%Y-%m-%d %H:%M}) must come before until ({end:%Y-%m-%d %H:%M})"
        )
    return Scope(start, end, repository or None, visible)


def _moment(text: str, now: datetime, name: str) -> datetime:
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        return now - int(relative["amount"]) * _UNITS[relative["unit"]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PeriodError(
            f"{name} takes an ISO date or time (2026-11-30, 2026-11-30T09:00Z) or an age "
            f"(7d, 24h, 2w), got {text[:40]!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class RoleModelFigures:
    role: str
    model: str
    attempts: int
    accepted: int
    retried: int
    escalated: int
    failed: int
    acceptance_rate: float | None
    retry_rate: float | None
    escalation_rate: float | None
    failure_rate: float | None
    cost_usd: float
    cost_per_accepted_task: float | None

    def cells(self) -> list[str]:
        """The row under `ROLE_COLUMNS`, as text."""
        return [
            self.role,
            self.model,
            str(self.attempts),
            share_text(self.acceptance_rate),
            share_text(self.retry_rate),
            share_text(self.escalation_rate),
            share_text(self.failure_rate),
            dollars_text(self.cost_per_accepted_task),
        ]


@dataclass(frozen=True)
class ModeFigures:
    mode: str
    runs: int
    runs_with_pull_request: int
    median_seconds_to_pull_request: float | None
    interventions: int
    interventions_per_run: float | None
    attempts_with_tests: int
    attempts_tests_failed: int
    tests_failed_share: float | None
    cost_usd: float
    cost_per_run: float | None
    merged: int
    cost_per_merged_change: float | None

    def cells(self) -> list[str]:
        """The row under `MODE_COLUMNS`, as text."""
        return [
            self.mode,
            str(self.runs),
            duration_text(self.median_seconds_to_pull_request),
            number_text(self.interventions_per_run),
            share_text(self.tests_failed_share),
            dollars_text(self.cost_per_run),
            dollars_text(self.cost_per_merged_change),
        ]


@dataclass(frozen=True)
class Insights:
    scope: Scope
    by_role_and_model: list[RoleModelFigures] = field(default_factory=list)
    by_mode: list[ModeFigures] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.scope.since.isoformat(),
            "until": self.scope.until.isoformat(),
            "repository": self.scope.repository,
            "by_role_and_model": [asdict(row) for row in self.by_role_and_model],
            "by_mode": [asdict(row) for row in self.by_mode],
        }

    def markdown(self) -> str:
        return "\n".join(_markdown_lines(self)) + "\n"


@dataclass(frozen=True)
class _RunRow:
    id: str
    mode: str
    state: str


@dataclass(frozen=True)
class _AttemptRow:
    id: int
    run_id: str
    role: str
    model: str
    status: str
    verdict: str | None
    tests: dict[str, Any]


def read_insights(session: Session, scope: Scope) -> Insights:
    """The figures of the runs in `scope` (see the module's definitions)."""
    in_scope = _runs_in_scope(scope)
    query = sa.select(col(Run.id), col(Run.mode), col(Run.state)).where(in_scope)
    runs = [_RunRow(*row) for row in session.execute(query)]
    attempts = _attempts(session, in_scope)
    attempt_costs, run_costs = _costs(session, in_scope)
    return Insights(
        scope=scope,
        by_role_and_model=_by_role_and_model(attempts, attempt_costs),
        by_mode=_by_mode(
            runs,
            attempts,
            run_costs,
            _seconds_to_pull_request(session, in_scope),
            _interventions(session, in_scope),
        ),
    )


def _runs_in_scope(scope: Scope) -> sa.ColumnElement[bool]:
    conditions = [col(Run.created_at) >= scope.since, col(Run.created_at) < scope.until]
    # GitHub's repository names ignore case.
    name = sa.func.lower(col(Run.repository))
    if scope.repository is not None:
        conditions.append(name == scope.repository.lower())
    if scope.visible is not None:
        conditions.append(name.in_(sorted(full.lower() for full in scope.visible)))
    return sa.and_(*conditions)


def _scoped_ids(in_scope: sa.ColumnElement[bool]) -> sa.Select[Any]:
    return sa.select(col(Run.id)).where(in_scope)


def _attempts(session: Session, in_scope: sa.ColumnElement[bool]) -> list[_AttemptRow]:
    query = sa.select(
        col(TaskAttempt.id),
        col(TaskAttempt.run_id),
        col(TaskAttempt.role),
        col(TaskAttempt.model),
        col(TaskAttempt.status),
        col(TaskAttempt.review_verdict),
        col(TaskAttempt.tests),
    ).where(
        col(TaskAttempt.run_id).in_(_scoped_ids(in_scope)),
        col(TaskAttempt.status).not_in(UNFINISHED),
    )
    return [
        _AttemptRow(id or 0, run_id, role, model or "unknown", status, verdict, tests or {})
        for id, run_id, role, model, status, verdict, tests in session.execute(query)
    ]


def _costs(
    session: Session, in_scope: sa.ColumnElement[bool]
) -> tuple[dict[int, float], dict[str, float]]:
    """Dollars of the priced model calls, by attempt and by run."""
    query = (
        sa.select(
            col(ModelCall.run_id),
            col(ModelCall.attempt_id),
            sa.func.coalesce(sa.func.sum(col(ModelCall.cost_usd)), 0.0),
        )
        .where(col(ModelCall.run_id).in_(_scoped_ids(in_scope)))
        .group_by(col(ModelCall.run_id), col(ModelCall.attempt_id))
    )
    by_attempt: dict[int, float] = defaultdict(float)
    by_run: dict[str, float] = defaultdict(float)
    for run_id, attempt_id, usd in session.execute(query):
        by_run[run_id] += float(usd)
        if attempt_id is not None:
            by_attempt[attempt_id] += float(usd)
    return by_attempt, by_run


def _seconds_to_pull_request(
    session: Session, in_scope: sa.ColumnElement[bool]
) -> dict[str, float]:
    """For each run that reached a draft pull request, seconds from its first approval."""
    ids = _scoped_ids(in_scope)
    first_approvals = session.execute(
        sa.select(col(PlanRevision.run_id), sa.func.min(col(PlanRevision.approved_at)))
        .where(col(PlanRevision.run_id).in_(ids), col(PlanRevision.approved_at).is_not(None))
        .group_by(col(PlanRevision.run_id))
    ).all()
    approvals: dict[str, datetime] = dict(first_approvals)  # a list of rows, not a Result
    opened = session.execute(
        sa.select(col(TimelineEvent.run_id), sa.func.min(col(TimelineEvent.created_at)))
        .where(col(TimelineEvent.run_id).in_(ids), col(TimelineEvent.kind) == PR_OPENED)
        .group_by(col(TimelineEvent.run_id))
    )
    return {
        run_id: (at - approvals[run_id]).total_seconds()
        for run_id, at in opened
        if run_id in approvals and at is not None and approvals[run_id] is not None
    }


def _interventions(session: Session, in_scope: sa.ColumnElement[bool]) -> Counter[str]:
    query = sa.select(col(TimelineEvent.run_id), col(TimelineEvent.kind)).where(
        col(TimelineEvent.run_id).in_(_scoped_ids(in_scope)),
        sa.or_(
            sa.and_(
                col(TimelineEvent.kind).in_(STEERING_KINDS),
                col(TimelineEvent.delivery_id).is_not(None),
            ),
            col(TimelineEvent.kind) == FROM_REVIEW,
        ),
    )
    counts: Counter[str] = Counter()
    first_approval_seen: set[str] = set()
    for run_id, kind in session.execute(query):
        if kind == "plan.approved" and run_id not in first_approval_seen:
            first_approval_seen.add(run_id)  # every run needs one: it is not an intervention
            continue
        counts[run_id] += 1
    return counts


def _by_role_and_model(
    attempts: Iterable[_AttemptRow], costs: Mapping[int, float]
) -> list[RoleModelFigures]:
    groups: dict[tuple[str, str], list[_AttemptRow]] = defaultdict(list)
    for attempt in attempts:
        groups[(attempt.role, attempt.model)].append(attempt)
    return [
        _role_model_figures(role, model, rows, costs)
        for (role, model), rows in sorted(groups.items())
    ]


def _role_model_figures(
    role: str, model: str, rows: list[_AttemptRow], costs: Mapping[int, float]
) -> RoleModelFigures:
    accepted = sum(row.verdict == "accept" for row in rows)
    retried = sum(row.status == AttemptStatus.retried for row in rows)
    escalated = sum(
        row.status == AttemptStatus.escalated or row.verdict == "escalate" for row in rows
    )
    failed = sum(row.status == AttemptStatus.failed for row in rows)
    usd = sum(costs.get(row.id, 0.0) for row in rows)
    n = len(rows)
    return RoleModelFigures(
        role=role,
        model=model,
        attempts=n,
        accepted=accepted,
        retried=retried,
        escalated=escalated,
        failed=failed,
        acceptance_rate=_ratio(accepted, n),
        retry_rate=_ratio(retried, n),
        escalation_rate=_ratio(escalated, n),
        failure_rate=_ratio(failed, n),
        cost_usd=usd,
        cost_per_accepted_task=_ratio(usd, accepted),
    )


def _by_mode(
    runs: list[_RunRow],
    attempts: list[_AttemptRow],
    run_costs: Mapping[str, float],
    to_pull_request: Mapping[str, float],
    interventions: Counter[str],
) -> list[ModeFigures]:
    figures = []
    for mode in RunMode:
        ids = {run.id for run in runs if run.mode == mode}
        if not ids:
            continue
        tested = [row for row in attempts if row.run_id in ids and "passed" in row.tests]
        failing = sum(row.tests.get("passed") is False for row in tested)
        seconds = [to_pull_request[run_id] for run_id in ids if run_id in to_pull_request]
        merged = sum(run.id in ids and run.state == RunState.done for run in runs)
        usd = sum(run_costs.get(run_id, 0.0) for run_id in ids)
        steered = sum(interventions[run_id] for run_id in ids)
        figures.append(
            ModeFigures(
                mode=str(mode),
                runs=len(ids),
                runs_with_pull_request=len(seconds),
                median_seconds_to_pull_request=statistics.median(seconds) if seconds else None,
                interventions=steered,
                interventions_per_run=_ratio(steered, len(ids)),
                attempts_with_tests=len(tested),
                attempts_tests_failed=failing,
                tests_failed_share=_ratio(failing, len(tested)),
                cost_usd=usd,
                cost_per_run=_ratio(usd, len(ids)),
                merged=merged,
                cost_per_merged_change=_ratio(usd, merged),
            )
        )
    return figures


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _markdown_lines(insights: Insights) -> Iterable[str]:
    scope = insights.scope
    where = f" in {_cell(scope.repository)}" if scope.repository else ""
    yield f"# Baton report{where}"
    yield ""
    yield f"Runs started from {scope.since:%Y-%m-%d %H:%M} to {scope.until:%Y-%m-%d %H:%M} UTC."
    yield ""
    yield "## Orchestrated or one agent"
    yield ""
    if not insights.by_mode:
        yield "No runs in this period."
    else:
        yield from _header(MODE_COLUMNS)
        for row in insights.by_mode:
            yield _markdown_row(row.cells())
    yield ""
    yield "## Roles and models"
    yield ""
    if not insights.by_role_and_model:
        yield "No finished attempts in this period."
    else:
        yield from _header(ROLE_COLUMNS)
        for item in insights.by_role_and_model:
            yield _markdown_row(item.cells())


MODE_COLUMNS = (
    "Mode",
    "Runs",
    "Median approval to draft PR",
    "Interventions per run",
    "Tests failed",
    "Cost per run",
    "Cost per merged change",
)
ROLE_COLUMNS = (
    "Role",
    "Model",
    "Attempts",
    "Accepted",
    "Sent back",
    "Escalated",
    "Failed",
    "Cost per accepted task",
)


def _header(columns: tuple[str, ...]) -> Iterable[str]:
    yield "| " + " | ".join(columns) + " |"
    yield "|" + "---|" * len(columns)


def _markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(_cell(cell) for cell in cells) + " |"


def _cell(text: str) -> str:
    """Text from a repository's config, inert in a Markdown table."""
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")


def share_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def number_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def dollars_text(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
