"""The first half of a run: a labelled issue becomes a checked plan in the status comment.

Each step is safe to repeat: a job that dies halfway runs again from the run's recorded state,
finds its status comment by marker and adds no second revision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from bot import runs
from bot.codebase.context import planner_context, tracked_files
from bot.codebase.instructions import instructions_text, read_instructions
from bot.codebase.tools import read_only_tools
from bot.config import RepoConfig
from bot.executor import JobContext
from bot.git import Mirror, Worktree
from bot.github.repo import IssueThread, RepoClient
from bot.github.scopes import PLAN, Permissions, TokenScope
from bot.github.untrusted import UNTRUSTED_RULE, UntrustedFence, prepare_untrusted
from bot.llm.agent import Agent, AgentFailed, Finisher, FinishRejected, Limits
from bot.llm.budget import Budget, BudgetExceeded, BudgetLimits, DailyCap
from bot.llm.metered import MeteredModel
from bot.llm.recording import StoreRecorder, daily_cap, run_spend
from bot.llm.registry import model_name_for
from bot.llm.types import Model, ModelFailed
from bot.plan.render import (
    estimate_cost,
    markdown_text,
    plan_length_problem,
    plan_yaml,
    render_plan,
    render_problems,
    single_agent_cost,
    unpriced_models,
)
from bot.plan.schema import Plan
from bot.plan.validate import PlanCheck, PlanRules, check_plan, writes_protected
from bot.runs import lifecycle
from bot.store.models import PlanRevision, Run, RunState, TimelineEvent
from bot.store.types import utcnow

log = logging.getLogger(__name__)

PLANNER_SYSTEM = (
    """\
You are the planner of Baton, a GitHub App that turns an issue into a pull request. Worker models
will carry out your plan, one task each, in dependency order and in parallel where tasks are
independent. Read the issue, then check the files and symbols you rely on with the tools before
you commit to a plan. Finish by calling submit_plan with the plan.

How to cut the work into tasks:
- A task is one meaningful change a reviewer can judge on its own: no task smaller than that.
- Use as few tasks as the work needs, and never more than {max_tasks}.
- Put blocking work first; later tasks depend on it (depends_on).
- Make independent work separate tasks with separate write sets (files), so they can run at once.
- files is the write set: every file the task may change or create. context_files are files the
  worker should read first. Name only files that exist, or new files in existing folders.
- Roles: implementer (changes code), test_writer (adds or changes tests), refactorer (restructures
  without changing behaviour), static_analyst (reads and runs the linter; writes nothing).
- acceptance says how a reviewer knows the task is done.
- effort sizes the task from 1 (a few lines) to 5 (a large change): the longest chain of effort
  starts first, so size the tasks against each other.
- The plan is shown whole in one GitHub comment for a person to approve: keep descriptions and
  acceptance lines to what a worker needs.

"""
    + UNTRUSTED_RULE
    + "\n"
)
PLAN_COMMANDS = ("/approve-plan", "/revise-plan <feedback>", "/edit-plan", "/cancel")
UNTRUSTED_ISSUE_LIMIT = 30_000
PLAN_REPAIR_ROUNDS = 2
REVISION_REQUESTED = "plan.revision_requested"
PLAN_REVISED = "plan.revised"


@dataclass(frozen=True)
class Planned:
    plan: Plan
    check: PlanCheck


def run_scope(run: Run, permissions: Permissions) -> TokenScope:
    """The token scope of a step of `run`: its repository alone, with the step's permissions."""
    if run.installation_id is None:
        raise LookupError(f"run {run.id} has no installation")
    return TokenScope(run.installation_id, run.repository, permissions)


def repo_client(context: JobContext, run: Run, permissions: Permissions = PLAN) -> RepoClient:
    """The run's repository on GitHub, with a token for it alone holding `permissions`: the
    step's own set (`bot.github.scopes`); the default reads and speaks on the issue only."""
    return context.integrations.repo_client(run_scope(run, permissions))


async def updated_mirror(context: JobContext, run: Run, permissions: Permissions = PLAN) -> Mirror:
    """The run's repository mirror, fetched now with a token for it alone holding
    `permissions`; the default can fetch but not push."""
    mirror = context.integrations.mirror(run_scope(run, permissions))
    await mirror.update()
    return mirror


