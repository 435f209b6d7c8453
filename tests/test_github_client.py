"""Baton's GitHub client and operations, with the real githubkit against the GitHub double.

The double lays its API out like GitHub Enterprise Server (`/api/v3`), so every test here also
shows that `BATON_GITHUB_API_URL` pointing at an Enterprise Server works.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from bot.git import Mirrors
from bot.github.auth import TokenRefused
from bot.github.client import GitHubApp, GitHubTuning
from bot.github.repo import (
    GitHubError,
    NotFound,
    PullRequest,
    RepoClient,
    reply_marker,
    status_marker,
)
from bot.github.scopes import EXECUTE, PLAN, Permissions, TokenScope
from bot.settings import Settings
from tests.doubles.fixtures import INSTALLATION_ID as INSTALLATION
from tests.doubles.fixtures import REPOSITORY as REPO
from tests.doubles.fixtures import REPOSITORY_ID, WIDGETS_FILES, as_app, commit_files
from tests.doubles.github import GitHubDouble, RecordedRequest
from tests.support import free_port, payload

ISSUE_TITLE = payload("issues.labeled")["issue"]["title"]
QUICK = GitHubTuning(write_interval=0.05)
# These tests comment, open pull requests and make check runs: an execution step's token.
SCOPE = TokenScope(INSTALLATION, REPO, EXECUTE)


class OffsetClock:
    """Real time plus an offset a test can push forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
def app(github: GitHubDouble, clock: OffsetClock) -> GitHubApp:
    return GitHubApp(as_app(Settings(_env_file=None), github), QUICK, clock=clock)  # type: ignore[call-arg]


@pytest.fixture
def repo(app: GitHubApp) -> RepoClient:
    return RepoClient(app.client(SCOPE), REPO)


def canonical(body: Any) -> str:
    """A JSON body as text with sorted keys, to compare bodies whatever their key order."""
    return json.dumps(body, sort_keys=True)


def calls_to(github: GitHubDouble, method: str, path: str) -> list[RecordedRequest]:
    return [r for r in github.requests if r.method == method and r.path.endswith(path)]


async def test_a_token_is_fetched_once_reused_and_refreshed_near_expiry(
    github: GitHubDouble, repo: RepoClient, clock: OffsetClock
) -> None:
    await repo.repository()
    await repo.issue(42)
    await repo.file_at("README.md", "main")
    assert len(github.tokens_issued) == 1
    first = github.tokens_issued[0].token

    clock.offset = timedelta(minutes=56).total_seconds()  # four minutes left: inside the margin
    await repo.repository()
    assert len(github.tokens_issued) == 2
    latest = github.requests[-1]
    assert latest.headers["authorization"] == f"token {github.tokens_issued[1].token}" != first


async def test_a_token_github_no_longer_accepts_is_replaced(
    github: GitHubDouble, repo: RepoClient
) -> None:
    await repo.repository()
    github.expire_tokens()
    found = await repo.repository()
    assert found.full_name == REPO
    assert len(github.tokens_issued) == 2


async def test_git_gets_the_same_cached_token(github: GitHubDouble, app: GitHubApp) -> None:
    token = await app.token(SCOPE)
    await RepoClient(app.client(SCOPE), REPO).repository()
    assert [issued.token for issued in github.tokens_issued] == [token]


async def test_each_scope_gets_one_token_of_its_own_however_many_ask_at_once(
    github: GitHubDouble, app: GitHubApp
) -> None:
    gadgets = github.add_repository("octo-org/gadgets", INSTALLATION)
    scopes = [
        SCOPE,
        TokenScope(INSTALLATION, REPO, PLAN),
        TokenScope(INSTALLATION, "octo-org/gadgets", PLAN),
    ]
    tokens = await asyncio.gather(*(app.token(scope) for scope in scopes * 5))
    assert tokens == tokens[:3] * 5
    issued = {token.token: token for token in github.tokens_issued}
    assert len(issued) == 3
    granted = [(issued[t].repository_ids, dict(issued[t].permissions)) for t in tokens[:3]]
    assert granted == [
        ({REPOSITORY_ID}, EXECUTE.as_request()),
        ({REPOSITORY_ID}, PLAN.as_request()),
        ({gadgets}, PLAN.as_request()),
    ]
    asked = [r.json for r in calls_to(github, "POST", "/access_tokens")]
    wanted = [
        {"repositories": [scope.repository_name], "permissions": scope.permissions.as_request()}
        for scope in scopes
    ]
    assert sorted(asked, key=canonical) == sorted(wanted, key=canonical)


