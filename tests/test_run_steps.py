"""A run as short steps, over HTTP between the doubles: runs at work hold no slot a person's
command or a new label needs, a task waiting for a person holds no job, a review that comes
right after the pull request is acted on, and closing the pull request ends the run."""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.settings import Settings
from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import FAST, payload, wait_for
from tests.world import (
    ACCEPT,
    FILES,
    ISSUE,
    TEST_COMMAND,
    World,
    approved,
    models_for,
    plan,
    review_tasks,
    submit,
    submit_review,
    task,
    tool,
    wait_explained,
    wait_for_run,
    who,
    world_of,
)

TITLES = {7: "Add a dial", 8: "Add a knob", 9: "Add a panel"}
ONE_TASK = plan(task("T1", [], [FILES["T1"]]))


def comment_on(world: World, issue: int, text: str, sender: str = "alice") -> None:
    made = world.github.add_issue_comment(REPOSITORY, issue, text, user=sender)
    body = copy.deepcopy(payload("issue_comment.created"))
    body["issue"]["number"] = issue
    body["issue"]["title"] = TITLES[issue]
    body["comment"] = {**body["comment"], **made}
    body["sender"]["login"] = sender
    assert world.github.send_webhook(world.url, "issue_comment", body).status_code == 202


def label(world: World, issue: int) -> None:
    body = payload("issues.labeled")
    body["issue"]["number"] = issue
    body["issue"]["title"] = TITLES[issue]
    assert world.github.send_webhook(world.url, "issues", body).status_code == 202


