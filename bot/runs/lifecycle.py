"""The life of a run and of its tasks: the transition tables and the only code that changes a
state.

Every change is a compare-and-set (`UPDATE … WHERE state = <expected>`) in the caller's
transaction, together with its timeline event and the jobs it calls for: the step that follows
commits with the state that calls for it, or neither does. A job that lost its lease to another
process is refused here (its fence no longer matches), so a frozen process that wakes up cannot
write over the work of the one that took over.

    planning ─▶ awaiting_approval ─▶ executing ─▶ pr_open ─▶ done | closed
        ▲               │               │  ▲         │ ▲
        └─ /revise-plan ┘        needs_human  └──────┴─ revising (a review's tasks)
                                (failed, cancelled from any state that has not ended)
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.attempts import stamp_end
from bot.config import RepoConfig
from bot.events import IssueLabeled
from bot.executor import check_fence, enqueue, request_abort
from bot.runs import new_run_id, record_event, run_branch
from bot.runs.mode import ORCHESTRATED, ModeChoice
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import (
    TERMINAL_RUN_STATES,
    AttemptStatus,
    Run,
    RunState,
    Task,
    TaskAttempt,
    TaskState,
    TimelineEvent,
)
from bot.store.types import utcnow
from bot.tracing import RunSummary, emit_run_span_on_commit, tracing_on

log = logging.getLogger(__name__)

PLAN_JOB = "plan_run"
ADVANCE_JOB = "advance_run"
ATTEMPT_JOB = "attempt_task"
INTEGRATE_JOB = "integrate_task"
FINISH_JOB = "finish_run"
STATUS_JOB = "show_status"
# GitHub asks for a second between writes; the changes of that second are shown as one edit.
STATUS_PACING = 1.0
# Timeline data that holds the words a run's ending shows, where its state alone cannot say.
STATUS_TEXT = "status"
# Queued when a run ends; `bot.retention` removes the run's worktrees and pinned commits.
CLEAR_RUN_JOB = "clear_run_files"

R, T = RunState, TaskState
ENDED: frozenset[RunState] = TERMINAL_RUN_STATES
RUN_MOVES: Mapping[RunState, frozenset[RunState]] = {
    R.planning: frozenset({R.awaiting_approval, R.failed, R.cancelled}),
    R.awaiting_approval: frozenset({R.planning, R.executing, R.failed, R.cancelled}),
    R.executing: frozenset({R.pr_open, R.needs_human, R.done, R.failed, R.cancelled}),
    R.needs_human: frozenset({R.executing, R.revising, R.failed, R.cancelled, R.closed, R.done}),
    R.pr_open: frozenset({R.revising, R.done, R.closed, R.failed, R.cancelled}),
    R.revising: frozenset({R.pr_open, R.needs_human, R.done, R.closed, R.failed, R.cancelled}),
    R.done: frozenset(),
    R.closed: frozenset(),
    R.failed: frozenset(),
    R.cancelled: frozenset(),
}
TASK_MOVES: Mapping[TaskState, frozenset[TaskState]] = {
    T.pending: frozenset({T.running, T.skipped, T.cancelled}),
    # A worker attempt, then its review; a review that sends it back starts the next attempt.
    T.running: frozenset({T.reviewing, T.failed, T.escalated, T.cancelled}),
    T.reviewing: frozenset(
        {T.running, T.accepted, T.awaiting_approval, T.failed, T.escalated, T.cancelled}
    ),
    T.awaiting_approval: frozenset({T.accepted, T.pending, T.skipped, T.cancelled}),
    # Integration: onto the branch, or back to a worker when it no longer applies.
    T.accepted: frozenset({T.integrated, T.running, T.failed, T.cancelled}),
    T.failed: frozenset({T.pending, T.skipped, T.cancelled}),
    T.escalated: frozenset({T.pending, T.skipped, T.cancelled}),
    T.integrated: frozenset(),
    T.skipped: frozenset(),
    T.cancelled: frozenset(),
}
# What a task's new state calls for next; every change also refreshes the status comment.
# A task in these states holds one of the worker slots counted over all runs (`max_parallel`).
HOLDS_A_SLOT = frozenset({T.running, T.reviewing})
# Runs that start tasks when a slot is free.
SLOT_USERS = (RunState.executing, RunState.revising)

_TASK_NEXT: Mapping[TaskState, str] = {
    T.pending: ADVANCE_JOB,
    T.running: ATTEMPT_JOB,
    T.accepted: INTEGRATE_JOB,
    T.integrated: ADVANCE_JOB,
    T.skipped: ADVANCE_JOB,
    T.failed: ADVANCE_JOB,
    T.escalated: ADVANCE_JOB,
}
RUNS = Run.__table__  # type: ignore[attr-defined]
TASKS = Task.__table__  # type: ignore[attr-defined]


class IllegalMove(ValueError):
    """A state change the tables do not allow: a mistake in Baton, never a race."""


def run_may_move(old: RunState, new: RunState) -> bool:
    return new in RUN_MOVES[old]


def task_may_move(old: TaskState, new: TaskState) -> bool:
    return new in TASK_MOVES[old]


def move_run(
    session: Session,
    run_id: str,
    old: RunState | Collection[RunState],
    new: RunState,
    message: str = "",
    *,
    error: str | None = None,
    delivery_id: int | None = None,
    data: dict[str, object] | None = None,
) -> bool:
    """Move the run from `old` (one state or any of several) to `new`, with its timeline event
    and next jobs; False, with nothing written, when the run was not in `old`."""
    olds = _run_states(old)
    for state in olds:
        if not run_may_move(state, new):
            raise IllegalMove(f"a run may not go from {state} to {new}")
    check_fence(session)
    values: dict[str, Any] = {"state": new, "updated_at": utcnow()}
    if new in ENDED:
        values |= {"active": False, "ended_at": utcnow(), "error": error}
    elif error is not None:
        values["error"] = error
    changed = session.connection().execute(
        sa.update(RUNS).where(RUNS.c.id == run_id, RUNS.c.state.in_(olds)).values(**values)
    )
    if changed.rowcount != 1:
        return False
    session.expire_all()  # rows this session holds may show the old state
    record_event(session, run_id, f"run.{new}", message or new, delivery_id=delivery_id, data=data)
    _after_run_move(session, run_id, new)
    return True


def _after_run_move(session: Session, run_id: str, new: RunState) -> None:
    if new in ENDED:
        _close_unfinished(session, run_id, new)
        request_abort(session, run_id)  # attempts under way stop within seconds
        enqueue(session, CLEAR_RUN_JOB, run_id=run_id)  # its worktrees go at once
    elif new == R.planning:
        enqueue(session, PLAN_JOB, run_id=run_id, lock=f"run:{run_id}")
    elif new in (R.executing, R.revising):
        wake(session, run_id)
    # A run's own step is shown at once; an ended run's last word is tried for over an hour
    # (30 s doubling, 10 min cap).
    show(session, run_id, max_attempts=12 if new in ENDED else 5, delay_seconds=0.0)
    if tracing_on() and (new == R.pr_open or new in ENDED):
        _trace_run_once(session, run_id, new)


def _trace_run_once(session: Session, run_id: str, new: RunState) -> None:
    """The run's span, once its transaction commits: at its first draft pull request, or at its
    end when it never had one (a later end would write the same span again)."""
    reached = select(sa.func.count()).where(
        TimelineEvent.run_id == run_id, TimelineEvent.kind == f"run.{R.pr_open}"
    )
    if session.exec(reached).one() != (1 if new == R.pr_open else 0):
        return
    run = session.get(Run, run_id)
    assert run is not None
    summary = RunSummary(run.id, run.repository, run.issue_number, run.mode, new, run.created_at)
    emit_run_span_on_commit(session, summary)


def end_run(
    session: Session,
    run_id: str,
    new: RunState,
    reason: str,
    *,
    delivery_id: int | None = None,
    data: dict[str, object] | None = None,
) -> bool:
    """The run stops for good from whatever state it was in, and its issue may be labelled
    again; False when it had ended already."""
    run = session.get(Run, run_id)
    if run is None or not run.active:
        return False
    live = [state for state in RUN_MOVES if new in RUN_MOVES[state]]
    return move_run(
        session, run_id, live, new, reason, error=reason, delivery_id=delivery_id, data=data
    )


def _close_unfinished(session: Session, run_id: str, ended: RunState) -> None:
    """An ended run leaves no task waiting and no attempt open."""
    open_tasks = select(Task).where(
        Task.run_id == run_id, col(Task.state).not_in([T.integrated, T.skipped, T.cancelled])
    )
    for task in session.exec(open_tasks).all():
        move_task(session, run_id, task.key, TaskState(task.state), T.cancelled, f"the run {ended}")
    open_attempts = select(TaskAttempt).where(
        TaskAttempt.run_id == run_id, TaskAttempt.status == AttemptStatus.running
    )
    for attempt in session.exec(open_attempts):
        attempt.status, attempt.error = AttemptStatus.cancelled, f"the run {ended}"
        stamp_end(attempt)


def move_task(
    session: Session,
    run_id: str,
    key: str,
    old: TaskState | Collection[TaskState],
    new: TaskState,
    message: str = "",
    *,
    notice: bool = False,
    feedback: str | None = None,
    delivery_id: int | None = None,
) -> bool:
    """Move a task from `old` to `new` with its event and next job; False when it was not in
    `old`. With `notice`, the message is Baton's own words, fit to show on the issue;
    `feedback` is what the task's next attempt is told."""
    olds = _task_states(old)
    for state in olds:
        if not task_may_move(state, new):
            raise IllegalMove(f"a task may not go from {state} to {new}")
    check_fence(session)
    values: dict[str, Any] = {"state": new, "updated_at": utcnow()}
    # What the next attempt is told is set as a task goes (back) to work; a pending task keeps
    # what it was given on the way to pending (a merge task's conflicts) when it starts.
    starts = new == T.running and set(olds) == {T.pending}
    if new in (T.running, T.pending) and not (starts and feedback is None):
        values["feedback"] = feedback
    changed = session.connection().execute(
        sa.update(TASKS)
        .where(TASKS.c.run_id == run_id, TASKS.c.key == key, TASKS.c.state.in_(olds))
        .values(**values)
    )
    if changed.rowcount != 1:
        return False
    session.expire_all()
    if new not in HOLDS_A_SLOT and not HOLDS_A_SLOT.isdisjoint(olds):
        _wake_runs_waiting_for_a_slot(session, run_id)
    data: dict[str, object] = {"notice": True} if notice else {}
    record_event(
        session,
        run_id,
        f"task.{new}",
        message or new,
        task_key=key,
        data=data,
        delivery_id=delivery_id,
    )
    _after_task_move(session, run_id, key, new)
    return True


