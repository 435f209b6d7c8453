"""What a step of an executing run works with: the run, its repository's client and mirror, its
configuration and commands, and the models its tasks use under their budgets."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from bot.config import RepoConfig
from bot.disk import MIB
from bot.executor import JobContext
from bot.git import GitError, Mirror
from bot.github.repo import RepoClient
from bot.github.scopes import EXECUTE
from bot.llm.budget import Budget, InFlight
from bot.llm.metered import MeteredModel
from bot.llm.recording import StoreRecorder, run_spend, task_spend
from bot.llm.registry import model_name_for
from bot.llm.types import Model
from bot.planning import (
    budget_limits,
    day_cap,
    load_run,
    repo_client,
    run_scope,
    updated_mirror,
)
from bot.runs.progress import chosen_models
from bot.sandbox import CommandResult, Sandbox, SandboxLimits
from bot.settings import Settings
from bot.setups import SetupOutputs
from bot.store.models import Run, Task
from bot.workers.attempt import RepoCommands

log = logging.getLogger(__name__)

TEST_COMMANDS = (
    ("pyproject.toml", "python3 -m pytest -q"),
    ("setup.py", "python3 -m pytest -q"),
    ("package.json", "npm test"),
    ("go.mod", "go test ./..."),
    ("Cargo.toml", "cargo test"),
)
# The model calls under way per run in this process, so that parallel attempts of one run
# share its budget's view of what is being spent.
_IN_FLIGHT: dict[str, InFlight] = {}


def sandbox_limits(settings: Settings) -> SandboxLimits:
    """The sandbox's limits, with the data disk's floor and the networks the operator set."""
    return SandboxLimits(
        min_free_disk_bytes=settings.min_free_disk_mb * MIB,
        allowed_networks=settings.sandbox_allowed_networks,
    )


def default_test_command(files: Sequence[str]) -> str:
    """The obvious test command for a repository, from the files at its root."""
    present = set(files)
    return next((command for marker, command in TEST_COMMANDS if marker in present), "true")


@dataclass
class Workspace:
    context: JobContext
    run: Run
    repo: RepoClient
    mirror: Mirror
    config: RepoConfig
    commands: RepoCommands

    @property
    def setup_outputs(self) -> SetupOutputs:
        return SetupOutputs(self.context.integrations.mirrors.data_dir, self.run.id)

    @property
    def branch(self) -> str:
        return self.run.branch or ""

    @property
    def head(self) -> str:
        """Where the run branch stands as this run last recorded it."""
        return self.run.head_sha or self.run.base_sha or ""

    async def tests_on(self, path: Path) -> CommandResult | None:
        """The repository's tests in a sandbox on `path`, its setup first (offline: a worker's
        change is in this tree, and its setup script may be the worker's too)."""
        settings = self.context.settings
        sandbox = Sandbox(
            path,
            limits=sandbox_limits(settings),
            extra_read_only=[*settings.sandbox_toolchains, self.mirror.path],
        )
        if self.commands.setup:
            await self.setup_outputs.restore(sandbox)
            await sandbox.run(self.commands.setup, network=False)
        return await sandbox.run(self.commands.test)

    async def let_go_of_pins(self, key: str | None = None) -> None:
        """Unpin the task's commit, or all of the run's: best effort, since a pin left behind
        costs a little disk and the work it kept is on the branch or no longer wanted."""
        try:
            await self.mirror.unpin(self.run.id, key)
        except GitError as error:
            log.warning("pins of run %s (%s) stay: %s", self.run.id, key or "all tasks", error)

    async def model(self, task: Task, attempt_id: int, *, reviewer: bool = False) -> Model:
        """The worker's (or the reviewer's) model, metered against what the task and run spent."""
        context, run_id = self.context, self.run.id
        name = model_name_for(
            "orchestrator" if reviewer else task.role, context.settings, chosen_models(self.config)
        )
        prices = context.integrations.prices.with_overrides(self.config.price_overrides())
        role = "reviewer" if reviewer else task.role
        recorder = StoreRecorder(context.store, role, run_id, task.id, attempt_id)

        async def run_spent() -> float:
            return await context.store.run(lambda session: run_spend(session, run_id))

        def spent(session: Session) -> Budget:
            return Budget(
                budget_limits(context, self.config),
                task_spend(session, task.id or 0),
                run_spend(session, run_id),
                run_spent=run_spent,
                in_flight=_IN_FLIGHT.setdefault(run_id, InFlight()),
                daily=day_cap(context),
            )

        budget = await context.store.run(spent)
        return MeteredModel(context.integrations.model_factory(name), prices, budget, recorder)


async def open_workspace(context: JobContext, run_id: str, *, fetch: bool = False) -> Workspace:
    """The run's workspace, its mirror holding the run's head commit; with `fetch`, the mirror
    is brought up to date from GitHub first."""
    run = await load_run(context, run_id)
    if fetch:
        mirror = await updated_mirror(context, run, EXECUTE)
    else:
        mirror = context.integrations.mirror(run_scope(run, EXECUTE))
        await _holding(mirror, run.head_sha or run.base_sha)
    repo = repo_client(context, run, EXECUTE)
    config = RepoConfig.model_validate(run.config)
    base = run.base_sha or await mirror.resolve((await repo.repository()).default_branch)
    files = await mirror.files_at(base)
    commands = RepoCommands(
        test=config.test_command or default_test_command(files),
        lint=config.lint_command,
        setup=config.setup_command,
    )
    return Workspace(context, run, repo, mirror, config, commands)


async def _holding(mirror: Mirror, sha: str | None) -> None:
    """The mirror holds commit `sha`: fetched when another process made it, cloned when this
    process (with a data directory of its own) never mirrored the repository."""
    if mirror.path.exists() and (sha is None or await mirror.has_commit(sha)):
        return
    await mirror.update()
