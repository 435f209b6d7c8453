"""Who works a run: the plan's tasks in parallel (orchestrated) or one agent with the whole issue.

A run's mode is chosen twice at most, and each choice is stored with its reason:
- when the run starts, from the repository's config: `mode: single` ("config"), or a draw below
  `baseline_share` ("baseline"); the draw happens once, in the transaction that creates the run,
  so a restart or a second process never draws again;
- when a person approves the plan: `/approve-plan single` ("command"), or `mode: auto` with a
  plan that is a chain ("auto"), since a chain gains nothing from several workers.

One agent gets a plan of its own: a single implementer task with the whole issue, the same tools,
sandbox, review and budgets as any task. The planner's plan stays as what the agent may follow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from bot.config import RepoConfig
from bot.github.untrusted import UntrustedFence, prepare_untrusted
from bot.plan.schema import Plan, PlanTask
from bot.scheduler import TaskView, remaining_path
from bot.store.models import RunMode

SINGLE_TASK = "T1"
SINGLE_SOURCE = "single"  # the plan revision's source for the one agent's plan
TITLE_CHARACTERS = 120  # a plan task's title limit
ISSUE_BODY_CHARACTERS = 30_000  # as much of the body as the planner is shown


class ModeChoice(NamedTuple):
    mode: RunMode
    reason: str  # "default", "config", "command", "auto" or "baseline"


ORCHESTRATED = ModeChoice(RunMode.orchestrated, "default")


def mode_at_start(config: RepoConfig, draw: float) -> ModeChoice:
    """The mode a new run starts with; `draw` is uniform in [0, 1), drawn for this run."""
    if config.mode == "single":
        return ModeChoice(RunMode.single, "config")
    if draw < config.baseline_share:
        return ModeChoice(RunMode.single, "baseline")
    if config.mode == "orchestrated" and config.baseline_share > 0:
        return ModeChoice(RunMode.orchestrated, "baseline")  # drawn, and the draw said so
    return ORCHESTRATED


def mode_at_approval(
    started: ModeChoice, config: RepoConfig, plan: Plan, *, asked_single: bool
) -> ModeChoice:
    """The mode an approved plan is worked in, given the run's mode so far."""
    if asked_single:
        return ModeChoice(RunMode.single, "command")
    if started.mode == RunMode.single:
        return started
    if config.mode == "auto" and is_chain(plan):
        return ModeChoice(RunMode.single, "auto")
    return started


def is_chain(plan: Plan) -> bool:
    """True when no two of the plan's tasks could ever run at once: its longest chain of
    dependencies holds every task (one task is a chain too)."""
    views = [
        TaskView(key=task.id, state="pending", depends_on=tuple(task.depends_on), files=())
        for task in plan.tasks
    ]
    try:
        longest = max(remaining_path(views).values())
    except ValueError:
        return False  # a cycle: no chain, and the plan's check refuses it anyway
    return round(longest) == len(plan.tasks)


def single_agent_plan(
    plan: Plan, issue_number: int, issue_title: str, issue_body: str = ""
) -> Plan:
    """One implementer task for the whole issue: it may write every file the plan's tasks
    would, reads what they would read, is given the issue's title and body fenced as untrusted
    text (as the planner saw them), and is told the plan's steps as guidance."""
    title = f"Resolve #{issue_number}: {' '.join(issue_title.split())}"
    steps = "\n".join(f"- {task.id} ({task.role}): {task.title}" for task in plan.tasks)
    fence = UntrustedFence()
    description = "\n".join(
        [
            f"Work the whole of issue #{issue_number} yourself. "
            "Its title and body, as written on GitHub:",
            fence.wrap("issue-title", prepare_untrusted(issue_title, 500, markdown=False)),
            fence.wrap("issue-body", prepare_untrusted(issue_body, ISSUE_BODY_CHARACTERS)),
            f"The planner's outline, to follow or improve on:\n{plan.summary}\n{steps}",
        ]
    )
    acceptance = "\n".join(f"- {task.acceptance}" for task in plan.tasks)
    task = PlanTask(
        id=SINGLE_TASK,
        title=_cut(title, TITLE_CHARACTERS),
        role="implementer",
        description=description,
        files=_union(task.files for task in plan.tasks),
        context_files=_union(task.context_files for task in plan.tasks),
        acceptance=f"Everything the plan's tasks asked for:\n{acceptance}",
        effort=None,
    )
    return Plan(summary=plan.summary, tasks=[task])


def _union(groups: Iterable[list[str]]) -> list[str]:
    """Every path once, in the order first named."""
    return list(dict.fromkeys(path for group in groups for path in group))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