def _after_task_move(session: Session, run_id: str, key: str, new: TaskState) -> None:
    follow = _TASK_NEXT.get(new)
    if follow == ATTEMPT_JOB:
        enqueue(session, ATTEMPT_JOB, run_id=run_id, task_key=key)
    elif follow == INTEGRATE_JOB:
        # One integration per run at a time, in the order tasks were accepted.
        enqueue(session, INTEGRATE_JOB, run_id=run_id, task_key=key, lock=f"run:{run_id}")
    elif follow == ADVANCE_JOB:
        wake(session, run_id)
    show(session, run_id)


def _wake_runs_waiting_for_a_slot(session: Session, freed_by: str) -> None:
    """A worker slot over all runs came free: every other working run with a task waiting to
    start looks again (its own wake-up comes with the task's next step)."""
    waiting = (
        select(Task.run_id)
        .join(Run, col(Run.id) == col(Task.run_id))
        .where(
            col(Task.state) == T.pending,
            col(Run.state).in_(SLOT_USERS),
            col(Run.id) != freed_by,
        )
        .distinct()
    )
    for run_id in session.exec(waiting).all():
        wake(session, run_id)


def wake(session: Session, run_id: str) -> None:
    """Ask the run's `advance_run` step to look again: many wake-ups, one queued job."""
    enqueue(
        session, ADVANCE_JOB, run_id=run_id, lock=f"run:{run_id}", queueing_lock=f"advance:{run_id}"
    )


