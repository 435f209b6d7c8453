"""A task's own working copy of a mirror (`git worktree`), and the commit it ends with (§5)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.git.runner import GitRunner
from bot.sandbox import tree

logger = logging.getLogger(__name__)
# Ids become path components and trailer values: no separators, no leading dot or dash.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_FULL_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Where a task's newest commit is kept reachable until it is on the run branch.
PIN_PREFIX = "refs/baton"
# Diffs a worker's change decides the size of are read at most this far.
MAX_DIFF_BYTES = 1024 * 1024


def run_pins(run_id: str) -> str:
    """The folder of refs that pin run `run_id`'s task commits."""
    return f"{PIN_PREFIX}/{check_id('run id', run_id)}/"


def pin_ref(run_id: str, task_id: str) -> str:
    """The ref that keeps task `task_id`'s newest commit from git's garbage collection."""
    return run_pins(run_id) + check_id("task id", task_id)


@dataclass(frozen=True)
class Identity:
    """Author and committer of Baton's commits."""

    name: str = "baton-bot[bot]"
    email: str = "baton-bot[bot]@users.noreply.github.com"

    @classmethod
    def for_github_app(cls, slug: str, bot_user_id: int) -> Identity:
        """The identity GitHub shows as the App's bot user, e.g. `baton-bot[bot]`."""
        return cls(f"{slug}[bot]", f"{bot_user_id}+{slug}[bot]@users.noreply.github.com")

    def environment(self) -> dict[str, str]:
        return {
            "GIT_AUTHOR_NAME": self.name,
            "GIT_AUTHOR_EMAIL": self.email,
            "GIT_COMMITTER_NAME": self.name,
            "GIT_COMMITTER_EMAIL": self.email,
        }


@dataclass(frozen=True)
class DiffStat:
    """What a commit changed; a binary file counts as changed with no lines."""

    files_changed: int
    insertions: int
    deletions: int


@dataclass(frozen=True)
class Commit:
    sha: str
    stat: DiffStat


def is_safe_id(value: str) -> bool:
    """Whether `value` is safe as a path component and a trailer value (see `check_id`)."""
    return _ID.fullmatch(value) is not None


def check_id(kind: str, value: str) -> str:
    """`value` if it is safe as a path component and a trailer value, else a `ValueError`."""
    if not is_safe_id(value):
        raise ValueError(
            f"{kind} {value!r} is not safe in a path or a commit trailer: use 1 to 64 letters, "
            "digits, '_', '.' or '-', starting with a letter or digit"
        )
    return value


def commit_message(task_id: str, title: str, run_id: str, body: str = "") -> str:
    """`T3: <title>`, a blank line, the optional body, then trailers `Baton-Run`, `Baton-Task`."""
    check_id("run id", run_id)
    check_id("task id", task_id)
    subject = " ".join(title.split())
    if not subject:
        raise ValueError(f"task {task_id} has an empty title; a commit needs one")
    paragraphs = [
        f"{task_id}: {subject}",
        body.strip(),
        f"Baton-Run: {run_id}\nBaton-Task: {task_id}",
    ]
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph) + "\n"


def parse_numstat(numstat: str) -> DiffStat:
    """Sum `git diff --numstat -z` output; binary files show `-` for both counts."""
    files = insertions = deletions = 0
    for record in filter(None, numstat.split("\0")):
        added, removed, _path = record.split("\t", 2)
        files += 1
        insertions += int(added) if added != "-" else 0
        deletions += int(removed) if removed != "-" else 0
    return DiffStat(files, insertions, deletions)


class ApplyConflict(Exception):
    """A task's commit does not apply on the run branch as it is now; `hunks` show where."""

    def __init__(self, sha: str, hunks: str) -> None:
        super().__init__(f"commit {sha[:12]} conflicts with the run branch")
        self.sha = sha
        self.hunks = hunks


