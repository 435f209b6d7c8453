"""What the setup command built with the network, carried to the run's later worktrees.

The setup command reaches the network only in a worktree of the default branch's untouched code
(CONTRACT §9). What it leaves there that git does not track (a virtualenv, `node_modules`, a
build folder) is kept once per run, and copied into each later worktree of the run (later tasks,
reviews, the final tests) before the setup command runs there offline, so it finds its
dependencies in place. Every worktree is shown at `/workspace`, so what setup built there keeps
working in another one.

Both copies are commands in the sandbox, never Baton reading the tree on the host: what the
setup made is the repository's doing, and a link in it must not lead Baton anywhere. Copies,
never links: a worker changes only its own copy, never the kept one or another task's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from bot.git.worktree import check_id, delete_tree, is_safe_id
from bot.sandbox import SHARED, CommandResult, Sandbox, SharedFolder

log = logging.getLogger(__name__)

FOLDER = "setups"
# Everything untracked (ignored files included), with its folders, as git lists it; made
# readable to all, since each worktree's commands run as a user of their own.
KEEP_COMMAND = (
    f"git ls-files -z --others --directory | xargs -0 -r cp -a --parents -t {SHARED} -- "
    f"&& chmod -R a+rX {SHARED}"
)
# The kept entries, never the worktree's own top folder (its owner is Baton).
RESTORE_COMMAND = f"find {SHARED} -mindepth 1 -maxdepth 1 -exec cp -a -n -t . -- {{}} +"


class SetupOutputs:
    """The kept setup outputs of one run, in `data_dir/setups/{run_id}`."""

    def __init__(self, data_dir: Path, run_id: str) -> None:
        self.root = data_dir / FOLDER
        self.folder = self.root / check_id("run id", run_id)

    async def keep(self, sandbox: Sandbox) -> None:
        """Keep what the setup left untracked in `sandbox`'s worktree, unless some worktree of
        the run kept its own first."""
        if await asyncio.to_thread(self.folder.exists):
            return
        partial = self.root / f".{self.folder.name}.{uuid.uuid4().hex}"
        await asyncio.to_thread(partial.mkdir, parents=True)
        try:
            copying = _with_folder(sandbox, SharedFolder(partial, writable=True))
            result = await copying.run(KEEP_COMMAND)
            if result.exit_code == 0:
                await asyncio.to_thread(_publish, partial, self.folder)
            else:
                log.warning("setup outputs not kept: %s", _said(result))
        finally:
            await asyncio.to_thread(delete_tree, partial)

    async def restore(self, sandbox: Sandbox) -> None:
        """Copy the kept outputs into `sandbox`'s worktree, leaving what is there untouched."""
        if not await asyncio.to_thread(self.folder.exists):
            return
        result = await _with_folder(sandbox, SharedFolder(self.folder)).run(RESTORE_COMMAND)
        if result.exit_code != 0:
            log.warning("setup outputs not restored: %s", _said(result))

    async def remove(self) -> None:
        """The kept outputs go, with any copy a crash left half made."""
        await asyncio.to_thread(_remove_kept, self.root, self.folder.name)


async def runs_with_outputs(data_dir: Path) -> list[str]:
    """The ids of the runs that have kept setup outputs."""
    return await asyncio.to_thread(_kept_runs, data_dir / FOLDER)


def _kept_runs(root: Path) -> list[str]:
    try:
        # A half-made copy is `.{run_id}.{random}`.
        names = {entry.name.removeprefix(".").split(".")[0] for entry in root.iterdir()}
    except FileNotFoundError:
        return []
    return sorted(name for name in names if is_safe_id(name))


def _remove_kept(root: Path, run_id: str) -> None:
    for folder in [root / run_id, *root.glob(f".{run_id}.*")]:
        delete_tree(folder)  # also what a setup left closed to its own user


def _with_folder(sandbox: Sandbox, shared: SharedFolder) -> Sandbox:
    return Sandbox(
        sandbox.worktree,
        limits=sandbox.limits,
        extra_read_only=sandbox.extra_read_only,
        shared=shared,
    )


def _publish(partial: Path, folder: Path) -> None:
    try:
        partial.rename(folder)  # atomic: the kept outputs are whole or absent
    except OSError:
        pass  # another worktree of the run kept its own first


def _said(result: CommandResult) -> str:
    return f"exit status {result.exit_code}, {result.output[-500:]!r}"
