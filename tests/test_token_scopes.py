"""Each step's installation token reaches the run's repository only, with only the permissions
the step needs: tokens taken from Baton's own requests to the GitHub double are tried where they
must not work (another repository of the same installation, a push, a check run)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bot.executor import JobContext
from bot.github import scopes
from bot.planning import repo_client, updated_mirror
from bot.store.models import Run
from tests.doubles.fixtures import INSTALLATION_ID, REPOSITORY, REPOSITORY_ID, commit_files
from tests.doubles.github import GitHubDouble, RecordedRequest
from tests.support import wait_for
from tests.world import TEST_COMMAND, World, review_tasks, submit_review, wait_for_run

GADGETS = "octo-org/gadgets"
GADGETS_FILES = {"PLANS.md": "The gadget roadmap, for the gadgets team only.\n"}
TOKEN_ROUTE = "POST /app/installations/{installation_id}/access_tokens"
# What each kind of step asks GitHub for, on the wire.
PLAN = {"contents": "read", "issues": "write", "metadata": "read"}
READ_REVIEW = {"contents": "read", "pull_requests": "read", "metadata": "read"}
EXECUTE = {
    "checks": "write",
    "contents": "write",
    "issues": "write",
    "metadata": "read",
    "pull_requests": "write",
}


@pytest.fixture
def gadgets(github: GitHubDouble) -> str:
    """A second repository of the same installation, which no run on widgets may reach."""
    github.add_repository(GADGETS, INSTALLATION_ID, GADGETS_FILES)
    return GADGETS


def a_run() -> Run:
    return Run(
        id="run1",
        installation_id=INSTALLATION_ID,
        repository_id=REPOSITORY_ID,
        repository=REPOSITORY,
        issue_number=42,
    )


def tokens_in(requests: list[RecordedRequest]) -> list[str]:
    """Every installation token the requests carried, REST (`token …`) and git (Basic)."""
    found: dict[str, None] = {}
    for request in requests:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "token":
            found[value] = None
        elif scheme.lower() == "basic" and request.route == "git":
            found[base64.b64decode(value).decode().partition(":")[2]] = None
    return list(found)


def rest_status(
    github: GitHubDouble, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> int:
    headers = {"Authorization": f"token {token}"}
    url = github.api_url + path
    return httpx.request(method, url, headers=headers, json=body, timeout=30).status_code


def git_as(token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A real git sending `token` as GitHub's Basic credentials; not checked."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    environment = {
        "PATH": os.environ["PATH"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
    }
    command = ["git", "-c", f"http.extraHeader=Authorization: Basic {basic}", *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)


def reaches(github: GitHubDouble, token: str, full_name: str, tmp_path: Path) -> list[str]:
    """What `token` can do on `full_name`: read it over REST, list it over git."""
    can = []
    if rest_status(github, token, "GET", f"/repos/{full_name}/contents/PLANS.md") != 404:
        can.append("REST")
    if git_as(token, "ls-remote", f"{github.url}/{full_name}.git", cwd=tmp_path).returncode == 0:
        can.append("git")
    return can


def writes(github: GitHubDouble, token: str, tmp_path: Path) -> list[str]:
    """What `token` can write to widgets beyond comments: a push, a check run."""
    can = []
    checkout = Path(tempfile.mkdtemp(dir=tmp_path)) / "checkout"
    url = f"{github.url}/{REPOSITORY}.git"
    git_as(token, "clone", "--quiet", url, str(checkout), cwd=tmp_path)
    pushed = git_as(token, "push", "--quiet", url, "HEAD:refs/heads/not-baton", cwd=checkout)
    if pushed.returncode == 0:
        can.append("push")
    head = github.branch_sha(REPOSITORY, "main")
    check = {"name": "not-baton", "head_sha": head, "status": "completed", "conclusion": "success"}
    if rest_status(github, token, "POST", f"/repos/{REPOSITORY}/check-runs", check) != 403:
        can.append("check run")
    return can


def canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True)


def asked(requests: list[RecordedRequest]) -> list[Any]:
    """The bodies of the token requests, in an order that does not depend on their keys'."""
    bodies = [request.json for request in requests if request.route == TOKEN_ROUTE]
    return sorted(bodies, key=canonical)


