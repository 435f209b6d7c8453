"""The GitHub operations Baton needs on one repository, each a small typed call.

Answers are reduced to small immutable records holding only what Baton reads, so the rest of
the code never depends on githubkit's generated models.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from githubkit import GitHub, Response
from githubkit.exception import RequestError, RequestFailed
from githubkit.rest.paginator import Paginator
from githubkit.utils import UNSET

from bot.github.auth import TokenRefused
from bot.github.client import API_VERSION
from bot.github.permissions import may_command

T = TypeVar("T")
CheckStatus = Literal["queued", "in_progress", "completed"]
CheckConclusion = Literal[
    "action_required", "cancelled", "failure", "neutral", "success", "skipped", "timed_out"
]
Reaction = Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"]
PER_PAGE = 100


class GitHubError(Exception):
    """GitHub refused or failed a request; the message says which and on what."""


class NotFound(GitHubError):
    """The thing does not exist, or the App's installation cannot see it."""


class AlreadyExists(GitHubError):
    """GitHub refused to make something that is there already (422 `already_exists`)."""


class BranchMoved(GitHubError):
    """GitHub refused to move a branch: it exists when it should not, or has moved on."""


ACTIONS_APP = "github-actions"  # the app slug of GitHub Actions: its check runs are jobs


@dataclass(frozen=True)
class Annotation:
    path: str
    line: int | None
    message: str


@dataclass(frozen=True)
class CheckRunResult:
    """A check run as another app (a CI) left it; for GitHub Actions `id` is the job's id."""

    id: int
    name: str
    app: str  # its app's slug
    app_id: int | None
    status: str
    conclusion: str | None
    title: str
    summary: str
    text: str


@dataclass(frozen=True)
class TreeChange:
    """One path of a new tree: its git mode and object (`kind` blob or commit), or gone."""

    path: str
    mode: str
    kind: str
    sha: str | None


def status_marker(run_id: str) -> str:
    """The hidden first line that identifies a run's status comment (CONTRACT §5)."""
    return f"<!-- baton:run:{run_id} -->"


def reply_marker(key: str) -> str:
    """The hidden line that identifies Baton's one reply for `key`."""
    return f"<!-- baton:reply:{key} -->"


@dataclass(frozen=True)
class Repository:
    id: int
    full_name: str
    default_branch: str
    private: bool


@dataclass(frozen=True)
class Comment:
    id: int
    author: str
    author_is_bot: bool
    body: str


@dataclass(frozen=True)
class IssueThread:
    number: int
    title: str
    body: str
    author: str
    labels: tuple[str, ...]
    state: str
    comments: tuple[Comment, ...]


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_branch: str
    head_sha: str
    base_branch: str
    draft: bool
    state: str
    html_url: str


@dataclass(frozen=True)
class ReviewComment:
    id: int
    author: str
    path: str
    line: int | None
    body: str
    author_is_bot: bool = False


@dataclass(frozen=True)
class Review:
    id: int
    author: str
    state: str
    body: str
    comments: tuple[ReviewComment, ...]