async def test_a_refused_token_is_renewed_for_its_own_scope(
    github: GitHubDouble, app: GitHubApp, repo: RepoClient
) -> None:
    planning = RepoClient(app.client(TokenScope(INSTALLATION, REPO, PLAN)), REPO)
    await repo.repository()
    await planning.repository()
    github.expire_tokens()
    await repo.repository()
    assert [dict(t.permissions) for t in github.tokens_issued[2:]] == [EXECUTE.as_request()]
    await planning.issue(42)
    assert [dict(t.permissions) for t in github.tokens_issued[2:]] == [
        EXECUTE.as_request(),
        PLAN.as_request(),
    ]


async def test_a_planning_client_is_refused_what_only_execution_may_do(
    github: GitHubDouble, app: GitHubApp
) -> None:
    planning = RepoClient(app.client(TokenScope(INSTALLATION, REPO, PLAN)), REPO)
    head = github.branch_sha(REPO, "main")
    assert head is not None
    with pytest.raises(GitHubError, match="403 .* Resource not accessible by integration"):
        await planning.create_check_run(head, "completed", "Baton", "done", conclusion="success")
    with pytest.raises(GitHubError, match="403"):
        await planning.open_pull_requests()
    assert github.check_runs(REPO) == []


@pytest.mark.parametrize(
    ("scope", "reason"),
    [
        pytest.param(
            TokenScope(INSTALLATION, REPO, Permissions(metadata="write")),
            "permissions requested are not granted",
            id="more-than-the-app-holds",
        ),
        pytest.param(
            TokenScope(INSTALLATION, "octo-org/not-installed", PLAN),
            "at least one repository that does not exist",
            id="a-repository-outside-the-installation",
        ),
    ],
)
async def test_a_token_github_will_not_grant_is_an_error_naming_why(
    github: GitHubDouble, app: GitHubApp, scope: TokenScope, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(GitHubError, match=f"422 .*{reason}"):
        await RepoClient(app.client(scope), scope.repository).repository()
    mirror = Mirrors(tmp_path / "data", github.url).mirror(REPO, lambda: app.token(scope))
    with pytest.raises(TokenRefused, match=f"{scope.repository} .*{reason}.*the installation must"):
        await mirror.update()
    assert github.tokens_issued == []


async def test_a_secondary_rate_limit_is_waited_out_and_retried(
    github: GitHubDouble, repo: RepoClient
) -> None:
    github.fail_next("GET", rf"^/repos/{REPO}/issues/42$", 403, retry_after=1)
    issue = await repo.issue(42)
    assert issue.title == ISSUE_TITLE
    statuses = [r.status for r in calls_to(github, "GET", f"/repos/{REPO}/issues/42")]
    assert statuses == [403, 200]


async def test_a_server_error_is_retried(github: GitHubDouble, repo: RepoClient) -> None:
    github.fail_next("GET", rf"^/repos/{REPO}$", 502)
    assert (await repo.repository()).default_branch == "main"
    assert [r.status for r in calls_to(github, "GET", f"/repos/{REPO}")] == [502, 200]


COMMENTS = rf"/repos/{REPO}/issues/42/comments"


@pytest.mark.parametrize(
    "post",
    [
        pytest.param(lambda repo: repo.upsert_status_comment(42, "run1", "planning"), id="status"),
        pytest.param(lambda repo: repo.reply_once(42, "delivery-7", "Noted."), id="reply"),
    ],
)
async def test_a_comment_github_made_before_a_server_error_is_not_posted_twice(
    github: GitHubDouble, repo: RepoClient, post: Callable[[RepoClient], Awaitable[int]]
) -> None:
    github.fail_next("POST", COMMENTS, 502, after_route=True)
    with pytest.raises(GitHubError, match="GitHub answered 502"):
        await post(repo)
    (made,) = github.issue_comments(REPO, 42)
    # The job runs again; its marker finds the comment GitHub made despite the 502.
    assert await post(repo) == made["id"]
    assert len(github.issue_comments(REPO, 42)) == 1
    assert [r.status for r in calls_to(github, "POST", "/issues/42/comments")] == [502]


async def test_a_pull_request_and_check_run_made_before_a_server_error_are_found_again(
    github: GitHubDouble, repo: RepoClient
) -> None:
    _push_branch(github, "baton/issue-42")
    github.fail_next("POST", rf"/repos/{REPO}/pulls", 504, after_route=True)
    with pytest.raises(GitHubError, match="504"):
        await repo.open_draft_pull_request("baton/issue-42", "main", "Widgets", "Closes #42")
    again = await repo.open_draft_pull_request("baton/issue-42", "main", "Widgets", "Closes #42")
    assert [pull["number"] for pull in github.pulls(REPO)] == [again.number]
    head = again.head_sha
    github.fail_next("POST", rf"/repos/{REPO}/check-runs", 502, after_route=True)
    with pytest.raises(GitHubError, match="502"):
        await repo.create_check_run(head, "completed", "Baton", "done", conclusion="success")
    (check,) = github.check_runs(REPO)
    assert await repo.find_check_run(head) == check["id"]


async def test_an_edit_answered_with_a_server_error_is_sent_again(
    github: GitHubDouble, repo: RepoClient
) -> None:
    first = await repo.upsert_status_comment(42, "run1", "planning")
    path = f"/issues/comments/{first}"
    github.fail_next("PATCH", rf"/repos/{REPO}{path}", 502, after_route=True)
    assert await repo.upsert_status_comment(42, "run1", "plan ready", known_id=first) == first
    assert [r.status for r in calls_to(github, "PATCH", path)] == [502, 200]
    (comment,) = github.issue_comments(REPO, 42)
    assert comment["body"].endswith("plan ready")


@pytest.mark.parametrize(
    "limit",
    [
        pytest.param({"rate_limit_remaining": 0}, id="primary"),
        pytest.param({"retry_after": 1}, id="secondary"),
    ],
)
async def test_a_post_refused_by_a_rate_limit_is_sent_again(
    github: GitHubDouble, repo: RepoClient, limit: dict[str, int]
) -> None:
    # GitHub processes nothing it refuses for a rate limit: sending it again makes one comment.
    github.rate_limit_reset = int(time.time())  # the window ends now
    github.fail_next("POST", COMMENTS, 403, **limit)
    await repo.comment(42, "hello")
    assert [r.status for r in calls_to(github, "POST", "/issues/42/comments")] == [403, 201]
    assert len(github.issue_comments(REPO, 42)) == 1


async def test_a_token_request_answered_with_a_server_error_is_sent_again(
    github: GitHubDouble, repo: RepoClient
) -> None:
    # A second installation token only replaces the first: nothing a person sees is made twice.
    github.fail_next("POST", rf"/app/installations/{INSTALLATION}/access_tokens", 502)
    assert (await repo.repository()).full_name == REPO
    assert [r.status for r in calls_to(github, "POST", "/access_tokens")] == [502, 201]


async def test_a_reaction_answered_with_a_server_error_is_sent_again(
    github: GitHubDouble, repo: RepoClient
) -> None:
    # GitHub answers a repeated reaction with the one it has: sending it again adds none.
    github.fail_next("POST", rf"/repos/{REPO}/issues/42/reactions", 502, after_route=True)
    await repo.react("eyes", issue=42)
    assert [r.status for r in calls_to(github, "POST", "/42/reactions")] == [502, 200]
    assert [reaction["content"] for reaction in github.reactions(REPO)] == ["eyes"]


async def test_a_missing_issue_names_the_repository_and_number(repo: RepoClient) -> None:
    with pytest.raises(NotFound, match="octo-org/widgets#999"):
        await repo.issue(999)


async def test_github_out_of_reach_is_a_github_error_naming_what_was_asked(
    github: GitHubDouble, clock: OffsetClock
) -> None:
    port = free_port()  # nothing listens there
    settings = as_app(Settings(_env_file=None), github)  # type: ignore[call-arg]
    unreachable = settings.model_copy(update={"github_api_url": f"http://127.0.0.1:{port}/api/v3"})
    repo = RepoClient(GitHubApp(unreachable, QUICK, clock=clock).client(SCOPE), REPO)

    with pytest.raises(GitHubError, match="could not be reached for issue octo-org/widgets#7"):
        await repo.issue(7)
    with pytest.raises(GitHubError, match="could not be reached for comment on octo-org/widgets#7"):
        await repo.comment(7, "Hello")


async def test_issue_with_all_its_comments_across_pages(
    github: GitHubDouble, repo: RepoClient
) -> None:
    for index in range(105):
        github.add_issue_comment(REPO, 42, f"comment {index}", user="bob")
    issue = await repo.issue(42)
    assert issue.author == "alice"
    assert [comment.body for comment in issue.comments] == [f"comment {i}" for i in range(105)]


async def test_a_file_at_a_ref_or_none(repo: RepoClient) -> None:
    assert await repo.file_at("README.md", "main") == WIDGETS_FILES["README.md"].encode()
    assert await repo.file_at(".github/baton.yml", "main") is None


async def test_the_status_comment_upsert_run_twice_leaves_one_comment(
    github: GitHubDouble, repo: RepoClient
) -> None:
    first = await repo.upsert_status_comment(42, "run1", "planning")
    second = await repo.upsert_status_comment(42, "run1", "plan r1 ready", known_id=first)
    assert first == second
    bodies = [comment["body"] for comment in github.issue_comments(REPO, 42)]
    assert bodies == [f"{status_marker('run1')}\nplan r1 ready"]


async def test_a_crash_between_creating_and_recording_the_comment_leaves_one(
    github: GitHubDouble, repo: RepoClient
) -> None:
    github.add_issue_comment(REPO, 42, f"> {status_marker('run1')} quoted by a person", user="bob")
    created = await repo.upsert_status_comment(42, "run1", "planning")
    # The id was never recorded: the process died. The retry finds the comment by its marker.
    again = await repo.upsert_status_comment(42, "run1", "planning, resumed")
    assert again == created
    bot_comments = [c for c in github.issue_comments(REPO, 42) if c["user"]["type"] == "Bot"]
    assert [c["body"].splitlines()[-1] for c in bot_comments] == ["planning, resumed"]
    assert len(github.issue_comments(REPO, 42)) == 2  # the person's comment is untouched


async def test_content_creating_calls_are_paced(github: GitHubDouble, repo: RepoClient) -> None:
    for index in range(3):
        await repo.comment(42, f"note {index}")
    created = calls_to(github, "POST", f"/repos/{REPO}/issues/42/comments")
    gaps = [later.at - earlier.at for earlier, later in pairwise(created)]
    assert len(gaps) == 2
    assert all(gap >= QUICK.write_interval for gap in gaps)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("admin", True),
        ("maintain", True),
        ("write", True),
        ("triage", False),
        ("read", False),
        ("none", False),
    ],
)
async def test_who_may_command_baton(
    github: GitHubDouble, repo: RepoClient, role: str, allowed: bool
) -> None:
    github.set_permission(REPO, "carol", role)
    assert await repo.may_command("carol") is allowed


