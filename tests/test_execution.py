"""Execution end to end over HTTP: an approved plan's tasks run, are reviewed, land on the run
branch of the GitHub double, and become a draft pull request."""

from __future__ import annotations

import re
import time
from typing import Any

import sqlalchemy as sa

from bot.plan.schema import Plan
from bot.plan.validate import parse_plan_yaml
from bot.settings import Settings
from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.models import ModelReply, RecordedCall, ScriptedToolCall
from tests.support import git, wait_for
from tests.world import (
    ACCEPT,
    BRANCH,
    FILES,
    FOUR_TASKS,
    ISSUE,
    World,
    approved,
    attempts,
    branch_log,
    models_for,
    plan,
    review_tasks,
    submit_review,
    task,
    tool,
    unsettled_jobs,
    wait_for_run,
    who,
)


def spent(engine: sa.Engine) -> str:
    """The run's spend as the status comment and the pull request give it."""
    query = (
        "SELECT sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), "
        "coalesce(sum(cost_usd), 0) FROM model_calls"
    )
    with engine.connect() as connection:
        tokens, usd = connection.execute(sa.text(query)).one()
    assert tokens > 0
    return f"${usd:,.4f} · {tokens:,} tokens"


def recorded_model(engine: sa.Engine, key: str) -> str:
    query = "SELECT a.model FROM task_attempts a JOIN tasks t ON t.id = a.task_id WHERE t.key = :k"
    with engine.connect() as connection:
        (model,) = set(connection.execute(sa.text(query), {"k": key}).scalars())
    return str(model)


def yaml_in(body: str) -> Plan:
    found = re.search(r"<summary>Plan as YAML \(r1\)</summary>\n\n```yaml\n(.*?)\n```", body, re.S)
    assert found, body
    return parse_plan_yaml(found.group(1))


def test_the_pull_request_fills_the_repositorys_template_and_closes_the_issue(
    world: World, engine: sa.Engine
) -> None:
    template = "## What changed\n\n<!-- describe it -->\n\n- [ ] I added tests\n"
    commit_files(
        world.github,
        {"docs/PULL_REQUEST_TEMPLATE.md": template, "private.md": "NOT FOR THE BODY"},
        # The first place GitHub looks holds a link: it is not followed, the next place is read.
        symlinks={".github/pull_request_template.md": "../private.md"},
    )
    approved(world, engine, models_for(plan(task("T1", [], [FILES["T1"]]))))
    wait_for_run(world, engine, "pr_open")

    (pull,) = world.github.pulls(REPOSITORY)
    body = pull["body"]
    assert body.startswith(f"{template.strip()}\n\n---\n\nCloses #{ISSUE}.\n\n## Plan\n")
    assert "NOT FOR THE BODY" not in body
    assert "Tests on the branch: passed" in body


def test_an_approved_plan_becomes_a_draft_pull_request(
    world: World, engine: sa.Engine, settings: Settings
) -> None:
    approved(world, engine, models_for(FOUR_TASKS))
    wait_for_run(world, engine, "pr_open")

    subjects = branch_log(world.github)
    assert len(subjects) == 4
    # Each task's own commit was kept from git's gc until it was on the branch, then let go.
    mirror = settings.data_dir / "mirrors" / f"{REPOSITORY}.git"
    assert git("for-each-ref", "refs/baton", cwd=mirror) == ""
    assert subjects[0] == "T1: Step T1"
    assert sorted(subjects[1:3]) == ["T2: Step T2", "T3: Step T3"]
    assert subjects[3] == "T4: Step T4"

    by_key = {row.key: row for row in attempts(engine)}
    t2, t3 = by_key["T2"], by_key["T3"]
    # Their recorded intervals overlap: each started before the other ended.
    assert t2.started_at < t3.ended_at
    assert t3.started_at < t2.ended_at

    (pull,) = world.github.pulls(REPOSITORY)
    assert pull["draft"] is True
    assert pull["head"]["ref"] == BRANCH
    body = pull["body"]
    assert body.startswith(f"Closes #{ISSUE}.\n\n## Plan\n\nAdd a dial widget.\n\n```mermaid\n")
    assert '  T1["T1: Step T1"]\n' in body
    assert "  T2 --> T4\n  T3 --> T4\n" in body
    assert yaml_in(body).model_dump() == Plan.model_validate(FOUR_TASKS).model_dump()
    for key in FILES:
        model = recorded_model(engine, key)
        assert model
        assert f"| {key} | implementer | {model} | " in body
    assert f"**Cost:** {spent(engine)}" in body
    assert "Tests on the branch: passed" in body
    assert "## Findings" not in body  # no static analyst in this plan
    (check,) = world.github.check_runs(REPOSITORY)
    assert (check["name"], check["conclusion"]) == ("baton", "success")
    status = wait_for(lambda: "Draft pull request" in world.status() and world.status())
    assert "### Plan (r1)\n\nAdd a dial widget.\n\n" in status
    for key in FILES:
        assert f"- [x] **{key}** Step {key} — integrated\n" in status
    assert "- [ ]" not in status
    assert "```mermaid\nflowchart TD\n" in status
    assert "  classDef integrated fill:" in status
    assert "  class T1,T2,T3,T4 integrated\n```" in status
    assert f"**Cost so far:** {spent(engine)}" in status


