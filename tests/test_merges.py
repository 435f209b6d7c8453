"""The default branch moves under a run's draft pull request: a move that merges cleanly asks
nothing; one that conflicts becomes a merge task whose worker resolves the conflicting file, and
the run branch gains a merge commit of both (never a force push); past `merge_rounds` a person
gets it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
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
    task,
    tool,
    wait_for_run,
    who,
)

RESOLVED = "NAME = 'T1'\nPERSON = 1\n"


def resolving_worker() -> Callable[[RecordedCall], ModelReply]:
    """T1 writes its file; the merge task (T2) writes that file with both sides in it."""
    answer = models_for(plan(task("T1", [], [FILES["T1"]])))

    def reply(call: RecordedCall) -> ModelReply:
        if who(call) == ("worker", "T2"):
            if len(call.json["messages"]) == 1:
                return tool("write_file", path=FILES["T1"], content=RESOLVED)
            return tool("finish", summary="Kept both.", confidence=0.9)
        return answer(call)

    return reply


def git(github: GitHubDouble, *args: str) -> subprocess.CompletedProcess[str]:
    git_dir = github.root / f"{REPOSITORY}.git"
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=False
    )


def push_to_main(world: World, files: dict[str, str]) -> str:
    before = world.github.branch_sha(REPOSITORY, "main")
    assert before is not None
    after = commit_files(world.github, files)
    assert world.github.send_push(world.url, REPOSITORY, "main", before, after).status_code == 202
    return after


def pushes_handled(engine: sa.Engine) -> int:
    query = "SELECT count(*) FROM jobs WHERE name = 'handle_push' AND state = 'succeeded'"
    with engine.connect() as connection:
        return int(connection.execute(sa.text(query)).scalar_one())


def merge_revisions(engine: sa.Engine) -> list[str]:
    query = "SELECT feedback FROM plan_revisions WHERE source = 'merge' ORDER BY number"
    with engine.connect() as connection:
        return [str(row[0]) for row in connection.execute(sa.text(query))]


def head(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SELECT head_sha FROM runs")).scalar_one())


def test_a_conflicting_default_branch_is_merged_in_with_the_workers_resolution(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, resolving_worker())
    wait_for_run(world, engine, "pr_open")
    before = head(engine)

    push_to_main(world, {"docs/unrelated.md": "elsewhere\n"})  # merges cleanly: nothing to do
    wait_for(lambda: pushes_handled(engine) == 1, timeout=60)
    assert merge_revisions(engine) == []
    assert head(engine) == before

    theirs = push_to_main(world, {FILES["T1"]: "PERSON = 1\n"})
    wait_for(lambda: head(engine) != before, timeout=120)
    wait_for_run(world, engine, "pr_open")

    merged = head(engine)
    assert world.github.branch_sha(REPOSITORY, BRANCH) == merged
    assert git(world.github, "rev-parse", f"{merged}^1", f"{merged}^2").stdout.split() == [
        before,
        theirs,
    ]
    assert git(world.github, "show", f"{merged}:{FILES['T1']}").stdout == RESOLVED
    assert git(world.github, "merge-tree", "--write-tree", "main", BRANCH).returncode == 0
    shown = world.github.commit(REPOSITORY, merged)["commit"]
    assert shown["verification"]["verified"] is True
    assert shown["message"].startswith("T2: Merge main into the branch")
    assert "Baton-Task: T2" in shown["message"]
    assert merge_revisions(engine) == [f"merge {theirs}"]
    assert not any(update.forced for update in world.github.ref_updates(REPOSITORY, BRANCH))
    (first,) = [
        call
        for call in world.models.calls
        if who(call) == ("worker", "T2") and len(call.json["messages"]) == 1
    ]
    prompt = first.json["messages"][0]["content"][0]["text"]
    assert "<<<<<<<" in prompt
    assert "PERSON = 1" in prompt


def test_past_merge_rounds_a_conflict_is_handed_to_a_person(
    world: World, engine: sa.Engine
) -> None:
    approved(world, engine, resolving_worker(), "merge_rounds: 0\n")
    wait_for_run(world, engine, "pr_open")
    before = head(engine)
    push_to_main(world, {FILES["T1"]: "PERSON = 1\n"})
    (pull,) = world.github.pulls(REPOSITORY)

    def hand_overs() -> list[str]:
        comments = world.github.issue_comments(REPOSITORY, pull["number"])
        return [c["body"] for c in comments if "conflicts with this branch" in c["body"]]

    wait_for(lambda: len(hand_overs()) == 1, timeout=60)
    assert "\nmain moved on and conflicts with this branch again." in hand_overs()[0]
    wait_for(lambda: "conflicts with this branch again" in world.status(), timeout=30)
    assert merge_revisions(engine) == []
    assert head(engine) == before