async def test_reactions_on_an_issue_and_a_comment(github: GitHubDouble, repo: RepoClient) -> None:
    comment = github.add_issue_comment(REPO, 42, "/approve-plan", user="alice")
    await repo.react("eyes", issue=42)
    await repo.react("+1", comment=comment["id"])
    assert sorted(reaction["content"] for reaction in github.reactions(REPO)) == ["+1", "eyes"]


async def test_check_run_created_then_completed(github: GitHubDouble, repo: RepoClient) -> None:
    head = github.branch_sha(REPO, "main")
    assert head is not None
    check_id = await repo.create_check_run(head, "in_progress", "Baton", "running")
    await repo.update_check_run(check_id, "completed", "Baton", "all done", conclusion="success")
    (check,) = github.check_runs(REPO)
    assert (check["name"], check["status"], check["conclusion"]) == (
        "baton",
        "completed",
        "success",
    )


def _push_branch(github: GitHubDouble, branch: str) -> None:
    """A branch one commit ahead of main, as a person would push it."""
    commit_files(github, {"NOTES.md": "work in progress\n"}, branch=branch)


async def test_a_draft_pull_request_is_opened_once_per_branch(
    github: GitHubDouble, repo: RepoClient
) -> None:
    _push_branch(github, "baton/issue-42")
    first = await repo.open_draft_pull_request("baton/issue-42", "main", "Widgets", "Closes #42")
    second = await repo.open_draft_pull_request("baton/issue-42", "main", "Widgets", "again")
    assert first.number == second.number
    assert first.draft
    assert len(github.pulls(REPO)) == 1
    await repo.update_pull_request_body(first.number, "Closes #42\n\nupdated")
    assert github.pulls(REPO)[0]["body"].endswith("updated")
    assert [pull.number for pull in await repo.open_pull_requests()] == [first.number]


