"""The `finish_run` step: every task is in, so the repository's tests run on the branch, the
draft pull request is opened (its number recorded at once, so a review that comes right after
finds the run) or its body brought up to date, and the check run says how the tests went."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session

from bot.codebase.snapshot import committed_files
from bot.executor import JobContext, check_fence
from bot.github.repo import CheckConclusion
from bot.llm.recording import run_spend
from bot.plan.render import render_pull_request
from bot.planning import load_run
from bot.revisions import answer_review_comments
from bot.runs import lifecycle
from bot.runs.advance import WORKING
from bot.runs.progress import findings, run_progress, task_views
from bot.runs.workspace import Workspace, open_workspace
from bot.sandbox import CommandResult
from bot.scheduler import all_in
from bot.store.models import Run, RunState

NOTHING_CHANGED = "no task changed a file, so there is nothing to propose"
# Where GitHub looks for a single pull request template, in both spellings it accepts.
TEMPLATE_PATHS = tuple(
    f"{folder}{name}"
    for folder in (".github/", "", "docs/")
    for name in ("pull_request_template.md", "PULL_REQUEST_TEMPLATE.md")
)
TEMPLATE_BYTES = 16_000  # room left for Baton's own sections in GitHub's 65,536-character body


async def finish_run(context: JobContext, run_id: str) -> None:
    """Job: the draft pull request for a run whose tasks are all in."""
    run = await load_run(context, run_id)
    views = await context.store.run(lambda session: task_views(session, run_id))
    if run.state not in WORKING or not all_in(views):
        return
    if run.head_sha is None:
        await context.store.run(
            lambda session: lifecycle.end_run(session, run_id, RunState.done, NOTHING_CHANGED)
        )
        return
    workspace = await open_workspace(context, run_id)
    head = run.head_sha
    worktree = await workspace.mirror.add_worktree(run.id, "final", head)
    try:
        tests = await workspace.tests_on(worktree.path)
    finally:
        await worktree.remove()
    await _propose(workspace, head, tests)


async def _propose(workspace: Workspace, head: str, tests: CommandResult | None) -> None:
    context, run, repo = workspace.context, workspace.run, workspace.repo
    passed = tests is not None and tests.exit_code == 0
    template = await pull_request_template(workspace.mirror.path, run.base_sha)
    body = await context.store.run(lambda session: _body(session, workspace, tests, template))
    number = run.pull_request_number
    if number is None:
        default_branch = (await repo.repository()).default_branch
        title = f"{run.issue_title} (#{run.issue_number})"
        number = (
            await repo.open_draft_pull_request(workspace.branch, default_branch, title, body)
        ).number
        await context.store.run(
            lambda session: _record(session, run.id, pull_request_number=number)
        )
    else:
        await repo.update_pull_request_body(number, body)
    summary = (
        "Every task was accepted; the tests pass." if passed else "The tests fail on the branch."
    )
    conclusion: CheckConclusion = "success" if passed else "failure"
    check_id = await repo.find_check_run(head)
    if check_id is None:
        check_id = await repo.create_check_run(
            head, "completed", "Baton", summary, conclusion=conclusion
        )
    else:
        await repo.update_check_run(check_id, "completed", "Baton", summary, conclusion=conclusion)
    await answer_review_comments(context, run.id, repo, number)
    await context.store.run(lambda session: _proposed(session, run.id, check_id, passed))
    await workspace.let_go_of_pins()


def _body(
    session: Session, workspace: Workspace, tests: CommandResult | None, template: str | None
) -> str:
    run = workspace.run
    return render_pull_request(
        run.issue_number,
        run_progress(session, run, workspace.context.settings),
        findings(session, run.id),
        tests_passed=tests is not None and tests.exit_code == 0,
        test_output=tests.output if tests is not None else None,
        template=template,
    )


async def pull_request_template(repository: Path, commit: str | None) -> str | None:
    """The repository's pull request template at `commit`, as GitHub finds it: the first of its
    usual places holding a regular text file of at most `TEMPLATE_BYTES` (never a link)."""
    if commit is None:
        return None
    found = await committed_files(repository, commit, TEMPLATE_PATHS, TEMPLATE_BYTES)
    return next((file.text for file in found if file.text and file.text.strip()), None)


def _record(session: Session, run_id: str, **values: object) -> None:
    check_fence(session)
    run = session.get(Run, run_id)
    assert run is not None
    for name, value in values.items():
        setattr(run, name, value)


def _proposed(session: Session, run_id: str, check_id: int, passed: bool) -> None:
    """The pull request is up: the run waits for people. Tasks a review added meanwhile run
    at once, so the run goes on revising."""
    _record(session, run_id, check_run_id=check_id, tests_passed=passed)
    run = session.get(Run, run_id)
    assert run is not None
    run.cost_usd = run_spend(session, run_id)
    state = RunState(run.state)
    if state == RunState.executing:
        lifecycle.move_run(
            session, run_id, state, RunState.pr_open, f"draft #{run.pull_request_number}"
        )
    elif state == RunState.revising:
        lifecycle.move_run(session, run_id, state, RunState.pr_open, "revised")
    if not all_in(task_views(session, run_id)):
        lifecycle.move_run(session, run_id, RunState.pr_open, RunState.revising, "a review came in")