class Worktree:
    """A checkout of one commit of a mirror, private to one task of one run.

    Two worktrees of one mirror share its objects but nothing else, so they may be used at once.
    """

    def __init__(
        self,
        *,
        path: Path,
        mirror_path: Path,
        run_id: str,
        task_id: str,
        base_sha: str,
        runner: GitRunner,
        admin_lock: asyncio.Lock,
    ) -> None:
        self.path = path
        self.mirror_path = mirror_path
        self.run_id = run_id
        self.task_id = task_id
        self.base_sha = base_sha
        self._runner = runner
        self._admin_lock = admin_lock

    async def head(self) -> str:
        """The sha checked out now: `base_sha`, or the task's commit once made."""
        return (await self._runner.run(["rev-parse", "HEAD"], cwd=self.path)).stdout.strip()

    async def commit(
        self,
        title: str,
        body: str = "",
        identity: Identity = Identity(),
        paths: Sequence[str] | None = None,
    ) -> Commit | None:
        """Commit the changes as this task (CONTRACT §5) and say what changed.

        With `paths`, only changes to those files are committed (a task's write set; whatever
        else its commands left behind stays out); without, every change. Files the repository
        ignores are left out. Returns None, and makes no commit, when nothing changed.
        """
        message = commit_message(self.task_id, title, self.run_id, body)
        if paths is None:
            await self._runner.run(["add", "--all"], cwd=self.path)
        else:
            changed = await self._present_or_tracked(paths)
            if not changed:
                return None
            await self._runner.run(["add", "--all", "--", *changed], cwd=self.path)
        staged = await self._runner.run(
            ["diff", "--cached", "--numstat", "--no-renames", "-z"], cwd=self.path
        )
        if not staged.stdout:
            return None
        await self._runner.run(
            # Hooks come from the repository's content, which Baton does not trust.
            ["commit", "--quiet", "--no-verify", "--cleanup=whitespace", "--file=-"],
            cwd=self.path,
            environment=identity.environment(),
            stdin=message.encode(),
        )
        sha = await self.head()
        # Only the attempt's row names this commit until it is integrated, which may be days
        # away behind /approve-task; unreferenced, `git gc` would delete it in the meantime.
        await self._runner.run(
            ["update-ref", pin_ref(self.run_id, self.task_id), sha], cwd=self.path
        )
        return Commit(sha=sha, stat=parse_numstat(staged.stdout))

    async def apply_commit(self, sha: str, identity: Identity = Identity()) -> str:
        """Put commit `sha` (made on another base) on top of HEAD, keeping its message; the new
        sha. A conflict leaves HEAD as it was and raises ApplyConflict with the conflicting
        hunks, for the task's worker to resolve."""
        picked = await self._runner.run(
            ["cherry-pick", "--allow-empty", "--keep-redundant-commits", sha],
            cwd=self.path,
            environment=identity.environment(),
            check=False,
        )
        if picked.returncode == 0:
            return await self.head()
        conflict, _ = await self._runner.run_capped(
            ["diff"], cwd=self.path, max_bytes=MAX_DIFF_BYTES
        )
        await self._runner.run(["cherry-pick", "--abort"], cwd=self.path, check=False)
        raise ApplyConflict(sha, conflict or picked.stderr)

    async def conflicts_with(self, theirs: str, max_bytes: int = MAX_DIFF_BYTES) -> str:
        """The conflicting hunks, with git's markers, of merging `theirs` into HEAD; HEAD and
        the files are left as they were."""
        await self._merge_no_commit(theirs)
        try:
            diff, more = await self._runner.run_capped(["diff"], cwd=self.path, max_bytes=max_bytes)
        finally:
            await self._runner.run(["merge", "--abort"], cwd=self.path, check=False)
        return diff + (f"\n[... the conflicts go on past {max_bytes} bytes ...]" if more else "")

    async def merge_resolved(
        self, theirs: str, resolved: str, message: str, identity: Identity = Identity()
    ) -> str:
        """A merge commit of HEAD and `theirs`, each conflicted file taken as commit `resolved`
        has it; the new sha. ApplyConflict, HEAD as it was, when a conflict is left."""
        await self._merge_no_commit(theirs)
        conflicted = await self._unmerged()
        if conflicted:
            await self._runner.run(["checkout", resolved, "--", *conflicted], cwd=self.path)
            await self._runner.run(["add", "--", *conflicted], cwd=self.path)
        if await self._unmerged():
            await self._runner.run(["merge", "--abort"], cwd=self.path, check=False)
            raise ApplyConflict(resolved, "the resolution leaves files unmerged")
        await self._runner.run(
            ["commit", "--quiet", "--no-verify", "--cleanup=whitespace", "--file=-"],
            cwd=self.path,
            environment=identity.environment(),
            stdin=message.encode(),
        )
        return await self.head()

    async def _merge_no_commit(self, theirs: str) -> None:
        if not _FULL_SHA.fullmatch(theirs):  # never an option or a name git would resolve
            raise ValueError(f"{theirs!r} is not a full commit sha")
        # Exit 1 is a merge with conflicts, which is what the caller looks at next.
        await self._runner.run(
            ["merge", "--no-commit", "--no-ff", "--no-verify", theirs],
            cwd=self.path,
            environment=Identity().environment(),
            check=False,
        )

    async def _unmerged(self) -> list[str]:
        listed = await self._runner.run(
            ["diff", "--name-only", "--diff-filter=U", "-z"], cwd=self.path
        )
        return [path for path in listed.stdout.split("\0") if path]

    async def diff_from(self, base: str, max_bytes: int = MAX_DIFF_BYTES) -> str:
        """The change from `base` to HEAD, as a unified diff: its first `max_bytes` and a line
        saying it was cut, since a worker decides how large it is."""
        diff, more = await self._runner.run_capped(
            ["diff", base, "HEAD"], cwd=self.path, max_bytes=max_bytes
        )
        return diff + (f"\n[... the diff goes on past {max_bytes} bytes ...]" if more else "")

    async def _present_or_tracked(self, paths: Sequence[str]) -> list[str]:
        """Those of `paths` that exist now or existed at HEAD (git refuses to add the rest)."""
        listed = await self._runner.run(["ls-files", "-z", "--", *paths], cwd=self.path)
        tracked = set(listed.stdout.split("\0"))
        return [path for path in paths if path in tracked or (self.path / path).exists()]

    async def remove(self) -> None:
        """Delete the worktree and its bookkeeping in the mirror; the commits stay in the mirror."""
        async with self._admin_lock:
            await remove_worktree(self._runner, self.mirror_path, self.path)


