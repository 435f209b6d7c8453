"""Retention: an ended run's worktrees go at once, mirrors of repositories no longer installed
go, and old deliveries, jobs, timeline rows and tool-call outcomes are pruned while model calls
and costs stay."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot import retention
from bot.executor import JobContext
from bot.executor.local import ExecutorTuning, LocalExecutor
from bot.git import Mirror
from bot.github.scopes import PLAN, TokenScope
from bot.metrics import Metrics
from bot.runs import lifecycle
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import (
    Delivery,
    Job,
    JobState,
    ModelCall,
    Run,
    RunState,
    TimelineEvent,
    ToolCall,
)
from bot.store.types import utcnow
from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY
from tests.doubles.github import GitHubDouble
from tests.jobs_by_hand import deliver
from tests.support import git

LONG_AGO = timedelta(days=91)


async def started_run(context: JobContext) -> Run:
    await deliver(context, "issues.labeled")
    run = await context.store.run(lambda session: session.exec(select(Run)).one())
    assert run.active
    return run


def mirror_of(context: JobContext, repository: str = REPOSITORY) -> Mirror:
    return context.integrations.mirror(TokenScope(INSTALLATION_ID, repository, PLAN))


async def test_an_ended_runs_worktrees_and_pins_go_at_once(job_context: JobContext) -> None:
    run = await started_run(job_context)
    mirror = mirror_of(job_context)
    await mirror.update()
    first = await mirror.add_worktree(run.id, "T1", "main")
    await mirror.add_worktree(run.id, "T2", "main")
    (first.path / "new.py").write_text("x = 1\n")
    assert await first.commit("Add x", paths=["new.py"]) is not None  # pinned in the mirror
    kept = job_context.integrations.mirrors.data_dir / "setups" / run.id / ".venv"
    kept.mkdir(parents=True)  # what the run's setup built, kept for its later worktrees
    half_made = kept.parent.parent / f".{run.id}.0123abcd"
    half_made.mkdir()  # a copy a crash cut short

    ended = await job_context.store.run(
        lambda session: lifecycle.end_run(session, run.id, RunState.cancelled, "cancelled")
    )
    queued = await job_context.store.run(
        lambda session: session.exec(select(Job).where(Job.name == lifecycle.CLEAR_RUN_JOB)).all()
    )
    assert ended
    assert [job.args for job in queued] == [{"run_id": run.id}]

    await retention.clear_run_files(job_context, run.id)

    assert not (job_context.integrations.mirrors.worktrees_root / run.id).exists()
    assert not kept.parent.exists()
    assert not half_made.exists()
    assert git("for-each-ref", f"refs/baton/{run.id}", cwd=mirror.path) == ""
    assert git("worktree", "list", "--porcelain", cwd=mirror.path).count("worktree ") == 1


async def test_a_running_runs_worktrees_stay(job_context: JobContext) -> None:
    run = await started_run(job_context)
    mirror = mirror_of(job_context)
    await mirror.update()
    worktree = await mirror.add_worktree(run.id, "T1", "main")

    await retention.clear_run_files(job_context, run.id)
    await retention.prune_records(job_context)

    assert (worktree.path / "README.md").exists()


async def test_the_sweep_removes_worktrees_a_crash_left_of_ended_and_unknown_runs(
    job_context: JobContext,
) -> None:
    run = await started_run(job_context)
    mirror = mirror_of(job_context)
    await mirror.update()
    left = await mirror.add_worktree(run.id, "T1", "main")
    stray = job_context.integrations.mirrors.worktrees_root / "0123456789abcdef" / "T9"
    stray.mkdir(parents=True)

    def end_without_clearing(session: Session) -> None:
        row = session.get(Run, run.id)
        assert row is not None
        row.active, row.state = False, RunState.failed  # as a process that died mid-end left it

    await job_context.store.run(end_without_clearing)
    await retention.prune_records(job_context)

    assert not left.path.exists()
    assert not stray.parent.exists()
    assert git("worktree", "list", "--porcelain", cwd=mirror.path).count("worktree ") == 1


async def test_a_removed_repositorys_mirror_goes_and_an_installed_ones_stays(
    job_context: JobContext, github: GitHubDouble
) -> None:
    github.add_repository("octo-org/gadgets", INSTALLATION_ID, {"README.md": "# Gadgets\n"})
    mirrors = job_context.integrations.mirrors
    for name in ("octo-org/gadgets", REPOSITORY):
        await mirror_of(job_context, name).update()
    assert mirrors.path_of("octo-org/gadgets").exists()

    await deliver(job_context, "installation_repositories.removed")  # removes octo-org/gadgets

    assert not mirrors.path_of("octo-org/gadgets").exists()
    assert mirrors.path_of(REPOSITORY).exists()


def _old_and_new_rows(session: Session, run_id: str) -> None:
    then, now = utcnow() - LONG_AGO, utcnow()
    old = Delivery(delivery_id="old", event="ping", outcome="ignored", received_at=then)
    new = Delivery(delivery_id="new", event="ping", outcome="ignored", received_at=now)
    session.add_all([old, new])
    session.flush()
    run = session.get(Run, run_id)
    assert run is not None
    run.trigger_delivery_id = old.id  # an old delivery a run still points at
    for when, state, name in ((then, "succeeded", "old"), (now, "succeeded", "new")):
        session.add(Job(name=name, state=state, created_at=when, finished_at=when))
    session.add(Job(name="waiting", state=JobState.queued, created_at=then, run_after=then))
    for when, text in ((then, "old output"), (now, "new output")):
        session.add(
            ToolCall(
                run_id=run_id,
                sequence=1,
                tool="read_file",
                arguments={"path": text},
                outcome=text,
                created_at=when,
            )
        )
        session.add(TimelineEvent(run_id=run_id, kind=f"k.{text}", message=text, created_at=when))
    session.add(
        ModelCall(
            run_id=run_id,
            role="planner",
            provider="anthropic",
            model="m",
            cost_usd=0.5,
            created_at=then,
        )
    )


def _remaining(session: Session) -> Mapping[str, Any]:
    return {
        "deliveries": sorted(d.delivery_id for d in session.exec(select(Delivery))),
        "jobs": sorted(job.name for job in session.exec(select(Job))),
        "tool calls": sorted((c.outcome, str(c.arguments)) for c in session.exec(select(ToolCall))),
        "timeline": sorted(e.message for e in session.exec(select(TimelineEvent))),
        "model calls": [c.cost_usd for c in session.exec(select(ModelCall))],
    }


async def test_rows_older_than_the_retention_period_are_pruned(
    job_context: JobContext, engine: sa.Engine
) -> None:
    run = await started_run(job_context)
    await job_context.store.run(lambda session: _old_and_new_rows(session, run.id))

    await retention.prune_records(job_context)

    left = await job_context.store.run(_remaining)
    assert "old" not in left["deliveries"]
    assert "new" in left["deliveries"]
    assert "old" not in left["jobs"]
    assert {"new", "waiting"} <= set(left["jobs"])  # a queued job is never pruned
    assert ("", "{}") in left["tool calls"]
    assert ("new output", "{'path': 'new output'}") in left["tool calls"]
    assert "old output" not in left["timeline"]
    assert "new output" in left["timeline"]
    assert left["model calls"] == [0.5]  # costs are kept
    with engine.connect() as connection:
        trigger = connection.execute(sa.text("SELECT trigger_delivery_id FROM runs")).scalar()
    assert trigger is None


async def test_housekeeping_is_queued_periodically_one_copy_at_a_time(
    database_url: str, settings: Settings
) -> None:
    store = Store(database_url)
    pending_copies: list[int] = []
    enough = asyncio.Event()

    def pending(session: Session) -> int:
        states = [JobState.queued, JobState.running]
        return len(session.exec(select(Job).where(col(Job.state).in_(states))).all())

    async def prune(context: JobContext) -> None:
        pending_copies.append(await context.store.run(pending))
        if len(pending_copies) == 3:
            enough.set()

    tuning = ExecutorTuning(
        poll_seconds=0.05, housekeeping_seconds=0.05, housekeeping_delay_seconds=0.0
    )
    functions = {retention.PRUNE_JOB: prune}
    executor = LocalExecutor(
        store, settings, functions, Metrics(), tuning, housekeeping=[retention.PRUNE_JOB]
    )
    await executor.start()
    try:
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        await executor.stop(grace_seconds=1)
        jobs = await store.run(lambda session: session.exec(select(Job)).all())
        store.close()
    # Each time it ran, it was the only copy queued or running.
    assert pending_copies[:3] == [1, 1, 1]
    assert {job.name for job in jobs} == {retention.PRUNE_JOB}