class RepoClient:
    """Operations on one repository through one installation's client."""

    def __init__(self, client: GitHub[Any], full_name: str) -> None:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"expected a repository as 'owner/name', got {full_name!r}")
        self.full_name = full_name
        self.owner = owner
        self.name = name
        self._client = client
        self._rest = client.rest(API_VERSION)

    async def repository(self) -> Repository:
        """The repository, with its default branch."""
        found = await self._call(
            f"repository {self.full_name}", self._rest.repos.async_get(self.owner, self.name)
        )
        return Repository(found.id, found.full_name, found.default_branch, found.private)

    async def file_at(self, path: str, ref: str | None = None) -> bytes | None:
        """The bytes of `path` at `ref` (GitHub's default branch when None), or None when there
        is no such file."""
        what = f"file {path} at {ref or 'the default branch'} in {self.full_name}"
        try:
            found = await self._call(
                what,
                self._rest.repos.async_get_content(
                    self.owner, self.name, path, ref=UNSET if ref is None else ref
                ),
            )
        except NotFound:
            return None
        content = getattr(found, "content", None)
        if getattr(found, "type", None) != "file" or not isinstance(content, str):
            return None
        return base64.b64decode(content)

    async def issue(self, number: int) -> IssueThread:
        """The issue and all its comments, oldest first."""
        what = f"issue {self.full_name}#{number}"
        issue = await self._call(what, self._rest.issues.async_get(self.owner, self.name, number))
        comments = tuple(await self._comments(number))
        return IssueThread(
            number=issue.number,
            title=issue.title,
            body=issue.body or "",
            author=issue.user.login if issue.user else "",
            labels=tuple(_label_name(label) for label in issue.labels),
            state=issue.state,
            comments=comments,
        )

    async def comment(self, number: int, body: str) -> Comment:
        """Post a new comment on an issue or pull request."""
        created = await self._call(
            f"comment on {self.full_name}#{number}",
            self._rest.issues.async_create_comment(self.owner, self.name, number, body=body),
        )
        return _comment(created)

    async def upsert_status_comment(
        self, number: int, run_id: str, body: str, known_id: int | None = None
    ) -> int:
        """Create or edit the run's one status comment; returns its id.

        The comment is found again by its marker, so a retry, or a crash between creating it
        and recording its id, edits the existing comment instead of adding a second.
        """
        marker = status_marker(run_id)
        text = f"{marker}\n{body}"
        comment_id = known_id or await self._find_bot_comment(number, marker)
        if comment_id is not None:
            try:
                return await self._edit_comment(comment_id, text)
            except NotFound:
                pass  # deleted by a person: post it again
        return (await self.comment(number, text)).id

    async def reply_once(self, number: int, key: str, body: str) -> int:
        """Post a reply on an issue once per `key` (such as its delivery), however often retried."""
        marker = reply_marker(key)
        existing = await self._find_bot_comment(number, marker)
        if existing is not None:
            return existing
        return (await self.comment(number, f"{marker}\n{body}")).id

    async def react(
        self, content: Reaction, *, issue: int | None = None, comment: int | None = None
    ) -> None:
        """Add a reaction to an issue (`issue=`) or an issue comment (`comment=`)."""
        if comment is not None:
            call = self._rest.reactions.async_create_for_issue_comment(
                self.owner, self.name, comment, content=content
            )
            await self._call(f"reaction on comment {comment} in {self.full_name}", call)
        elif issue is not None:
            call = self._rest.reactions.async_create_for_issue(
                self.owner, self.name, issue, content=content
            )
            await self._call(f"reaction on {self.full_name}#{issue}", call)
        else:
            raise ValueError("react needs an issue number or a comment id")

    async def ensure_label(self, name: str, color: str, description: str) -> bool:
        """Create the label `name` unless the repository has it; True when this call made it."""
        what = f"label {name!r} in {self.full_name}"
        try:
            await self._send(what, self._rest.issues.async_get_label(self.owner, self.name, name))
            return False
        except NotFound:
            pass
        create = self._rest.issues.async_create_label(
            self.owner, self.name, name=name, color=color, description=description
        )
        try:
            await self._send(what, create)
        except AlreadyExists:
            return False  # made meanwhile: by a person, or by an attempt whose answer was lost
        return True

    async def permission(self, login: str) -> tuple[str | None, str]:
        """The user's `role_name` and `permission` on this repository."""
        answer = await self._call(
            f"permission of {login} on {self.full_name}",
            self._rest.repos.async_get_collaborator_permission_level(self.owner, self.name, login),
        )
        role_name = answer.role_name if isinstance(answer.role_name, str) else None
        return role_name, answer.permission

    async def may_command(self, login: str) -> bool:
        """True when `login` has write, maintain or admin access (CONTRACT §5)."""
        try:
            return may_command(*await self.permission(login))
        except NotFound:
            return False

    async def create_check_run(
        self,
        head_sha: str,
        status: CheckStatus,
        title: str,
        summary: str,
        conclusion: CheckConclusion | None = None,
        name: str = "baton",
    ) -> int:
        """Start the `baton` check run on a commit; returns its id."""
        data: dict[str, Any] = {
            "name": name,
            "head_sha": head_sha,
            "status": status,
            "output": {"title": title, "summary": summary},
        }
        if conclusion is not None:
            data["conclusion"] = conclusion
        created = await self._call(
            f"check run on {self.full_name}@{head_sha}",
            self._rest.checks.async_create(self.owner, self.name, data=cast(Any, data)),
        )
        return created.id

    async def find_check_run(self, head_sha: str, name: str = "baton") -> int | None:
        """The id of the check run `name` on a commit, if Baton made one already."""
        answer = await self._call(
            f"check runs of {self.full_name}@{head_sha}",
            self._rest.checks.async_list_for_ref(self.owner, self.name, head_sha, check_name=name),
        )
        return answer.check_runs[0].id if answer.check_runs else None

    async def update_check_run(
        self,
        check_run_id: int,
        status: CheckStatus,
        title: str,
        summary: str,
        conclusion: CheckConclusion | None = None,
    ) -> None:
        """Bring a check run up to date; a `completed` one needs a conclusion."""
        data: dict[str, Any] = {"status": status, "output": {"title": title, "summary": summary}}
        if conclusion is not None:
            data["conclusion"] = conclusion
        call = self._rest.checks.async_update(
            self.owner, self.name, check_run_id, data=cast(Any, data)
        )
        await self._call(f"check run {check_run_id} on {self.full_name}", call)

    async def open_pull_requests(self, head_branch: str | None = None) -> list[PullRequest]:
        """Open pull requests, or only the one whose head is `head_branch` of this repository."""
        head = f"{self.owner}:{head_branch}" if head_branch else None
        pulls: Paginator[Any] = self._client.rest.paginate(
            self._rest.pulls.async_list,
            owner=self.owner,
            repo=self.name,
            state="open",
            head=head or UNSET,
            per_page=PER_PAGE,
        )
        found = [_pull(pull) for pull in await _every(pulls, f"pull requests of {self.full_name}")]
        return [pull for pull in found if head_branch is None or pull.head_branch == head_branch]

    async def open_draft_pull_request(
        self, branch: str, base: str, title: str, body: str
    ) -> PullRequest:
        """The open pull request for `branch`, or a new draft one; never a second."""
        existing = await self.open_pull_requests(branch)
        if existing:
            return existing[0]
        created = await self._call(
            f"pull request for {branch} in {self.full_name}",
            self._rest.pulls.async_create(
                self.owner, self.name, head=branch, base=base, title=title, body=body, draft=True
            ),
        )
        return _pull(created)

    async def update_pull_request_body(self, number: int, body: str) -> None:
        await self._call(
            f"pull request {self.full_name}#{number}",
            self._rest.pulls.async_update(self.owner, self.name, number, body=body),
        )

    async def review(self, pull_number: int, review_id: int) -> Review:
        """A submitted review and all its comments."""
        what = f"review {review_id} on {self.full_name}#{pull_number}"
        review = await self._call(
            what, self._rest.pulls.async_get_review(self.owner, self.name, pull_number, review_id)
        )
        comments: Paginator[Any] = self._client.rest.paginate(
            self._rest.pulls.async_list_comments_for_review,
            owner=self.owner,
            repo=self.name,
            pull_number=pull_number,
            review_id=review_id,
            per_page=PER_PAGE,
        )
        return Review(
            id=review.id,
            author=review.user.login if review.user else "",
            state=review.state,
            body=review.body or "",
            comments=tuple(map(_review_comment, await _every(comments, what))),
        )

    async def reply_to_review_comment(
        self, pull_number: int, comment_id: int, key: str, body: str
    ) -> int:
        """Reply in a review comment's own thread once per `key`, however often retried;
        returns the reply's id.

        The reply carries a hidden marker and is found again in the thread, so a crash between
        posting it and recording it does not post it twice.
        """
        marker = reply_marker(key)
        for comment in await self._review_comments(pull_number):
            # Only a bot's reply counts: people may quote the marker. The thread is not compared:
            # GitHub files a reply to a reply under the thread's first comment, and `key` is
            # enough to tell Baton's replies apart.
            if comment.author_is_bot and comment.body.rstrip().endswith(marker):
                return comment.id
        # The marker goes last, so the thread and its notifications start with the answer.
        text = f"{body}\n\n{marker}"
        created = await self._call(
            f"reply to review comment {comment_id} on {self.full_name}#{pull_number}",
            self._rest.pulls.async_create_reply_for_review_comment(
                self.owner, self.name, pull_number, comment_id, body=text
            ),
        )
        return created.id

    async def _review_comments(self, pull_number: int) -> list[ReviewComment]:
        """Every review comment on the pull request, replies included, oldest first."""
        pages: Paginator[Any] = self._client.rest.paginate(
            self._rest.pulls.async_list_review_comments,
            owner=self.owner,
            repo=self.name,
            pull_number=pull_number,
            per_page=PER_PAGE,
        )
        what = f"review comments of {self.full_name}#{pull_number}"
        return list(map(_review_comment, await _every(pages, what)))

    async def _comments(self, number: int) -> list[Comment]:
        pages: Paginator[Any] = self._client.rest.paginate(
            self._rest.issues.async_list_comments,
            owner=self.owner,
            repo=self.name,
            issue_number=number,
            per_page=PER_PAGE,
        )
        return list(map(_comment, await _every(pages, f"comments of {self.full_name}#{number}")))

    async def _find_bot_comment(self, number: int, marker: str) -> int | None:
        for comment in await self._comments(number):
            # Only a bot's comment counts: people may quote the marker; Baton never edits theirs.
            if comment.author_is_bot and comment.body.startswith(marker):
                return comment.id
        return None

    async def _edit_comment(self, comment_id: int, body: str) -> int:
        edited = await self._call(
            f"comment {comment_id} in {self.full_name}",
            self._rest.issues.async_update_comment(self.owner, self.name, comment_id, body=body),
        )
        return edited.id

    async def create_blob(self, data: bytes) -> str:
        """A file's bytes stored in the repository (Git Data API); its blob sha."""
        content = base64.b64encode(data).decode()
        made = await self._call(
            f"a blob in {self.full_name}",
            self._rest.git.async_create_blob(
                self.owner, self.name, data={"content": content, "encoding": "base64"}
            ),
        )
        return made.sha

    async def create_tree(self, base_tree: str, changes: Sequence[TreeChange]) -> str:
        """`base_tree` with each change's path set to its blob (or removed); the tree's sha."""
        entries = [
            {"path": change.path, "mode": change.mode, "type": change.kind, "sha": change.sha}
            for change in changes
        ]
        made = await self._call(
            f"a tree in {self.full_name}",
            self._rest.git.async_create_tree(
                self.owner, self.name, data=cast(Any, {"base_tree": base_tree, "tree": entries})
            ),
        )
        return made.sha

    async def create_commit(self, message: str, tree: str, parents: Sequence[str]) -> str:
        """A commit GitHub makes and signs as the App (no author given: it shows Verified)."""
        made = await self._call(
            f"a commit in {self.full_name}",
            self._rest.git.async_create_commit(
                self.owner,
                self.name,
                data={"message": message, "tree": tree, "parents": list(parents)},
            ),
        )
        return made.sha

    async def move_branch(self, branch: str, sha: str, *, exists: bool) -> None:
        """Create `branch` at `sha`, or move it forward to `sha`; never backward or sideways.
        BranchMoved when GitHub refuses: the branch is not where the caller thought."""
        what = f"branch {branch} of {self.full_name}"
        if exists:
            call = self._rest.git.async_update_ref(
                self.owner, self.name, f"heads/{branch}", data={"sha": sha, "force": False}
            )
        else:
            call = self._rest.git.async_create_ref(
                self.owner, self.name, data={"ref": f"refs/heads/{branch}", "sha": sha}
            )
        try:
            await call
        except RequestFailed as error:
            if error.response.status_code == 422:
                raise BranchMoved(f"GitHub did not move {what}: {_message(error)}") from None
            raise _error(error, what) from None
        except RequestError as error:
            raise _error(error, what) from None

    async def user_id(self, login: str) -> int:
        """The numeric id of the account `login` (for its noreply address)."""
        what = f"user {login}"
        try:
            response = await self._rest.users.async_get_by_username(login)
        except RequestError as error:
            raise _error(error, what) from None
        # Only the id is read: the rest of a user's fields differ between GitHub versions.
        found = response.json().get("id")
        if not isinstance(found, int):
            raise GitHubError(f"GitHub gave no id for {what}")
        return found

    async def check_runs(self, head_sha: str) -> list[CheckRunResult]:
        """The newest check run of each name on a commit, from every app."""
        what = f"check runs of {self.full_name}@{head_sha}"
        call = self._rest.checks.async_list_for_ref(
            self.owner, self.name, head_sha, per_page=PER_PAGE
        )
        return [_check_run(item) for item in (await self._raw(what, call)).get("check_runs", [])]

    async def annotations(self, check_run_id: int) -> list[Annotation]:
        what = f"annotations of check run {check_run_id} in {self.full_name}"
        call = self._rest.checks.async_list_annotations(
            self.owner, self.name, check_run_id, per_page=PER_PAGE
        )
        found = await self._raw(what, call)
        return [_annotation(item) for item in found if isinstance(item, dict)]

    async def job_log(self, job_id: int) -> str:
        """An Actions job's log (GitHub redirects to it; the client follows)."""
        what = f"the log of Actions job {job_id} in {self.full_name}"
        call = self._rest.actions.async_download_job_logs_for_workflow_run(
            self.owner, self.name, job_id
        )
        try:
            response = await call
        except RequestError as error:
            raise _error(error, what) from None
        return response.text

    async def run_again(self, check: CheckRunResult) -> None:
        """Re-run a failed Actions job, or ask another app for its check run again."""
        what = f"check run {check.id} ({check.name}) in {self.full_name}"
        if check.app == ACTIONS_APP:
            call = self._rest.actions.async_re_run_job_for_workflow_run(
                self.owner, self.name, check.id
            )
        else:
            call = self._rest.checks.async_rerequest_run(self.owner, self.name, check.id)
        await self._send(what, call)

    async def _raw(self, what: str, call: Awaitable[Response[Any, Any]]) -> Any:
        """A call's JSON as sent, for answers of which Baton reads a few fields (other apps'
        check runs differ from Baton's own, and between GitHub versions)."""
        try:
            return (await call).json()
        except RequestError as error:
            raise _error(error, what) from None

    async def _send(self, what: str, call: Awaitable[Response[Any, Any]]) -> None:
        """A githubkit call whose answer Baton does not read, so no field of it (which GitHub
        Enterprise Server versions differ in) can fail to parse; GitHubError as `_call`."""
        try:
            await call
        except RequestError as error:
            raise _error(error, what) from None

    async def _call(self, what: str, call: Awaitable[Response[T, Any]]) -> T:
        """The parsed answer of a githubkit call, or a GitHubError naming `what`."""
        try:
            response = await call
        except RequestError as error:
            raise _error(error, what) from None
        return response.parsed_data


