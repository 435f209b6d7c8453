"""The GitHub double, driven by the real githubkit client and a real `git`.

Every route is called through githubkit and its answer read as githubkit's generated model, for
both REST API versions the client ships, so a shape the models refuse fails here first.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub, UnauthAuthStrategy
from githubkit.cache import MemCacheStrategy
from githubkit.exception import (
    PrimaryRateLimitExceeded,
    RequestFailed,
    SecondaryRateLimitExceeded,
)
from githubkit.retry import RetryOption
from githubkit.typing import RetryDecisionFunc
from githubkit.utils import UNSET
from githubkit.webhooks import parse_obj as parse_webhook
from githubkit.webhooks import verify
from starlette.types import Receive, Scope, Send

from tests.doubles.github import GitHubDouble
from tests.support import payload, serve

# The world of tests/payloads, which the `github` fixture serves.
INSTALLATION_ID = 51234567
REPOSITORY = "octo-org/widgets"
REPOSITORY_ID = 712345678
ISSUE_NUMBER = 42
OWNER, NAME = REPOSITORY.split("/")
GADGETS: dict[str, str | bytes] = {
    "README.md": "# Gadgets\n",
    "src/gadgets/dial.py": "DIAL = 1\n",
    "logo.bin": bytes(range(256)),
}
# Baton pins 2022-11-28; the newest version shows the bodies also fit what githubkit moves to.
ApiVersion = Literal["2022-11-28", "2026-03-10"]
API_VERSIONS: list[ApiVersion] = ["2022-11-28", "2026-03-10"]


# --- clients -------------------------------------------------------------------------------


def app_client(
    github: GitHubDouble, auto_retry: bool | RetryDecisionFunc = False
) -> GitHub[AppAuthStrategy]:
    return GitHub(
        AppAuthStrategy(github.app_id, github.private_key_pem),
        base_url=github.api_url,
        # githubkit caches JWTs and tokens process-wide by app id unless given a cache of its own.
        cache_strategy=MemCacheStrategy(),
        http_cache=False,
        auto_retry=auto_retry,
    )


def installation_client(
    github: GitHubDouble, auto_retry: bool | RetryDecisionFunc = False
) -> GitHub[AppInstallationAuthStrategy]:
    app = app_client(github, auto_retry)
    return app.with_auth(app.auth.as_installation(INSTALLATION_ID))


@pytest.fixture(params=API_VERSIONS)
def version(request: pytest.FixtureRequest) -> ApiVersion:
    chosen: ApiVersion = request.param
    return chosen


@pytest.fixture
def app(github: GitHubDouble) -> GitHub[AppAuthStrategy]:
    return app_client(github)


@pytest.fixture
def client(github: GitHubDouble) -> GitHub[AppInstallationAuthStrategy]:
    return installation_client(github)


def new_token(github: GitHubDouble) -> str:
    app = app_client(github)
    return app.rest.apps.create_installation_access_token(INSTALLATION_ID).parsed_data.token


def raw(github: GitHubDouble, method: str, path: str, **options: Any) -> httpx.Response:
    """A request to the REST API without githubkit, for exact headers and bodies."""
    return httpx.request(method, github.api_url + path, timeout=30, **options)


def error_message(error: RequestFailed) -> str:
    return str(error.response.json()["message"])


# --- git helpers ---------------------------------------------------------------------------


def git(*args: str, cwd: Path | None = None, token: str | None = None) -> str:
    """Run a real git; a token goes in as GitHub's Basic auth header, never in the URL."""
    auth = []
    if token is not None:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        auth = ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
    environment = {
        "PATH": os.environ["PATH"],
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Widget Maker",
        "GIT_AUTHOR_EMAIL": "widgets@example.com",
        "GIT_COMMITTER_NAME": "Widget Maker",
        "GIT_COMMITTER_EMAIL": "widgets@example.com",
    }
    done = subprocess.run(
        ["git", *auth, *args], cwd=cwd, env=environment, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@pytest.fixture
def checkout(github: GitHubDouble, tmp_path: Path) -> Path:
    """A clone of octo-org/widgets made through the double with an installation token."""
    target = tmp_path / "checkout"
    git("clone", "--quiet", f"{github.url}/{REPOSITORY}.git", str(target), token=new_token(github))
    return target


def push_commit(github: GitHubDouble, checkout: Path, branch: str, files: dict[str, str]) -> str:
    """Commit `files` on `branch` (created from the current HEAD) and push it; returns the sha."""
    git("checkout", "--quiet", "-B", branch, cwd=checkout)
    for name, text in files.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(text)
    git("add", "--all", cwd=checkout)
    git("commit", "--quiet", "-m", f"Change {', '.join(files)}", cwd=checkout)
    git(
        "push",
        "--quiet",
        "origin",
        f"HEAD:refs/heads/{branch}",
        cwd=checkout,
        token=new_token(github),
    )
    return git("rev-parse", "HEAD", cwd=checkout)


# --- App routes ----------------------------------------------------------------------------


def test_app_routes_parse_as_githubkit_models(
    github: GitHubDouble, app: GitHub[AppAuthStrategy], version: ApiVersion
) -> None:
    rest = app.rest(version)
    me = rest.apps.get_authenticated().parsed_data
    installations = rest.apps.list_installations().parsed_data
    one = rest.apps.get_installation(INSTALLATION_ID).parsed_data
    of_repository = rest.apps.get_repo_installation(OWNER, NAME).parsed_data
    assert me is not None
    assert (me.id, me.slug) == (github.app_id, github.app_slug)
    assert [found.id for found in installations] == [INSTALLATION_ID]
    assert getattr(one.account, "login", None) == "octo-org"
    assert (one.app_id, of_repository.id) == (github.app_id, INSTALLATION_ID)


def test_an_access_token_expires_after_the_token_lifetime(
    github: GitHubDouble, app: GitHub[AppAuthStrategy], version: ApiVersion
) -> None:
    github.token_lifetime = timedelta(minutes=7)
    before = datetime.now(UTC).replace(microsecond=0)
    answer = app.rest(version).apps.create_installation_access_token(INSTALLATION_ID)
    token = answer.parsed_data
    expires_at = datetime.strptime(token.expires_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert answer.status_code == 201
    assert before + timedelta(minutes=7) <= expires_at <= datetime.now(UTC) + timedelta(minutes=7)
    assert re.fullmatch(r"ghs_[A-Za-z0-9_-]{36,120}", token.token)
    assert github.tokens_issued[-1].token == token.token
    assert github.tokens_issued[-1].installation_id == INSTALLATION_ID


def test_an_unknown_installation_is_not_found(app: GitHub[AppAuthStrategy]) -> None:
    with pytest.raises(RequestFailed) as refused:
        app.rest.apps.create_installation_access_token(999)
    assert refused.value.response.status_code == 404


# --- JWT and token auth --------------------------------------------------------------------


def app_jwt(github: GitHubDouble, **changes: Any) -> str:
    """A JWT as githubkit makes one, with `changes` to its claims (`iat` and `exp` in seconds
    from now), its `key` or its `algorithm`."""
    now = int(time.time())
    key = changes.pop("key", github.private_key_pem)
    algorithm = changes.pop("algorithm", "RS256")
    times = {name: now + changes.pop(name) for name in ("iat", "exp") if name in changes}
    claims = {"iss": str(github.app_id), "iat": now - 60, "exp": now + 540} | changes | times
    return jwt.encode(claims, key, algorithm=algorithm)


@pytest.fixture(scope="module")
def other_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    return pem.decode()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iss": "31337"}, "'Issuer' claim ('iss') must be this App's id"),
        ({"exp": -5}, "'Expiration time' claim ('exp') must be a numeric"),
        ({"exp": 900}, "'Expiration time' claim ('exp') is too far"),
        ({"iat": 300, "exp": 600}, "'Issued at' claim ('iat')"),
        ({"algorithm": "HS256", "key": "a-shared-secret-long-enough-for-hs256"}, "signed with"),
    ],
    ids=["wrong-issuer", "expired", "too-long-lived", "issued-in-the-future", "not-rs256"],
)
def test_a_bad_jwt_is_refused_with_the_reason(
    github: GitHubDouble, changes: dict[str, Any], message: str
) -> None:
    answer = raw(
        github, "GET", "/app", headers={"Authorization": f"Bearer {app_jwt(github, **changes)}"}
    )
    assert answer.status_code == 401
    assert message in answer.json()["message"]
    assert answer.json()["documentation_url"] == "https://docs.github.com/rest"


