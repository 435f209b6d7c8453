"""One worker attempt at one task: a worktree, a sandbox, a model with tools, a commit.

Everything an attempt does is recorded as CONTRACT §7 asks: each tool call with its arguments
and outcome, each model call with its tokens and cost (through the metered model), and the
attempt's status, plan, commit, diff stat and test result.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlmodel import Session

from bot.attempts import AttemptStopped, end_attempt, within_budget
from bot.codebase.edits import WriteSet, edit_tools
from bot.codebase.instructions import ROOT_FILES, read_instructions
from bot.codebase.snapshot import CommittedFile, committed_files
from bot.codebase.tools import read_only_tools
from bot.executor import check_fence
from bot.git import Commit
from bot.git.mirror import Mirror
from bot.git.worktree import Worktree
from bot.github.repo import GitHubError, PullRequest
from bot.github.untrusted import UntrustedFence, prepare_untrusted
from bot.llm.agent import Agent, AgentFailed, Finished, Finisher, Limits, Tool, ToolError
from bot.llm.types import Model, ModelFailed, ToolSpec, Turn, TurnRequest
from bot.plan.schema import PlanTask
from bot.sandbox import CommandResult, Sandbox, SandboxLimits
from bot.secrets import redact, redact_json
from bot.setups import SetupOutputs
from bot.store.db import Store
from bot.store.models import AttemptStatus, Task, TaskAttempt, ToolCall
from bot.store.types import utcnow
from bot.tracing import attempt_span
from bot.workers.roles import ROLES, FinishInput, Role, system_prompt, task_prompt, work_plan

CONTEXT_FILE_CHARS = 20_000
OUTCOME_CHARS = 2_000
LONG_LINE = 4_096  # read past the cut of a tool's outcome, for the secret check
# At the root, a contributing guide stands in for instructions for agents when there are none.
CONVENTION_FILES = (*ROOT_FILES, "CONTRIBUTING.md", "CONTRIBUTING.rst", "docs/CONTRIBUTING.md")
OPEN_PRS_SHOWN = 100  # enough to see what else is under way; the rest are counted


@dataclass(frozen=True)
class RepoCommands:
    """The repository's own commands (`.github/baton.yml`), run in the sandbox."""

    test: str
    lint: str | None = None
    setup: str | None = None


@dataclass(frozen=True)
class AttemptPlan:
    """Which attempt of which task, starting from which commit."""

    run_id: str
    task_row_id: int
    task: PlanTask
    number: int
    base_sha: str
    feedback: str | None = None
    # Only a worktree at the run's base commit (no worker's change in it) may reach the network,
    # and only for the setup command.
    setup_network: bool = False
    # The run's base commit: the repository's instructions are read there, where no worker
    # wrote them; None reads them at `base_sha`.
    run_base_sha: str | None = None


@dataclass
class AttemptResult:
    attempt_id: int
    status: AttemptStatus
    commit_sha: str | None = None
    finish: FinishInput | None = None
    error: str | None = None


@dataclass
class _Evidence:
    """What the attempt leaves behind for the reviewer."""

    tests: dict[str, Any] = field(default_factory=dict)
    first_reply: str | None = None
    model: str = ""


def describe_task(task: Task) -> PlanTask:
    """The stored task as the plan described it."""
    return PlanTask(
        id=task.key,
        title=task.title,
        role=task.role,
        description=task.description,
        depends_on=list(task.depends_on),
        files=list(task.files),
        context_files=list(task.context_files),
        acceptance=task.acceptance,
    )


