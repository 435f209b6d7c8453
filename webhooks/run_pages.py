"""The HTML of `GET /runs` and `GET /runs/{id}` for a browser: the same queries as the JSON
(`webhooks.runs`), laid out in the shared page. Every value from the database is escaped here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import HTTPException
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, select

from bot.report import NO_USAGE, usage_by_run
from bot.store.models import TERMINAL_RUN_STATES, Run, RunMode, RunState, Task
from webhooks import run_charts
from webhooks.pages import page, state_badge

if TYPE_CHECKING:
    from webhooks.runs import AttemptView, RunDetail, RunPage, TaskView, TimelineEntry

RUN_COLUMNS = ("Repository", "Issue", "State", "Mode", "Started", "Duration", "Tasks", "Cost")


def runs_page(session: Session, wanted: RunPage) -> HTMLResponse:
    """The list of runs `wanted` names, with its filters and a link to the next page."""
    runs = wanted.runs(session)
    if runs is None:
        raise HTTPException(400, f"no run {wanted.before} to page before")
    ids = [run.id for run in runs]
    usage = usage_by_run(session, ids)
    tasks = _task_counts(session, ids)
    rows = "".join(
        _run_row(run, usage.get(run.id, NO_USAGE).cost_usd, tasks.get(run.id, 0)) for run in runs
    )
    header = "".join(f"<th>{name}</th>" for name in RUN_COLUMNS)
    table = f'<div class="scroll"><table class="runs"><tr>{header}</tr>{rows}</table></div>'
    empty = "" if runs else '<p class="muted">No runs match.</p>'
    return page("Runs", _filters(wanted) + table + empty + _next_link(wanted, runs))


def _task_counts(session: Session, run_ids: list[str]) -> dict[str, int]:
    query = (
        select(Task.run_id, sa.func.count())
        .where(col(Task.run_id).in_(run_ids))
        .group_by(col(Task.run_id))
    )
    return {run_id: int(count) for run_id, count in session.exec(query)}


def _run_row(run: Run, cost: float | None, tasks: int) -> str:
    link = f'<a href="/runs/{escape(run.id)}">#{run.issue_number} {escape(run.issue_title)}</a>'
    cells = (
        escape(run.repository),
        link,
        state_badge(run.state),
        escape(run.mode),
        _when(run.created_at),
        _duration(run.created_at, run.ended_at),
        str(tasks),
        _money(cost),
    )
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _filters(wanted: RunPage) -> str:
    states = _options("state", [state.value for state in RunState], wanted.state)
    modes = _options("mode", [mode.value for mode in RunMode], wanted.mode)
    repository = escape(wanted.repository or "")
    return (
        '<form class="filters" method="get" action="/runs">'
        f'<div><label for="repository">Repository</label><input id="repository" name="repository" '
        f'placeholder="owner/name" value="{repository}"></div>'
        f"<div>{states}</div><div>{modes}</div>"
        f'<input type="hidden" name="limit" value="{wanted.limit}">'
        "<button>Show</button></form>"
    )


def _options(name: str, values: list[str], chosen: str | None) -> str:
    options = [f'<option value="">any {name}</option>']
    for value in values:
        selected = " selected" if value == chosen else ""
        options.append(f'<option value="{escape(value)}"{selected}>{escape(value)}</option>')
    label = f'<label for="{name}">{name.capitalize()}</label>'
    return f'{label}<select id="{name}" name="{name}">{"".join(options)}</select>'


def _next_link(wanted: RunPage, runs: Sequence[Run]) -> str:
    if len(runs) < wanted.limit:
        return ""
    query: dict[str, Any] = {"before": runs[-1].id, "limit": wanted.limit}
    for name in ("state", "repository", "mode"):
        if (value := getattr(wanted, name)) is not None:
            query[name] = str(value)
    return f'<p><a rel="next" href="/runs?{escape(urlencode(query))}">Older runs</a></p>'


def run_page(session: Session, detail: RunDetail) -> HTMLResponse:
    """One run whole; while it is under way the page's script keeps it current."""
    run = session.get(Run, detail.id)
    mode = run.mode if run is not None else ""
    live = detail.state not in TERMINAL_RUN_STATES
    title = f"{detail.repository}#{detail.issue_number}: {detail.issue_title}"
    sections = (
        _run_facts(detail, mode),
        "<h2>Plan</h2>" + run_charts.plan_graph(detail.tasks),
        "<h2>Timeline</h2>" + _timeline(detail),
        "<h2>Human interventions</h2>" + _interventions(detail.timeline),
        "<h2>Tasks</h2>" + "".join(_task_section(task) for task in detail.tasks),
        "<h2>Events</h2>" + _events(detail.timeline),
    )
    return page(title, "\n".join(sections), script="run.js", live=live)


def _run_facts(detail: RunDetail, mode: str) -> str:
    facts = (
        ("State", state_badge(detail.state)),
        ("Mode", escape(mode)),
        ("Branch", escape(detail.branch or "—")),
        ("Pull request", f"#{detail.pull_request_number}" if detail.pull_request_number else "—"),
        ("Started", _when(detail.created_at)),
        ("Duration", _duration(detail.created_at, detail.ended_at)),
        ("Tokens", _tokens(detail.tokens)),
        ("Cost", _money(detail.cost_usd)),
        ("Error", escape(detail.error or "—")),
    )
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in facts)
    return f'<table class="facts" id="run-state" data-state="{escape(detail.state)}">{rows}</table>'