async def reviewed_pull(
    github: GitHubDouble, repo: RepoClient, state: str, body: str, comments: dict[int, str]
) -> tuple[PullRequest, dict[str, Any]]:
    """A draft pull request and alice's review of it, with a comment per README line given."""
    _push_branch(github, "baton/issue-42")
    pull = await repo.open_draft_pull_request("baton/issue-42", "main", "Widgets", "Closes #42")
    lines = [{"path": "README.md", "line": line, "body": text} for line, text in comments.items()]
    review = github.add_review(
        REPO, pull.number, user="alice", state=state, body=body, comments=lines
    )
    return pull, review


async def test_a_review_with_its_comments_and_a_reply(
    github: GitHubDouble, repo: RepoClient
) -> None:
    pull, submitted = await reviewed_pull(
        github, repo, "CHANGES_REQUESTED", "Two things.", {1: "Say more."}
    )
    review = await repo.review(pull.number, submitted["id"])
    assert (review.author, review.state, review.body) == (
        "alice",
        "CHANGES_REQUESTED",
        "Two things.",
    )
    (comment,) = review.comments
    assert (comment.path, comment.line, comment.body) == ("README.md", 1, "Say more.")
    await repo.reply_to_review_comment(pull.number, comment.id, "run1:1", "Addressed in abc1234.")
    replies = github.review_comment_replies(REPO, pull.number)
    assert [reply["body"] for reply in replies] == [
        f"Addressed in abc1234.\n\n{reply_marker('run1:1')}"
    ]


