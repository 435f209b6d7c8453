"""`GET /runs` and `GET /runs/{id}`: what each run planned, did, recorded and spent, as JSON.

Read-only. Every row kind is read with one query (the page of runs, their model-call totals; or
one run's revisions, tasks, attempts, tool calls, model-call totals and timeline), inside one
transaction on a database thread, so a large run costs no more round trips than a small one.

Money, tokens and wall times are `bot.report`'s figures, which say how they are summed:
`cost_usd` is null only when there were model calls and none had a known price, and a non-zero
`unpriced_calls` marks it as a lower bound.

Access: these routes show issue titles, plans and test output of private repositories, so every
request needs credentials: the operator's session (from the sign-in link Baton prints at start)
or `Authorization: Bearer <BATON_DASHBOARD_TOKEN>`. A request's address and headers are never
enough, since a reverse proxy on this machine makes a stranger's request look local
(`webhooks.access` says why); without credentials the answer is 401.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from bot.report import (
    NO_USAGE,
    CallKind,
    TokenCounts,
    Usage,
    attempt_model,
    attempt_usage,
    task_usage,
    total,
    usage_by_call_kind,
    usage_by_run,
    wall_seconds,
)
from bot.store.models import (
    PlanRevision,
    Run,
    RunMode,
    RunState,
    Task,
    TaskAttempt,
    TimelineEvent,
    ToolCall,
)
from webhooks import run_pages
from webhooks.deps import BatonDep, ViewerDep, require_viewer
from webhooks.pages import wants_html

router = APIRouter(dependencies=[Depends(require_viewer)])

DEFAULT_PAGE = 50
MAX_PAGE = 200
# Enough to tell what a tool call did; the stored outcome (up to 2,000 characters) stays in the
# database rather than multiplying a run's JSON.
OUTCOME_CHARS = 200


class Tokens(BaseModel):
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0


def _tokens(counts: TokenCounts) -> Tokens:
    return Tokens(
        input=counts.input,
        output=counts.output,
        cache_read=counts.cache_read,
        cache_write=counts.cache_write,
    )


class RunSummary(BaseModel):
    """One run in the list; `cost_usd`, `unpriced_calls` and `tokens` cover all its model calls."""

    id: str
    repository: str
    issue_number: int
    issue_title: str
    state: str
    active: bool
    branch: str | None
    pull_request_number: int | None
    created_at: datetime
    updated_at: datetime
    cost_usd: float | None
    unpriced_calls: int
    tokens: Tokens


class RevisionView(BaseModel):
    number: int
    source: str
    summary: str
    approved_by: str | None
    approved_at: datetime | None
    created_at: datetime
    plan: dict[str, Any]


class ToolCallView(BaseModel):
    """A tool call; `outcome` is the first `OUTCOME_CHARS` characters of what the tool said."""

    sequence: int
    tool: str
    ok: bool
    outcome: str
    duration_ms: float


class AttemptView(BaseModel):
    """One attempt (CONTRACT §7); usage includes its reviewer's calls, `wall_seconds` is null
    while it runs."""

    number: int
    role: str
    model: str
    status: str
    input_summary: str
    cost_usd: float | None
    unpriced_calls: int
    tokens: Tokens
    started_at: datetime
    ended_at: datetime | None
    wall_seconds: float | None
    host: str | None  # where it ran: the machine and the process id
    process: int | None
    confidence: float | None
    summary: str | None
    commit_sha: str | None
    diff_stat: dict[str, Any]
    tests: dict[str, Any]
    review_verdict: str | None
    review_feedback: str | None
    error: str | None
    tool_calls: list[ToolCallView]


class TaskView(BaseModel):
    """A task of the plan; `revision` is the number of the plan revision that added it."""

    key: str
    title: str
    role: str
    state: str
    revision: int
    depends_on: list[str]
    files: list[str]
    effort: int | None  # the planner's 1..5 size, which orders the critical path
    commit_sha: str | None
    cost_usd: float | None
    unpriced_calls: int
    tokens: Tokens
    attempts: list[AttemptView]


class TimelineEntry(BaseModel):
    kind: str
    message: str
    task_key: str | None
    created_at: datetime


class RunDetail(RunSummary):
    """One run whole: revisions by number, tasks and attempts in the order they were made, and
    the timeline oldest first."""

    triggered_by: str | None
    error: str | None
    ended_at: datetime | None
    revisions: list[RevisionView]
    tasks: list[TaskView]
    timeline: list[TimelineEntry]


@router.get("/runs", response_model=list[RunSummary])
async def list_runs(
    baton: BatonDep,
    request: Request,
    viewer: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    before: Annotated[str | None, Query(description="a run id: runs older than it")] = None,
    offset: Annotated[int | None, Query(ge=0)] = None,
    state: RunState | None = None,
    repository: Annotated[str | None, Query(description="owner/name, any case")] = None,
    mode: RunMode | None = None,
) -> list[RunSummary] | HTMLResponse:
    """Runs newest first. The next page is `?before=` the last id of this one (stable while runs
    are added), or `?offset=`; 400 when both are given or `before` names no run."""
    if before is not None and offset is not None:
        raise HTTPException(400, "page with ?before= or with ?offset=, not both")
    page = RunPage(limit, before, offset or 0, state, repository, mode, viewer.repositories)
    if wants_html(request):
        return await baton.store.run(lambda session: run_pages.runs_page(session, page))
    runs = await baton.store.run(page.read)
    if runs is None:
        raise HTTPException(400, f"no run {before} to page before")
    return runs


@router.get("/runs/{run_id}", response_model=RunDetail)
async def show_run(
    baton: BatonDep, request: Request, viewer: ViewerDep, run_id: str
) -> RunDetail | HTMLResponse:
    """The run with its plan revisions, tasks, attempts, tool calls and timeline; 404 if none,
    and the same 404 for a run the viewer may not see."""
    visible = viewer.repositories
    detail = await baton.store.run(lambda session: read_run(session, run_id, visible))
    if detail is None:
        raise HTTPException(404, f"no run {run_id}")
    if wants_html(request):
        return await baton.store.run(lambda session: run_pages.run_page(session, detail))
    return detail


@dataclass(frozen=True)
class RunPage:
    """Which runs `GET /runs` asked for."""

    limit: int
    before: str | None
    offset: int
    state: RunState | None
    repository: str | None
    mode: RunMode | None = None
    # Repositories (`owner/name`, lowercase) whose runs may be listed; None: all.
    visible: frozenset[str] | None = None

    def read(self, session: Session) -> list[RunSummary] | None:
        """The page, or None when the `before` cursor names no run."""
        runs = self.runs(session)
        if runs is None:
            return None
        usage = usage_by_run(session, [run.id for run in runs])
        return [_summary(run, usage.get(run.id, NO_USAGE)) for run in runs]

    def runs(self, session: Session) -> Sequence[Run] | None:
        """The page's rows, or None when the `before` cursor names no run."""
        query = self._filtered(select(Run))
        if self.before is not None:
            cursor = session.get(Run, self.before)
            if cursor is None or not is_visible(cursor, self.visible):
                return None
            query = query.where(_older_than(cursor))
        newest_first = (col(Run.created_at).desc(), col(Run.id).desc())
        query = query.order_by(*newest_first).offset(self.offset).limit(self.limit)
        return session.exec(query).all()

    def _filtered(self, query: SelectOfScalar[Run]) -> SelectOfScalar[Run]:
        if self.state is not None:
            query = query.where(col(Run.state) == self.state.value)
        if self.repository is not None:
            # GitHub treats owner and repository names case-insensitively.
            query = query.where(sa.func.lower(Run.repository) == self.repository.lower())
        if self.mode is not None:
            query = query.where(col(Run.mode) == self.mode.value)
        if self.visible is not None:
            query = query.where(sa.func.lower(Run.repository).in_(sorted(self.visible)))
        return query