def _timeline(detail: RunDetail) -> str:
    end = _aware(detail.ended_at) if detail.ended_at else datetime.now(UTC)
    start = _aware(detail.created_at)
    changes = [_Change(e.kind, e.task_key, _aware(e.created_at)) for e in detail.timeline]
    found = run_charts.spans(changes, end)
    chart = run_charts.timeline([task.key for task in detail.tasks], found, start, end)
    legend = (
        '<p class="muted">Blue: running · purple: in review · grey: waiting for its dependencies '
        "or a free slot · amber: waiting for a person · green: accepted · red: failed.</p>"
    )
    return f'<div class="scroll">{chart}</div>{legend}'


class _Change:
    """A timeline event with an aware time, as the chart compares times."""

    def __init__(self, kind: str, task_key: str | None, created_at: datetime) -> None:
        self.kind, self.task_key, self.created_at = kind, task_key, created_at


def _interventions(timeline: Sequence[TimelineEntry]) -> str:
    # What a person did is recorded with their login first: labels, commands, reviews.
    acts = [entry for entry in timeline if entry.message.startswith("@")]
    if not acts:
        return '<p class="muted">None.</p>'
    items = "".join(f"<li>{_when(a.created_at)} {escape(a.message)}</li>" for a in acts)
    return f"<ul>{items}</ul>"


def _task_section(task: TaskView) -> str:
    attempts = "".join(_attempt(attempt) for attempt in task.attempts)
    depends = escape(", ".join(task.depends_on) or "nothing")
    return (
        f'<section class="task" id="task-{escape(task.key)}" data-state="{escape(task.state)}">'
        f"<h3>{escape(task.key)} {escape(task.title)} {state_badge(task.state)}</h3>"
        f'<p class="muted">{escape(task.role)} · depends on {depends}'
        f" · {_tokens(task.tokens)} · {_money(task.cost_usd)}</p>{attempts}</section>"
    )


def _attempt(attempt: AttemptView) -> str:
    facts = (
        f"{escape(attempt.model)} · {_tokens(attempt.tokens)} · {_money(attempt.cost_usd)}"
        f" · {_seconds(attempt.wall_seconds)}"
    )
    verdict = ""
    if attempt.review_verdict:
        feedback = escape(attempt.review_feedback or "")
        verdict = f"<p>Review: <strong>{escape(attempt.review_verdict)}</strong> {feedback}</p>"
    status = state_badge(attempt.status)
    return (
        f"<details><summary>Attempt {attempt.number} {status} {facts}</summary>"
        f"{verdict}{_diff_and_tests(attempt)}{_tool_calls(attempt)}</details>"
    )


def _diff_and_tests(attempt: AttemptView) -> str:
    parts = []
    if attempt.error:
        parts.append(f"<p>Error: {escape(attempt.error)}</p>")
    if attempt.diff_stat:
        parts.append(f"<p>Diff: <code>{escape(_compact(attempt.diff_stat))}</code></p>")
    if attempt.tests:
        parts.append(f"<p>Tests: <code>{escape(_compact(attempt.tests))}</code></p>")
    return "".join(parts)


def _tool_calls(attempt: AttemptView) -> str:
    if not attempt.tool_calls:
        return ""
    rows = "".join(
        f"<tr><td>{call.sequence}</td><td>{escape(call.tool)}</td>"
        f"<td>{'ok' if call.ok else 'failed'}</td><td>{call.duration_ms:.0f} ms</td>"
        f"<td><code>{escape(call.outcome)}</code></td></tr>"
        for call in attempt.tool_calls
    )
    header = "<tr><th>#</th><th>Tool</th><th>Outcome</th><th>Time</th><th>Said</th></tr>"
    return f'<div class="scroll"><table class="calls">{header}{rows}</table></div>'


def _events(timeline: Sequence[TimelineEntry]) -> str:
    rows = "".join(
        f"<tr><td>{_when(e.created_at)}</td><td>{escape(e.task_key or '')}</td>"
        f"<td>{escape(e.kind)}</td><td>{escape(e.message)}</td></tr>"
        for e in timeline
    )
    return f'<div class="scroll"><table class="events">{rows}</table></div>'


def _compact(value: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {item}" for key, item in value.items())


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive times; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(moment: datetime) -> str:
    return (
        f'<time datetime="{_aware(moment).isoformat()}">{_aware(moment):%Y-%m-%d %H:%M} UTC</time>'
    )


def _duration(start: datetime, end: datetime | None) -> str:
    seconds = ((_aware(end) if end else datetime.now(UTC)) - _aware(start)).total_seconds()
    return _seconds(seconds) + ("" if end else " so far")


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{seconds:.1f} s"


def _money(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def _tokens(tokens: Any) -> str:
    return f"{tokens.input:,} in / {tokens.output:,} out tokens"