async def test_a_review_comment_is_answered_once_per_key_however_often_asked(
    github: GitHubDouble, repo: RepoClient
) -> None:
    pull, submitted = await reviewed_pull(
        github, repo, "COMMENTED", "", {1: "Say more.", 2: "And here."}
    )
    first, second = (comment["id"] for comment in submitted["comments"])
    # A person quoting the marker in the thread is not Baton's reply.
    github.add_review_reply(REPO, first, f"Like this? {reply_marker(f'run1:{first}')}")
    one = await repo.reply_to_review_comment(pull.number, first, f"run1:{first}", "Done.")
    again = await repo.reply_to_review_comment(pull.number, first, f"run1:{first}", "Done.")
    other = await repo.reply_to_review_comment(pull.number, second, f"run1:{second}", "Done.")
    assert one == again != other
    baton = [
        r for r in github.review_comment_replies(REPO, pull.number) if r["user"]["type"] == "Bot"
    ]
    assert sorted((r["id"], r["in_reply_to_id"]) for r in baton) == [(one, first), (other, second)]
    assert github.unknown_requests() == []


async def test_a_reply_to_a_reply_is_found_again_though_github_files_it_under_the_thread(
    github: GitHubDouble, repo: RepoClient
) -> None:
    pull, submitted = await reviewed_pull(github, repo, "COMMENTED", "", {1: "Say more."})
    (top,) = (comment["id"] for comment in submitted["comments"])
    follow_up = github.add_review_reply(REPO, top, "And rename it, please.")["id"]

    key = f"run1:{follow_up}"
    one = await repo.reply_to_review_comment(pull.number, follow_up, key, "Renamed.")
    again = await repo.reply_to_review_comment(pull.number, follow_up, key, "Renamed.")

    assert one == again
    baton = [
        r for r in github.review_comment_replies(REPO, pull.number) if r["user"]["type"] == "Bot"
    ]
    assert [(r["id"], r["in_reply_to_id"]) for r in baton] == [(one, top)]


async def test_no_request_went_to_a_route_the_double_does_not_know(
    github: GitHubDouble, repo: RepoClient
) -> None:
    await repo.issue(42)
    await repo.upsert_status_comment(42, "run1", "planning")
    await repo.may_command("alice")
    assert github.unknown_requests() == []


async def test_a_zero_retry_after_is_retried_at_once_not_after_a_minute(
    github: GitHubDouble, repo: RepoClient
) -> None:
    github.fail_next("GET", rf"/repos/{REPO}", 403, retry_after=0)
    assert (await repo.repository()).full_name == REPO
    assert [r.status for r in calls_to(github, "GET", f"/repos/{REPO}")] == [403, 200]
