"""A slash command's job run again for the same delivery, as the executor does after a crash,
changes nothing: no second revision, state change, model call, reply or job."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlmodel import Session, col, select

from bot import steering
from bot.commands import Command
from bot.config import RepoConfig
from bot.executor import JobContext
from bot.github.repo import GitHubError
from bot.jobs import JOBS
from bot.plan.schema import Plan
from bot.plan.validate import PlanCheck
from bot.planning import Planned, newest_revision, publish_revision, repo_client
from bot.settings import Settings
from bot.store.models import Job, PlanRevision, Run, RunState, Task, TimelineEvent
from bot.task_rows import add_task_rows
from tests.doubles.fixtures import REPOSITORY
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelDouble
from tests.jobs_by_hand import deliver, run_queued
from tests.support import payload
from tests.world import DIAMOND, plan, submit, task

ISSUE = payload("issues.labeled")["issue"]["number"]
EDITED = plan(task("T1", [], ["src/widgets/dial.py"]))


@pytest.fixture
def models() -> Iterator[ModelDouble]:
    with ModelDouble() as double:
        yield double


@pytest.fixture
def settings(settings: Settings, models: ModelDouble) -> Settings:
    return models.serving(settings)


@pytest.fixture
def context(job_context: JobContext, models: ModelDouble) -> JobContext:
    """Jobs run by hand against the store and the two doubles."""
    return job_context


def comment_body(github: GitHubDouble, text: str) -> dict[str, Any]:
    made = github.add_issue_comment(REPOSITORY, ISSUE, text, user="alice")
    body = copy.deepcopy(payload("issue_comment.created"))
    body["comment"] = {**body["comment"], **made}
    body["sender"]["login"] = "alice"
    return body


async def command(context: JobContext, github: GitHubDouble, text: str) -> int:
    return await deliver(context, "issue_comment.created", comment_body(github, text))


async def run_again(context: JobContext, delivery_id: int) -> None:
    await JOBS["handle_issue_comment"](context, delivery_id=delivery_id)


async def the_run(context: JobContext) -> Run:
    return await context.store.run(lambda session: session.exec(select(Run)).one())


async def planned(context: JobContext, models: ModelDouble) -> str:
    """A run whose plan r1 waits for approval."""
    models.add(submit(DIAMOND))
    await deliver(context, "issues.labeled", payload("issues.labeled"))
    run_id = (await the_run(context)).id
    await JOBS["plan_run"](context, run_id=run_id)
    assert (await the_run(context)).state == RunState.awaiting_approval
    assert "show_status" in await run_queued(context, "show_status")  # the plan, shown
    return run_id


async def executing(context: JobContext, models: ModelDouble, github: GitHubDouble) -> str:
    """A run whose approved plan stopped for a person: T1 failed, T2 escalated, T3 awaits
    approval."""
    run_id = await planned(context, models)
    await command(context, github, "/approve-plan")

    def stop(session: Session) -> None:
        revision = newest_revision(session, run_id)
        assert revision is not None
        add_task_rows(session, run_id, revision, RepoConfig(), {})
        session.flush()
        states = {"T1": "failed", "T2": "escalated", "T3": "awaiting_approval"}
        for row in session.exec(select(Task).where(Task.run_id == run_id)):
            row.state = states.get(row.key, row.state)
        run = session.get(Run, run_id)
        assert run is not None
        run.state = RunState.needs_human

    await context.store.run(stop)
    return run_id


async def picture(context: JobContext, github: GitHubDouble, models: ModelDouble) -> dict[str, Any]:
    """Everything a command could change: the run, its revisions, tasks, timeline and jobs,
    the issue's comments and reactions, and the model calls."""

    def read(session: Session) -> dict[str, Any]:
        run = session.exec(select(Run)).one()
        revisions = session.exec(select(PlanRevision).order_by(col(PlanRevision.number)))
        tasks = session.exec(select(Task).order_by(col(Task.key)))
        events = session.exec(select(TimelineEvent).order_by(col(TimelineEvent.id)))
        jobs = session.exec(select(Job).order_by(col(Job.id)))
        return {
            "run": (run.state, run.active, run.error),
            "revisions": [(r.number, r.source, r.approved_by, r.plan) for r in revisions],
            "tasks": [(t.key, t.state, t.approved_by) for t in tasks],
            "events": [(e.kind, e.message, e.task_key) for e in events],
            "jobs": [(j.name, j.args) for j in jobs],
        }

    stored = await context.store.run(read)
    comments = github.issue_comments(REPOSITORY, ISSUE)
    return stored | {
        "comments": [(c["user"]["login"], c["body"]) for c in comments],
        "reactions": [(r["content"], r["comment_id"]) for r in github.reactions(REPOSITORY)],
        "model_calls": len(models.calls),
    }


