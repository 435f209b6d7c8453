"""The default branch moved and a run's draft pull request no longer merges cleanly: Baton
brings the default branch into the run branch as a merge commit, never a force push.

The conflicting files go to a worker as the one task of a new plan revision, with the
conflicting hunks (git's markers and all) as its feedback; it writes each file resolved, the
review checks it as any task, and the integration makes the merge commit of the branch and the
default branch with the worker's versions of those files. The revision stands on the plan's
approval. At most `merge_rounds` times per run; after that the pull request gets a comment
handing the conflict to a person.
"""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from bot import runs
from bot.config import RepoConfig
from bot.events import PushEvent
from bot.executor import JobContext
from bot.github.scopes import FIX_CI, READ_REVIEW
from bot.plan.render import markdown_text
from bot.plan.schema import Plan, PlanTask
from bot.planning import load_run, repo_client, updated_mirror
from bot.revisions import Added, add_revision, added_so_far, next_task_number, plan_approver
from bot.runs import lifecycle
from bot.store.models import PlanRevision, Run, RunState, Task

log = logging.getLogger(__name__)

MERGE_SOURCE = "merge"
HANDED_OVER = "merge.handed_over"
HUNK_BYTES = 30_000  # the worker's feedback: enough for the conflicts of a few files


async def default_branch_pushed(context: JobContext, event: PushEvent) -> None:
    """Job step: a push; when it moved the default branch, each open run is kept mergeable."""
    default = event.repository.default_branch
    if event.deleted or default is None or event.ref != f"refs/heads/{default}":
        return
    run_ids = await context.store.run(
        lambda session: _runs_with_open_pull_requests(session, event.repository.id)
    )
    for run_id in run_ids:
        await keep_mergeable(context, run_id, event.after, default)


def _runs_with_open_pull_requests(session: Session, repository_id: int) -> list[str]:
    query = select(Run.id).where(
        Run.repository_id == repository_id, Run.state == RunState.pr_open, col(Run.active)
    )
    return list(session.exec(query))


async def keep_mergeable(context: JobContext, run_id: str, theirs: str, default: str) -> None:
    """A merge task when the run branch conflicts with `theirs`, the default branch's head."""
    run = await load_run(context, run_id)
    if run.state != RunState.pr_open or run.head_sha is None:
        return
    mirror = await updated_mirror(context, run, READ_REVIEW)
    conflicted = await mirror.conflicting_paths(run.head_sha, theirs)
    if not conflicted:
        return  # GitHub merges it as it is
    rounds, planned = await context.store.run(lambda session: _merges(session, run.id, theirs))
    if planned:
        return
    if rounds >= RepoConfig.model_validate(run.config).merge_rounds:
        await _hand_over(context, run, default, rounds)
        return
    worktree = await mirror.add_worktree(run.id, "merge-check", run.head_sha)
    try:
        hunks = await worktree.conflicts_with(theirs, max_bytes=HUNK_BYTES)
    finally:
        await worktree.remove()
    merge = Merge(theirs, default, conflicted, hunks)
    await context.store.run(lambda session: _approve(session, run.id, merge))


class Merge:
    """The default branch's head to bring in, its name, and what conflicts."""

    def __init__(self, theirs: str, branch: str, files: list[str], hunks: str) -> None:
        self.theirs, self.branch, self.files, self.hunks = theirs, branch, files, hunks

    def plan(self, key: str) -> Plan:
        task = PlanTask(
            id=key,
            title=f"Merge {self.branch} into the branch: resolve the conflicts"[:120],
            role="implementer",
            description=(
                f"`{self.branch}` moved on and now conflicts with this branch in the files "
                "below. Write each file as it should be with both changes in it: keep what "
                f"`{self.branch}` changed and what this branch's tasks did. No conflict markers."
            ),
            files=self.files,
            context_files=[],
            acceptance="each file holds both sides' changes and no conflict marker",
        )
        return Plan(summary=f"Bring {self.branch} into the run branch.", tasks=[task])

    @property
    def feedback(self) -> str:
        return f"Merging `{self.branch}` into the branch conflicts here:\n{self.hunks}"


def _merges(session: Session, run_id: str, theirs: str) -> tuple[int, bool]:
    return added_so_far(session, run_id, MERGE_SOURCE, _merge_key(theirs))


def _merge_key(theirs: str) -> str:
    return f"merge {theirs}"


def hand_over_text(branch: str, rounds: int) -> str:
    return (
        f"{branch} moved on and conflicts with this branch again. Baton merged it in "
        f"{rounds} time(s), the most merge_rounds allows, and stops here: over to a person."
    )


def merged_in(session: Session, task: Task) -> str | None:
    """The default branch's commit a merge task brings in; None for any other task."""
    revision = session.get(PlanRevision, task.revision_id)
    if revision is None or revision.source != MERGE_SOURCE or not revision.feedback:
        return None
    return revision.feedback.removeprefix("merge ")


def _approve(session: Session, run_id: str, merge: Merge) -> None:
    run = session.get(Run, run_id)
    if run is None or run.state != RunState.pr_open:
        return
    key = f"T{next_task_number(session, run_id)}"
    approver = plan_approver(session, run_id)
    added = Added(MERGE_SOURCE, _merge_key(merge.theirs), approver, "plan.from_merge")
    tasks = add_revision(session, run_id, merge.plan(key), added, f"{key} merges {merge.branch}")
    if tasks is not None:
        tasks[key].feedback = merge.feedback  # what its first attempt is told: the conflicts


async def _hand_over(context: JobContext, run: Run, default: str, rounds: int) -> None:
    if run.pull_request_number is not None:
        repo = repo_client(context, run, FIX_CI)
        body = hand_over_text(markdown_text(default), rounds)
        await repo.reply_once(run.pull_request_number, f"merge-hand-over:{run.id}", body)
    said = hand_over_text(default, rounds)  # the status comment makes it inert

    def record(session: Session) -> None:
        runs.record_event(session, run.id, HANDED_OVER, said, data={"rounds": rounds})
        lifecycle.show(session, run.id)

    await context.store.run(record)
