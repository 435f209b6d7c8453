"""The orchestrator's review of one attempt, from evidence gathered first: the diff, the
repository's tests run on the attempt's commit, and what the worker said."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from bot.llm.agent import Agent, Finisher, Limits, Tool
from bot.llm.types import Model
from bot.plan.schema import PlanTask
from bot.sandbox import CommandResult
from bot.workers.roles import FinishInput

DIFF_CHARS = 40_000
REVIEW_TOOLS = frozenset({"read_file", "search"})

REVIEW_SYSTEM = """\
You review one task's change for Baton before it joins the pull request. Judge it against the
task's acceptance line and the evidence: the diff, the test run, the worker's summary. Read files
when the diff is not enough. Finish with submit_review:
- accept: the change does what the task asks, stays within its files, and the tests pass;
- revise: it can be fixed by the same worker; say exactly what to change in feedback;
- escalate: a person must decide (the task is unclear, impossible, or unsafe); say why.
"""


class ReviewVerdict(BaseModel):
    """`submit_review` (CONTRACT §6)."""

    verdict: Literal["accept", "revise", "escalate"]
    feedback: str = Field(description="for revise: what to change; otherwise a short reason")
    new_tasks: list[PlanTask] | None = None


def review_prompt(
    task: PlanTask, finish: FinishInput, diff: str, tests: CommandResult | None
) -> str:
    shown = diff if len(diff) <= DIFF_CHARS else diff[:DIFF_CHARS] + "\n[... diff cut ...]"
    parts = [
        f"Task {task.id}: {task.title}",
        task.description,
        f"Acceptance: {task.acceptance}",
        "Files it may write: " + (", ".join(task.files) or "none"),
        f"The worker's summary (confidence {finish.confidence:.2f}): {finish.summary}",
    ]
    if finish.notes:
        parts.append(f"The worker's notes: {finish.notes}")
    parts += ["<diff>", shown or "(no change)", "</diff>"]
    if tests is not None:
        parts += ["<tests>", tests.as_json(), "</tests>"]
    return "\n".join(parts)


async def review(
    model: Model,
    tools: list[Tool],
    task: PlanTask,
    finish: FinishInput,
    diff: str,
    tests: CommandResult | None,
) -> ReviewVerdict:
    """The reviewer's verdict; AgentFailed or ModelFailed when it cannot give one."""
    agent = Agent(
        model,
        REVIEW_SYSTEM,
        [tool for tool in tools if tool.spec.name in REVIEW_TOOLS],
        [Finisher("submit_review", "Give the verdict.", ReviewVerdict)],
        limits=Limits(max_turns=15),
    )
    finished = await agent.run(review_prompt(task, finish, diff, tests))
    return ReviewVerdict.model_validate(finished.value.model_dump())
