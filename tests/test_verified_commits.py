"""Commits Baton adds to a run branch are made by GitHub through the Git Data API, so they show
Verified; each keeps its `Baton-Run`/`Baton-Task` trailers and credits the people who asked for
it; the branch only ever moves forward, and a person's push between two integrations stays."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.github import GitHubDouble
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import wait_for
from tests.world import (
    BRANCH,
    FOUR_TASKS,
    World,
    approved,
    branch_log,
    models_for,
    review_tasks,
    submit_review,
    wait_for_run,
    who,
)

CO_AUTHOR = re.compile(r"^Co-authored-by: (\S+) <(\d+)\+(\S+)@users\.noreply\.([^>]+)>$", re.M)


def branch_commits(github: GitHubDouble) -> list[str]:
    """The shas of the run branch's own commits, oldest first."""
    git_dir = github.root / f"{REPOSITORY}.git"
    listed = subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-list", "--reverse", f"main..{BRANCH}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def run_id(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SELECT id FROM runs")).scalar_one())


def co_authors(github: GitHubDouble, message: str) -> list[str]:
    """The logins credited in `message`, each checked against GitHub's account and host."""
    logins = []
    for name, number, login, host in CO_AUTHOR.findall(message):
        assert name == login
        assert int(number) == github.user(login)["id"]
        assert host == github.url.split("://", 1)[1].split(":")[0]
        logins.append(login)
    return logins


def test_every_commit_is_verified_keeps_its_trailers_and_credits_who_asked(
    world: World, engine: sa.Engine
) -> None:
    world.github.set_permission(REPOSITORY, "bob", "write")
    comment_ids: list[int] = []
    approved(world, engine, review_tasks(comment_ids))  # alice approves the plan
    wait_for_run(world, engine, "pr_open")
    (pull,) = world.github.pulls(REPOSITORY)
    submit_review(world, pull["number"], ["A dial.", "A knob."], comment_ids, reviewer="bob")
    wait_for(lambda: len(branch_commits(world.github)) == 3, timeout=120)
    wait_for_run(world, engine, "pr_open")

    credited: dict[str, list[str]] = {}
    for sha in branch_commits(world.github):
        shown: dict[str, Any] = world.github.commit(REPOSITORY, sha)["commit"]
        assert shown["verification"]["verified"] is True, sha
        assert shown["author"]["name"] == "baton-bot[bot]"  # GitHub made it, as the App
        message = shown["message"]
        assert f"Baton-Run: {run_id(engine)}" in message
        task = re.search(r"^Baton-Task: (T\d)$", message, re.M)
        assert task is not None
        credited[task.group(1)] = co_authors(world.github, message)
        # The trailers are one block, so GitHub shows every co-author.
        assert message.rstrip("\n").split("\n\n")[-1].startswith("Baton-Run:")
    assert credited == {"T1": ["alice"], "T2": ["alice", "bob"], "T3": ["alice", "bob"]}

    updates = world.github.ref_updates(REPOSITORY, BRANCH)
    assert len(updates) == 3
    assert [update.forced for update in updates] == [False, False, False]
    assert all(update.message.endswith("via API") for update in updates)


def test_a_persons_push_between_two_integrations_is_kept(world: World, engine: sa.Engine) -> None:
    answer = models_for(FOUR_TASKS)
    pushed: list[str] = []

    def push_after_t1(call: RecordedCall) -> ModelReply:
        # When T2 is reviewed T1 is on the branch: a person pushes a file no task writes.
        if who(call) == ("reviewer", "T2") and not pushed:
            pushed.append(commit_files(world.github, {"NOTES.md": "mine\n"}, BRANCH, BRANCH))
        return answer(call)

    approved(world, engine, push_after_t1)
    wait_for_run(world, engine, "pr_open")

    log = branch_log(world.github)
    assert log[:2] == ["T1: Step T1", "Maintainer's change"]
    assert sorted(log[2:]) == ["T2: Step T2", "T3: Step T3", "T4: Step T4"]
    commits = branch_commits(world.github)
    assert pushed[0] in commits
    updates = world.github.ref_updates(REPOSITORY, BRANCH)
    assert [update.forced for update in updates] == [False] * 5
    assert updates[1].new == pushed[0]
    for sha in commits:
        verified = world.github.commit(REPOSITORY, sha)["commit"]["verification"]["verified"]
        assert verified is (sha != pushed[0])  # the person's own push is not Baton's to sign
    (pull,) = world.github.pulls(REPOSITORY)
    assert pull["head"]["sha"] == commits[-1]