async def _every(pages: Paginator[T], what: str) -> list[T]:
    """Every item of every page, or a GitHubError naming `what`."""
    try:
        return [item async for item in pages]
    except RequestError as error:
        raise _error(error, what) from None


def _error(error: RequestError[Any], what: str) -> GitHubError:
    if isinstance(error.exc, TokenRefused):
        return GitHubError(f"no token for {what}: {error.exc}")
    if not isinstance(error, RequestFailed):
        # No answer at all (refused, reset, timed out): the job is retried later.
        return GitHubError(f"GitHub could not be reached for {what}: {error!r}")
    status = error.response.status_code
    if status == 404:
        return NotFound(f"{what} was not found, or Baton's installation cannot see it")
    if _already_exists(error):
        return AlreadyExists(f"{what} exists already")
    return GitHubError(f"GitHub answered {status} for {what}: {_message(error)}")


def _message(error: RequestFailed) -> str:
    """GitHub's message, with the details a 422 lists under `errors`."""
    try:
        answer = error.response.json()
        details = [item.get("message") or item.get("code") for item in answer.get("errors", [])]
        return "; ".join([str(answer["message"]), *map(str, filter(None, details))])
    except (ValueError, KeyError, TypeError, AttributeError):
        return error.response.text[:200]


def _already_exists(error: RequestFailed) -> bool:
    """GitHub's 422 for something that is there already (`errors[].code == already_exists`)."""
    if error.response.status_code != 422:
        return False
    try:
        problems = error.response.json().get("errors", [])
        return any(problem.get("code") == "already_exists" for problem in problems)
    except (ValueError, AttributeError):
        return False