def plan_rules(config: RepoConfig) -> PlanRules:
    return PlanRules(max_tasks=config.max_tasks, protected_paths=tuple(config.protected_paths))


async def load_run(context: JobContext, run_id: str) -> Run:
    def load(session: Session) -> Run:
        run = session.get(Run, run_id)
        if run is None:
            raise LookupError(f"run {run_id} does not exist")
        session.expunge(run)
        return run

    return await context.store.run(load)


async def plan_run(context: JobContext, run_id: str) -> None:
    """Job: a run in `planning` gets a new plan revision, or ends naming what was wrong."""
    run = await load_run(context, run_id)
    if run.state != RunState.planning:
        return  # planned already, or ended: what it shows was queued with its state
    config = RepoConfig.model_validate(run.config)
    repo = repo_client(context, run)
    await repo.react("eyes", issue=run.issue_number)
    try:
        planned = await _plan(context, run, repo, config)
    except FinishRejected as rejected:
        title = f"The plan stayed invalid after {PLAN_REPAIR_ROUNDS} rounds of repair"
        problems = render_problems(title, rejected.problems)
        await _fail(context, run, "the plan stayed invalid", problems, config)
        return
    except (AgentFailed, ModelFailed) as failure:
        # The provider's own words may hold anything: they go to the log, not to the issue.
        log.warning("planning run %s failed: %s", run.id, failure)
        reason = planning_failure(failure)
        failed = render_problems("Planning failed", [f"{reason}; Baton's log has the details"])
        await _fail(context, run, reason, failed, config)
        return
    except BudgetExceeded as exceeded:
        # Baton's own words, numbers and setting names only: fit for the issue.
        stopped = render_problems("Planning stopped by a budget", [str(exceeded)])
        await _fail(context, run, f"budget: {exceeded}", stopped, config)
        return
    await publish_revision(context, run, config, planned, source="planner")


async def _fail(context: JobContext, run: Run, reason: str, shown: str, config: RepoConfig) -> None:
    """The run ends `failed`; its status comment shows `shown` and how to start again."""
    text = f"{shown}\n{start_again(config.label)}\n"
    await context.store.run(
        lambda session: lifecycle.end_run(
            session, run.id, RunState.failed, reason, data={lifecycle.STATUS_TEXT: text}
        )
    )


def planning_failure(failure: AgentFailed | ModelFailed) -> str:
    """What stopped the planner, in plain words fit for an issue: never the error's own text."""
    if not isinstance(failure, ModelFailed):
        return "the planner gave no usable plan within its limits of turns, time and repairs"
    if failure.status is None:
        return "the orchestrator model could not be reached"
    if failure.status in (408, 429) or failure.status >= 500:
        return (
            f"the orchestrator model could not answer (HTTP {failure.status}), even after retries"
        )
    return f"the orchestrator model refused the request (HTTP {failure.status})"


def start_again(label: str) -> str:
    """How a person starts a new run once this one ended."""
    return (
        f"To try again, remove the label {markdown_text(label)} from this issue and add it again."
    )


async def _plan(context: JobContext, run: Run, repo: RepoClient, config: RepoConfig) -> Planned:
    mirror = await updated_mirror(context, run)
    repository = await repo.repository()
    base = await mirror.resolve(repository.default_branch)
    worktree = await mirror.add_worktree(run.id, "plan", base)
    try:
        files = await asyncio.to_thread(tracked_files, worktree.path)
        issue = await repo.issue(run.issue_number)
        rules = plan_rules(config)
        feedback, previous = await _revision_inputs(context, run.id)
        agent = Agent(
            await planner_model(context, run, config),
            PLANNER_SYSTEM.format(max_tasks=config.max_tasks),
            read_only_tools(worktree.path),
            [
                Finisher(
                    "submit_plan",
                    "Submit the plan.",
                    Plan,
                    plan_problems(files, rules),
                    max_rejections=PLAN_REPAIR_ROUNDS,
                )
            ],
            context=await planner_documents(worktree, base),
            limits=Limits(max_turns=30),
        )
        prompt = await asyncio.to_thread(planner_prompt, issue, feedback, previous)
        finished = await agent.run(prompt)
    finally:
        await worktree.remove()
    plan = Plan.model_validate(finished.value.model_dump())
    await _record_base(context, run.id, base)
    return Planned(plan, check_shown_plan(plan, files, rules))