def is_visible(run: Run, visible: frozenset[str] | None) -> bool:
    """Whether a viewer limited to `visible` repositories (None: all) may see `run`."""
    return visible is None or run.repository.lower() in visible


def _older_than(cursor: Run) -> sa.ColumnElement[bool]:
    # Runs created in the same instant are told apart by id, the second sort key.
    same_instant = sa.and_(col(Run.created_at) == cursor.created_at, col(Run.id) < cursor.id)
    return sa.or_(col(Run.created_at) < cursor.created_at, same_instant)


def read_run(
    session: Session, run_id: str, visible: frozenset[str] | None = None
) -> RunDetail | None:
    """Everything `GET /runs/{id}` shows, one query per kind of row; None if there is no run,
    or if its repository is not among `visible` (None: all)."""
    run = session.get(Run, run_id)
    if run is None or not is_visible(run, visible):
        return None
    revisions = _rows(session, PlanRevision, run_id, col(PlanRevision.number))
    tasks = _rows(session, Task, run_id, col(Task.id))
    attempts = _rows(session, TaskAttempt, run_id, col(TaskAttempt.task_id), TaskAttempt.number)
    calls = _tool_calls(session, run_id)
    usage = usage_by_call_kind(session, run_id)
    numbers = {revision.id: revision.number for revision in revisions}
    views = _task_views(tasks, numbers, attempts, calls, usage)
    return RunDetail(
        **dict(_summary(run, total(usage.values()))),
        triggered_by=run.triggered_by,
        error=run.error,
        ended_at=run.ended_at,
        revisions=[_revision_view(revision) for revision in revisions],
        tasks=views,
        timeline=_timeline(session, run_id),
    )


