"""What Baton keeps, and for how long: nothing piles up in the data directory or the database.

- A run's worktrees go as soon as it ends (`clear_run_files`, queued by the transaction that
  ends it); a periodic sweep takes those a crash left behind.
- The mirror of a repository that is no longer installed goes once no active run needs it.
- Deliveries, finished jobs, timeline rows and tool-call outcomes older than
  `BATON_RETENTION_DAYS` are pruned (`prune_records`, run periodically). Model calls and costs
  are kept: they are what a team's spending is measured by.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.executor import JobContext
from bot.git.mirror import Mirrors
from bot.setups import SetupOutputs, runs_with_outputs
from bot.store.models import (
    Delivery,
    Installation,
    InstallationRepository,
    Job,
    JobState,
    Run,
    TimelineEvent,
    ToolCall,
)
from bot.store.types import utcnow

log = logging.getLogger(__name__)

PRUNE_JOB = "prune_records"
FINISHED_JOBS = (JobState.succeeded, JobState.failed, JobState.aborted)


def _table(model: type) -> sa.Table:
    table: sa.Table = model.__table__  # type: ignore[attr-defined]
    return table


async def clear_run_files(context: JobContext, run_id: str) -> None:
    """Job: an ended run's worktrees and pinned commits go; a run still going keeps them."""
    run = await context.store.run(lambda session: session.get(Run, run_id))
    if run is None or run.active:
        return
    mirrors = context.integrations.mirrors
    await _remove_run_worktrees(mirrors, run_id, mirrors.path_of(run.repository))


async def prune_records(context: JobContext) -> None:
    """Job: rows past the retention period, worktrees of ended runs, and mirrors of repositories
    no longer installed go. Safe to run at any time and as often as wanted."""
    cutoff = utcnow() - timedelta(days=context.settings.retention_days)
    pruned = await context.store.run_connection(partial(prune_rows, cutoff=cutoff))
    swept = await _sweep_worktrees(context)
    forgotten = await forget_uninstalled_mirrors(context)
    log.info(
        "retention: pruned %s; removed worktrees of %d runs and %d mirrors",
        ", ".join(f"{count} {what}" for what, count in pruned.items()),
        swept,
        forgotten,
    )


def prune_rows(connection: sa.Connection, cutoff: datetime) -> dict[str, int]:
    """Delete or blank what is older than `cutoff`; the number of rows touched, by kind."""
    jobs, tool_calls = _table(Job), _table(ToolCall)
    timeline, deliveries, runs = _table(TimelineEvent), _table(Delivery), _table(Run)
    counts = {
        "jobs": connection.execute(
            sa.delete(jobs).where(
                jobs.c.state.in_(FINISHED_JOBS),
                sa.func.coalesce(jobs.c.finished_at, jobs.c.created_at) < cutoff,
            )
        ).rowcount,
        "tool-call outcomes": connection.execute(
            sa.update(tool_calls)
            .where(tool_calls.c.created_at < cutoff, tool_calls.c.outcome != "")
            .values(outcome="", arguments={})
        ).rowcount,
        "timeline rows": connection.execute(
            sa.delete(timeline).where(timeline.c.created_at < cutoff)
        ).rowcount,
    }
    old = sa.select(deliveries.c.id).where(deliveries.c.received_at < cutoff).scalar_subquery()
    # What still points at an old delivery forgets it; the delivery itself then goes.
    for table, column in (
        (runs, "trigger_delivery_id"),
        (timeline, "delivery_id"),
        (jobs, "delivery_id"),
    ):
        connection.execute(sa.update(table).where(table.c[column].in_(old)).values({column: None}))
    counts["deliveries"] = connection.execute(
        sa.delete(deliveries).where(deliveries.c.received_at < cutoff)
    ).rowcount
    return counts


async def _sweep_worktrees(context: JobContext) -> int:
    """Remove the worktree folders of runs that ended (or are unknown); how many runs."""
    mirrors = context.integrations.mirrors
    # Listed before the active runs are read: a run that has a worktree exists by then.
    listed = {*await mirrors.runs_with_worktrees(), *await runs_with_outputs(mirrors.data_dir)}
    active = await context.store.run(_active_runs)
    ended = [run_id for run_id in listed if run_id not in active]
    repositories = await context.store.run(partial(_repositories_of, ended))
    for run_id in ended:
        repository = repositories.get(run_id)
        await _remove_run_worktrees(
            mirrors, run_id, mirrors.path_of(repository) if repository else None
        )
    return len(ended)


async def _remove_run_worktrees(mirrors: Mirrors, run_id: str, mirror: Path | None) -> None:
    if mirror is not None and await asyncio.to_thread(mirror.exists):
        await mirrors.forget_run(mirror, run_id)
    # Whatever git did not know of (or a forgotten repository's worktrees) goes too.
    await asyncio.to_thread(shutil.rmtree, mirrors.worktrees_root / run_id, ignore_errors=True)
    await SetupOutputs(mirrors.data_dir, run_id).remove()


async def forget_uninstalled_mirrors(context: JobContext) -> int:
    """Remove the mirrors of repositories no longer installed that no active run uses."""
    gone = await context.store.run(_uninstalled_repositories)
    removed = 0
    for full_name in gone:
        if await context.integrations.mirrors.forget(full_name):
            removed += 1
    return removed


def _active_runs(session: Session) -> set[str]:
    return set(session.exec(select(Run.id).where(sa.true() == Run.active)))


def _repositories_of(run_ids: list[str], session: Session) -> dict[str, str]:
    query = select(Run.id, Run.repository).where(col(Run.id).in_(run_ids))
    return dict(session.exec(query).all())


def _uninstalled_repositories(session: Session) -> list[str]:
    """Repositories recorded as removed from their installation (or whose installation was
    deleted), not installed again elsewhere, and with no active run."""
    removed = (
        select(InstallationRepository.full_name)
        .join(Installation, col(Installation.id) == col(InstallationRepository.installation_id))
        .where(
            sa.or_(
                col(InstallationRepository.removed_at).is_not(None),
                col(Installation.deleted_at).is_not(None),
            )
        )
    )
    installed = (
        select(InstallationRepository.full_name)
        .join(Installation, col(Installation.id) == col(InstallationRepository.installation_id))
        .where(
            col(InstallationRepository.removed_at).is_(None), col(Installation.deleted_at).is_(None)
        )
    )
    used = select(Run.repository).where(sa.true() == Run.active)
    gone = set(session.exec(removed).all())
    kept = set(session.exec(installed).all()) | set(session.exec(used).all())
    return sorted(gone - kept)