class WorkerAttempt:
    """Runs one attempt; `await model_for(attempt_id)` gives the metered model recording it.

    `open_prs` gives the repository's open pull requests for the `list_open_prs` tool (such as
    `RepoClient.open_pull_requests`); without it the tool answers that there are none.
    """

    def __init__(
        self,
        store: Store,
        mirror: Mirror,
        commands: RepoCommands,
        model_for: Callable[[int], Awaitable[Model]],
        *,
        ticket: str = "",
        open_prs: Callable[[], Awaitable[Sequence[PullRequest]]] | None = None,
        limits: Limits | None = None,
        sandbox_limits: SandboxLimits | None = None,
        toolchains: Sequence[Path] = (),
        setup_outputs: SetupOutputs | None = None,
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.commands = commands
        self.model_for = model_for
        self.ticket = ticket
        self.open_prs = open_prs
        self.limits = limits or Limits(max_turns=40, wall_seconds=1800)
        self.sandbox_limits = sandbox_limits or SandboxLimits()
        self.toolchains = tuple(toolchains)  # read-only in the sandbox: interpreters, SDKs
        self.setup_outputs = setup_outputs  # what the run's online setup built, if kept

    async def run(self, plan: AttemptPlan) -> AttemptResult:
        role = ROLES[plan.task.role]
        with attempt_span(plan.run_id, plan.task.id, plan.task.role, plan.number) as span:
            attempt_id = await self.store.run(lambda session: _open_attempt(session, plan))
            if span is not None:
                span.set_attribute("baton.attempt.id", attempt_id)
            worktree = await self.mirror.add_worktree(plan.run_id, plan.task.id, plan.base_sha)
            try:
                return await self._work(plan, role, attempt_id, worktree)
            finally:
                await worktree.remove()

    async def _work(
        self, plan: AttemptPlan, role: Role, attempt_id: int, worktree: Worktree
    ) -> AttemptResult:
        # The mirror (no token is ever stored in it) lets git work inside, read-only.
        visible = (*self.toolchains, worktree.mirror_path)
        sandbox = Sandbox(worktree.path, limits=self.sandbox_limits, extra_read_only=visible)
        evidence = _Evidence()
        clock = _Clock(self.limits.wall_seconds)
        if self.commands.setup:
            await self._set_up(sandbox, self.commands.setup, plan.setup_network, clock)
        tools = self._tools(worktree.path, plan.task, role, sandbox, evidence)
        recorded = [_recorded(tool, self.store, plan.run_id, attempt_id) for tool in tools]
        model = _FirstReply(await self.model_for(attempt_id), evidence)
        evidence.model = model.name
        agent = Agent(
            model,
            system_prompt(role),
            recorded,
            [Finisher("finish", "Say the task is done.", FinishInput)],
            # The setup took its share of the attempt's time.
            limits=self.limits._replace(wall_seconds=clock.left()),
        )
        prompt = task_prompt(
            plan.task,
            await _context_files(worktree, plan.task),
            await _conventions(worktree, plan),
            plan.feedback,
        )
        try:
            finished = await within_budget(self.store, attempt_id, lambda: agent.run(prompt))
        except AttemptStopped as stopped:
            return AttemptResult(attempt_id, AttemptStatus.escalated, error=str(stopped))
        except (AgentFailed, ModelFailed) as failure:
            await self._close(attempt_id, AttemptStatus.failed, evidence, error=str(failure))
            return AttemptResult(attempt_id, AttemptStatus.failed, error=str(failure))
        return await self._finished(plan, attempt_id, worktree, finished, evidence)

    async def _set_up(self, sandbox: Sandbox, command: str, online: bool, clock: _Clock) -> None:
        """The setup command: online on the run's base commit, whose outputs are kept for the
        run; offline elsewhere, on the outputs kept."""
        outputs = self.setup_outputs
        if outputs is not None and not online:
            await outputs.restore(sandbox)
        setup = await sandbox.run(
            self.commands.setup or "", network=online, wall_seconds=clock.left()
        )
        if outputs is not None and online and setup.exit_code == 0:
            await outputs.keep(sandbox)

    async def _finished(
        self,
        plan: AttemptPlan,
        attempt_id: int,
        worktree: Worktree,
        finished: Finished,
        evidence: _Evidence,
    ) -> AttemptResult:
        said = FinishInput.model_validate(finished.value.model_dump())
        commit = await worktree.commit(plan.task.title, said.summary, paths=plan.task.files)
        await self._close(
            attempt_id,
            AttemptStatus.succeeded,
            evidence,
            said=said,
            commit_sha=commit.sha if commit else None,
            diff_stat=_stat(commit),
        )
        return AttemptResult(
            attempt_id, AttemptStatus.succeeded, commit.sha if commit else None, said
        )

    async def _close(
        self,
        attempt_id: int,
        status: AttemptStatus,
        evidence: _Evidence,
        *,
        said: FinishInput | None = None,
        commit_sha: str | None = None,
        diff_stat: dict[str, int] | None = None,
        error: str | None = None,
    ) -> None:
        def close(session: Session) -> None:
            check_fence(session)  # a taken-over attempt was closed already, by its new holder
            attempt = session.get(TaskAttempt, attempt_id)
            if attempt is None:
                return
            # What the worker said or its tests printed may hold a secret it wrote: kept redacted.
            attempt.work_plan = work_plan(redact(evidence.first_reply or ""))
            attempt.model = evidence.model[:255]
            attempt.tests = redact_json(evidence.tests)
            attempt.diff_stat = diff_stat or {}
            attempt.commit_sha = commit_sha
            if said is not None:
                attempt.summary, attempt.confidence, attempt.notes = (
                    redact(said.summary),
                    said.confidence,
                    redact(said.notes) if said.notes is not None else None,
                )
            end_attempt(session, attempt_id, status, error)

        await self.store.run(close)

    def _tools(
        self, root: Path, task: PlanTask, role: Role, sandbox: Sandbox, evidence: _Evidence
    ) -> list[Tool]:
        tools = read_only_tools(root)
        if role.writes:
            tools += edit_tools(root, WriteSet(task.files))
        tools += self._run_tools(sandbox, evidence)
        tools += self._context_tools()
        return [tool for tool in tools if tool.spec.name in role.tools]

    def _run_tools(self, sandbox: Sandbox, evidence: _Evidence) -> list[Tool]:
        commands = self.commands

        async def run_tests(arguments: Mapping[str, Any]) -> str:
            extra = str(arguments.get("args") or "")
            result = await sandbox.run(f"{commands.test} {extra}".strip())
            evidence.tests = _test_evidence(result)
            return result.as_json()

        async def run_command(arguments: Mapping[str, Any]) -> str:
            command = str(arguments.get("command") or "").strip()
            if not command:
                raise ToolError("run_command needs a command")
            return (await sandbox.run(command)).as_json()

        async def run_linter(arguments: Mapping[str, Any]) -> str:
            if not commands.lint:
                raise ToolError("this repository has no lint command (lint_command in baton.yml)")
            return (await sandbox.run(commands.lint)).as_json()

        return [
            Tool(RUN_TESTS, run_tests),
            Tool(RUN_COMMAND, run_command),
            Tool(RUN_LINTER, run_linter),
        ]

    def _context_tools(self) -> list[Tool]:
        ticket = self.ticket
        open_prs = self.open_prs

        async def get_ticket(arguments: Mapping[str, Any]) -> str:
            text = prepare_untrusted(ticket, markdown=False)  # the title, shown as is
            return json.dumps({"ticket": UntrustedFence().wrap("ticket", text)})

        async def list_open_prs(arguments: Mapping[str, Any]) -> str:
            if open_prs is None:
                return shown_pull_requests([])
            try:
                return shown_pull_requests(await open_prs())
            except GitHubError as error:
                raise ToolError(f"the open pull requests could not be read: {error}") from None

        return [Tool(GET_TICKET, get_ticket), Tool(LIST_OPEN_PRS, list_open_prs)]


def shown_pull_requests(pulls: Sequence[PullRequest]) -> str:
    """`list_open_prs`'s answer: number, head branch, head commit and draft flag of each pull
    request, newest first. A branch is named by whoever opened the pull request, so it is fenced
    (CONTRACT §9); titles and bodies are not shown at all."""
    fence = UntrustedFence()
    shown = [
        {
            "number": pull.number,
            "head_branch": fence.wrap(
                "branch", prepare_untrusted(pull.head_branch, markdown=False)
            ),
            "head_sha": pull.head_sha,
            "draft": pull.draft,
        }
        for pull in sorted(pulls, key=lambda pull: pull.number, reverse=True)[:OPEN_PRS_SHOWN]
    ]
    answer: dict[str, Any] = {"pull_requests": shown}
    if len(pulls) > len(shown):
        answer["not_shown"] = len(pulls) - len(shown)
    return json.dumps(answer)


def _schema(properties: Mapping[str, str], required: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            name: {"type": "string", "description": text} for name, text in properties.items()
        },
        "required": list(required),
        "additionalProperties": False,
    }


