"""One bare mirror per repository under the data directory: cloned once, fetched after, pushed
to with a lease."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bot.git.auth import TokenProvider, secret_forms, token_environment
from bot.git.runner import GitError, GitOutput, GitRunner, failure
from bot.git.worktree import (
    Worktree,
    add_worktree,
    check_id,
    is_safe_id,
    pin_ref,
    remove_worktree,
    run_pins,
)

_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Branches and tags map one to one: the mirror's refs/heads are GitHub's branches.
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_PARTIAL = ".partial-"

MirrorUpdate = Literal["cloned", "fetched"]


@dataclass(frozen=True)
class ChangedEntry:
    path: str
    mode: str  # git's: 100644, 100755, 120000 (a link), 160000 (a submodule)
    object_id: str | None  # None: the path was deleted


class PushRejected(GitError):
    """A push to a run branch did not happen because it would drop someone's commits.

    Either GitHub's branch moved since `expected` (a person pushed to it), a rule on GitHub
    refused it, or the new commit does not descend from `expected`. Nothing was overwritten.
    """

    def __init__(
        self, message: str, *, command: str, branch: str, expected: str | None, reason: str
    ) -> None:
        super().__init__(message, command=command, stderr=reason)
        self.branch = branch
        self.expected = expected
        self.reason = reason


def split_full_name(full_name: str) -> tuple[str, str]:
    """`owner/repo` split in two, or a `ValueError` when it is not a GitHub repository name."""
    owner, _, repo = full_name.partition("/")
    if not _OWNER.fullmatch(owner) or not _REPO.fullmatch(repo) or repo in (".", ".."):
        raise ValueError(
            f"{full_name!r} is not a GitHub repository name: expected 'owner/repo' "
            "with letters, digits, '-', and in the repository also '_' and '.'"
        )
    return owner, repo


def check_sha(kind: str, value: str) -> str:
    if not _SHA.fullmatch(value):
        raise ValueError(f"{kind} {value!r} is not a full commit sha (40 or 64 lowercase hex)")
    return value


@dataclass
class _MirrorLocks:
    # Clone, fetch and push write the mirror's refs; one at a time.
    network: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Worktree add and prune must not interleave (prune could drop a half-added worktree), and
    # no fetch may see a worktree half added.
    worktrees: asyncio.Lock = field(default_factory=asyncio.Lock)


class Mirrors:
    """The mirrors of every repository Baton works on: `data_dir/mirrors/{owner}/{repo}.git`,
    with task worktrees in `data_dir/worktrees/{run_id}/{task_id}`.

    One instance per process: it holds each mirror's locks.
    """

    def __init__(self, data_dir: Path, github_url: str, runner: GitRunner | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.github_url = github_url.rstrip("/")
        self.runner = runner or GitRunner()
        self._locks: dict[Path, _MirrorLocks] = {}

    @property
    def worktrees_root(self) -> Path:
        """The folder holding one folder of worktrees per run."""
        return self.data_dir / "worktrees"

    def path_of(self, full_name: str) -> Path:
        """Where the mirror of `full_name` lives (it may not exist yet)."""
        owner, repo = split_full_name(full_name)
        return self.data_dir / "mirrors" / owner / f"{repo}.git"

    def mirror(self, full_name: str, token: TokenProvider) -> Mirror:
        """The mirror of `full_name`, using `token` for every network operation. No I/O."""
        owner, repo = split_full_name(full_name)
        path = self.path_of(full_name)
        return Mirror(
            full_name=full_name,
            path=path,
            url=f"{self.github_url}/{owner}/{repo}.git",
            base_url=self.github_url,
            worktrees_root=self.worktrees_root,
            token=token,
            runner=self.runner,
            locks=self._locks.setdefault(path, _MirrorLocks()),
        )

    async def runs_with_worktrees(self) -> list[str]:
        """The ids of the runs that have a folder of worktrees (other folders are not runs')."""
        folders = await asyncio.to_thread(_folders_in, self.worktrees_root)
        return [folder.name for folder in folders if is_safe_id(folder.name)]

    async def forget_run(self, mirror_path: Path, run_id: str) -> None:
        """The mirror forgets run `run_id`: its worktrees and its pinned commits."""
        locks = self._locks.setdefault(mirror_path, _MirrorLocks())
        async with locks.worktrees:
            folder = self.worktrees_root / check_id("run id", run_id)
            for worktree in await asyncio.to_thread(_folders_in, folder):
                await remove_worktree(self.runner, mirror_path, worktree)
            listed = ["for-each-ref", "--format=delete %(refname)", run_pins(run_id)]
            pins = (await self.runner.run(listed, cwd=mirror_path)).stdout
            if pins.strip():
                await self.runner.run(
                    ["update-ref", "--stdin"], cwd=mirror_path, stdin=pins.encode()
                )
            await self.runner.run(["worktree", "prune"], cwd=mirror_path)

    async def forget(self, full_name: str) -> bool:
        """Delete the mirror of `full_name`; False when there was none."""
        path = self.path_of(full_name)
        locks = self._locks.setdefault(path, _MirrorLocks())
        async with locks.network, locks.worktrees:
            if not path.exists():
                return False
            await asyncio.to_thread(shutil.rmtree, path)
        return True


class Mirror:
    """A bare copy of one GitHub repository whose branches are GitHub's as of the last update."""

    def __init__(
        self,
        *,
        full_name: str,
        path: Path,
        url: str,
        base_url: str,
        worktrees_root: Path,
        token: TokenProvider,
        runner: GitRunner,
        locks: _MirrorLocks,
    ) -> None:
        self.full_name = full_name
        self.path = path
        self.url = url
        self._base_url = base_url
        self._worktrees_root = worktrees_root
        self._token = token
        self._runner = runner
        self._locks = locks

    async def update(self) -> MirrorUpdate:
        """Clone the repository the first time, fetch it every later time; says which it did.

        Deleted branches disappear from the mirror. A clone cut short by a crash is discarded.
        """
        # The worktrees' lock too: see `take_bundle`.
        async with self._locks.network, self._locks.worktrees:
            if self.path.exists():
                await self._fetch()
                return "fetched"
            await self._clone()
            return "cloned"

    async def branch_head(self, branch: str) -> str | None:
        """The sha of `branch` as of the last update or push; None when there is no such branch."""
        ref = await self._branch_ref(branch)
        output = await self._runner.run(
            ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=self.path, check=False
        )
        return output.stdout.strip() if output.returncode == 0 else None

    async def descends(self, sha: str, ancestor: str) -> bool:
        """True when `sha` is `ancestor` or has it in its history."""
        args = ["merge-base", "--is-ancestor", ancestor, sha]
        return (await self._runner.run(args, cwd=self.path, check=False)).returncode == 0

    async def task_commits(self, since: str, until: str, run_id: str) -> list[tuple[str, str]]:
        """The commits after `since` up to `until` that run `run_id` made, oldest first, each
        with its `Baton-Task` trailer: how a restarted run finds pushes it did not record."""
        separator = "\x1f"
        trailers = "%(trailers:key=Baton-Run,valueonly,separator=,)"
        task = "%(trailers:key=Baton-Task,valueonly,separator=,)"
        log = await self._runner.run(
            [
                "log",
                "--reverse",
                f"--format=%H{separator}{trailers}{separator}{task}",
                f"{since}..{until}",
            ],
            cwd=self.path,
        )
        found = []
        for line in log.stdout.splitlines():
            sha, run, key = (line.split(separator) + ["", ""])[:3]
            if run.strip() == run_id and key.strip():
                found.append((sha, key.strip()))
        return found

    async def changed_entries(self, parent: str, sha: str) -> list[ChangedEntry]:
        """What commit `sha` changed from `parent`, path by path (renames as a delete and an
        add), with each new entry's mode and object; a deleted path has no object."""
        check_sha("parent", parent)
        check_sha("commit", sha)
        args = ["diff-tree", "-r", "-z", "--no-renames", "--raw", parent, sha]
        fields = (await self._runner.run(args, cwd=self.path)).stdout.split("\0")
        entries = []
        for header, path in zip(fields[0::2], fields[1::2], strict=False):
            _, mode, _, object_id, status = header.lstrip(":").split(" ")
            deleted = status == "D"
            entries.append(ChangedEntry(path, mode, None if deleted else object_id))
        return entries

    async def changed_paths(self, base: str, head: str) -> list[str]:
        """The paths that differ between two commits."""
        check_sha("base", base)
        check_sha("head", head)
        args = ["diff", "--name-only", "-z", "--no-renames", base, head]
        return [
            path
            for path in (await self._runner.run(args, cwd=self.path)).stdout.split("\0")
            if path
        ]

    async def added_text(self, base: str, head: str, max_bytes: int) -> str:
        """The change from `base` to `head` as a unified diff with no context lines, binary files
        shown as text; GitError when it is longer than `max_bytes` (a check that cannot see all
        of a change must not pass it)."""
        check_sha("base", base)
        check_sha("head", head)
        args = ["diff", "--text", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames"]
        args += ["-U0", base, head]
        diff, more = await self._runner.run_capped(args, cwd=self.path, max_bytes=max_bytes)
        command = shlex.join(["git", *args])
        if more:
            raise GitError(f"the change is over {max_bytes} bytes to check", command=command)
        # A capped run does not say how git ended: an empty answer must match an empty change.
        if not diff and await self.changed_paths(base, head):
            raise GitError(f"git showed no change from {base} to {head}", command=command)
        return diff

    async def commit_fields(self, sha: str) -> tuple[str, list[str], str]:
        """Commit `sha`'s tree sha, parents and whole message."""
        check_sha("commit", sha)
        layout = "--format=%T%x00%P%x00%B"
        shown = await self._runner.run(["show", "-s", layout, sha], cwd=self.path)
        tree, parents, message = shown.stdout.split("\0", 2)
        return tree, parents.split(), message

    async def conflicting_paths(self, ours: str, theirs: str) -> list[str]:
        """The files a merge of `theirs` into `ours` would leave conflicted; none when it
        merges cleanly (git 2.38's merge-tree: no worktree, nothing written but objects)."""
        check_sha("ours", ours)
        check_sha("theirs", theirs)
        args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs]
        merged = await self._runner.run(args, cwd=self.path, check=False)
        if merged.returncode == 0:
            return []
        if merged.returncode != 1:
            raise GitError(merged.stderr.strip(), command=shlex.join(["git", *args]))
        return list(dict.fromkeys(line for line in merged.stdout.splitlines()[1:] if line))

    async def resolve(self, revision: str) -> str:
        """The commit sha `revision` (a branch, tag or sha) names in the mirror."""
        args = ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}"]
        output = await self._runner.run(args, cwd=self.path, check=False)
        if output.returncode != 0:
            raise GitError(
                f"{revision!r} names no commit in the mirror of {self.full_name}: "
                "update the mirror, or pass a branch, tag or sha that exists",
                command=shlex.join(["git", *args]),
                returncode=output.returncode,
            )
        return output.stdout.strip()

    async def files_at(self, revision: str) -> list[str]:
        """Every file path tracked at `revision`, relative to the repository root."""
        sha = await self.resolve(revision)
        args = ["ls-tree", "-r", "-z", "--name-only", "--full-tree", sha]
        output = await self._runner.run(args, cwd=self.path)
        return [path for path in output.stdout.split("\0") if path]

    async def add_worktree(self, run_id: str, task_id: str, start: str) -> Worktree:
        """A new worktree for task `task_id` of run `run_id`, checked out at `start` (detached).

        Ids are checked to be safe path components (`ValueError` if not). Call `remove()` on
        the worktree when the task is done.
        """
        sha = await self.resolve(start)
        return await add_worktree(
            self._runner,
            mirror_path=self.path,
            worktrees_root=self._worktrees_root,
            run_id=run_id,
            task_id=task_id,
            sha=sha,
            admin_lock=self._locks.worktrees,
        )

    async def unpin(self, run_id: str, task_id: str | None = None) -> None:
        """Let the task's pinned commit go (`pin_ref`), or every one of the run's without
        `task_id`: its change is on the run branch now, or the run has ended."""
        if task_id is not None:
            await self._runner.run(["update-ref", "-d", pin_ref(run_id, task_id)], cwd=self.path)
            return
        listed = ["for-each-ref", "--format=%(refname)", run_pins(run_id)]
        pins = (await self._runner.run(listed, cwd=self.path)).stdout.split()
        commands = "".join(f"delete {ref}\n" for ref in pins)
        if commands:
            await self._runner.run(
                ["update-ref", "--stdin"], cwd=self.path, stdin=commands.encode()
            )

    async def has_commit(self, sha: str) -> bool:
        try:
            await self.resolve(sha)
        except GitError:
            return False
        return True

    async def bundle(self, run_id: str, task_id: str, since: str) -> bytes:
        """The task's pinned commit and what it adds to `since`, as a git bundle: how a commit
        made on one machine reaches the machine that integrates it."""
        with tempfile.TemporaryDirectory(prefix="baton-bundle-") as folder:
            path = Path(folder) / "task.bundle"
            ref = pin_ref(run_id, task_id)
            await self._runner.run(["bundle", "create", str(path), ref, f"^{since}"], cwd=self.path)
            return path.read_bytes()

    async def take_bundle(self, run_id: str, task_id: str, bundle: bytes) -> None:
        """The task's commit from a bundle made on another machine, pinned as if made here."""
        with tempfile.TemporaryDirectory(prefix="baton-bundle-") as folder:
            path = Path(folder) / "task.bundle"
            path.write_bytes(bundle)
            ref = pin_ref(run_id, task_id)
            # A fetch reads every worktree's HEAD, and `git worktree add` writes a placeholder
            # HEAD (all zeros) for a moment: seen, it failed the fetch with "bad object".
            async with self._locks.worktrees:
                await self._runner.run(
                    ["fetch", "--quiet", str(path), f"+{ref}:{ref}"], cwd=self.path
                )

    async def push(self, branch: str, sha: str, expected: str | None) -> None:
        """Set GitHub's `branch` to `sha`, only if it is still at `expected` (None: must not exist).

        `sha` must descend from `expected`, so the branch only moves forward. Pushing a sha the
        branch already has is a no-op, so a push repeated after a crash is harmless. Raises
        `PushRejected` when the push would drop commits; the branch is then left as it was.
        """
        ref = await self._branch_ref(branch)
        check_sha("commit", sha)
        if expected is not None:
            check_sha("expected sha", expected)
            await self._check_descends(branch, sha, expected)
        lease = f"--force-with-lease={ref}:{expected or ''}"
        args = ["push", "--porcelain", lease, "origin", f"{sha}:{ref}"]
        async with self._locks.network:
            output = await self._network(args, cwd=self.path, check=False)
            if output.returncode != 0:
                reason = _rejection(output.stdout, ref)
                if reason is None:
                    raise failure(shlex.join(["git", *args]), output)
                remote = await self._remote_head(ref)
                if remote != sha:
                    command = shlex.join(["git", *args])
                    raise self._rejected(command, branch, expected, reason, remote)
            await self._runner.run(["update-ref", ref, sha], cwd=self.path)

    async def _clone(self) -> None:
        await asyncio.to_thread(_remove_partial_clones, self.path)
        partial = self.path.with_name(f".{self.path.name}{_PARTIAL}{uuid.uuid4().hex}")
        partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            args = ["clone", "--bare", "--quiet", "--", self.url, str(partial)]
            await self._network(args, cwd=partial.parent)
            for refspec in _REFSPECS:
                args = ["config", "--add", "remote.origin.fetch", refspec]
                await self._runner.run(args, cwd=partial)
            # A rename is atomic: the mirror path holds a complete clone or nothing.
            partial.rename(self.path)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, partial, ignore_errors=True)
            raise

    async def _fetch(self) -> None:
        configured = await self._runner.run(
            ["config", "--get", "remote.origin.url"], cwd=self.path, check=False
        )
        if configured.stdout.strip() != self.url:
            # BATON_GITHUB_URL changed since the clone.
            await self._runner.run(["config", "remote.origin.url", self.url], cwd=self.path)
        await self._network(["fetch", "--prune", "--quiet", "origin"], cwd=self.path)

    async def _remote_head(self, ref: str) -> str | None:
        output = await self._network(["ls-remote", "origin", ref], cwd=self.path)
        first = output.stdout.split()
        return first[0] if first else None

    async def _check_descends(self, branch: str, sha: str, expected: str) -> None:
        args = ["merge-base", "--is-ancestor", expected, sha]
        output = await self._runner.run(args, cwd=self.path, check=False)
        if output.returncode == 1:
            raise PushRejected(
                f"refusing to push {sha[:12]} to branch {branch!r} of {self.full_name}: it does "
                f"not descend from {expected[:12]}, so the push would drop commits; build on "
                "the branch's head instead",
                command=shlex.join(["git", *args]),
                branch=branch,
                expected=expected,
                reason="not a fast-forward",
            )
        if output.returncode != 0:
            raise GitError(
                f"cannot tell whether {sha[:12]} descends from {expected[:12]}: "
                f"{output.stderr or '-'}; update the mirror so that it holds both commits",
                command=shlex.join(["git", *args]),
                stderr=output.stderr,
                returncode=output.returncode,
            )

    def _rejected(
        self, command: str, branch: str, expected: str | None, reason: str, remote: str | None
    ) -> PushRejected:
        now = f"it is now at {remote[:12]}" if remote else "it no longer exists"
        if reason == "stale info" and expected:
            cause = (
                f"the branch moved since it was at {expected[:12]} ({now}): someone pushed to it"
            )
            todo = "Baton does not overwrite that; update the mirror and build on the new head"
        elif reason == "stale info":
            cause = f"the branch already exists ({now}), though Baton expected to create it"
            todo = "update the mirror and build on the branch's head"
        else:
            cause = f"GitHub refused it ({reason}; {now})"
            todo = "check the branch protection rules for this branch"
        return PushRejected(
            f"push to branch {branch!r} of {self.full_name} was rejected: {cause}. {todo}",
            command=command,
            branch=branch,
            expected=expected,
            reason=reason,
        )

    async def _branch_ref(self, branch: str) -> str:
        ref = f"refs/heads/{branch}"
        valid = await self._runner.run(["check-ref-format", ref], check=False)
        if valid.returncode != 0 or branch.startswith("-"):
            raise ValueError(f"{branch!r} is not a valid git branch name")
        return ref

    async def _network(self, args: Sequence[str], *, cwd: Path, check: bool = True) -> GitOutput:
        """Run a command that talks to GitHub, with a fresh token in its environment only."""
        token = await self._token()
        return await self._runner.run(
            args,
            cwd=cwd,
            environment=token_environment(self._base_url, token),
            secrets=secret_forms(token),
            check=check,
        )


def _rejection(porcelain: str, ref: str) -> str | None:
    """The reason `git push --porcelain` gives for refusing `ref`, e.g. 'stale info'."""
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        refs, _, summary = rest.partition("\t")
        if flag == "!" and refs.endswith(f":{ref}"):
            reason = re.search(r"\((.*)\)", summary)
            return reason.group(1) if reason else summary
    return None


def _folders_in(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if entry.is_dir())
    except FileNotFoundError:
        return []


def _remove_partial_clones(path: Path) -> None:
    for leftover in path.parent.glob(f".{path.name}{_PARTIAL}*"):
        shutil.rmtree(leftover, ignore_errors=True)
