"""Server-drawn SVG for a run's page: the plan graph coloured by state, and a timeline of what
each task was doing when (running side by side, or waiting for its dependencies, a slot or a
person). Drawn here rather than by a script so the page needs no JavaScript to be read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Protocol

# One colour per state, the same family as the stylesheet's badges.
FILL = {
    "accepted": "#1a7f37",
    "integrated": "#1a7f37",
    "escalated": "#cf222e",
    "failed": "#cf222e",
    "cancelled": "#cf222e",
    "skipped": "#8c959f",
    "awaiting_approval": "#9a6700",
    "running": "#0969da",
    "reviewing": "#8250df",
    "pending": "#d1d9e0",
}
OTHER_FILL = "#8c959f"
NODE_W, NODE_H, GAP_X, GAP_Y = 150, 44, 40, 14
CHART_W, LABEL_W, ROW_H = 760, 56, 22


class PlannedTask(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def depends_on(self) -> list[str]: ...


class StateChange(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def task_key(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...


def fill(state: str) -> str:
    return FILL.get(state, OTHER_FILL)


def plan_graph(tasks: Sequence[PlannedTask]) -> str:
    """Tasks as boxes in columns by depth, an arrow from each dependency to its dependant."""
    if not tasks:
        return '<p class="muted">No plan yet.</p>'
    places = _places(tasks)
    columns = max(column for column, _ in places.values()) + 1
    rows = max(row for _, row in places.values()) + 1
    width, height = columns * (NODE_W + GAP_X), rows * (NODE_H + GAP_Y)
    edges = "".join(
        _edge(places[dep], places[t.key]) for t in tasks for dep in t.depends_on if dep in places
    )
    nodes = "".join(_node(task, places[task.key]) for task in tasks)
    return (
        f'<svg class="plan" role="img" aria-label="plan graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{edges}{nodes}</svg>'
    )


def _places(tasks: Sequence[PlannedTask]) -> dict[str, tuple[int, int]]:
    """Column = longest chain of dependencies before the task; row = order within the column."""
    by_key = {task.key: task for task in tasks}
    depth: dict[str, int] = {}

    def depth_of(key: str, seen: frozenset[str]) -> int:
        if key not in depth:
            deps = [d for d in by_key[key].depends_on if d in by_key and d not in seen]
            depth[key] = 1 + max((depth_of(d, seen | {key}) for d in deps), default=-1)
        return depth[key]

    used: dict[int, int] = {}
    places = {}
    for task in tasks:
        column = depth_of(task.key, frozenset())
        places[task.key] = (column, used.get(column, 0))
        used[column] = used.get(column, 0) + 1
    return places


def _corner(place: tuple[int, int]) -> tuple[int, int]:
    return place[0] * (NODE_W + GAP_X), place[1] * (NODE_H + GAP_Y)


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    (x1, y1), (x2, y2) = _corner(start), _corner(end)
    return (
        f'<line x1="{x1 + NODE_W}" y1="{y1 + NODE_H // 2}" x2="{x2}" y2="{y2 + NODE_H // 2}" '
        'stroke="#59636e" stroke-width="1.5"/>'
    )


def _node(task: PlannedTask, place: tuple[int, int]) -> str:
    x, y = _corner(place)
    text_fill = "#1f2328" if task.state == "pending" else "#ffffff"
    title = escape(f"{task.key} {task.title}: {task.state}")
    return (
        f'<g class="node" data-task="{escape(task.key)}" data-state="{escape(task.state)}">'
        f"<title>{title}</title>"
        f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" '
        f'fill="{fill(task.state)}"/>'
        f'<text x="{x + 8}" y="{y + 18}" fill="{text_fill}">{escape(task.key)} · '
        f"{escape(task.state.replace('_', ' '))}</text>"
        f'<text x="{x + 8}" y="{y + 35}" fill="{text_fill}">{escape(_short(task.title))}</text></g>'
    )


def _short(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Span:
    """A stretch of time one task spent in one state."""

    task_key: str
    state: str
    start: datetime
    end: datetime


def spans(changes: Sequence[StateChange], until: datetime) -> list[Span]:
    """From the recorded `task.<state>` events: each state lasts until the task's next change;
    the last lasts until `until` unless it is an end state."""
    last: dict[str, tuple[str, datetime]] = {}
    found: list[Span] = []
    for change in changes:
        if change.task_key is None or not change.kind.startswith("task."):
            continue
        state = change.kind.removeprefix("task.")
        if state == "pushed":
            continue
        if change.task_key in last:
            previous, since = last[change.task_key]
            found.append(Span(change.task_key, previous, since, change.created_at))
        last[change.task_key] = (state, change.created_at)
    for key, (state, since) in last.items():
        if state in {"pending", "running", "reviewing", "awaiting_approval"}:
            found.append(Span(key, state, since, max(until, since)))
    return found


def timeline(
    task_keys: Sequence[str], found: Sequence[Span], start: datetime, end: datetime
) -> str:
    """A row per task, a bar per span on one time axis (seconds since `start`)."""
    if not found:
        return '<p class="muted">No task has started yet.</p>'
    total = max((end - start).total_seconds(), 1.0)
    rows = {key: index for index, key in enumerate(task_keys)}
    height = (len(rows) + 1) * ROW_H
    scale = (CHART_W - LABEL_W) / total
    labels = "".join(
        f'<text x="0" y="{index * ROW_H + 15}">{escape(key)}</text>' for key, index in rows.items()
    )
    bars = "".join(_bar(span, rows, start, scale) for span in found if span.task_key in rows)
    axis = _axis(total, scale, len(rows) * ROW_H)
    return (
        f'<svg class="timeline" role="img" aria-label="task timeline" width="{CHART_W}" '
        f'height="{height}" viewBox="0 0 {CHART_W} {height}">{labels}{bars}{axis}</svg>'
    )


def _bar(span: Span, rows: dict[str, int], start: datetime, scale: float) -> str:
    x = LABEL_W + (span.start - start).total_seconds() * scale
    width = max((span.end - span.start).total_seconds() * scale, 1.0)
    seconds = (span.end - span.start).total_seconds()
    title = escape(f"{span.task_key} {span.state.replace('_', ' ')} for {seconds:.1f} s")
    return (
        f'<rect x="{x:.1f}" y="{rows[span.task_key] * ROW_H + 3}" width="{width:.1f}" '
        f'height="{ROW_H - 6}" fill="{fill(span.state)}"><title>{title}</title></rect>'
    )


def _axis(total: float, scale: float, y: int) -> str:
    ticks = []
    for step in range(5):
        seconds = total * step / 4
        x = LABEL_W + seconds * scale
        anchor = "end" if step == 4 else "start"
        label = f"{seconds:.1f}" if total < 10 else f"{seconds:.0f}"
        ticks.append(f'<text x="{x:.1f}" y="{y + 15}" text-anchor="{anchor}">{label} s</text>')
    return f'<line x1="{LABEL_W}" y1="{y}" x2="{CHART_W}" y2="{y}" stroke="#59636e"/>' + "".join(
        ticks
    )