async def test_a_runs_tokens_cannot_reach_another_repository_of_its_installation(
    job_context: JobContext, github: GitHubDouble, gadgets: str, tmp_path: Path
) -> None:
    run = a_run()
    await repo_client(job_context, run).repository()
    await updated_mirror(job_context, run)
    tokens = tokens_in(github.requests)
    assert tokens
    assert [reaches(github, token, gadgets, tmp_path) for token in tokens] == [[]] * len(tokens)


async def test_a_planning_steps_token_cannot_push_or_create_a_check_run(
    job_context: JobContext, github: GitHubDouble, tmp_path: Path
) -> None:
    run = a_run()
    await repo_client(job_context, run).repository()
    await updated_mirror(job_context, run)
    tokens = tokens_in(github.requests)
    assert tokens
    assert [writes(github, token, tmp_path) for token in tokens] == [[]] * len(tokens)
    assert github.branch_sha(REPOSITORY, "not-baton") is None
    assert github.check_runs(REPOSITORY) == []


@pytest.mark.parametrize(
    ("permissions", "may"),
    [
        pytest.param(scopes.PLAN, ["comment"], id="plan"),
        pytest.param(scopes.READ_REVIEW, [], id="read-review"),
        pytest.param(scopes.EXECUTE, ["comment", "push", "check run"], id="execute"),
    ],
)
async def test_each_steps_token_writes_only_what_the_step_needs(
    job_context: JobContext,
    github: GitHubDouble,
    gadgets: str,
    tmp_path: Path,
    permissions: scopes.Permissions,
    may: list[str],
) -> None:
    run = a_run()
    await repo_client(job_context, run, permissions).repository()
    await updated_mirror(job_context, run, permissions)
    (token,) = tokens_in(github.requests)
    comment = {"body": "Not from Baton."}
    path = f"/repos/{REPOSITORY}/issues/42/comments"
    commented = ["comment"] if rest_status(github, token, "POST", path, comment) == 201 else []
    assert commented + writes(github, token, tmp_path) == may
    assert reaches(github, token, gadgets, tmp_path) == []


async def test_a_token_request_names_the_repository_and_the_steps_permissions(
    job_context: JobContext, github: GitHubDouble
) -> None:
    run = a_run()
    await repo_client(job_context, run).issue(42)
    await updated_mirror(job_context, run)
    assert asked(github.requests) == [{"repositories": ["widgets"], "permissions": PLAN}]


def test_a_whole_run_uses_tokens_for_its_repository_with_each_steps_permissions(
    world: World, engine: sa.Engine, tmp_path: Path
) -> None:
    """Label, plan, approve, execute, a review and its tasks: every token the run used sees no
    other repository, the planning tokens write nothing, and no step was refused."""
    world.github.add_repository(GADGETS, INSTALLATION_ID, GADGETS_FILES)
    comment_ids: list[int] = []
    commit_files(world.github, {".github/baton.yml": f"test_command: {TEST_COMMAND}\n"})
    world.models.policy = review_tasks(comment_ids)
    world.label()
    wait_for_run(world, engine, "awaiting_approval")
    planned = len(world.github.requests)
    world.comment("/approve-plan")
    wait_for_run(world, engine, "pr_open")
    (pull,) = world.github.pulls(REPOSITORY)
    submit_review(world, pull["number"], ["Add a dial next to this.", "And a knob."], comment_ids)
    wait_for(
        lambda: len(world.github.review_comment_replies(REPOSITORY, pull["number"])) == 2,
        timeout=90,
    )
    wait_for_run(world, engine, "pr_open")

    made = list(world.github.requests)
    tokens = tokens_in(made)
    assert [reaches(world.github, token, GADGETS, tmp_path) for token in tokens] == [[]] * len(
        tokens
    )
    planning = tokens_in(made[:planned])
    assert [writes(world.github, token, tmp_path) for token in planning] == [[]] * len(planning)
    bodies = [{"repositories": ["widgets"], "permissions": p} for p in (PLAN, READ_REVIEW, EXECUTE)]
    assert asked(made) == sorted(bodies, key=canonical)
    assert [(r.method, r.path) for r in made if r.status == 403] == []