def states(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT issue_number, state FROM runs")).all()
    return {int(number): str(state) for number, state in rows}


def every_state(engine: sa.Engine) -> list[str]:
    """The states of all runs, sorted: an issue labelled again has more than one."""
    with engine.connect() as connection:
        return sorted(
            str(s) for s in connection.execute(sa.text("SELECT state FROM runs")).scalars()
        )


def run_id_of(engine: sa.Engine, issue: int) -> str:
    with engine.connect() as connection:
        query = sa.text("SELECT id FROM runs WHERE issue_number = :n ORDER BY created_at DESC")
        return str(connection.execute(query, {"n": issue}).scalars().first())


def issue_of(call: RecordedCall) -> int | None:
    text = str(call.json)
    return next((number for number, title in TITLES.items() if title in text), None)


class Held:
    """Worker model calls of some issues, held open until released."""

    def __init__(self, issues: set[int]) -> None:
        self.issues = issues
        self.released = threading.Event()
        self._lock = threading.Lock()
        self.holding: set[int] = set()

    def policy(self, call: RecordedCall) -> ModelReply:
        role, key = who(call)
        if role == "planner":  # the task names its issue, so its worker can be told apart
            title = TITLES[issue_of(call) or ISSUE]
            return submit(plan(task("T1", [], [FILES["T1"]], description=f"Do T1: {title}.")))
        if role == "reviewer":
            return ACCEPT
        issue = issue_of(call)
        if len(call.json["messages"]) == 1:
            if issue in self.issues:
                with self._lock:
                    self.holding.add(issue)
                self.released.wait(timeout=300)
            return tool("write_file", path=FILES[str(key)], content=f"NAME = {issue!r}\n")
        return tool("finish", summary=f"Wrote {FILES[str(key)]}.", confidence=0.9)


@pytest.fixture
def busy_world(tmp_path: Path, settings: Settings) -> Iterator[World]:
    """Baton running at most two steps at once, three issues open."""
    two = dataclasses.replace(FAST, concurrency=2)
    with world_of(tmp_path, settings, executor=two) as world:
        for number in (8, 9):
            world.github.add_issue(
                REPOSITORY, number, TITLES[number], "Please.", "alice", ["baton"]
            )
        commit_files(world.github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
        yield world


def test_runs_at_work_hold_no_slot_a_new_label_or_a_cancel_needs(
    busy_world: World, engine: sa.Engine
) -> None:
    world = busy_world
    held = Held({7, 8})
    world.models.policy = held.policy
    for issue in (7, 8):
        label(world, issue)
    wait_for(lambda: all(states(engine).get(n) == "awaiting_approval" for n in (7, 8)), 60)
    for issue in (7, 8):
        comment_on(world, issue, "/approve-plan")
    # Both runs' workers are at work.
    wait_explained(engine, lambda: held.holding == {7, 8}, "hold two workers", 120)

    label(world, 9)
    wait_for(lambda: "waiting for approval" in world.status(9), timeout=10)
    comment_on(world, 7, "/cancel")
    wait_for(lambda: "**Cancelled**" in world.status(7), timeout=10)

    held.released.set()
    wait_for_run_of(world, engine, 8, "pr_open")
    cancelled = run_id_of(engine, 7)
    wait_for(lambda: attempt_statuses(engine, cancelled) == ["cancelled"], 30)
    assert world.github.branch_sha(REPOSITORY, "baton/issue-7") is None  # nothing pushed
    assert states(engine)[7] == "cancelled"
    assert "**Cancelled**" in world.status(7)
    with engine.connect() as connection:
        aborted = connection.execute(
            sa.text("SELECT count(*) FROM jobs WHERE run_id = :r AND state = 'aborted'"),
            {"r": cancelled},
        ).scalar_one()
    assert aborted >= 1  # its attempt was stopped, not left to finish


def attempt_statuses(engine: sa.Engine, run_id: str) -> list[str]:
    with engine.connect() as connection:
        query = sa.text("SELECT status FROM task_attempts WHERE run_id = :r ORDER BY id")
        return [str(s) for s in connection.execute(query, {"r": run_id}).scalars()]


def wait_for_run_of(world: World, engine: sa.Engine, issue: int, state: str) -> None:
    wait_for(lambda: states(engine).get(issue) == state, 120)


def running_jobs_of(engine: sa.Engine, run_id: str) -> int:
    with engine.connect() as connection:
        query = sa.text("SELECT count(*) FROM jobs WHERE run_id = :r AND state = 'running'")
        return int(connection.execute(query, {"r": run_id}).scalar_one())


def task_state(engine: sa.Engine, key: str) -> str | None:
    with engine.connect() as connection:
        query = sa.text("SELECT state FROM tasks WHERE key = :k")
        return connection.execute(query, {"k": key}).scalar_one_or_none()


def test_a_task_waiting_for_approval_holds_no_job(world: World, engine: sa.Engine) -> None:
    gated = plan(task("T1", [], [FILES["T1"]]))
    approved(world, engine, models_for(gated), "protected_paths: ['src/widgets/base.py']\n")
    wait_for(lambda: task_state(engine, "T1") == "awaiting_approval", 120)
    run_id = run_id_of(engine, ISSUE)
    wait_for(lambda: running_jobs_of(engine, run_id) == 0, 30)
    assert task_state(engine, "T1") == "awaiting_approval"  # nothing holds it, nothing moved it
    assert world.github.branch_sha(REPOSITORY, f"baton/issue-{ISSUE}") is None

    world.comment("/approve-task T1")
    wait_for_run(world, engine, "pr_open")
    assert task_state(engine, "T1") == "integrated"


def finished_run(
    world: World, engine: sa.Engine, policy: Callable[[RecordedCall], ModelReply]
) -> None:
    approved(world, engine, policy)
    wait_for_run(world, engine, "pr_open")


def test_closing_the_pull_request_ends_the_run_and_a_new_label_starts_on_a_new_branch(
    world: World, engine: sa.Engine
) -> None:
    finished_run(world, engine, models_for(ONE_TASK))
    first_branch = f"baton/issue-{ISSUE}"
    kept = world.github.branch_sha(REPOSITORY, first_branch)
    (pull,) = world.github.pulls(REPOSITORY)
    world.github.close_pull_request(world.url, REPOSITORY, pull["number"], merged=False)
    wait_for(lambda: states(engine) == {ISSUE: "closed"}, 30)
    wait_for(lambda: "**Closed**" in world.status(), 30)
    check = world.github.check_runs(REPOSITORY)[-1]
    wait_for(lambda: "closed" in world.github.check_runs(REPOSITORY)[-1]["output"]["summary"], 30)
    assert check["conclusion"] in ("success", "failure", "neutral")

    world.label()
    wait_explained(
        engine,
        lambda: every_state(engine) == ["awaiting_approval", "closed"],
        "start again",
        60,
    )
    world.comment("/approve-plan")
    second_branch = f"baton/issue-{ISSUE}-2"
    wait_for(lambda: every_state(engine) == ["closed", "pr_open"], 120)
    assert world.github.branch_sha(REPOSITORY, second_branch) is not None
    assert world.github.branch_sha(REPOSITORY, first_branch) == kept  # the old branch untouched

    newest = max(p["number"] for p in world.github.pulls(REPOSITORY))
    world.github.close_pull_request(world.url, REPOSITORY, newest, merged=True)
    wait_for(lambda: every_state(engine) == ["closed", "done"], 30)


def test_a_review_right_after_the_pull_request_is_opened_becomes_revision_tasks(
    world: World, engine: sa.Engine
) -> None:
    """GitHub delivers a review before its answer to the pull request's creation reaches
    Baton: the run has not recorded the number yet and is found by its branch."""
    comment_ids: list[int] = []
    reviewed: list[int] = []

    def review_at_once(method: str, path: str, status: int) -> None:
        if method == "POST" and path == f"/repos/{REPOSITORY}/pulls" and status == 201:
            (pull,) = world.github.pulls(REPOSITORY)
            assert run_pull_number(engine) is None  # nothing else written yet
            submit_review(world, pull["number"], ["Add a knob too."], comment_ids)
            reviewed.append(pull["number"])

    world.github.before_replying.append(review_at_once)
    approved(world, engine, review_tasks(comment_ids))
    wait_for(lambda: reviewed, 120)
    world.github.before_replying.clear()
    wait_explained(engine, lambda: task_state(engine, "T2") == "integrated", "do the review", 120)
    wait_for_run(world, engine, "pr_open")
    assert run_pull_number(engine) == reviewed[0]
    assert len(world.github.pulls(REPOSITORY)) == 1
    with engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT kind FROM timeline_events")).scalars().all()
    assert "review.received" in kinds
    assert "run.revising" in kinds


def run_pull_number(engine: sa.Engine) -> int | None:
    with engine.connect() as connection:
        return connection.execute(sa.text("SELECT pull_request_number FROM runs")).scalar_one()