def show(
    session: Session, run_id: str, *, max_attempts: int = 5, delay_seconds: float = STATUS_PACING
) -> None:
    """Ask for the status comment to be written from the stored state: coalesced, one at a time,
    and a moment later, so that the changes of that moment make one edit."""
    enqueue(
        session,
        STATUS_JOB,
        max_attempts=max_attempts,
        delay_seconds=delay_seconds,
        run_id=run_id,
        lock=f"status:{run_id}",
        queueing_lock=f"status:{run_id}",
    )


def finish(session: Session, run_id: str) -> None:
    """Every task is in: final tests, the pull request and its check run."""
    enqueue(
        session, FINISH_JOB, run_id=run_id, lock=f"run:{run_id}", queueing_lock=f"finish:{run_id}"
    )


def admit_run(
    session: Session,
    event: IssueLabeled,
    delivery_row_id: int,
    config: RepoConfig,
    problem: str | None = None,
    mode: ModeChoice = ORCHESTRATED,
) -> Run | None:
    """Record a new run for a labelled issue: `planning`, or `failed` when its config has a
    `problem`; None if nothing should start. It starts in `mode`, drawn by the caller.

    Idempotent: the run's unique trigger delivery, and the one-active-run-per-issue index,
    make a repeated call (a job run again after a crash) insert nothing.
    """
    now = utcnow()
    run_id = new_run_id()
    row = {
        "id": run_id,
        "installation_id": event.installation.id,
        "repository_id": event.repository.id,
        "repository": event.repository.full_name,
        "issue_number": event.issue.number,
        "issue_title": event.issue.title[:1024],
        "state": RunState.failed if problem else RunState.planning,
        "active": problem is None,
        "error": problem,
        "trigger_delivery_id": delivery_row_id,
        "triggered_by": event.sender.login,
        "branch": run_branch(
            session, config.branch_prefix, event.repository.id, event.issue.number
        ),
        "config": config.model_dump(mode="json"),
        "mode": mode.mode,
        "mode_reason": mode.reason,
        "cost_usd": 0.0,
        "created_at": now,
        "updated_at": now,
    }
    if not insert_ignoring_conflicts(session, Run, [row]):
        log.info("no new run: this delivery already started one, or the issue has an active run")
        return None
    outcome = f"cannot start: {problem}" if problem else "planning"
    record_event(
        session,
        run_id,
        "run.started",
        f"@{event.sender.login} labelled #{event.issue.number}; {outcome}",
        delivery_id=delivery_row_id,
    )
    if problem is None:
        enqueue(session, PLAN_JOB, run_id=run_id, lock=f"run:{run_id}")
        show(session, run_id)
    return session.get(Run, run_id)


def _run_states(old: RunState | Collection[RunState]) -> list[RunState]:
    return [old] if isinstance(old, str) else [RunState(state) for state in old]


def _task_states(old: TaskState | Collection[TaskState]) -> list[TaskState]:
    return [old] if isinstance(old, str) else [TaskState(state) for state in old]
