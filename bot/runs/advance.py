"""The `advance_run` step: start what the scheduler says may start, and see whether the run is
through. Coalesced (many wake-ups of a run are one queued job) and one at a time per run.

The first time, it makes the task rows of the approved plan and adopts commits a dead process
had pushed but not recorded. Worker slots are counted and taken under one database lock, so the
global cap holds across processes.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.config import RepoConfig
from bot.executor import JobContext, enqueue
from bot.planning import load_run
from bot.runs import lifecycle, record_event
from bot.runs.progress import approved_revisions, task_views
from bot.runs.workspace import Workspace, open_workspace
from bot.scheduler import (
    DONE_STATES,
    RUNNING_STATES,
    TaskView,
    all_in,
    blocked_for_good,
    finished,
    ready_to_start,
)
from bot.store.models import Run, RunState, Task, TaskState
from bot.task_rows import add_task_rows

# The key of the database lock under which worker slots are counted and taken.
SLOTS_LOCK = 0x6261746F6E  # "baton"
WORKING = lifecycle.SLOT_USERS


async def advance_run(context: JobContext, run_id: str) -> None:
    """Job: start the run's ready tasks, or finish the run, or hand it to a person."""
    run = await load_run(context, run_id)
    if run.state not in WORKING:
        return
    if run.base_sha is None or await context.store.run(lambda s: _lacks_rows(s, run)):
        workspace = await open_workspace(context, run_id, fetch=True)
        await _prepare(workspace)
    await context.store.run(lambda session: _advance(session, run_id, context))


async def resume_earlier_run(context: JobContext, run_id: str) -> None:
    """Job under its old name: a run an earlier version drove as one job, picked up again as
    steps: its tasks under way get their attempt job, then the run advances."""

    def resume(session: Session) -> None:
        for task in session.exec(
            select(Task).where(Task.run_id == run_id, col(Task.state).in_(RUNNING_STATES))
        ):
            enqueue(session, lifecycle.ATTEMPT_JOB, run_id=run_id, task_key=task.key)
        lifecycle.wake(session, run_id)

    await context.store.run(resume)


def _lacks_rows(session: Session, run: Run) -> bool:
    """An approved revision has tasks without rows: the plan, or a review's new tasks."""
    keys = set(session.exec(select(Task.key).where(Task.run_id == run.id)).all())
    return any(
        task["id"] not in keys
        for revision in approved_revisions(session, run.id)
        for task in revision.plan.get("tasks", [])
    )


async def _prepare(workspace: Workspace) -> None:
    run, mirror = workspace.run, workspace.mirror
    base = run.base_sha or await mirror.resolve((await workspace.repo.repository()).default_branch)
    await workspace.context.store.run(lambda session: _add_rows(session, run.id, base))
    await adopt_pushed(workspace)


def _add_rows(session: Session, run_id: str, base: str) -> None:
    run = session.get(Run, run_id)
    if run is None or run.state not in WORKING:
        return  # cancelled meanwhile: no task is made for it
    if run.base_sha is None:
        run.base_sha = base
    existing = {t.key: t for t in session.exec(select(Task).where(Task.run_id == run_id))}
    config = RepoConfig.model_validate(run.config)
    # The plan, then each review's tasks: every approved revision adds its own.
    for revision in approved_revisions(session, run_id):
        add_task_rows(session, run_id, revision, config, existing)


async def adopt_pushed(workspace: Workspace) -> bool:
    """Commits this run pushed but did not record (it died in between) count as integrated;
    True when there were any."""
    run, mirror = workspace.run, workspace.mirror
    remote = await mirror.branch_head(workspace.branch)
    since = run.head_sha or run.base_sha
    if remote is None or since is None or remote == since:
        return False
    found = await mirror.task_commits(since, remote, run.id)
    if found:
        await workspace.context.store.run(lambda session: _adopt(session, run.id, found))
    return bool(found)


def _adopt(session: Session, run_id: str, found: list[tuple[str, str]]) -> None:
    for sha, key in found:
        record_integration(session, run_id, key, sha, "found pushed after a restart")


def record_integration(session: Session, run_id: str, key: str, head: str, how: str) -> bool:
    """The task's commit is on the run branch at `head`: recorded with the head, so that no
    process does the task again."""
    task = session.exec(select(Task).where(Task.run_id == run_id, Task.key == key)).first()
    if task is None or task.state == TaskState.integrated:
        return False
    live = [s for s in lifecycle.TASK_MOVES if TaskState.integrated in lifecycle.TASK_MOVES[s]]
    if not lifecycle.move_task(session, run_id, key, live, TaskState.integrated, how):
        return False
    run = session.get(Run, run_id)
    if run is not None:
        run.head_sha = head
    task.commit_sha = head
    record_event(session, run_id, "task.pushed", head, task_key=key)
    return True


def _advance(session: Session, run_id: str, context: JobContext) -> None:
    _hold_slots(session, run_id)  # first: on SQLite a read before it could not become a write
    run = session.get(Run, run_id)
    if run is None or run.state not in WORKING:
        return
    views = task_views(session, run_id)
    config = RepoConfig.model_validate(run.config)
    free = context.settings.max_parallel - _running_everywhere(session)
    for key in ready_to_start(views, run_cap=config.max_parallel, global_free=free):
        lifecycle.move_task(session, run_id, key, TaskState.pending, TaskState.running)
    views = task_views(session, run_id)
    if all_in(views):
        lifecycle.finish(session, run_id)
    elif _nothing_can_move(views):
        stuck = ", ".join(v.key for v in views if v.state not in DONE_STATES)
        lifecycle.move_run(session, run_id, RunState(run.state), RunState.needs_human, stuck)


def _nothing_can_move(views: list[TaskView]) -> bool:
    """Nothing is under way, and every pending task waits on a stopped one: a person must act.
    A task waiting for `/approve-task` keeps the run executing: the person it waits for knows."""
    if any(v.state in MOVING for v in views):
        return False
    waiting = {v.key for v in views if v.state == TaskState.pending}
    return finished(views) or waiting <= set(blocked_for_good(views))


# States of a task still on its way to the branch.
MOVING = RUNNING_STATES | {TaskState.accepted, TaskState.awaiting_approval}


def _hold_slots(session: Session, run_id: str) -> None:
    """Count and take worker slots under one lock over all processes: on PostgreSQL an
    advisory lock held to the commit; SQLite lets one writer at a time, and a write takes it."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(SLOTS_LOCK)))
    else:
        touch = sa.text("UPDATE runs SET updated_at = updated_at WHERE id = :id")
        connection.execute(touch, {"id": run_id})


def _running_everywhere(session: Session) -> int:
    query = (
        select(sa.func.count()).select_from(Task).where(col(Task.state).in_(lifecycle.HOLDS_A_SLOT))
    )
    return int(session.exec(query).one())