def test_a_static_analysts_findings_go_into_the_pull_request_inert_and_add_no_commit(
    world: World, engine: sa.Engine
) -> None:
    analysed = plan(
        task("T1", [], [FILES["T1"]]),
        task("T2", ["T1"], [], role="static_analyst", title="Look for bare excepts"),
    )
    implement = models_for(analysed)

    def answer(call: RecordedCall) -> ModelReply:
        role, key = who(call)
        if role != "worker" or key != "T2":
            return implement(call)
        if len(call.json["messages"]) == 1:
            return tool("read_file", path=FILES["T1"])
        findings = {
            "summary": "One finding in src/widgets/base.py.",
            "confidence": 0.9,
            "notes": "@octocat line 1 <img src=x onerror=alert(1)> has a bare except",
        }
        return tool("finish", **findings)

    approved(world, engine, answer)
    wait_for_run(world, engine, "pr_open")

    assert branch_log(world.github) == ["T1: Step T1"]  # the analyst changed nothing
    (pull,) = world.github.pulls(REPOSITORY)
    assert (
        "## Findings\n\n**T2** Look for bare excepts\n\n```\n"
        "One finding in src/widgets/base.py.\n\n"
        "@octocat line 1 <img src=x onerror=alert(1)> has a bare except\n```\n\n## Tests"
    ) in pull["body"]
    # Outside the fence, neither the mention nor the markup appears.
    outside = re.sub(r"^```[a-z]*\n.*?\n```$", "", pull["body"], flags=re.S | re.M)
    assert "@octocat" not in outside
    assert "<img" not in outside
    assert f"| T2 | static\\_analyst | {recorded_model(engine, 'T2')} | " in pull["body"]
    wait_for(lambda: "- [x] **T2** Look for bare excepts — integrated" in world.status())


def test_a_revise_then_accept_makes_two_attempts_and_one_commit(
    world: World, engine: sa.Engine
) -> None:
    verdicts = iter(["revise", "accept"])

    def review(key: str) -> ModelReply:
        verdict = next(verdicts)
        arguments = {"verdict": verdict, "feedback": "Name it DIAL." if verdict == "revise" else ""}
        return ModelReply(tool_calls=[ScriptedToolCall("submit_review", arguments)])

    approved(world, engine, models_for(plan(task("T1", [], [FILES["T1"]])), review))
    wait_for_run(world, engine, "pr_open")
    rows = attempts(engine)
    assert [(row.number, row.status, row.review_verdict) for row in rows] == [
        (1, "retried", "revise"),
        (2, "succeeded", "accept"),
    ]
    assert branch_log(world.github) == ["T1: Step T1"]