async def planner_documents(worktree: Worktree, instructions_commit: str) -> list[str]:
    """What a planner reads before it asks anything, each part fenced as repository content:
    the overview of the worktree's commit, then the root's instructions for agents at
    `instructions_commit` (one no worker wrote), named as such and never as the request."""
    fence = UntrustedFence()
    overview = await asyncio.to_thread(planner_context, worktree.path)
    instructions = await asyncio.to_thread(
        read_instructions, worktree.mirror_path, instructions_commit
    )
    documents = [fence.wrap("repository-overview", overview)]
    shown = instructions_text(instructions, fence)
    return [*documents, shown] if shown else documents


def check_shown_plan(plan: Plan, files: Collection[str], rules: PlanRules) -> PlanCheck:
    """`check_plan`, with one more error when the plan's status comment could not show it whole:
    a person approves only a plan they can read in full."""
    check = check_plan(plan, files, rules)
    too_long = plan_length_problem(plan, check)
    return check if too_long is None else check._replace(errors=(*check.errors, too_long))


def plan_problems(files: list[str], rules: PlanRules) -> Callable[[Plan], Sequence[str]]:
    def errors(plan: Plan) -> Sequence[str]:
        return check_shown_plan(plan, files, rules).errors

    return errors


def planner_prompt(issue: IssueThread, feedback: str | None, previous: str | None) -> str:
    """The issue thread as people on GitHub see it, each part fenced as untrusted text, and
    what to change if this is a revision."""
    fence = UntrustedFence()
    parts = [
        f"Plan the work for issue #{issue.number}. Its title, body and comments, as written on "
        "GitHub:",
        fence.wrap("issue-title", prepare_untrusted(issue.title, 500, markdown=False)),
        fence.wrap(
            "issue-body",
            prepare_untrusted(issue.body, UNTRUSTED_ISSUE_LIMIT),
            author=issue.author,
        ),
    ]
    parts += [
        fence.wrap("comment", prepare_untrusted(comment.body), author=comment.author)
        for comment in issue.comments
        if not comment.author_is_bot
    ]
    if previous is not None:
        parts += ["The previous plan, as YAML:", fence.wrap("previous-plan", previous)]
    if feedback:
        parts += [
            "A maintainer asked for these changes:",
            fence.wrap("revision-request", prepare_untrusted(feedback)),
        ]
    return "\n".join(parts)


async def planner_model(context: JobContext, run: Run, config: RepoConfig) -> Model:
    name = model_name_for("orchestrator", context.settings, chosen_models(config))
    prices = context.integrations.prices.with_overrides(config.price_overrides())
    spent = await context.store.run(lambda session: run_spend(session, run.id))
    budget = Budget(budget_limits(context, config), run_usd=spent, daily=day_cap(context))
    recorder = StoreRecorder(context.store, "planner", run.id)
    return MeteredModel(context.integrations.model_factory(name), prices, budget, recorder)


def budget_limits(context: JobContext, config: RepoConfig) -> BudgetLimits:
    """The repository's `budget:`, each limit it leaves unset taken from the instance's defaults."""
    return config.budget_limits(BudgetLimits.from_settings(context.settings))


def day_cap(context: JobContext) -> DailyCap | None:
    """The instance's daily cap, counting this process's calls in flight over all runs."""
    return daily_cap(context.store, context.settings, context.integrations.spending)


def chosen_models(config: RepoConfig) -> dict[str, str]:
    return {role: name for role, name in config.models.model_dump().items() if name}


async def _revision_inputs(context: JobContext, run_id: str) -> tuple[str | None, str | None]:
    """The feedback a `/revise-plan` left, and the plan it revises, if any."""

    def read(session: Session) -> tuple[str | None, str | None]:
        latest = newest_revision(session, run_id)
        if latest is None:
            return None, None
        query = (
            select(TimelineEvent)
            .where(TimelineEvent.run_id == run_id, TimelineEvent.kind == REVISION_REQUESTED)
            .order_by(col(TimelineEvent.id).desc())
        )
        request = session.exec(query).first()
        feedback = str(request.data.get("feedback", "")) if request else None
        return feedback, plan_yaml(Plan.model_validate(latest.plan))

    return await context.store.run(read)


