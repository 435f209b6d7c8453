"""The `integrate_task` step: an accepted task's commit onto the run branch, made by GitHub
through its Git Data API (so it shows Verified) and the branch moved forward only.
One integration per run at a time (the job's lock), in the order tasks were accepted.

A person's push to the branch is kept: the commit goes on top of it (again, when they push
while it is being published), and if it does not apply there the task goes back to its worker
with the hunks. A commit pushed by a process that died
before recording it is found on the branch by its trailer and adopted, never pushed twice.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bot.executor import JobContext, check_fence
from bot.git import ApplyConflict, GitError, PushRejected
from bot.github.repo import BranchMoved, GitHubError
from bot.merges import merged_in
from bot.planning import load_run
from bot.runs import lifecycle, record_event
from bot.runs.advance import WORKING, adopt_pushed, record_integration
from bot.runs.attempt import review_round
from bot.runs.progress import task_row
from bot.runs.publish import publish
from bot.runs.secret_check import SecretsFound, check_no_secrets
from bot.runs.workspace import Workspace, open_workspace
from bot.secrets import ScanFailed, SecretFinding, describe_findings
from bot.store.models import AttemptStatus, CommitBundle, Run, Task, TaskAttempt, TaskState

log = logging.getLogger(__name__)
MOVES_FOLLOWED = 3  # a branch moved by people this often in one integration stops the task


async def integrate_task(context: JobContext, run_id: str, task_key: str) -> None:
    """Job: put the task's accepted commit on the run branch."""
    run = await load_run(context, run_id)
    found = await context.store.run(lambda session: _accepted(session, run_id, task_key))
    if run.state not in WORKING or found is None:
        return
    task, commit = found
    if commit is None:  # nothing changed (a static analyst): nothing to commit
        await context.store.run(
            lambda session: lifecycle.move_task(
                session, run_id, task.key, TaskState.accepted, TaskState.integrated, "no change"
            )
        )
        return
    workspace = await open_workspace(context, run_id, fetch=True)
    try:
        await _integrate_on_latest(workspace, task, commit)
    except ApplyConflict as conflict:
        feedback = f"Your change conflicts with the run branch now:\n{conflict.hunks}"
        await _move(context, task, TaskState.running, "conflicts with the branch", feedback)
    except SecretsFound as caught:
        findings, rounds = caught.findings, workspace.config.review_rounds
        await context.store.run(lambda session: _sent_back(session, task, findings, rounds))
    except (GitError, GitHubError, ScanFailed) as error:  # unchecked is never published
        log.warning("task %s could not be integrated: %s", task.key, error)
        await _move(context, task, TaskState.failed, str(error))


async def _integrate_on_latest(workspace: Workspace, task: Task, commit: str) -> None:
    """`_integrate`, again on top of the branch as it is now when a person pushed meanwhile."""
    for tries in range(1, MOVES_FOLLOWED + 1):
        try:
            await _integrate(workspace, task, commit)
            return
        except BranchMoved:
            if tries == MOVES_FOLLOWED:
                raise
            log.info("the branch of run %s moved while integrating; again", workspace.run.id)
            workspace = await open_workspace(workspace.context, workspace.run.id, fetch=True)


async def _integrate(workspace: Workspace, task: Task, commit: str) -> None:
    context, mirror = workspace.context, workspace.mirror
    if await adopt_pushed(workspace):
        workspace.run = run = await load_run(context, workspace.run.id)
        if await context.store.run(lambda s: task_row(s, run.id, task.key).state) != "accepted":
            return  # this task's commit was among them
    run = workspace.run
    await _follow_pushes(workspace)
    await _have_commit(workspace, task, commit)
    remote = await mirror.branch_head(workspace.branch)
    theirs = await context.store.run(lambda session: merged_in(session, task))
    worktree = await mirror.add_worktree(run.id, "integration", workspace.head)
    try:
        if theirs is None:
            new_head = await worktree.apply_commit(commit)
        else:  # the task resolved a merge of the default branch: the merge commit is made here
            _, _, message = await mirror.commit_fields(commit)
            new_head = await worktree.merge_resolved(theirs, commit, message)
    finally:
        await worktree.remove()
    # The last door to GitHub: what the branch gains is checked for secrets on the way out.
    await check_no_secrets(mirror, workspace.head, new_head, theirs)
    # Checked just before publishing: a process that lost this job to another pushes nothing.
    await context.store.run(check_fence)
    try:
        published = await publish(workspace, task, new_head, remote is not None)
    finally:
        await mirror.update()  # the published commit, or whatever moved the branch instead
    await context.store.run(lambda session: _integrated(session, run.id, task.key, published))
    await workspace.let_go_of_pins(task.key)