RUN_TESTS = ToolSpec(
    "run_tests",
    "Run the repository's tests in the sandbox; args are appended to the test command.",
    _schema({"args": "extra arguments, e.g. a test file"}),
)
RUN_COMMAND = ToolSpec(
    "run_command",
    "Run a shell command in the sandbox (no network, a time limit, output capped).",
    _schema({"command": "the command line"}, ["command"]),
)
RUN_LINTER = ToolSpec("run_linter", "Run the repository's linter in the sandbox.", _schema({}))
GET_TICKET = ToolSpec("get_ticket", "The issue this run works on, as text.", _schema({}))
LIST_OPEN_PRS = ToolSpec("list_open_prs", "The repository's open pull requests.", _schema({}))


def _open_attempt(session: Session, plan: AttemptPlan) -> int:
    check_fence(session)  # the holder that took the job over opens its own attempt
    attempt = TaskAttempt(
        task_id=plan.task_row_id,
        run_id=plan.run_id,
        number=plan.number,
        role=plan.task.role,
        input_summary=f"{plan.task.id}: {plan.task.title}"[:500],
        status=AttemptStatus.running,
        started_at=utcnow(),
        host=socket.gethostname()[:255],
        process=os.getpid(),
    )
    session.add(attempt)
    session.flush()
    assert attempt.id is not None
    return attempt.id


