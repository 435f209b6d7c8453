"""CI on a run's draft pull request: when another app's check suite (GitHub Actions, any CI)
completes with a failure on the run branch's head, Baton reads what failed and acts.

- A failure that does not touch what the run changed, and whose check passes on the default
  branch, looks flaky: it is run again, once per check and run, before anything else.
- Any other failure becomes fix tasks: the orchestrator plans them as a new plan revision from
  the checks' output, annotations and (for Actions) the failed jobs' log tails, all given as
  untrusted text. The revision stands on the plan's approval, as a review's stands on its
  reviewer's, and runs at once.
- After `ci_fix_rounds` such revisions the run's pull request gets a comment handing it to a
  person with what failed and what was tried, and the status comment says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from bot import runs
from bot.config import RepoConfig
from bot.events import CheckSuiteCompleted
from bot.executor import JobContext
from bot.github.repo import ACTIONS_APP, Annotation, CheckRunResult, GitHubError, RepoClient
from bot.github.scopes import FIX_CI, READ_REVIEW
from bot.github.untrusted import UntrustedFence, prepare_untrusted
from bot.llm.agent import AgentFailed
from bot.llm.budget import BudgetExceeded
from bot.llm.types import ModelFailed
from bot.plan.render import markdown_text, plan_yaml
from bot.plan.schema import Plan
from bot.planning import (
    PLANNER_SYSTEM,
    load_run,
    newest_revision,
    repo_client,
    updated_mirror,
)
from bot.revisions import Added, add_revision, added_so_far, plan_approver, plan_new_tasks
from bot.runs import lifecycle
from bot.store.models import Run, RunState, TimelineEvent

log = logging.getLogger(__name__)

FAILED = frozenset({"failure", "timed_out"})
RAN_AGAIN = "ci.ran_again"
HANDED_OVER = "ci.handed_over"
CI_SOURCE = "ci"
LOG_TAIL_CHARS = 6_000  # where a job's failure is: its end
OUTPUT_CHARS = 4_000
ANNOTATIONS_SHOWN = 30
CI_PLANNER = (
    PLANNER_SYSTEM
    + """
This time the pull request's CI failed on the run branch. Plan new tasks that make the failing
checks pass, from their output, annotations and logs. Number the new tasks from {first} on. A new
task may depend only on other new tasks (the earlier ones are done and on the branch).
"""
)


@dataclass(frozen=True)
class Failure:
    """A failed check run with what it said: its annotations and, for Actions, its log's end."""

    check: CheckRunResult
    annotations: tuple[Annotation, ...]
    log_tail: str

    def touches(self, changed: set[str]) -> bool:
        """Whether it points at a file the run changed: an annotation, or a mention."""
        if any(annotation.path in changed for annotation in self.annotations):
            return True
        said = "\n".join([self.check.summary, self.check.text, self.log_tail])
        return any(path in said for path in changed)


async def check_suite_completed(context: JobContext, event: CheckSuiteCompleted) -> None:
    """Job step: a completed check suite of another app on a run branch's head."""
    suite = event.check_suite
    if suite.conclusion not in FAILED or _is_batons_own(context, event):
        return
    run_id = await context.store.run(
        lambda session: _run_at(session, event.repository.id, suite.head_sha)
    )
    if run_id is None:
        return
    run = await load_run(context, run_id)
    repo = repo_client(context, run, FIX_CI)
    failures = await _failures(repo, suite.head_sha, context.settings.github_app_id)
    if not failures:
        return
    flaky = await _looks_flaky(context, run, repo, failures)
    if flaky:
        # Recorded first: a job run twice re-runs a check at most once, as promised.
        await context.store.run(lambda session: _ran_again(session, run.id, flaky))
    for failure in flaky:
        await repo.run_again(failure.check)
    real = [failure for failure in failures if failure not in flaky]
    if real:
        await _fix_or_hand_over(context, run, repo, real)


def _is_batons_own(context: JobContext, event: CheckSuiteCompleted) -> bool:
    """Baton's own `baton` check run makes a suite of Baton's app: not a CI's verdict."""
    app = event.check_suite.app
    own = context.settings.github_app_id
    return app is not None and own is not None and app.id == own


def _run_at(session: Session, repository_id: int, head_sha: str) -> str | None:
    """The run whose draft pull request is open with its branch at `head_sha`."""
    query = select(Run).where(
        Run.repository_id == repository_id,
        Run.head_sha == head_sha,
        Run.state == RunState.pr_open,
        col(Run.active),
    )
    run = session.exec(query).first()
    return run.id if run is not None else None


async def _failures(repo: RepoClient, head_sha: str, own_app_id: int | None) -> list[Failure]:
    checks = await repo.check_runs(head_sha)
    failed = [
        check
        for check in checks
        if check.conclusion in FAILED and (own_app_id is None or check.app_id != own_app_id)
    ]
    return [await _described(repo, check) for check in failed]


async def _described(repo: RepoClient, check: CheckRunResult) -> Failure:
    annotations = tuple((await repo.annotations(check.id))[:ANNOTATIONS_SHOWN])
    log_tail = ""
    if check.app == ACTIONS_APP:
        try:
            log_tail = (await repo.job_log(check.id))[-LOG_TAIL_CHARS:]
        except GitHubError as error:  # logs expire; the output and annotations remain
            log.info("no log for job %s: %s", check.id, error)
    return Failure(check, annotations, log_tail)


