"""The setup command reaches the network only on the run's base commit: once a worker has
rewritten the script it calls, the review, later tasks and the final tests run it offline, so
it cannot reach Baton's host (a loopback listener records no connection)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.doubles.fixtures import REPOSITORY, commit_files
from tests.doubles.models import ModelReply, RecordedCall
from tests.support import Listener, hostile_setup
from tests.world import ACCEPT, World, plan, submit, task, tool, wait_for_run, who

BENIGN_SETUP = "echo base setup > setup.log\n"


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.close()


def run_to_pull_request(
    world: World, engine: sa.Engine, the_plan: dict[str, Any], writes: dict[str, tuple[str, str]]
) -> list[str]:
    """Label, approve `the_plan` and wait for the draft pull request: each task's worker writes
    its (path, content) from `writes` and finishes; the reviews' prompts, in order."""
    seen_by_reviewer: list[str] = []

    def answer(call: RecordedCall) -> ModelReply:
        role, key = who(call)
        if role == "planner":
            return submit(the_plan)
        if role == "reviewer":
            seen_by_reviewer.append(call.json["messages"][0]["content"][0]["text"])
            return ACCEPT
        if len(call.json["messages"]) > 1:
            return tool("finish", summary=f"{key} done.", confidence=0.9)
        path, content = writes[str(key)]
        return tool("write_file", path=path, content=content)

    world.models.policy = answer
    world.label()
    wait_for_run(world, engine, "awaiting_approval")
    world.comment("/approve-plan")
    wait_for_run(world, engine, "pr_open")
    return seen_by_reviewer


TWO_TASKS = plan(
    task("T1", [], ["setup.sh"]),
    task("T2", ["T1"], ["src/widgets/gauge.py"]),
)


def test_a_setup_script_a_worker_rewrote_never_reaches_the_host(
    world: World, engine: sa.Engine, listener: Listener
) -> None:
    config = "setup_command: bash setup.sh\ntest_command: cat setup.log\n"
    commit_files(world.github, {".github/baton.yml": config, "setup.sh": BENIGN_SETUP})
    writes = {
        "T1": ("setup.sh", hostile_setup(listener.port)),
        "T2": ("src/widgets/gauge.py", "GAUGE = 1\n"),
    }
    seen_by_reviewer = run_to_pull_request(world, engine, TWO_TASKS, writes)

    # The review of T1 ran T1's setup.sh (the test command shows its log), and the review of
    # T2, whose worktree starts from T1's commit, ran it again: each time offline.
    assert len(seen_by_reviewer) == 2
    for prompt in seen_by_reviewer:
        assert "setup ran" in prompt
        assert "REFUSED" in prompt
    (pull,) = world.github.pulls(REPOSITORY)
    assert "REFUSED" in pull["body"]  # the final tests ran the rewritten script offline too
    assert "CONNECTED" not in pull["body"]
    assert listener.accepted == []


# Marks which kind of network the setup had when it built `.deps`, unless it is there already.
DEPENDENCIES_SETUP = (
    "if [ -f .deps/ready ]; then exit 0; fi\n"
    "mkdir -p .deps\n"
    "if grep -q \"$(printf '\\t')00000000$(printf '\\t')\" /proc/net/route; "
    "then echo made-online > .deps/ready; else echo made-offline > .deps/ready; fi\n"
    # What setup keeps to its own user (a cache, a key) is still there for the later users.
    "mkdir -m 700 .deps/private && echo kept-private > .deps/private/key\n"
    "chmod 600 .deps/private/key\n"
)
CHAIN = plan(
    task("T1", [], ["src/widgets/t1.py"]),
    task("T2", ["T1"], ["src/widgets/t2.py"]),
)


def test_what_the_online_setup_built_reaches_the_runs_later_worktrees(
    world: World, engine: sa.Engine
) -> None:
    config = "setup_command: sh setup.sh\ntest_command: cat .deps/ready .deps/private/key\n"
    files = {".github/baton.yml": config, "setup.sh": DEPENDENCIES_SETUP, ".gitignore": ".deps/\n"}
    commit_files(world.github, files)
    writes = {key: (f"src/widgets/{key.lower()}.py", f"NAME = {key!r}\n") for key in ("T1", "T2")}
    seen_by_reviewer = run_to_pull_request(world, engine, CHAIN, writes)

    # T1's worktree held the default branch's code: its setup ran online and what it built was
    # kept. The reviews, T2 (from T1's commit) and the final tests ran offline, on that.
    assert len(seen_by_reviewer) == 2
    for prompt in seen_by_reviewer:
        assert "made-online" in prompt
        assert "kept-private" in prompt
        assert "made-offline" not in prompt
    (pull,) = world.github.pulls(REPOSITORY)
    assert "made-online" in pull["body"]