def _rows(session: Session, table: Any, run_id: str, *order: Any) -> Sequence[Any]:
    return session.exec(select(table).where(table.run_id == run_id).order_by(*order)).all()


def _tool_calls(session: Session, run_id: str) -> dict[int, list[ToolCallView]]:
    """The run's attempts' tool calls by attempt id, in the order they were made."""
    query = (
        select(ToolCall)
        .where(ToolCall.run_id == run_id, col(ToolCall.attempt_id).is_not(None))
        .order_by(col(ToolCall.attempt_id), col(ToolCall.sequence))
    )
    calls: dict[int, list[ToolCallView]] = defaultdict(list)
    for call in session.exec(query):
        assert call.attempt_id is not None
        calls[call.attempt_id].append(_tool_call_view(call))
    return calls


def _timeline(session: Session, run_id: str) -> list[TimelineEntry]:
    events = _rows(session, TimelineEvent, run_id, col(TimelineEvent.created_at), TimelineEvent.id)
    return [
        TimelineEntry(
            kind=event.kind,
            message=event.message,
            task_key=event.task_key,
            created_at=event.created_at,
        )
        for event in events
    ]


def _task_views(
    tasks: Sequence[Task],
    revision_numbers: dict[int | None, int],
    attempts: Sequence[TaskAttempt],
    calls: dict[int, list[ToolCallView]],
    usage: dict[CallKind, Usage],
) -> list[TaskView]:
    attempts_by_task: dict[int | None, list[AttemptView]] = defaultdict(list)
    for attempt in attempts:
        tool_calls = calls.get(attempt.id or 0, [])
        attempts_by_task[attempt.task_id].append(_attempt_view(attempt, tool_calls, usage))
    return [
        _task_view(task, revision_numbers[task.revision_id], attempts_by_task[task.id], usage)
        for task in tasks
    ]


def _task_view(
    task: Task, revision: int, attempts: list[AttemptView], usage: dict[CallKind, Usage]
) -> TaskView:
    spent = task_usage(usage, task.id)
    return TaskView(
        key=task.key,
        title=task.title,
        role=task.role,
        state=task.state,
        revision=revision,
        depends_on=task.depends_on,
        files=task.files,
        effort=task.effort,
        commit_sha=task.commit_sha,
        cost_usd=spent.cost_usd,
        unpriced_calls=spent.unpriced_calls,
        tokens=_tokens(spent.tokens),
        attempts=attempts,
    )


def _attempt_view(
    attempt: TaskAttempt, calls: list[ToolCallView], usage: dict[CallKind, Usage]
) -> AttemptView:
    spent = attempt_usage(usage, attempt.id)
    return AttemptView(
        number=attempt.number,
        role=attempt.role,
        model=attempt_model(attempt, usage),
        status=attempt.status,
        input_summary=attempt.input_summary,
        cost_usd=spent.cost_usd,
        unpriced_calls=spent.unpriced_calls,
        tokens=_tokens(spent.tokens),
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        wall_seconds=wall_seconds(attempt),
        host=attempt.host,
        process=attempt.process,
        confidence=attempt.confidence,
        summary=attempt.summary,
        commit_sha=attempt.commit_sha,
        diff_stat=attempt.diff_stat,
        tests=attempt.tests,
        review_verdict=attempt.review_verdict,
        review_feedback=attempt.review_feedback,
        error=attempt.error,
        tool_calls=calls,
    )


def _summary(run: Run, usage: Usage) -> RunSummary:
    return RunSummary(
        id=run.id,
        repository=run.repository,
        issue_number=run.issue_number,
        issue_title=run.issue_title,
        state=run.state,
        active=run.active,
        branch=run.branch,
        pull_request_number=run.pull_request_number,
        created_at=run.created_at,
        updated_at=run.updated_at,
        cost_usd=usage.cost_usd,
        unpriced_calls=usage.unpriced_calls,
        tokens=_tokens(usage.tokens),
    )


def _revision_view(revision: PlanRevision) -> RevisionView:
    return RevisionView(
        number=revision.number,
        source=revision.source,
        summary=revision.summary,
        approved_by=revision.approved_by,
        approved_at=revision.approved_at,
        created_at=revision.created_at,
        plan=revision.plan,
    )


def _tool_call_view(call: ToolCall) -> ToolCallView:
    cut = len(call.outcome) > OUTCOME_CHARS
    return ToolCallView(
        sequence=call.sequence,
        tool=call.tool,
        ok=call.ok,
        outcome=call.outcome[:OUTCOME_CHARS] + ("…" if cut else ""),
        duration_ms=call.duration_ms,
    )