def _integrated(session: Session, run_id: str, key: str, head: str) -> None:
    record_integration(session, run_id, key, head, "pushed")
    session.execute(
        sa.delete(CommitBundle).where(
            col(CommitBundle.task_key) == key, col(CommitBundle.run_id) == run_id
        )
    )


async def _have_commit(workspace: Workspace, task: Task, commit: str) -> None:
    """The accepted commit is in this machine's mirror: made here, or taken from its bundle."""
    if await workspace.mirror.has_commit(commit):
        return
    bundle = await workspace.context.store.run(lambda session: session.get(CommitBundle, commit))
    if bundle is None:
        missing = f"commit {commit} of task {task.key} is neither mirrored nor bundled"
        raise GitError(missing, command=f"git cat-file -e {commit}")
    await workspace.mirror.take_bundle(workspace.run.id, task.key, bundle.bundle)


async def _follow_pushes(workspace: Workspace) -> None:
    """Take the branch as GitHub has it when a person pushed on top of Baton's work."""
    run, mirror = workspace.run, workspace.mirror
    remote = await mirror.branch_head(workspace.branch)
    ours = run.head_sha or run.base_sha
    if remote is None or ours is None or remote == ours:
        return
    if not await mirror.descends(remote, ours):
        raise PushRejected(
            f"the run branch {run.branch} was rewritten; Baton does not overwrite it",
            command="git push",
            branch=workspace.branch,
            expected=ours,
            reason="the branch no longer contains Baton's work",
        )

    def record(session: Session) -> None:
        check_fence(session)
        current = session.get(Run, run.id)
        if current is not None:
            current.head_sha = remote
        record_event(session, run.id, "branch.moved", f"a push moved it to {remote}")

    await workspace.context.store.run(record)
    run.head_sha = remote


def _sent_back(session: Session, task: Task, findings: list[SecretFinding], rounds: int) -> None:
    """The task goes back to its worker with where the secrets are, counted as a round of
    review: past `rounds` it fails. Its commit's bundle is dropped, its secret with it."""
    check_fence(session)
    last = _last_attempt(session, task)
    assert last is not None  # an accepted task was attempted
    session.execute(
        sa.delete(CommitBundle).where(
            col(CommitBundle.task_key) == task.key, col(CommitBundle.run_id) == task.run_id
        )
    )
    last.review_feedback = feedback = describe_findings(findings)
    run_id, key = task.run_id, task.key
    if review_round(session, last) < rounds:
        last.status = AttemptStatus.retried
        why = "sent back by the secret check"
        lifecycle.move_task(
            session, run_id, key, TaskState.accepted, TaskState.running, why, feedback=feedback
        )
        return
    last.status = AttemptStatus.failed
    why = f"not accepted after {rounds} rounds: secrets in the change"
    lifecycle.move_task(session, run_id, key, TaskState.accepted, TaskState.failed, why)


def _last_attempt(session: Session, task: Task) -> TaskAttempt | None:
    return session.exec(
        select(TaskAttempt)
        .where(TaskAttempt.task_id == task.id)
        .order_by(col(TaskAttempt.number).desc())
    ).first()


def _accepted(session: Session, run_id: str, key: str) -> tuple[Task, str | None] | None:
    """The accepted task and the commit of its accepted attempt; None when it is not accepted."""
    task = task_row(session, run_id, key)
    if task.state != TaskState.accepted:
        return None
    last = _last_attempt(session, task)
    session.expunge(task)
    return task, (last.commit_sha if last is not None else None)


async def _move(
    context: JobContext, task: Task, new: TaskState, why: str, feedback: str | None = None
) -> None:
    await context.store.run(
        lambda session: lifecycle.move_task(
            session, task.run_id, task.key, TaskState.accepted, new, why, feedback=feedback
        )
    )