def test_a_jwt_signed_by_another_key_is_refused(github: GitHubDouble, other_key: str) -> None:
    client = GitHub(
        AppAuthStrategy(github.app_id, other_key),
        base_url=github.api_url,
        cache_strategy=MemCacheStrategy(),
        auto_retry=False,
    )
    with pytest.raises(RequestFailed) as refused:
        client.rest.apps.get_authenticated()
    assert refused.value.response.status_code == 401
    assert "signature does not match" in error_message(refused.value)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not.a.jwt", "token ghs_not-issued-by-the-double-0123456789abcdef"],
    ids=["none", "garbage", "installation-token"],
)
def test_app_routes_need_the_app_jwt(github: GitHubDouble, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = raw(github, "GET", f"/app/installations/{INSTALLATION_ID}", headers=headers)
    assert answer.status_code == 401


@pytest.mark.parametrize("scheme", ["token", "Bearer"])
def test_an_installation_token_opens_the_installation_repositories(
    github: GitHubDouble, scheme: str
) -> None:
    headers = {"Authorization": f"{scheme} {new_token(github)}"}
    answer = raw(github, "GET", f"/repos/{REPOSITORY}", headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json; charset=utf-8"


@pytest.mark.parametrize(
    "authorization",
    [None, "token ghs_made-up-token-that-was-never-issued-000000", "Basic eDp5"],
    ids=["none", "unknown-token", "basic"],
)
def test_repository_routes_refuse_anything_but_an_issued_token(
    github: GitHubDouble, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = raw(github, "GET", f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}", headers=headers)
    assert answer.status_code == 401


def test_expired_tokens_answer_bad_credentials(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    client.rest.repos.get(OWNER, NAME)  # fetches and caches a token
    github.expire_tokens()
    with pytest.raises(RequestFailed) as refused:
        client.rest.repos.get(OWNER, NAME)
    assert refused.value.response.status_code == 401
    assert error_message(refused.value) == "Bad credentials"
    fresh = installation_client(github)
    assert fresh.rest.repos.get(OWNER, NAME).status_code == 200


def test_a_token_past_its_lifetime_answers_bad_credentials(github: GitHubDouble) -> None:
    github.token_lifetime = timedelta(seconds=-1)
    headers = {"Authorization": f"token {new_token(github)}"}
    answer = raw(github, "GET", f"/repos/{REPOSITORY}", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["message"] == "Bad credentials"


def test_another_installations_repository_is_not_found(github: GitHubDouble) -> None:
    github.add_installation(60000001, "other-org")
    github.add_repository("other-org/secrets", 60000001)
    client = installation_client(github)  # githubkit's `rest` holds its client weakly
    with pytest.raises(RequestFailed) as refused:
        client.rest.repos.get("other-org", "secrets")
    assert refused.value.response.status_code == 404


# --- tokens narrowed to repositories and permissions ---------------------------------------

GADGETS_REPOSITORY = "octo-org/gadgets"


def scoped_token(github: GitHubDouble, **body: Any) -> httpx.Response:
    """POST /app/installations/{id}/access_tokens with `body`, sent as is."""
    headers = {"Authorization": f"Bearer {app_jwt(github)}"}
    path = f"/app/installations/{INSTALLATION_ID}/access_tokens"
    return raw(github, "POST", path, headers=headers, json=body)


def with_token(github: GitHubDouble, token: str, method: str, path: str, **options: Any) -> int:
    headers = {"Authorization": f"token {token}"}
    return raw(github, method, path, headers=headers, **options).status_code


def test_a_token_asked_for_one_repository_sees_no_other_of_its_installation(
    github: GitHubDouble, app: GitHub[AppAuthStrategy], version: ApiVersion
) -> None:
    gadgets = github.add_repository(GADGETS_REPOSITORY, INSTALLATION_ID, GADGETS)
    answer = app.rest(version).apps.create_installation_access_token(
        INSTALLATION_ID, repositories=[NAME], permissions={"contents": "read"}
    )
    token = answer.parsed_data
    assert (token.repository_selection, token.permissions.contents) == ("selected", "read")
    assert [found.full_name for found in token.repositories or []] == [REPOSITORY]
    assert with_token(github, token.token, "GET", f"/repos/{REPOSITORY}") == 200
    assert with_token(github, token.token, "GET", f"/repos/{GADGETS_REPOSITORY}") == 404
    listed = raw(
        github,
        "GET",
        "/installation/repositories",
        headers={"Authorization": f"token {token.token}"},
    ).json()
    assert [found["full_name"] for found in listed["repositories"]] == [REPOSITORY]
    by_id = scoped_token(github, repository_ids=[gadgets]).json()["token"]
    assert (
        with_token(github, by_id, "GET", f"/repos/{GADGETS_REPOSITORY}/contents/README.md") == 200
    )
    assert with_token(github, by_id, "GET", f"/repos/{REPOSITORY}") == 404
    issued = github.tokens_issued
    assert [t.repository_ids for t in issued] == [{REPOSITORY_ID}, {gadgets}]


def test_a_token_without_a_permission_is_refused_what_needs_it(github: GitHubDouble) -> None:
    answer = scoped_token(github, repositories=[NAME], permissions={"issues": "read"})
    assert answer.status_code == 201
    token = answer.json()["token"]
    # GitHub adds metadata:read to every token narrowed to some permissions.
    assert answer.json()["permissions"] == {"metadata": "read", "issues": "read"}
    assert github.tokens_issued[-1].permissions == {"metadata": "read", "issues": "read"}
    assert with_token(github, token, "GET", f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}") == 200
    assert with_token(github, token, "GET", f"/repos/{REPOSITORY}") == 200
    refused = [
        ("POST", f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}/comments", {"body": "hi"}),
        ("GET", f"/repos/{REPOSITORY}/contents/README.md", None),
        ("POST", f"/repos/{REPOSITORY}/check-runs", {"name": "baton", "head_sha": "0" * 40}),
        ("GET", f"/repos/{REPOSITORY}/pulls", None),
    ]
    for method, path, body in refused:
        headers = {"Authorization": f"token {token}"}
        found = raw(github, method, path, headers=headers, json=body)
        assert (found.status_code, found.json()["message"]) == (
            403,
            "Resource not accessible by integration",
        ), path
    assert github.issue_comments(REPOSITORY, ISSUE_NUMBER) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"permissions": {"workflows": "write"}}, "permissions requested are not granted"),
        ({"permissions": {"contents": "admin"}}, "permissions requested are not granted"),
        ({"permissions": {"issues": "everything"}}, "Invalid request"),
        ({"permissions": ["issues"]}, "Invalid request"),
        ({"repositories": ["no-such-repository"]}, "at least one repository that does not exist"),
        ({"repositories": ["secrets"]}, "at least one repository that does not exist"),
        ({"repository_ids": [5]}, "at least one repository that does not exist"),
        ({"repositories": "widgets"}, "Invalid request"),
    ],
    ids=[
        "permission-the-app-lacks",
        "stronger-than-the-app",
        "unknown-level",
        "not-an-object",
        "unknown-name",
        "another-installations",
        "unknown-id",
        "names-not-a-list",
    ],
)
def test_a_token_request_beyond_the_installation_is_refused(
    github: GitHubDouble, body: dict[str, Any], message: str
) -> None:
    github.add_installation(60000001, "other-org")
    github.add_repository("other-org/secrets", 60000001)
    answer = scoped_token(github, **body)
    assert answer.status_code == 422
    assert message in answer.json()["message"]
    assert github.tokens_issued == []


def test_git_with_a_read_only_token_fetches_but_cannot_push(
    github: GitHubDouble, tmp_path: Path
) -> None:
    read_only = scoped_token(github, repositories=[NAME], permissions={"contents": "read"})
    token = read_only.json()["token"]
    checkout = tmp_path / "read-only"
    git("clone", "--quiet", f"{github.url}/{REPOSITORY}.git", str(checkout), token=token)
    git("checkout", "--quiet", "-b", "baton/issue-42", cwd=checkout)
    (checkout / "NOTES.md").write_text("T1\n")
    git("add", "--all", cwd=checkout)
    git("commit", "--quiet", "-m", "Notes", cwd=checkout)
    with pytest.raises(RuntimeError, match="403"):
        git(
            "push", "--quiet", "origin", "HEAD:refs/heads/baton/issue-42", cwd=checkout, token=token
        )
    assert github.branch_sha(REPOSITORY, "baton/issue-42") is None
    git("fetch", "--quiet", "origin", cwd=checkout, token=token)
    pushes = [r for r in github.requests if r.query.get("service") == "git-receive-pack"]
    assert [r.status for r in pushes] == [403]


@pytest.mark.parametrize(
    "body",
    [{"repositories": ["gadgets"]}, {"repositories": [NAME], "permissions": {"issues": "write"}}],
    ids=["another-repository", "no-contents-permission"],
)
def test_git_with_a_token_that_cannot_see_the_repository_is_not_found(
    github: GitHubDouble, tmp_path: Path, body: dict[str, Any]
) -> None:
    github.add_repository(GADGETS_REPOSITORY, INSTALLATION_ID, GADGETS)
    token = scoped_token(github, **body).json()["token"]
    with pytest.raises(RuntimeError, match="not found"):
        git("clone", "--quiet", f"{github.url}/{REPOSITORY}.git", str(tmp_path / "c"), token=token)
    assert {r.status for r in github.requests if r.route == "git"} == {404}


# --- repositories, branches, contents ------------------------------------------------------


def test_repository_and_installation_repositories_parse(
    client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    rest = client.rest(version)
    repository = rest.repos.get(OWNER, NAME).parsed_data
    listed = rest.apps.list_repos_accessible_to_installation().parsed_data
    assert (repository.id, repository.full_name) == (REPOSITORY_ID, REPOSITORY)
    assert (repository.default_branch, repository.private) == ("main", True)
    assert repository.owner.login == "octo-org"
    assert [found.id for found in listed.repositories] == [REPOSITORY_ID]


def test_a_repository_keeps_its_default_branch(github: GitHubDouble) -> None:
    github.add_repository("octo-org/gadgets", INSTALLATION_ID, default_branch="trunk")
    client = installation_client(github)
    found = client.rest.repos.get("octo-org", "gadgets").parsed_data
    assert found.default_branch == "trunk"
    assert github.branch_sha("octo-org/gadgets", "trunk") is not None
    assert github.branch_sha("octo-org/gadgets", "main") is None


def test_a_branch_is_read_from_git(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    branch = client.rest(version).repos.get_branch(OWNER, NAME, "main").parsed_data
    assert branch.name == "main"
    assert branch.commit.sha == github.branch_sha(REPOSITORY, "main")
    with pytest.raises(RequestFailed) as missing:
        client.rest(version).repos.get_branch(OWNER, NAME, "no-such-branch")
    assert missing.value.response.status_code == 404


@pytest.mark.parametrize("path", list(GADGETS))
def test_file_contents_are_the_committed_bytes(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    version: ApiVersion,
    path: str,
) -> None:
    github.add_repository("octo-org/gadgets", INSTALLATION_ID, GADGETS)
    found = client.rest(version).repos.get_content("octo-org", "gadgets", path).parsed_data
    expected = GADGETS[path]
    expected = expected.encode() if isinstance(expected, str) else expected
    assert (getattr(found, "type", None), getattr(found, "encoding", None)) == ("file", "base64")
    assert base64.b64decode(getattr(found, "content", "")) == expected
    assert getattr(found, "size", None) == len(expected)


def test_a_directory_lists_its_entries(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    github.add_repository("octo-org/gadgets", INSTALLATION_ID, GADGETS)
    top = client.rest.repos.get_content("octo-org", "gadgets", "").parsed_data
    nested = client.rest.repos.get_content("octo-org", "gadgets", "src").parsed_data
    assert isinstance(top, list)
    assert isinstance(nested, list)
    assert [(item.path, item.type) for item in top] == [
        ("README.md", "file"),
        ("logo.bin", "file"),
        ("src", "dir"),
    ]
    assert [(item.path, item.type) for item in nested] == [("src/gadgets", "dir")]


def test_a_missing_file_or_ref_is_not_found(client: GitHub[AppInstallationAuthStrategy]) -> None:
    for path, ref in [(".github/baton.yml", "main"), ("README.md", "no-such-ref")]:
        with pytest.raises(RequestFailed) as missing:
            client.rest.repos.get_content(OWNER, NAME, path, ref=ref)
        assert missing.value.response.status_code == 404


def test_contents_follow_a_ref(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], checkout: Path
) -> None:
    push_commit(github, checkout, "feature", {"README.md": "# Widgets, revised\n"})
    on_branch = client.rest.repos.get_content(OWNER, NAME, "README.md", ref="feature").parsed_data
    on_main = client.rest.repos.get_content(OWNER, NAME, "README.md").parsed_data
    assert base64.b64decode(getattr(on_branch, "content", "")) == b"# Widgets, revised\n"
    assert base64.b64decode(getattr(on_main, "content", "")).startswith(b"# Widgets\n")


# --- issues, comments, reactions, permissions ----------------------------------------------


def test_an_issue_parses_with_its_labels(
    client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    issue = client.rest(version).issues.get(OWNER, NAME, ISSUE_NUMBER).parsed_data
    expected = payload("issues.labeled")["issue"]
    assert (issue.number, issue.title, issue.body) == (42, expected["title"], expected["body"])
    assert getattr(issue.user, "login", None) == "alice"
    assert [getattr(label, "name", label) for label in issue.labels] == ["enhancement", "baton"]
    with pytest.raises(RequestFailed) as missing:
        client.rest(version).issues.get(OWNER, NAME, 4242)
    assert missing.value.response.status_code == 404


def test_comments_are_created_edited_and_read_back(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    rest = client.rest(version)
    created = rest.issues.create_comment(OWNER, NAME, ISSUE_NUMBER, body="Planning…")
    comment = created.parsed_data
    edited = rest.issues.update_comment(OWNER, NAME, comment.id, body="Plan ready").parsed_data
    again = rest.issues.get_comment(OWNER, NAME, comment.id).parsed_data
    assert created.status_code == 201
    assert comment.user is not None
    assert (comment.user.login, comment.user.type) == ("baton-bot[bot]", "Bot")
    assert comment.performed_via_github_app is not None
    assert comment.performed_via_github_app.slug == github.app_slug
    assert (edited.id, edited.body, again.body) == (comment.id, "Plan ready", "Plan ready")
    assert [found["body"] for found in github.issue_comments(REPOSITORY, ISSUE_NUMBER)] == [
        "Plan ready"
    ]


def test_comments_page_with_githubs_link_header(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    for number in range(5):
        github.add_issue_comment(REPOSITORY, ISSUE_NUMBER, f"comment {number}")
    answer = client.rest(version).issues.list_comments(
        OWNER, NAME, ISSUE_NUMBER, per_page=2, page=2
    )
    assert [comment.body for comment in answer.parsed_data] == ["comment 2", "comment 3"]
    links = {
        rel: parse_qs(urlsplit(url).query)["page"][0]
        for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', answer.headers["link"])
    }
    assert links == {"prev": "1", "next": "3", "last": "3", "first": "1"}
    followed = client.rest.paginate(
        client.rest(version).issues.list_comments,
        owner=OWNER,
        repo=NAME,
        issue_number=ISSUE_NUMBER,
        per_page=2,
    )
    assert [comment.body for comment in followed] == [f"comment {n}" for n in range(5)]


@pytest.mark.filterwarnings("ignore:Legacy pagination:DeprecationWarning")
async def test_legacy_page_counting_ends_on_an_empty_page(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    for number in range(3):
        github.add_issue_comment(REPOSITORY, ISSUE_NUMBER, f"comment {number}")
    pages: Any = client.paginate(
        client.rest("2022-11-28").issues.async_list_comments,
        owner=OWNER,
        repo=NAME,
        issue_number=ISSUE_NUMBER,
        per_page=2,
    )
    assert [comment.body async for comment in pages] == ["comment 0", "comment 1", "comment 2"]


def test_a_reaction_is_created_once_per_user_and_content(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    rest = client.rest(version)
    comment = github.add_issue_comment(REPOSITORY, ISSUE_NUMBER, "/approve-plan")
    first = rest.reactions.create_for_issue_comment(OWNER, NAME, comment["id"], content="eyes")
    second = rest.reactions.create_for_issue_comment(OWNER, NAME, comment["id"], content="eyes")
    on_issue = rest.reactions.create_for_issue(OWNER, NAME, ISSUE_NUMBER, content="rocket")
    assert (first.status_code, second.status_code, on_issue.status_code) == (201, 200, 201)
    assert first.parsed_data.id == second.parsed_data.id
    assert first.parsed_data.content == "eyes"
    recorded = [
        (r["content"], r["comment_id"], r["issue_number"]) for r in github.reactions(REPOSITORY)
    ]
    assert recorded == [("eyes", comment["id"], None), ("rocket", None, ISSUE_NUMBER)]


@pytest.mark.parametrize(
    ("role", "permission"),
    [
        ("admin", "admin"),
        ("maintain", "write"),
        ("write", "write"),
        ("triage", "read"),
        ("read", "read"),
        ("none", "none"),
    ],
)
def test_permission_folds_roles_as_github_does(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    version: ApiVersion,
    role: str,
    permission: str,
) -> None:
    github.set_permission(REPOSITORY, "octo-reviewer", role)
    found = client.rest(version).repos.get_collaborator_permission_level(
        OWNER, NAME, "octo-reviewer"
    )
    assert (found.parsed_data.permission, found.parsed_data.role_name) == (permission, role)
    assert getattr(found.parsed_data.user, "login", None) == "octo-reviewer"


def test_a_user_without_a_role_has_no_permission(
    client: GitHub[AppInstallationAuthStrategy],
) -> None:
    found = client.rest.repos.get_collaborator_permission_level(OWNER, NAME, "drive-by-user")
    assert (found.parsed_data.permission, found.parsed_data.role_name) == ("none", "none")


# --- check runs ----------------------------------------------------------------------------


def test_a_check_run_is_created_completed_and_listed(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], version: ApiVersion
) -> None:
    rest = client.rest(version)
    head = github.branch_sha(REPOSITORY, "main")
    assert head is not None
    output = {"title": "Baton", "summary": "Working on it"}
    data: Any = {"name": "baton", "head_sha": head, "status": "in_progress", "output": output}
    created = rest.checks.create(OWNER, NAME, data=data)
    done: Any = {"conclusion": "success", "output": {"title": "Baton", "summary": "Done"}}
    updated = rest.checks.update(OWNER, NAME, created.parsed_data.id, data=done).parsed_data
    by_branch = rest.checks.list_for_ref(OWNER, NAME, "main").parsed_data
    by_sha = rest.checks.list_for_ref(OWNER, NAME, head, check_name="baton").parsed_data
    assert created.status_code == 201
    assert created.parsed_data.status == "in_progress"
    assert (updated.status, updated.conclusion) == ("completed", "success")
    assert updated.completed_at is not None
    assert updated.output.summary == "Done"
    assert [run.id for run in by_branch.check_runs] == [updated.id]
    assert by_sha.total_count == 1
    assert [run["conclusion"] for run in github.check_runs(REPOSITORY)] == ["success"]


@pytest.mark.parametrize(
    "data",
    [
        {"name": "baton", "head_sha": "0" * 40},
        {"name": "baton", "head_sha": "HEAD-SHA", "status": "completed"},
        {"name": "baton", "head_sha": "HEAD-SHA", "conclusion": "splendid"},
    ],
    ids=["unknown-commit", "completed-without-conclusion", "unknown-conclusion"],
)
def test_a_check_run_github_would_refuse_is_422(github: GitHubDouble, data: dict[str, str]) -> None:
    data = {
        **data,
        "head_sha": data["head_sha"].replace(
            "HEAD-SHA", github.branch_sha(REPOSITORY, "main") or ""
        ),
    }
    headers = {"Authorization": f"token {new_token(github)}"}
    answer = raw(github, "POST", f"/repos/{REPOSITORY}/check-runs", json=data, headers=headers)
    assert answer.status_code == 422


# --- pull requests and reviews -------------------------------------------------------------


def test_a_draft_pull_request_is_opened_listed_and_edited(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    version: ApiVersion,
) -> None:
    rest = client.rest(version)
    head = push_commit(github, checkout, "baton/issue-42", {"src/widgets/cache.py": "CACHE = {}\n"})
    created = rest.pulls.create(
        OWNER,
        NAME,
        head="baton/issue-42",
        base="main",
        title="Cache themes",
        body="Closes #42",
        draft=True,
    )
    pull = created.parsed_data
    assert created.status_code == 201
    assert (pull.number, pull.draft, pull.state) == (43, True, "open")  # numbered after issue 42
    assert (pull.head.ref, pull.head.sha, pull.base.ref) == ("baton/issue-42", head, "main")
    assert getattr(pull.user, "login", None) == "baton-bot[bot]"
    assert (pull.commits, pull.changed_files, pull.additions) == (1, 1, 1)
    listed = rest.pulls.list(OWNER, NAME, head="octo-org:baton/issue-42").parsed_data
    assert [found.number for found in listed] == [43]
    edited = rest.pulls.update(OWNER, NAME, 43, body="Closes #42\n\nT1 done").parsed_data
    assert (edited.body, edited.draft) == ("Closes #42\n\nT1 done", True)
    assert github.pulls(REPOSITORY)[0]["body"] == "Closes #42\n\nT1 done"


def test_a_pull_request_head_follows_pushes(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], checkout: Path
) -> None:
    push_commit(github, checkout, "feature", {"a.txt": "1\n"})
    client.rest.pulls.create(OWNER, NAME, head="feature", base="main", title="A", draft=True)
    newer = push_commit(github, checkout, "feature", {"a.txt": "2\n"})
    assert client.rest.pulls.get(OWNER, NAME, 43).parsed_data.head.sha == newer
    as_issue = client.rest.issues.get(OWNER, NAME, 43).parsed_data
    assert as_issue.pull_request is not None


def test_list_filters_by_state_head_and_base(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy], checkout: Path
) -> None:
    for branch in ("one", "two"):
        push_commit(github, checkout, branch, {f"{branch}.txt": branch})
        client.rest.pulls.create(OWNER, NAME, head=branch, base="main", title=branch)
    client.rest.pulls.update(OWNER, NAME, 43, state="closed")

    def numbers(**filters: Any) -> list[int]:
        return [pull.number for pull in client.rest.pulls.list(OWNER, NAME, **filters).parsed_data]

    assert numbers() == [44]
    assert numbers(state="all") == [44, 43]
    assert numbers(state="closed") == [43]
    assert numbers(state="all", head="octo-org:one") == [43]
    assert numbers(state="all", head="one") == [44, 43]  # GitHub ignores a head without owner
    assert numbers(base="release") == []


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("no-such-branch", None),
        ("main", "No commits between main and main"),
        ("feature", "A pull request already exists for octo-org:feature."),
    ],
    ids=["unknown-head", "no-commits", "already-open"],
)
def test_a_pull_request_github_would_refuse_is_validation_failed(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    head: str,
    message: str | None,
) -> None:
    push_commit(github, checkout, "feature", {"a.txt": "1\n"})
    client.rest.pulls.create(OWNER, NAME, head="feature", base="main", title="First")
    with pytest.raises(RequestFailed) as refused:
        client.rest.pulls.create(OWNER, NAME, head=head, base="main", title="Second")
    body = refused.value.response.json()
    assert refused.value.response.status_code == 422
    assert body["message"] == "Validation Failed"
    if message is not None:
        assert [error.get("message") for error in body["errors"]] == [message]


def test_a_review_its_comments_and_replies(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    version: ApiVersion,
) -> None:
    rest = client.rest(version)
    head = push_commit(github, checkout, "feature", {"src/widgets/cache.py": "CACHE = {}\n"})
    rest.pulls.create(OWNER, NAME, head="feature", base="main", title="Cache", draft=True)
    comments = [{"path": "src/widgets/cache.py", "line": 1, "body": "Bound the cache size."}]
    added = github.add_review(REPOSITORY, 43, "alice", "changes_requested", "Please fix", comments)
    review = rest.pulls.get_review(OWNER, NAME, 43, added["id"]).parsed_data
    listed = rest.pulls.list_comments_for_review(OWNER, NAME, 43, added["id"]).parsed_data
    reply = rest.pulls.create_reply_for_review_comment(
        OWNER, NAME, 43, listed[0].id, body="Fixed in abc1234"
    )
    assert (review.state, review.body, review.commit_id) == (
        "CHANGES_REQUESTED",
        "Please fix",
        head,
    )
    assert [(c.path, c.line, c.body) for c in listed] == [
        ("src/widgets/cache.py", 1, "Bound the cache size.")
    ]
    assert listed[0].id == added["comments"][0]["id"]
    assert reply.status_code == 201
    assert reply.parsed_data.in_reply_to_id == listed[0].id
    replies = github.review_comment_replies(REPOSITORY, 43)
    assert [(r["body"], r["in_reply_to_id"]) for r in replies] == [
        ("Fixed in abc1234", listed[0].id)
    ]
    github.add_review_reply(REPOSITORY, reply.parsed_data.id, "Thanks!", user="alice")
    # Every comment on the pull request, oldest first; a reply to a reply joins the thread.
    every = list(
        client.rest.paginate(
            rest.pulls.list_review_comments, owner=OWNER, repo=NAME, pull_number=43, per_page=2
        )
    )
    assert [(c.body, c.user and c.user.type, c.in_reply_to_id) for c in every] == [
        ("Bound the cache size.", "User", UNSET),
        ("Fixed in abc1234", "Bot", listed[0].id),
        ("Thanks!", "User", listed[0].id),
    ]


def test_a_review_delivery_carries_the_pull_requests_head(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    receiver: tuple[DeliveryRecorder, str],
) -> None:
    recorder, url = receiver
    push_commit(github, checkout, "baton/issue-42", {"src/widgets/cache.py": "CACHE = {}\n"})
    client.rest.pulls.create(OWNER, NAME, head="baton/issue-42", base="main", title="Cache")
    newer = push_commit(github, checkout, "baton/issue-42", {"src/widgets/cache.py": "C = {}\n"})
    comments = [{"path": "src/widgets/cache.py", "line": 1, "body": "Bound it."}]
    review = github.add_review(REPOSITORY, 43, "alice", "CHANGES_REQUESTED", "Fix", comments)
    answer = github.send_review(url, REPOSITORY, review["id"], delivery_id="r-1")
    headers, body = recorder.deliveries[0]
    sent = json.loads(body)
    assert answer.status_code == 202
    assert (headers["x-github-event"], headers["x-github-delivery"]) == (
        "pull_request_review",
        "r-1",
    )
    assert verify(github.webhook_secret, body, headers["x-hub-signature-256"])
    assert sent == github.review_payload(REPOSITORY, review["id"])
    assert sent["action"] == "submitted"
    assert (sent["review"]["id"], sent["review"]["state"]) == (review["id"], "changes_requested")
    assert sent["review"]["commit_id"] == newer
    pull = sent["pull_request"]
    assert (pull["number"], pull["state"]) == (43, "open")
    assert (pull["head"]["ref"], pull["head"]["sha"], pull["base"]["ref"]) == (
        "baton/issue-42",
        newer,
        "main",
    )
    assert sent["repository"]["full_name"] == REPOSITORY
    assert sent["repository"]["id"] == REPOSITORY_ID
    assert sent["organization"]["login"] == OWNER
    assert sent["installation"]["id"] == INSTALLATION_ID
    assert sent["sender"]["login"] == "alice"
    # The same shape as GitHub's: githubkit's webhook models take it.
    parsed = parse_webhook("pull_request_review", sent)
    assert type(parsed).__name__ == "WebhookPullRequestReviewSubmitted"


def test_a_merged_pull_request_is_delivered_closed_and_lands_on_its_base(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    receiver: tuple[DeliveryRecorder, str],
    version: ApiVersion,
) -> None:
    recorder, url = receiver
    rest = client.rest(version)
    head = push_commit(github, checkout, "baton/issue-42", {"src/widgets/cache.py": "CACHE = {}\n"})
    rest.pulls.create(OWNER, NAME, head="baton/issue-42", base="main", title="Cache", draft=True)
    before = github.branch_sha(REPOSITORY, "main")
    answer = github.close_pull_request(url, REPOSITORY, 43, merged=True, by="alice")
    headers, body = recorder.deliveries[0]
    sent = json.loads(body)
    assert answer.status_code == 202
    assert headers["x-github-event"] == "pull_request"
    assert verify(github.webhook_secret, body, headers["x-hub-signature-256"])
    assert (sent["action"], sent["number"]) == ("closed", 43)
    pull = sent["pull_request"]
    assert (pull["number"], pull["state"], pull["merged"], pull["draft"]) == (
        43,
        "closed",
        True,
        False,
    )
    assert (pull["head"]["ref"], pull["head"]["sha"], pull["base"]["ref"]) == (
        "baton/issue-42",
        head,
        "main",
    )
    assert pull["merged_by"]["login"] == "alice"
    assert pull["merged_at"] == pull["closed_at"] is not None
    assert (sent["repository"]["full_name"], sent["installation"]["id"]) == (
        REPOSITORY,
        INSTALLATION_ID,
    )
    assert sent["sender"]["login"] == "alice"
    parsed = parse_webhook("pull_request", sent)
    assert type(parsed).__name__ == "WebhookPullRequestClosed"

    # The base branch now holds a merge commit of the head, and REST agrees with the delivery.
    main = github.branch_sha(REPOSITORY, "main")
    assert main == pull["merge_commit_sha"]
    branch = rest.repos.get_branch(OWNER, NAME, "main").parsed_data
    assert [parent.sha for parent in branch.commit.parents] == [before, head]
    assert branch.commit.commit.message.startswith("Merge pull request #43 from octo-org/")
    read = rest.pulls.get(OWNER, NAME, 43).parsed_data
    assert (read.state, read.merged) == ("closed", True)
    assert github.pulls(REPOSITORY)[0]["merge_commit_sha"] == main
    assert getattr(read.merged_by, "login", None) == "alice"
    as_issue = rest.issues.get(OWNER, NAME, 43).parsed_data
    assert as_issue.state == "closed"
    assert as_issue.pull_request is not None
    assert as_issue.pull_request.merged_at is not None
    assert rest.pulls.list(OWNER, NAME, state="open").parsed_data == []
    assert [found.number for found in rest.pulls.list(OWNER, NAME, state="closed").parsed_data] == [
        43
    ]


def test_a_closed_pull_request_is_delivered_unmerged_and_leaves_its_base(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    receiver: tuple[DeliveryRecorder, str],
) -> None:
    recorder, url = receiver
    head = push_commit(github, checkout, "feature", {"a.txt": "1\n"})
    client.rest.pulls.create(OWNER, NAME, head="feature", base="main", title="A", draft=True)
    before = github.branch_sha(REPOSITORY, "main")
    github.close_pull_request(url, REPOSITORY, 43, by="rita", delivery_id="c-1")
    headers, body = recorder.deliveries[0]
    sent = json.loads(body)
    pull = sent["pull_request"]
    assert (headers["x-github-delivery"], sent["action"], sent["sender"]["login"]) == (
        "c-1",
        "closed",
        "rita",
    )
    assert (pull["state"], pull["merged"], pull["merged_at"], pull["merged_by"]) == (
        "closed",
        False,
        None,
        None,
    )
    assert (pull["head"]["sha"], pull["merge_commit_sha"], pull["draft"]) == (head, None, True)
    assert type(parse_webhook("pull_request", sent)).__name__ == "WebhookPullRequestClosed"
    assert github.branch_sha(REPOSITORY, "main") == before
    with pytest.raises(ValueError, match="already closed"):
        github.close_pull_request(url, REPOSITORY, 43, merged=True)
    assert len(recorder.deliveries) == 1


def test_a_pull_request_that_conflicts_with_its_base_is_not_merged(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    receiver: tuple[DeliveryRecorder, str],
) -> None:
    recorder, url = receiver
    push_commit(github, checkout, "feature", {"README.md": "# Feature\n"})
    client.rest.pulls.create(OWNER, NAME, head="feature", base="main", title="A")
    git("checkout", "--quiet", "HEAD~1", cwd=checkout)
    main = push_commit(github, checkout, "main", {"README.md": "# Main\n"})
    with pytest.raises(ValueError, match="conflicts with main"):
        github.close_pull_request(url, REPOSITORY, 43, merged=True)
    assert github.branch_sha(REPOSITORY, "main") == main
    assert [pull["state"] for pull in github.pulls(REPOSITORY)] == ["open"]
    assert recorder.deliveries == []


def test_open_pull_requests_are_listed_by_head_as_github_lists_them(
    github: GitHubDouble,
    client: GitHub[AppInstallationAuthStrategy],
    checkout: Path,
    receiver: tuple[DeliveryRecorder, str],
) -> None:
    _, url = receiver
    for branch in ("baton/issue-1", "baton/issue-2", "baton/issue-3"):
        push_commit(github, checkout, branch, {f"{branch[-1]}.txt": branch})
        client.rest.pulls.create(OWNER, NAME, head=branch, base="main", title=branch)
    github.close_pull_request(url, REPOSITORY, 43, merged=True)
    answer = raw(
        github,
        "GET",
        f"/repos/{REPOSITORY}/pulls",
        params={"state": "open", "head": f"{OWNER}:baton/issue-2"},
        headers={"Authorization": f"token {new_token(github)}"},
    )
    (listed,) = answer.json()
    assert answer.status_code == 200
    assert (listed["number"], listed["state"], listed["head"]["ref"]) == (
        44,
        "open",
        "baton/issue-2",
    )
    assert listed["head"]["sha"] == github.branch_sha(REPOSITORY, "baton/issue-2")
    assert "merged" not in listed  # the list gives each pull request without its details

    def numbers(**filters: Any) -> list[int]:
        return [pull.number for pull in client.rest.pulls.list(OWNER, NAME, **filters).parsed_data]

    assert numbers(state="open") == [45, 44]
    assert numbers(state="open", head=f"{OWNER}:baton/issue-1") == []  # merged
    assert numbers(state="closed", head=f"{OWNER}:baton/issue-1") == [43]


# --- failures, rate limits, recording ------------------------------------------------------


def test_a_secondary_rate_limit_is_answered_as_github_does(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    github.fail_next("POST", r"/repos/octo-org/widgets/issues/\d+/comments", 403, retry_after=7)
    with pytest.raises(SecondaryRateLimitExceeded) as limited:
        client.rest.issues.create_comment(OWNER, NAME, ISSUE_NUMBER, body="hello")
    assert limited.value.retry_after == timedelta(seconds=7)
    assert error_message(limited.value).startswith("You have exceeded a secondary rate limit.")
    again = client.rest.issues.create_comment(OWNER, NAME, ISSUE_NUMBER, body="hello")
    assert again.status_code == 201
    statuses = [r.status for r in github.requests if r.route and "comments" in r.route]
    assert statuses == [403, 201]


def test_a_primary_rate_limit_says_none_remain(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    github.fail_next("GET", f"/repos/{REPOSITORY}", 403, rate_limit_remaining=0)
    with pytest.raises(PrimaryRateLimitExceeded):
        client.rest.repos.get(OWNER, NAME)


def test_server_errors_come_before_auth_and_githubkit_retries_them(
    github: GitHubDouble,
) -> None:
    def retry_server_errors(error: Exception, count: int) -> RetryOption:
        response = getattr(error, "response", None)
        failed = response is not None and response.status_code >= 500
        # githubkit waits 60 s when told to wait zero (a falsy timedelta).
        return RetryOption(failed and count < 3, timedelta(milliseconds=1))

    client = installation_client(github, auto_retry=retry_server_errors)
    github.fail_next("GET", f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}", 502, times=2)
    issue = client.rest.issues.get(OWNER, NAME, ISSUE_NUMBER)
    answers = [(r.status, r.json) for r in github.requests if r.path.endswith("/issues/42")]
    assert issue.status_code == 200
    assert [status for status, _ in answers] == [502, 502, 200]
    unauthenticated = raw(github, "GET", f"/repos/{REPOSITORY}")
    github.fail_next("GET", f"/repos/{REPOSITORY}", 503)
    failed = raw(github, "GET", f"/repos/{REPOSITORY}")
    assert (unauthenticated.status_code, failed.status_code) == (401, 503)
    assert failed.json()["message"] == "Service Unavailable"


def test_a_body_that_is_not_json_is_400(github: GitHubDouble) -> None:
    headers = {"Authorization": f"token {new_token(github)}"}
    path = f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}/comments"
    answer = raw(github, "POST", path, content=b"{body: 1", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["message"] == "Problems parsing JSON"


def test_normal_answers_carry_rate_limit_headers(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    headers = client.rest.repos.get(OWNER, NAME).headers
    assert headers["x-ratelimit-limit"] == "5000"
    assert 0 < int(headers["x-ratelimit-remaining"]) < 5000
    assert int(headers["x-ratelimit-reset"]) > time.time()
    assert headers["x-ratelimit-resource"] == "core"


def test_requests_are_recorded_and_unknown_routes_listed(
    github: GitHubDouble, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    client.rest.issues.create_comment(OWNER, NAME, ISSUE_NUMBER, body="hi")
    with pytest.raises(RequestFailed) as missing:
        client.rest.issues.list_events(OWNER, NAME, ISSUE_NUMBER, per_page=5)
    web = httpx.get(f"{github.url}/octo-org/widgets/settings", timeout=30)
    posted = [r for r in github.requests if r.method == "POST" and r.route]
    assert posted[-1].route == "POST /repos/{owner}/{repo}/issues/{number}/comments"
    assert posted[-1].path == f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}/comments"
    assert (posted[-1].json, posted[-1].status, posted[-1].api) == ({"body": "hi"}, 201, True)
    assert posted[-1].headers["authorization"].startswith("token ghs_")
    assert missing.value.response.status_code == web.status_code == 404
    assert missing.value.response.json()["message"] == "Not Found"
    assert [(r.method, r.path, r.query, r.api) for r in github.unknown_requests()] == [
        ("GET", f"/repos/{REPOSITORY}/issues/{ISSUE_NUMBER}/events", {"per_page": "5"}, True),
        ("GET", "/octo-org/widgets/settings", {}, False),
    ]
    arrivals = [r.at for r in github.requests]
    assert arrivals == sorted(arrivals)


# --- the App Manifest flow -----------------------------------------------------------------

MANIFEST = {
    "name": "Baton (octo-org)",
    "url": "https://baton.example.com",
    "hook_attributes": {"url": "https://baton.example.com/api/github/webhooks", "active": True},
    "redirect_url": "https://baton.example.com/setup/callback",
    "public": False,
    "default_events": ["issues", "issue_comment"],
    "default_permissions": {"issues": "write", "contents": "write"},
}


def post_manifest(github: GitHubDouble, path: str, manifest: Any) -> httpx.Response:
    form = {"manifest": manifest if isinstance(manifest, str) else json.dumps(manifest)}
    return httpx.post(
        f"{github.url}{path}", data=form, params={"state": "s3cr3t-state"}, timeout=30
    )


@pytest.mark.parametrize(
    ("path", "owner"),
    [("/settings/apps/new", "alice"), ("/organizations/octo-org/settings/apps/new", "octo-org")],
    ids=["personal", "organization"],
)
def test_the_manifest_flow_redirects_with_a_code_that_converts_once(
    github: GitHubDouble, version: ApiVersion, path: str, owner: str
) -> None:
    posted = post_manifest(github, path, MANIFEST)
    location = urlsplit(posted.headers["location"])
    query = parse_qs(location.query)
    assert posted.status_code == 302
    assert f"{location.scheme}://{location.netloc}{location.path}" == MANIFEST["redirect_url"]
    assert query["state"] == ["s3cr3t-state"]
    assert github.registered_manifests == [MANIFEST]
    unauthenticated = GitHub(UnauthAuthStrategy(), base_url=github.api_url, auto_retry=False)
    converted = unauthenticated.rest(version).apps.create_from_manifest(query["code"][0])
    app = converted.parsed_data
    assert converted.status_code == 201
    assert (app.id, app.slug, app.name) == (github.app_id, github.app_slug, MANIFEST["name"])
    assert (app.pem, app.webhook_secret) == (github.private_key_pem, github.webhook_secret)
    assert app.html_url == f"{github.url}/apps/{github.app_slug}"
    assert getattr(app.owner, "login", None) == owner
    assert app.client_id
    assert app.client_secret
    with pytest.raises(RequestFailed) as used:
        unauthenticated.rest(version).apps.create_from_manifest(query["code"][0])
    assert used.value.response.status_code == 404


@pytest.mark.parametrize(
    "manifest",
    [
        "{not json",
        {key: value for key, value in MANIFEST.items() if key != "url"},
        {**MANIFEST, "hook_attributes": {"active": True}},
        {key: value for key, value in MANIFEST.items() if key != "redirect_url"},
    ],
    ids=["not-json", "no-url", "no-hook-url", "no-redirect-url"],
)
def test_a_manifest_github_would_refuse_is_400(github: GitHubDouble, manifest: Any) -> None:
    posted = post_manifest(github, "/settings/apps/new", manifest)
    assert posted.status_code == 400
    assert github.registered_manifests == []


# --- webhooks ------------------------------------------------------------------------------


class DeliveryRecorder:
    """An ASGI app that keeps each delivery's headers and raw body and answers 202."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        self.deliveries.append((headers, body))
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def receiver() -> Iterator[tuple[DeliveryRecorder, str]]:
    recorder = DeliveryRecorder()
    with serve(recorder) as url:
        yield recorder, url


def test_a_webhook_is_signed_as_github_signs_it(
    github: GitHubDouble, receiver: tuple[DeliveryRecorder, str]
) -> None:
    recorder, url = receiver
    event = payload("issues.labeled")
    answer = github.send_webhook(url + "/api/github/webhooks", "issues", event)
    headers, body = recorder.deliveries[0]
    assert answer.status_code == 202
    assert json.loads(body) == event
    assert body == json.dumps(event, separators=(",", ":")).encode()  # compact, as GitHub
    assert verify(github.webhook_secret, body, headers["x-hub-signature-256"])
    assert verify(github.webhook_secret, body, headers["x-hub-signature"])
    assert headers["x-github-event"] == "issues"
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["x-github-delivery"])
    assert headers["x-github-hook-installation-target-id"] == str(github.app_id)
    assert headers["x-github-hook-installation-target-type"] == "integration"
    assert headers["user-agent"].startswith("GitHub-Hookshot/")
    assert headers["content-type"] == "application/json"


def test_a_webhook_takes_a_delivery_id_and_another_secret(
    github: GitHubDouble, receiver: tuple[DeliveryRecorder, str]
) -> None:
    recorder, url = receiver
    github.send_webhook(url, "ping", payload("ping"), delivery_id="d-1", secret="other")
    headers, body = recorder.deliveries[0]
    assert headers["x-github-delivery"] == "d-1"
    assert verify("other", body, headers["x-hub-signature-256"])
    assert not verify(github.webhook_secret, body, headers["x-hub-signature-256"])


def test_baton_takes_the_doubles_deliveries(github: GitHubDouble, baton_url: str) -> None:
    target = baton_url + "/api/github/webhooks"
    event = payload("pull_request_review_comment.created")
    first = github.send_webhook(target, "pull_request_review_comment", event, delivery_id="d-7")
    again = github.send_webhook(target, "pull_request_review_comment", event, delivery_id="d-7")
    forged = github.send_webhook(target, "pull_request_review_comment", event, secret="guess")
    assert (first.status_code, first.json()) == (202, {"status": "ignored"})
    assert (again.status_code, again.json()) == (200, {"status": "duplicate"})
    assert forged.status_code == 401


# --- git (through tests/doubles/git_http.py) -----------------------------------------------


def test_git_clones_and_pushes_with_an_installation_token(
    github: GitHubDouble, checkout: Path, client: GitHub[AppInstallationAuthStrategy]
) -> None:
    files = git("ls-files", cwd=checkout).splitlines()
    assert {"README.md", "src/widgets/__init__.py", "tests/test_widgets.py"} <= set(files)
    pushed = push_commit(github, checkout, "baton/issue-42", {"NOTES.md": "T1\n"})
    assert github.branch_sha(REPOSITORY, "baton/issue-42") == pushed
    branch = client.rest.repos.get_branch(OWNER, NAME, "baton/issue-42").parsed_data
    assert branch.commit.sha == pushed
    assert branch.commit.commit.message == "Change NOTES.md"
    services = [r.query.get("service") for r in github.requests if r.route == "git"]
    assert "git-receive-pack" in services


def test_git_refuses_a_missing_expired_or_foreign_token(
    github: GitHubDouble, tmp_path: Path
) -> None:
    url = f"{github.url}/{REPOSITORY}.git"
    github.add_installation(60000001, "other-org")
    app = app_client(github)
    other = app.rest.apps.create_installation_access_token(60000001)
    expired = new_token(github)
    github.expire_tokens()
    for name, token in [("none", None), ("expired", expired), ("foreign", other.parsed_data.token)]:
        with pytest.raises(RuntimeError, match="clone failed"):
            git("clone", "--quiet", url, str(tmp_path / name), token=token)
    assert {r.status for r in github.requests if r.route == "git"} == {401}
