"""A commit made in the mirror, published onto the run branch through GitHub's Git Data API.

GitHub makes the commit (blobs, a tree on the parent's, a commit with no author given) and signs
it as the App, so it shows Verified and branch rules that require signed commits take it. The
branch then moves forward only (a reference update that is not forced): a person's push since
Baton last looked is never dropped, the update is refused instead. The message keeps its
`Baton-Run`/`Baton-Task` trailers and gains a `Co-authored-by` for each person who asked for
the work: whoever approved the plan, and the reviewer whose review a revision task answers.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from sqlmodel import Session

from bot.codebase.snapshot import Blobs
from bot.git import GitError
from bot.git.mirror import ChangedEntry
from bot.git.runner import clean_environment
from bot.github.repo import GitHubError, RepoClient, TreeChange
from bot.revisions import plan_approver
from bot.runs.workspace import Workspace
from bot.store.models import PlanRevision, Task

KINDS = {"100644": "blob", "100755": "blob", "120000": "blob", "160000": "commit"}


async def publish(workspace: Workspace, task: Task, made: str, exists: bool) -> str:
    """Commit `made` of the mirror (a task's, on the branch's head; or a merge of the default
    branch into it) made again by GitHub on the same parents, and the branch moved to it; its
    sha. BranchMoved when the branch is no longer at the first parent."""
    mirror, repo = workspace.mirror, workspace.repo
    tree, parents, message = await mirror.commit_fields(made)
    parent = parents[0]
    changes = await mirror.changed_entries(parent, made)
    parent_tree, _, _ = await mirror.commit_fields(parent)
    uploaded = await _uploaded(repo, mirror.path, changes)
    made_tree = await repo.create_tree(parent_tree, uploaded)
    if made_tree != tree:  # git trees are named by their content: the same files, the same sha
        raise GitError(
            f"GitHub built tree {made_tree} where the commit has {tree}",
            command="POST /git/trees",
        )
    people = await _co_authors(workspace, task)
    sha = await repo.create_commit(with_trailers(message, people), made_tree, parents)
    await repo.move_branch(workspace.branch, sha, exists=exists)
    return sha


async def _uploaded(
    repo: RepoClient, repository: Path, changes: Sequence[ChangedEntry]
) -> list[TreeChange]:
    """Each change as a tree entry, its file's bytes sent to GitHub as a blob first."""
    entries = []
    for change in changes:
        kind = KINDS.get(change.mode)
        if change.object_id is None:
            entries.append(TreeChange(change.path, "100644", "blob", None))
        elif kind is None:
            raise GitError(f"{change.path} has git mode {change.mode}", command="git diff-tree")
        elif kind == "commit":  # a submodule names its commit; there is nothing to upload
            entries.append(TreeChange(change.path, change.mode, kind, change.object_id))
        else:
            data = await asyncio.to_thread(_blob, repository, change.object_id)
            entries.append(TreeChange(change.path, change.mode, kind, await repo.create_blob(data)))
    return entries


def _blob(repository: Path, object_id: str) -> bytes:
    sized = subprocess.run(
        ["git", "-C", str(repository), "cat-file", "-s", object_id],
        env=clean_environment(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    with Blobs(repository) as blobs:
        return blobs.read(object_id, int(sized.stdout))


async def _co_authors(workspace: Workspace, task: Task) -> list[str]:
    """`Name <id+login@users.noreply.HOST>` of each person who asked for this task's work."""
    logins = await workspace.context.store.run(lambda session: _askers(session, task))
    host = urlsplit(workspace.context.settings.github_url).hostname or "github.com"
    people = []
    for login in logins:
        try:
            number = await workspace.repo.user_id(login)
        except GitHubError:
            continue  # an account gone since: the commit is still theirs to review
        people.append(f"{login} <{number}+{login}@users.noreply.{host}>")
    return people


def _askers(session: Session, task: Task) -> list[str]:
    """Who approved the run's first plan, then who approved the task's own revision."""
    first = plan_approver(session, task.run_id)
    own = session.get(PlanRevision, task.revision_id) if task.revision_id else None
    logins = [login for login in (first, own.approved_by if own else None) if login]
    return list(dict.fromkeys(logins))


def with_trailers(message: str, people: Sequence[str]) -> str:
    """`message` with a `Co-authored-by` trailer per person, in its last (trailer) paragraph."""
    lines = [f"Co-authored-by: {person}" for person in people]
    return "\n".join([message.rstrip("\n"), *lines]) + "\n"