def test_cancel_during_execution_stops_the_work_and_pushes_nothing(
    world: World, engine: sa.Engine
) -> None:
    slow = models_for(FOUR_TASKS)

    def stalling(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "worker":
            time.sleep(2)  # a worker thinking; the cancel arrives meanwhile
        return slow(call)

    approved(world, engine, stalling)
    wait_for_run(world, engine, "executing")
    wait_for(lambda: attempts(engine), timeout=60)  # a worker is at work
    world.comment("/cancel")
    wait_for_run(world, engine, "cancelled")
    # Every job of the run has ended (its attempts were stopped, not left to finish).
    wait_for(lambda: unsettled_jobs(engine) == 0, timeout=30)
    assert world.github.branch_sha(REPOSITORY, BRANCH) is None
    assert world.github.pulls(REPOSITORY) == []
    with engine.connect() as connection:
        states = connection.execute(sa.text("SELECT DISTINCT state FROM tasks")).scalars().all()
    assert states == ["cancelled"]
    # The status ends showing the cancel, with every task, however a live update raced it.
    status = wait_for(lambda: "**Cancelled**:" in world.status() and world.status(), timeout=30)
    assert "**Cancelled**: cancelled by @&#8205;alice." in status
    assert "- [ ] **T1** Step T1 — cancelled" in status


def test_tasks_that_write_one_file_never_run_at_the_same_time(
    world: World, engine: sa.Engine
) -> None:
    shared = "src/widgets/dial.py"
    one_file = plan(
        task("T1", [], [FILES["T1"]]),
        task("T2", ["T1"], [shared]),
        task("T3", ["T1"], [shared]),
        task("T4", ["T2", "T3"], [FILES["T4"]]),
    )
    writes = {**FILES, "T2": shared, "T3": shared}

    def answer(call: RecordedCall) -> ModelReply:
        role, key = who(call)
        if role == "worker" and len(call.json["messages"]) == 1:
            return tool("write_file", path=writes[str(key)], content=f"BY = {key!r}\n")
        return models_for(one_file)(call)

    approved(world, engine, answer)
    wait_for_run(world, engine, "pr_open")
    by_key = {row.key: row for row in attempts(engine)}
    first, second = sorted((by_key["T2"], by_key["T3"]), key=lambda row: row.started_at)
    assert first.ended_at <= second.started_at
    assert len(branch_log(world.github)) == 4


def test_a_review_with_two_comments_becomes_tasks_commits_and_replies(
    world: World, engine: sa.Engine
) -> None:
    comment_ids: list[int] = []
    approved(world, engine, review_tasks(comment_ids))
    wait_for_run(world, engine, "pr_open")
    (pull,) = world.github.pulls(REPOSITORY)
    submit_review(world, pull["number"], ["Add a dial next to this.", "And a knob."], comment_ids)

    def replied() -> list[dict[str, Any]]:
        return world.github.review_comment_replies(REPOSITORY, pull["number"])

    replies = wait_for(lambda: len(replied()) == 2 and replied(), timeout=90)
    assert sorted(reply["in_reply_to_id"] for reply in replies) == sorted(comment_ids)
    assert all(reply["body"].startswith("Addressed in ") for reply in replies)
    subjects = branch_log(world.github)
    assert subjects[0] == "T1: Step T1"
    assert sorted(subjects[1:]) == ["T2: Step T2", "T3: Step T3"]
    (still,) = world.github.pulls(REPOSITORY)
    assert still["draft"] is True
    wait_for_run(world, engine, "pr_open")


def test_a_conflict_with_a_persons_push_goes_back_to_the_worker_and_is_resolved(
    world: World, engine: sa.Engine
) -> None:
    quick = models_for(plan(task("T1", [], [FILES["T1"]])))
    pushed: list[str] = []

    def answer(call: RecordedCall) -> ModelReply:
        if who(call)[0] == "reviewer" and not pushed:
            # While T1 is reviewed, a person pushes their own version of its file.
            pushed.append(commit_files(world.github, {FILES["T1"]: "PERSON = 1\n"}, branch=BRANCH))
        return quick(call)

    approved(world, engine, answer)
    wait_for_run(world, engine, "pr_open")

    rows = attempts(engine)
    assert [row.number for row in rows] == [1, 2]
    second_attempt = [
        call
        for call in world.models.calls
        if who(call)[0] == "worker" and len(call.json["messages"]) == 1
    ][1]
    prompt = second_attempt.json["messages"][0]["content"][0]["text"]
    assert "conflicts with the run branch" in prompt
    assert "PERSON = 1" in prompt
    assert branch_log(world.github) == ["Maintainer's change", "T1: Step T1"]


def test_a_task_that_fails_every_round_waits_for_a_person_and_retry_finishes_it(
    world: World, engine: sa.Engine
) -> None:
    reviews = {"T2": 0}

    def review(key: str) -> ModelReply:
        if key == "T1":
            return ACCEPT
        reviews["T2"] += 1
        verdict = "revise" if reviews["T2"] <= 3 else "accept"
        arguments = {"verdict": verdict, "feedback": "Not yet." if verdict == "revise" else ""}
        return ModelReply(tool_calls=[ScriptedToolCall("submit_review", arguments)])

    two = plan(task("T1", [], [FILES["T1"]]), task("T2", ["T1"], [FILES["T2"]]))
    approved(world, engine, models_for(two, review))
    wait_for_run(world, engine, "needs_human")
    assert branch_log(world.github) == ["T1: Step T1"]  # accepted work stays pushed
    status = wait_for(lambda: "Needs a person" in world.status() and world.status())
    assert "- [x] **T1** Step T1 — integrated\n- [ ] **T2** Step T2 — failed\n" in status
    assert "  class T1 integrated\n" in status
    assert "  class T2 failed\n" in status

    world.comment("/retry T2")
    wait_for_run(world, engine, "pr_open")
    assert branch_log(world.github) == ["T1: Step T1", "T2: Step T2"]
    statuses = [row.status for row in attempts(engine) if row.key == "T2"]
    assert statuses == ["retried", "retried", "failed", "succeeded"]


def test_an_escalated_task_skipped_by_a_person_ends_the_run_without_a_pull_request(
    world: World, engine: sa.Engine
) -> None:
    escalate = ModelReply(
        tool_calls=[
            ScriptedToolCall("submit_review", {"verdict": "escalate", "feedback": "Unclear."})
        ]
    )
    approved(world, engine, models_for(plan(task("T1", [], [FILES["T1"]])), lambda key: escalate))
    wait_for_run(world, engine, "needs_human")
    world.comment("/skip T1")
    wait_for_run(world, engine, "done")
    assert world.github.pulls(REPOSITORY) == []
    assert world.github.branch_sha(REPOSITORY, BRANCH) is None
    wait_for(lambda: "nothing to propose" in world.status())