async def _looks_flaky(
    context: JobContext, run: Run, repo: RepoClient, failures: Sequence[Failure]
) -> list[Failure]:
    """Failures not tried again yet that touch nothing the run changed and whose check passes
    on the default branch."""
    tried = await context.store.run(lambda session: _ran_again_before(session, run.id))
    candidates = [failure for failure in failures if failure.check.name not in tried]
    if not candidates:
        return []
    mirror = await updated_mirror(context, run, READ_REVIEW)
    default_branch = (await repo.repository()).default_branch
    default_head = await mirror.branch_head(default_branch)
    if default_head is None or run.base_sha is None or run.head_sha is None:
        return []
    changed = set(await mirror.changed_paths(run.base_sha, run.head_sha))
    passing = {
        check.name for check in await repo.check_runs(default_head) if check.conclusion == "success"
    }
    return [
        failure
        for failure in candidates
        if failure.check.name in passing and not failure.touches(changed)
    ]


def _ran_again_before(session: Session, run_id: str) -> set[str]:
    query = select(TimelineEvent).where(
        TimelineEvent.run_id == run_id, TimelineEvent.kind == RAN_AGAIN
    )
    return {str(event.data.get("check")) for event in session.exec(query)}


def _ran_again(session: Session, run_id: str, flaky: Sequence[Failure]) -> None:
    for failure in flaky:
        message = f"{failure.check.name} failed on nothing the run changed: run again"
        runs.record_event(session, run_id, RAN_AGAIN, message, data={"check": failure.check.name})


async def _fix_or_hand_over(
    context: JobContext, run: Run, repo: RepoClient, failures: Sequence[Failure]
) -> None:
    config = RepoConfig.model_validate(run.config)
    head = run.head_sha or ""
    rounds, planned = await context.store.run(lambda session: _fix_rounds(session, run.id, head))
    if planned:
        return  # this head's failure was planned already (the job ran before)
    if rounds >= config.ci_fix_rounds:
        await _hand_over(context, run, repo, failures, rounds)
        return
    try:
        plan = await _plan_fix(context, run, failures)
    except (AgentFailed, ModelFailed, BudgetExceeded) as failure:
        log.warning("the failing CI of run %s could not be planned: %s", run.id, failure)
        await _hand_over(context, run, repo, failures, rounds)
        return
    await context.store.run(lambda session: _approve(session, run.id, plan, head, failures))


def _fix_rounds(session: Session, run_id: str, head: str) -> tuple[int, bool]:
    """How many fix revisions the run had, and whether one answers the failure at `head`."""
    return added_so_far(session, run_id, CI_SOURCE, _ci_key(head))


def _ci_key(head: str) -> str:
    return f"ci {head}"


async def _plan_fix(context: JobContext, run: Run, failures: Sequence[Failure]) -> Plan:
    previous = await context.store.run(lambda session: _previous_plan(session, run.id))
    prompt = await asyncio.to_thread(ci_prompt, previous, failures)
    return await plan_new_tasks(context, run, CI_PLANNER, prompt)


def _previous_plan(session: Session, run_id: str) -> str:
    latest = newest_revision(session, run_id)
    return plan_yaml(Plan.model_validate(latest.plan)) if latest else ""


def ci_prompt(previous: str, failures: Sequence[Failure]) -> str:
    """The plan so far and each failed check with what it said, every part fenced as untrusted
    text: a CI's output is whatever the branch's code and the repository's workflows print."""
    fence = UntrustedFence()
    parts = ["The plan so far, as YAML:", fence.wrap("previous-plan", previous)]
    parts.append("The checks that failed on the branch, as the CI reported them:")
    for failure in failures:
        check = failure.check
        report = "\n\n".join(
            part
            for part in (check.title, check.summary, check.text, _annotations_text(failure))
            if part
        )
        parts.append(
            fence.wrap(
                "failed-check",
                prepare_untrusted(report, OUTPUT_CHARS),
                name=check.name,
                app=check.app,
                conclusion=check.conclusion or "",
            )
        )
        if failure.log_tail:
            tail = prepare_untrusted(failure.log_tail, LOG_TAIL_CHARS)
            parts.append(fence.wrap("job-log-tail", tail, name=check.name))
    return "\n".join(parts)


def _annotations_text(failure: Failure) -> str:
    return "\n".join(
        f"{note.path}:{note.line or ''} {note.message}" for note in failure.annotations
    )


def _approve(
    session: Session, run_id: str, plan: Plan, head: str, failures: Sequence[Failure]
) -> None:
    """The fix tasks as the next revision, standing on the plan's approval, started at once."""
    run = session.get(Run, run_id)
    if run is None or run.state != RunState.pr_open:
        return
    added = Added(CI_SOURCE, _ci_key(head), plan_approver(session, run_id), "plan.from_ci")
    names = ", ".join(failure.check.name for failure in failures)
    add_revision(session, run_id, plan, added, f"to fix {names}")


async def _hand_over(
    context: JobContext,
    run: Run,
    repo: RepoClient,
    failures: Sequence[Failure],
    rounds: int,
) -> None:
    """A comment on the pull request, once per run, and a line in the status comment."""
    number = run.pull_request_number
    names = [failure.check.name for failure in failures]  # another app's words: made inert
    if number is not None:
        body = hand_over_text(", ".join(map(markdown_text, names)), rounds)
        await repo.reply_once(number, f"ci-hand-over:{run.id}", body)
    said = hand_over_text(", ".join(names), rounds)  # the status comment makes it inert

    def record(session: Session) -> None:
        runs.record_event(session, run.id, HANDED_OVER, said, data={"rounds": rounds})
        lifecycle.show(session, run.id)

    await context.store.run(record)


def hand_over_text(names: str, rounds: int) -> str:
    tried = f"{rounds} round(s) of fix tasks" if rounds else "no fix tasks (`ci_fix_rounds: 0`)"
    return (
        f"CI still fails on this branch: {names}. Baton tried {tried}, the most "
        "`ci_fix_rounds` allows, and stops here: over to a person. The checks' logs say what "
        "failed; a review's comments still become tasks."
    )