def newest_revision(session: Session, run_id: str) -> PlanRevision | None:
    query = (
        select(PlanRevision)
        .where(PlanRevision.run_id == run_id)
        .order_by(col(PlanRevision.number).desc())
    )
    return session.exec(query).first()


async def _record_base(context: JobContext, run_id: str, base: str) -> None:
    def record(session: Session) -> None:
        run = session.get(Run, run_id)
        if run is not None and run.base_sha is None:
            run.base_sha = base

    await context.store.run(record)


async def publish_revision(
    context: JobContext,
    run: Run,
    config: RepoConfig,
    planned: Planned,
    *,
    source: str,
    delivery_id: int | None = None,
    only_while_waiting: bool = False,
) -> int | None:
    """Store the plan as the next revision, wait for approval, and show it; returns its number.

    With the delivery that asked for it, a revision is stored once: None when it already was.
    With `only_while_waiting` (a person's edit), None and nothing stored unless the run still
    waits for approval. A revision that comes after the run ended is kept but not shown.
    """
    plan, check = planned.plan, planned.check

    def store(session: Session) -> tuple[int | None, bool]:
        current = session.get(Run, run.id)
        waiting = current is not None and current.state in (
            RunState.planning,
            RunState.awaiting_approval,
        )
        if only_while_waiting and not waiting:
            return None, False
        latest = newest_revision(session, run.id)
        number = (latest.number if latest else 0) + 1
        message = f"plan r{number} ({source})"
        if not runs.record_event(session, run.id, PLAN_REVISED, message, delivery_id=delivery_id):
            return None, False
        session.add(
            PlanRevision(
                run_id=run.id,
                number=number,
                source=source,
                summary=plan.summary,
                plan=plan.model_dump(),
                problems=list(check.warnings),
                created_at=utcnow(),
            )
        )
        session.flush()
        # A `/cancel` while the planner worked wins: the revision is kept, the run stays ended.
        if current is not None and current.state == RunState.planning:
            lifecycle.move_run(session, run.id, RunState.planning, RunState.awaiting_approval)
        elif waiting:
            lifecycle.show(session, run.id)  # an edit while it waits: the new plan is shown
        return number, waiting

    number, _ = await context.store.run(store)
    return number


async def newest_revision_text(context: JobContext, run: Run) -> str | None:
    """The run's newest plan revision, as stored, rendered for its status comment."""

    def newest(session: Session) -> tuple[int, Plan, tuple[str, ...]] | None:
        revision = newest_revision(session, run.id)
        if revision is None:
            return None
        return revision.number, Plan.model_validate(revision.plan), tuple(revision.problems)

    found = await context.store.run(newest)
    if found is None:
        return None
    number, plan, warnings = found
    config = RepoConfig.model_validate(run.config)
    # A stored revision passed its check: only its warnings were kept, and its gates follow
    # from the configuration.
    gated = frozenset(
        task.id for task in plan.tasks if writes_protected(task, config.protected_paths)
    )
    planned = Planned(plan, PlanCheck((), warnings, gated))
    return render_revision(context, config, planned, number)


def render_revision(context: JobContext, config: RepoConfig, planned: Planned, number: int) -> str:
    prices = context.integrations.prices.with_overrides(config.price_overrides())
    models = chosen_models(config)
    worker = model_name_for("implementer", context.settings, models)
    orchestrator = model_name_for("orchestrator", context.settings, models)
    return render_plan(
        planned.plan,
        revision=number,
        check=planned.check,
        estimated_usd=estimate_cost(planned.plan, prices, worker, orchestrator),
        commands=PLAN_COMMANDS,
        heading=f"Plan r{number} — waiting for approval",
        unpriced_models=unpriced_models(prices, worker, orchestrator),
        budget=budget_limits(context, config),
        single_usd=single_agent_cost(planned.plan, prices, worker, orchestrator),
    )
