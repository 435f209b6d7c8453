"""A worker attempt run by hand, as the executor would start one: a store on each database, a
mirror of the GitHub double's repository, a task row, and the attempt talking to the model
double through the real Anthropic SDK. A pytest plugin (see conftest.py) for the `store` and
`mirror` fixtures."""

from __future__ import annotations

import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic
import pytest
import sqlalchemy as sa

from bot.git import Mirror, Mirrors
from bot.github.client import GitHubApp, GitHubTuning
from bot.github.repo import PullRequest
from bot.github.scopes import PLAN, TokenScope
from bot.llm.anthropic_adapter import AnthropicModel
from bot.llm.budget import Budget, BudgetLimits
from bot.llm.metered import MeteredModel
from bot.llm.pricing import PriceTable
from bot.llm.recording import StoreRecorder
from bot.llm.types import Model
from bot.plan.schema import PlanTask
from bot.settings import Settings
from bot.store.db import Store
from bot.store.models import PlanRevision, Run, Task
from bot.workers.attempt import AttemptPlan, RepoCommands, WorkerAttempt
from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, as_app
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble, ModelReply, ScriptedToolCall
from tests.support import REPOSITORY_TESTS

RUN_ID = "run0123456789abc"
TESTS = RepoCommands(test=REPOSITORY_TESTS)


def call(name: str, **arguments: Any) -> ScriptedToolCall:
    return ScriptedToolCall(name, arguments)


@pytest.fixture
def store(engine: sa.Engine, database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.close()


@pytest.fixture
async def mirror(github: GitHubDouble, tmp_path: Path) -> Mirror:
    app = github_app(github)
    mirror = Mirrors(tmp_path / "data", github.url).mirror(
        REPOSITORY, lambda: app.token(TokenScope(INSTALLATION_ID, REPOSITORY, PLAN))
    )
    await mirror.update()
    return mirror


def add_task(store: Store, task: PlanTask) -> int:
    with store.session() as session:
        if session.get(Run, RUN_ID) is None:
            session.add(
                Run(id=RUN_ID, repository_id=712345678, repository=REPOSITORY, issue_number=42)
            )
            session.flush()
            session.add(PlanRevision(run_id=RUN_ID, number=1, plan={}))
            session.flush()
        row = Task(
            run_id=RUN_ID,
            revision_id=1,
            key=task.id,
            title=task.title,
            role=task.role,
            files=task.files,
            context_files=task.context_files,
        )
        session.add(row)
        session.commit()
        assert row.id is not None
        return row.id


def worker(
    store: Store,
    mirror: Mirror,
    models: ModelDouble,
    task_row: int,
    commands: RepoCommands = TESTS,
    ticket: str = "",
    open_prs: Callable[[], Awaitable[Sequence[PullRequest]]] | None = None,
) -> WorkerAttempt:
    async def model_for(attempt_id: int) -> Model:
        client = anthropic.AsyncAnthropic(base_url=models.url, api_key="test", max_retries=0)
        recorder = StoreRecorder(store, "implementer", RUN_ID, task_row, attempt_id)
        model = AnthropicModel("claude-sonnet-4-6", client)
        return MeteredModel(model, PriceTable(), Budget(BudgetLimits()), recorder)

    # The test suite's own Python (and its pytest) stands in for the repository's toolchain.
    toolchains = sorted({Path(sys.prefix), Path(sys.base_prefix)})
    return WorkerAttempt(
        store, mirror, commands, model_for, ticket=ticket, open_prs=open_prs, toolchains=toolchains
    )


def github_app(github: GitHubDouble) -> GitHubApp:
    return GitHubApp(as_app(Settings(_env_file=None), github), GitHubTuning(write_interval=0.0))  # type: ignore[call-arg]


async def first_prompt(
    store: Store,
    mirror: Mirror,
    task: PlanTask,
    commands: RepoCommands = TESTS,
    *,
    run_base_sha: str | None = None,
) -> tuple[str, bytes]:
    """The first user message a worker attempt at `task` (on `main`, in a run that began at
    `run_base_sha`) sends its model, and every request's bytes; the model finishes at once."""
    await mirror.update()
    task_row = add_task(store, task)
    base = await mirror.resolve("main")
    script = [ModelReply("- Nothing to do", [call("finish", summary="x", confidence=0.5)])]
    with ModelDouble(script) as models:
        attempt = worker(store, mirror, models, task_row, commands)
        plan = AttemptPlan(RUN_ID, task_row, task, 1, base, run_base_sha=run_base_sha)
        result = await attempt.run(plan)
    assert result.status == "succeeded", result.error
    prompt: str = models.calls[0].json["messages"][0]["content"][0]["text"]
    return prompt, b"".join(recorded.body for recorded in models.calls)


def fenced(prompt: str, kind: str, attributes: str = "") -> str:
    """The text the prompt gives inside its untrusted fence of `kind` (and `attributes`)."""
    labels = f'kind="{kind}"' + (f" {attributes}" if attributes else "")
    found = re.search(rf"<(untrusted-[0-9a-f]+) {re.escape(labels)}>\n(.*?)\n</\1>", prompt, re.S)
    assert found is not None, f"no {labels} fence in the prompt"
    return found[2]