def _recorded(tool: Tool, store: Store, run_id: str, attempt_id: int) -> Tool:
    """The same tool, with each call stored: arguments, whether it worked, what it said."""
    counter = {"next": 0}

    async def run(arguments: Mapping[str, Any]) -> str:
        started = time.perf_counter()
        counter["next"] += 1
        sequence = counter["next"]
        try:
            outcome = await tool.run(arguments)
        except ToolError as error:
            await _store_call(
                store, run_id, attempt_id, sequence, tool, arguments, False, str(error), started
            )
            raise
        await _store_call(
            store, run_id, attempt_id, sequence, tool, arguments, True, outcome, started
        )
        return outcome

    return Tool(tool.spec, run)


async def _store_call(
    store: Store,
    run_id: str,
    attempt_id: int,
    sequence: int,
    tool: Tool,
    arguments: Mapping[str, Any],
    ok: bool,
    outcome: str,
    started: float,
) -> None:
    duration_ms = (time.perf_counter() - started) * 1000
    # A worker may write or read a secret; the database keeps where, never what.
    kept = await asyncio.to_thread(redact_json, dict(arguments))
    # Cut after redacting, so a secret's line that crosses the cut is still seen whole.
    said = (await asyncio.to_thread(redact, outcome[: OUTCOME_CHARS + LONG_LINE]))[:OUTCOME_CHARS]
    row = ToolCall(
        run_id=run_id,
        attempt_id=attempt_id,
        sequence=sequence,
        tool=tool.spec.name,
        arguments=kept,
        ok=ok,
        outcome=said,
        duration_ms=duration_ms,
    )
    await store.run(lambda session: session.add(row))


class _Clock:
    """The time left of an attempt's wall-clock limit (None: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self._deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        if self._deadline is None:
            return None
        # Never zero or less: a limit reached counts as reached by the next step, at once.
        return max(self._deadline - time.monotonic(), 0.001)


class _FirstReply:
    """Passes turns through, keeping the text of the first one: the worker's plan."""

    def __init__(self, model: Model, evidence: _Evidence) -> None:
        self.model = model
        self.evidence = evidence

    @property
    def name(self) -> str:
        return self.model.name

    async def turn(self, request: TurnRequest) -> Turn:
        turn = await self.model.turn(request)
        if self.evidence.first_reply is None:
            self.evidence.first_reply = turn.text
        return turn


def _test_evidence(result: CommandResult) -> dict[str, Any]:
    return {
        "command": result.command,
        "exit_code": result.exit_code,
        "passed": result.exit_code == 0,
        "timed_out": result.timed_out,
        "output_tail": result.output[-OUTCOME_CHARS:],
    }


def _stat(commit: Commit | None) -> dict[str, int]:
    if commit is None:
        return {}
    stat = commit.stat
    return {
        "files_changed": stat.files_changed,
        "insertions": stat.insertions,
        "deletions": stat.deletions,
    }


async def _context_files(worktree: Worktree, task: PlanTask) -> dict[str, str]:
    """The task's context files as committed at the attempt's base, each as its text or as a
    note saying what stands there instead (a link is never followed)."""
    found = await committed_files(
        worktree.mirror_path, worktree.base_sha, task.context_files, CONTEXT_FILE_CHARS
    )
    return {file.path: file.shown for file in found}


async def _conventions(worktree: Worktree, plan: AttemptPlan) -> list[CommittedFile]:
    """The repository's instructions at the run's base commit: the root's (the first of
    `CONVENTION_FILES` that is a file, after a note for each link or submodule met before it)
    and the nearest folder's above each file of the task's write set."""
    return await asyncio.to_thread(
        read_instructions,
        worktree.mirror_path,
        plan.run_base_sha or worktree.base_sha,
        plan.task.files,
        root_files=CONVENTION_FILES,
    )