async def add_worktree(
    runner: GitRunner,
    *,
    mirror_path: Path,
    worktrees_root: Path,
    run_id: str,
    task_id: str,
    sha: str,
    admin_lock: asyncio.Lock,
) -> Worktree:
    """Check out `sha` of the mirror at `worktrees_root/{run_id}/{task_id}`, detached.

    What a crashed earlier attempt left at that path is discarded first. `admin_lock` is the
    mirror's: a `worktree prune` running beside a `worktree add` could drop the new worktree.
    """
    path = worktrees_root / check_id("run id", run_id) / check_id("task id", task_id)
    async with admin_lock:
        await remove_worktree(runner, mirror_path, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Detached, so fetching the mirror's branches never collides with a checkout.
        add = ["worktree", "add", "--quiet", "--detach", str(path), sha]
        await runner.run(add, cwd=mirror_path)
    return Worktree(
        path=path,
        mirror_path=mirror_path,
        run_id=run_id,
        task_id=task_id,
        base_sha=sha,
        runner=runner,
        admin_lock=admin_lock,
    )


async def remove_worktree(runner: GitRunner, mirror_path: Path, path: Path) -> None:
    """Remove the worktree at `path` if there is one, then forget worktrees that are gone.

    The caller holds the mirror's worktree lock.
    """
    # Twice forced: also removes a worktree locked by an `add` that crashed midway. It fails
    # harmlessly when there is none; whatever git does not know of is deleted below.
    remove = ["worktree", "remove", "--force", "--force", str(path)]
    await runner.run(remove, cwd=mirror_path, check=False)
    await asyncio.to_thread(delete_tree, path)
    await runner.run(["worktree", "prune"], cwd=mirror_path)


def delete_tree(path: Path) -> None:
    """Delete `path` and all inside it, also folders a command closed to its own user (`chmod
    000`, read-only folders of read-only files) and folders nested past the depth a walk holds
    open. What cannot be deleted is logged and left."""
    try:
        # Baton's own folder, named by Baton: only what lies inside it is the commands'.
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        tree.delete(parent, path.name)
    except OSError as error:
        logger.warning(
            "a worktree could not be deleted", extra={"path": str(path), "error": str(error)}
        )
    finally:
        os.close(parent)