def _check_run(item: Any) -> CheckRunResult:
    app = item.get("app") or {}
    output = item.get("output") or {}
    return CheckRunResult(
        id=int(item["id"]),
        name=str(item.get("name") or ""),
        app=str(app.get("slug") or ""),
        app_id=app.get("id") if isinstance(app.get("id"), int) else None,
        status=str(item.get("status") or ""),
        conclusion=item.get("conclusion"),
        title=str(output.get("title") or ""),
        summary=str(output.get("summary") or ""),
        text=str(output.get("text") or ""),
    )


def _annotation(item: Any) -> Annotation:
    line = item.get("start_line")
    return Annotation(
        str(item.get("path") or ""),
        line if isinstance(line, int) else None,
        str(item.get("message") or ""),
    )


def _label_name(label: Any) -> str:
    return label if isinstance(label, str) else str(getattr(label, "name", "") or "")


def _comment(comment: Any) -> Comment:
    user = comment.user
    return Comment(
        id=comment.id,
        author=user.login if user else "",
        author_is_bot=bool(user and user.type == "Bot"),
        body=comment.body or "",
    )


def _pull(pull: Any) -> PullRequest:
    return PullRequest(
        number=pull.number,
        head_branch=pull.head.ref,
        head_sha=pull.head.sha,
        base_branch=pull.base.ref,
        draft=bool(pull.draft),
        state=pull.state,
        html_url=pull.html_url,
    )


def _review_comment(comment: Any) -> ReviewComment:
    user = comment.user
    return ReviewComment(
        id=comment.id,
        author=user.login if user else "",
        path=comment.path,
        line=comment.line if isinstance(comment.line, int) else None,
        body=comment.body,
        author_is_bot=bool(user and user.type == "Bot"),
    )
