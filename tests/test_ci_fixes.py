"""A CI on the draft pull request, played by the test through the GitHub double as GitHub
Actions: a failure becomes a fix revision whose commit makes the next CI pass; a failure that
looks flaky is run again once and not fixed; a CI that keeps failing is handed to a person
after `ci_fix_rounds`."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import wait_for
from tests.world import (
    BRANCH,
    FILES,
    World,
    approved,
    models_for,
    plan,
    submit,
    task,
    wait_for_run,
)

FIRST_PLAN = plan(task("T1", [], [FILES["T1"]]))
FIX_PLAN = plan(task("T2", [], [FILES["T2"]]))
CI_SAYS = "CI_MARKER_7781"  # in the job's log, so the planner's prompt can be checked for it


def is_ci_planner(call: RecordedCall) -> bool:
    return "This time the pull request's CI failed" in call.json["system"][0]["text"]


def with_ci_planner(fix: dict[str, Any]) -> Callable[[RecordedCall], ModelReply]:
    """The first plan is T1; the CI planner answers with `fix`; workers write their files."""
    answer = models_for(FIRST_PLAN)
    return lambda call: submit(fix) if is_ci_planner(call) else answer(call)


def head(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SELECT head_sha FROM runs")).scalar_one())


def has_file(github: GitHubDouble, sha: str, path: str) -> bool:
    git_dir = github.root / f"{REPOSITORY}.git"
    listed = subprocess.run(
        ["git", "--git-dir", str(git_dir), "ls-tree", "-r", "--name-only", sha],
        capture_output=True,
        text=True,
        check=True,
    )
    return path in listed.stdout.splitlines()


def run_ci(world: World, sha: str, needs: str) -> int:
    """GitHub Actions' `tests` job on `sha`: it passes when `needs` is in the commit."""
    passed = has_file(world.github, sha, needs)
    check = world.github.finish_check(
        REPOSITORY,
        sha,
        "tests",
        "success" if passed else "failure",
        summary="1 passed" if passed else "1 failed",
        annotations=[] if passed else [{"path": FILES["T1"], "line": 1, "message": "no dial"}],
        log="" if passed else f"collected 1 item\nE   ImportError: widgets.dial {CI_SAYS}\n",
    )
    assert world.github.send_check_suite(world.url, REPOSITORY, check).status_code == 202
    return check


def ci_revisions(engine: sa.Engine) -> list[str]:
    query = "SELECT feedback FROM plan_revisions WHERE source = 'ci' ORDER BY number"
    with engine.connect() as connection:
        return [str(row[0]) for row in connection.execute(sa.text(query))]


def test_a_failing_ci_becomes_a_fix_whose_commit_makes_the_next_ci_pass(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, with_ci_planner(FIX_PLAN))
    wait_for_run(world, engine, "pr_open")
    failed_at = head(engine)
    run_ci(world, failed_at, FILES["T2"])

    wait_for(lambda: head(engine) != failed_at, timeout=120)
    wait_for_run(world, engine, "pr_open")
    fixed_at = head(engine)
    assert world.github.branch_sha(REPOSITORY, BRANCH) == fixed_at
    assert has_file(world.github, fixed_at, FILES["T2"])
    assert ci_revisions(engine) == [f"ci {failed_at}"]
    (asked,) = [call for call in world.models.calls if is_ci_planner(call)]
    prompt = asked.json["messages"][0]["content"][0]["text"]
    assert CI_SAYS in prompt
    assert "no dial" in prompt
    assert 'kind="failed-check"' in prompt  # fenced as untrusted text
    # The next CI run, on the fix, passes; a passing suite asks nothing of Baton.
    check = run_ci(world, fixed_at, FILES["T2"])
    shown = world.github.check_runs(REPOSITORY)
    assert [run["conclusion"] for run in shown if run["id"] == check] == ["success"]
    wait_for(lambda: "Draft pull request" in world.status(), timeout=30)
    assert "CI still fails" not in world.status()
    assert ci_revisions(engine) == [f"ci {failed_at}"]


def test_a_failure_that_looks_flaky_is_run_again_once_and_not_fixed(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, with_ci_planner(FIX_PLAN))
    wait_for_run(world, engine, "pr_open")
    sha = head(engine)
    # `lint` passes on the default branch and fails here on a file the run did not touch.
    main_head = world.github.branch_sha(REPOSITORY, "main")
    assert main_head is not None
    world.github.finish_check(REPOSITORY, main_head, "lint", "success")
    flaky = world.github.finish_check(
        REPOSITORY,
        sha,
        "lint",
        "failure",
        annotations=[{"path": "README.md", "line": 3, "message": "network timeout"}],
        log="fetching the linter: connection reset\n",
    )
    assert world.github.send_check_suite(world.url, REPOSITORY, flaky).status_code == 202

    wait_for(lambda: world.github.reruns(REPOSITORY, flaky) == 1, timeout=60)
    world.github.finish_check(REPOSITORY, sha, "lint", "success")  # the re-run passes
    assert world.github.send_check_suite(world.url, REPOSITORY, flaky).status_code == 202
    # The same failure again is not run a second time: it is planned as a real one.
    world.github.finish_check(REPOSITORY, sha, "lint", "failure", log="reset again\n")
    assert world.github.send_check_suite(world.url, REPOSITORY, flaky).status_code == 202
    wait_for(lambda: len(ci_revisions(engine)) == 1, timeout=120)
    assert world.github.reruns(REPOSITORY, flaky) == 1
    assert sum(is_ci_planner(call) for call in world.models.calls) == 1


def test_a_ci_that_keeps_failing_is_handed_to_a_person_after_its_rounds(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, with_ci_planner(FIX_PLAN), "ci_fix_rounds: 1\n")
    wait_for_run(world, engine, "pr_open")
    first = head(engine)
    run_ci(world, first, "never/there.py")
    wait_for(lambda: head(engine) != first, timeout=120)
    wait_for_run(world, engine, "pr_open")
    run_ci(world, head(engine), "never/there.py")

    (pull,) = world.github.pulls(REPOSITORY)

    def hand_overs() -> list[str]:
        comments = world.github.issue_comments(REPOSITORY, pull["number"])
        return [c["body"] for c in comments if "CI still fails" in c["body"]]

    wait_for(lambda: len(hand_overs()) == 1, timeout=60)
    assert "CI still fails on this branch: tests." in hand_overs()[0]
    assert "1 round(s) of fix tasks" in hand_overs()[0]
    wait_for(lambda: "CI still fails" in world.status(), timeout=30)
    assert ci_revisions(engine) == [f"ci {first}"]
    assert sum(is_ci_planner(call) for call in world.models.calls) == 1