async def test_approve_plan_run_again_changes_nothing(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    await planned(context, models)
    delivery_id = await command(context, github, "/approve-plan")
    before = await picture(context, github, models)
    assert before["run"][0] == RunState.executing

    await run_again(context, delivery_id)

    assert await picture(context, github, models) == before


@pytest.mark.parametrize("planner_answered", [False, True], ids=["at-once", "after-r2"])
async def test_revise_plan_run_again_changes_nothing(
    context: JobContext, github: GitHubDouble, models: ModelDouble, planner_answered: bool
) -> None:
    run_id = await planned(context, models)
    delivery_id = await command(context, github, "/revise-plan Use a single task, please.")
    if planner_answered:
        models.add(submit(EDITED))
        await JOBS["plan_run"](context, run_id=run_id)
    before = await picture(context, github, models)
    assert len(before["revisions"]) == (2 if planner_answered else 1)

    await run_again(context, delivery_id)

    assert await picture(context, github, models) == before


async def test_edit_plan_run_again_adds_no_revision(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    await planned(context, models)
    delivery_id = await command(
        context, github, f"/edit-plan\n```yaml\n{yaml.safe_dump(EDITED)}```"
    )
    before = await picture(context, github, models)
    assert [revision[0] for revision in before["revisions"]] == [1, 2]

    await run_again(context, delivery_id)

    assert await picture(context, github, models) == before


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"/edit-plan\n```yaml\n{yaml.safe_dump(EDITED)}```", "Plan r2"),
        ("/cancel", "**Cancelled**: cancelled by @&#8205;alice."),
    ],
    ids=["edit-plan", "cancel"],
)
async def test_what_a_command_did_is_shown_by_a_job_of_its_own_that_tries_again(
    context: JobContext, github: GitHubDouble, models: ModelDouble, text: str, shown: str
) -> None:
    await planned(context, models)
    delivery_id = await command(context, github, text)
    await run_again(context, delivery_id)  # obeyed once: nothing is shown twice
    # GitHub refuses the first edit: the job fails, stays queued, and shows it when run again.
    github.fail_next("PATCH", rf"/repos/{REPOSITORY}/issues/comments/\d+", 403)
    with pytest.raises(GitHubError):
        await run_queued(context, "show_status")
    assert await run_queued(context, "show_status") == ["show_status"]
    after = await picture(context, github, models)
    (status,) = [body for login, body in after["comments"] if login != "alice"]
    assert status.startswith("<!-- baton:run:")
    assert shown in status


async def test_cancel_run_again_changes_nothing(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    await planned(context, models)
    delivery_id = await command(context, github, "/cancel")
    before = await picture(context, github, models)
    assert before["run"][:2] == (RunState.cancelled, False)

    await run_again(context, delivery_id)

    assert await picture(context, github, models) == before


@pytest.mark.parametrize(
    ("text", "key", "state"),
    [
        ("/retry T1", "T1", "pending"),
        ("/skip T2", "T2", "skipped"),
        ("/approve-task T3", "T3", "accepted"),
    ],
    ids=["retry", "skip", "approve-task"],
)
async def test_task_command_run_again_changes_nothing(
    context: JobContext,
    github: GitHubDouble,
    models: ModelDouble,
    text: str,
    key: str,
    state: str,
) -> None:
    await executing(context, models, github)
    delivery_id = await command(context, github, text)
    before = await picture(context, github, models)
    assert (key, state) in [(t[0], t[1]) for t in before["tasks"]]
    assert before["run"][0] == RunState.executing

    await run_again(context, delivery_id)

    assert await picture(context, github, models) == before


async def test_a_retry_run_again_after_the_task_failed_again_does_not_retry_it_twice(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    run_id = await executing(context, models, github)
    delivery_id = await command(context, github, "/retry T1")

    def fail_again(session: Session) -> None:
        row = session.exec(select(Task).where(Task.run_id == run_id, Task.key == "T1")).one()
        row.state = "failed"
        run = session.get(Run, run_id)
        assert run is not None
        run.state = RunState.needs_human

    await context.store.run(fail_again)
    before = await picture(context, github, models)

    await run_again(context, delivery_id)

    assert await picture(context, github, models) == before


async def moved_on_meanwhile(context: JobContext, models: ModelDouble, state: RunState) -> Run:
    """A run whose plan waited for approval when a command's job read it, and which a
    concurrent approval or `/cancel` has since moved to `state`; returns the stale copy."""
    await planned(context, models)
    stale = await the_run(context)

    def move(session: Session) -> None:
        run = session.get(Run, stale.id)
        assert run is not None
        run.state = state

    await context.store.run(move)
    return stale


async def test_a_revise_request_that_finds_the_run_cancelled_meanwhile_changes_nothing(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    stale = await moved_on_meanwhile(context, models, RunState.cancelled)
    before = await picture(context, github, models)

    answer = await steering._revise(
        context,
        stale,
        repo_client(context, stale),
        Command("revise-plan", text="Fewer tasks."),
        delivery_id=1,
    )

    assert answer == "This run no longer waits for approval."
    assert await picture(context, github, models) == before


async def test_an_edit_that_finds_the_plan_approved_meanwhile_stores_and_shows_nothing(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    stale = await moved_on_meanwhile(context, models, RunState.executing)
    before = await picture(context, github, models)
    edit = Command("edit-plan", plan_yaml=yaml.safe_dump(EDITED))

    answer = await steering._edit(context, stale, repo_client(context, stale), edit, 1)

    assert answer == "This run no longer waits for approval."
    assert await picture(context, github, models) == before


async def test_a_plan_finished_after_a_cancel_is_kept_but_not_shown(
    context: JobContext, github: GitHubDouble, models: ModelDouble
) -> None:
    stale = await moved_on_meanwhile(context, models, RunState.cancelled)
    before = await picture(context, github, models)
    config = RepoConfig.model_validate(stale.config)
    planned_again = Planned(Plan.model_validate(EDITED), PlanCheck((), (), frozenset()))

    number = await publish_revision(context, stale, config, planned_again, source="planner")

    after = await picture(context, github, models)
    assert number == 2
    assert [revision[0] for revision in after["revisions"]] == [1, 2]
    assert after["run"] == before["run"]  # still cancelled
    assert after["comments"] == before["comments"]  # the status was not replaced
