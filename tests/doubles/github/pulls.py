"""Pull requests, reviews and review comments: their REST views and routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.doubles.github.git_data import (
    _branch_sha,
    _commit_count,
    _diff_stats,
    _is_ancestor,
    _merge,
)
from tests.doubles.github.issues import _IssueViews
from tests.doubles.github.rest import (
    _Answer,
    _Call,
    _handles,
    _invalid_request,
    _json_answer,
    _not_found,
    _page,
    _required_text,
    _validation_failed,
)
from tests.doubles.github.state import (
    _iso,
    _node_id,
    _Pull,
    _Repository,
    _Review,
    _ReviewComment,
    _State,
    _utc_now,
)

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


class _PullViews(_IssueViews):
    """Pull requests, their reviews and review comments."""

    def head_sha(self, repo: _Repository, pull: _Pull) -> str:
        # An open pull request follows its branch; a closed one keeps its last head.
        if pull.state == "open":
            pull.head_sha = _branch_sha(repo.path, pull.head) or pull.head_sha
            pull.base_sha = _branch_sha(repo.path, pull.base) or pull.base_sha
        return pull.head_sha

    def pull_minimal(self, repo: _Repository, pull: _Pull) -> dict[str, Any]:
        repo_ref = {"id": repo.id, "url": f"{self.api}/repos/{repo.full_name}", "name": repo.name}
        return {
            "id": pull.id,
            "number": pull.number,
            "url": f"{self.api}/repos/{repo.full_name}/pulls/{pull.number}",
            "head": {"ref": pull.head, "sha": self.head_sha(repo, pull), "repo": repo_ref},
            "base": {"ref": pull.base, "sha": pull.base_sha, "repo": repo_ref},
        }

    def pull(self, repo: _Repository, pull: _Pull, full: bool = True) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/pulls/{pull.number}"
        issue_api = f"{self.api}/repos/{repo.full_name}/issues/{pull.number}"
        html = f"{self.web}/{repo.full_name}/pull/{pull.number}"
        head_sha = self.head_sha(repo, pull)
        statuses = f"{self.api}/repos/{repo.full_name}/statuses/{head_sha}"
        review_comment = f"{self.api}/repos/{repo.full_name}/pulls/comments{{/number}}"
        body: dict[str, Any] = {
            "url": api,
            "id": pull.id,
            "node_id": _node_id("PR", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": issue_api,
            "commits_url": f"{api}/commits",
            "review_comments_url": f"{api}/comments",
            "review_comment_url": review_comment,
            "comments_url": f"{issue_api}/comments",
            "statuses_url": statuses,
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": self.user(pull.user),
            "body": pull.body,
            "labels": [],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
            "closed_at": pull.closed_at,
            "merged_at": pull.merged_at,
            "merge_commit_sha": pull.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "head": self._pull_end(repo, pull.head, head_sha),
            "base": self._pull_end(repo, pull.base, pull.base_sha),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": issue_api},
                "comments": {"href": f"{issue_api}/comments"},
                "review_comments": {"href": f"{api}/comments"},
                "review_comment": {"href": review_comment},
                "commits": {"href": f"{api}/commits"},
                "statuses": {"href": statuses},
            },
            "author_association": self.author_association(repo, pull.user),
            "auto_merge": None,
            "draft": pull.draft,
        }
        if full:
            body |= self._pull_details(repo, pull)
        return body

    def _pull_end(self, repo: _Repository, ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{repo.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self.organization(repo.owner),
            "repo": self.repository(repo),
        }

    def _pull_details(self, repo: _Repository, pull: _Pull) -> dict[str, Any]:
        additions, deletions, files = _diff_stats(repo.path, pull.base_sha, pull.head_sha)
        return {
            "merged": pull.merged_at is not None,
            "mergeable": None,
            "rebaseable": None,
            "mergeable_state": "draft" if pull.draft else "unknown",
            "merged_by": self.user(pull.merged_by) if pull.merged_by else None,
            "comments": sum(comment.number == pull.number for comment in repo.comments.values()),
            "review_comments": sum(
                comment.pull_number == pull.number for comment in repo.review_comments.values()
            ),
            "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": _commit_count(repo.path, pull.base_sha, pull.head_sha),
            "additions": additions,
            "deletions": deletions,
            "changed_files": files,
        }

    def review(self, repo: _Repository, review: _Review) -> dict[str, Any]:
        pull_api = f"{self.api}/repos/{repo.full_name}/pulls/{review.pull_number}"
        html = (
            f"{self.web}/{repo.full_name}/pull/{review.pull_number}#pullrequestreview-{review.id}"
        )
        return {
            "id": review.id,
            "node_id": _node_id("PRR", review.id),
            "user": self.user(review.user),
            "body": review.body,
            "state": review.state,
            "html_url": html,
            "pull_request_url": pull_api,
            "author_association": self.author_association(repo, review.user),
            "_links": {"html": {"href": html}, "pull_request": {"href": pull_api}},
            "submitted_at": review.submitted_at,
            "commit_id": review.commit_id,
        }

    def review_comment(self, repo: _Repository, comment: _ReviewComment) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/pulls/comments/{comment.id}"
        pull_api = f"{self.api}/repos/{repo.full_name}/pulls/{comment.pull_number}"
        html = f"{self.web}/{repo.full_name}/pull/{comment.pull_number}#discussion_r{comment.id}"
        line = comment.line or 1
        body: dict[str, Any] = {
            "url": api,
            "pull_request_review_id": comment.review_id,
            "id": comment.id,
            "node_id": _node_id("PRRC", comment.id),
            "diff_hunk": f"@@ -{line},1 +{line},1 @@",
            "path": comment.path,
            "position": comment.line,
            "original_position": comment.line,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.commit_id,
            "user": self.user(comment.user),
            "body": comment.body,
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "html_url": html,
            "pull_request_url": pull_api,
            "author_association": self.author_association(repo, comment.user),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "pull_request": {"href": pull_api},
            },
            "reactions": self.reactions_summary(repo, api),
            "start_line": None,
            "original_start_line": None,
            "start_side": None,
            "line": comment.line,
            "original_line": comment.line,
            "side": "RIGHT",
            "subject_type": "line",
            "performed_via_github_app": self.actor_app(comment.user),
        }
        if comment.in_reply_to_id is not None:
            body["in_reply_to_id"] = comment.in_reply_to_id
        return body


class _PullRoutes:
    """The pull request, review and review comment routes."""

    state: _State
    views: _Views

    @_handles("GET", "/repos/{owner}/{repo}/pulls", needs="pull_requests:read")
    def list_pulls(self, call: _Call) -> _Answer:
        repo = call.repo
        state = call.query.get("state", "open")
        pulls = [pull for pull in repo.pulls.values() if state in ("all", pull.state)]
        head = call.query.get("head", "")
        # GitHub ignores a head filter without its `owner:` part.
        if ":" in head:
            owner, _, branch = head.partition(":")
            pulls = [p for p in pulls if owner.lower() == repo.owner.lower() and p.head == branch]
        if "base" in call.query:
            pulls = [pull for pull in pulls if pull.base == call.query["base"]]
        pulls.sort(key=lambda pull: pull.number, reverse=call.query.get("direction") != "asc")
        page, link = _page(call, self.state.api_url, pulls)
        return _json_answer(200, [self.views.pull(repo, p, full=False) for p in page], link)

    @_handles("POST", "/repos/{owner}/{repo}/pulls", needs="pull_requests:write")
    def create_pull(self, call: _Call) -> _Answer:
        repo = call.repo
        fields = call.fields()
        for name in ("title", "head", "base"):
            if not fields.get(name):
                raise _validation_failed(
                    {"resource": "PullRequest", "field": name, "code": "missing_field"}
                )
        head, base = _own_branch(repo, str(fields["head"])), str(fields["base"])
        head_sha, base_sha = _new_pull_ends(repo, head, base)
        now = _iso(_utc_now())
        pull = _Pull(
            number=repo.next_number(),
            id=self.state.new_id(),
            issue_id=self.state.new_id(),
            title=str(fields["title"]),
            body=fields.get("body"),
            user=self.state.bot_login,
            head=head,
            base=base,
            draft=bool(fields.get("draft", False)),
            head_sha=head_sha,
            base_sha=base_sha,
            created_at=now,
            updated_at=now,
            maintainer_can_modify=bool(fields.get("maintainer_can_modify", False)),
        )
        repo.pulls[pull.number] = pull
        return _json_answer(201, self.views.pull(repo, pull))

    @_handles("GET", "/repos/{owner}/{repo}/pulls/{number}", needs="pull_requests:read")
    def get_pull(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.pull(call.repo, self._pull(call)))

    @_handles("PATCH", "/repos/{owner}/{repo}/pulls/{number}", needs="pull_requests:write")
    def update_pull(self, call: _Call) -> _Answer:
        pull = self._pull(call)
        fields = call.fields()
        if "state" in fields and fields["state"] not in ("open", "closed"):
            raise _invalid_request(f'"{fields["state"]}" is not a member of ["open", "closed"].')
        pull.title = str(fields.get("title", pull.title))
        pull.body = fields.get("body", pull.body)
        if fields.get("state", pull.state) != pull.state:
            self.views.head_sha(call.repo, pull)  # remember the head it closes at
            pull.state = fields["state"]
            pull.closed_at = _iso(_utc_now()) if pull.state == "closed" else None
        pull.updated_at = _iso(_utc_now())
        return _json_answer(200, self.views.pull(call.repo, pull))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/reviews/{id}",
        needs="pull_requests:read",
    )
    def review(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.review(call.repo, self._review(call)))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/pulls/{number}/reviews/{id}/comments",
        needs="pull_requests:read",
    )
    def review_comments(self, call: _Call) -> _Answer:
        review = self._review(call)
        found = [
            comment
            for comment in call.repo.review_comments.values()
            if comment.review_id == review.id
        ]
        page, link = _page(call, self.state.api_url, found)
        return _json_answer(200, [self.views.review_comment(call.repo, c) for c in page], link)

    @_handles("GET", "/repos/{owner}/{repo}/pulls/{number}/comments", needs="pull_requests:read")
    def pull_review_comments(self, call: _Call) -> _Answer:
        """Every review comment on the pull request, replies included, in ascending order by
        id as GitHub lists them by default (`sort`, `direction` and `since` are not served)."""
        pull = self._pull(call)
        found = sorted(
            (c for c in call.repo.review_comments.values() if c.pull_number == pull.number),
            key=lambda comment: comment.id,
        )
        page, link = _page(call, self.state.api_url, found)
        return _json_answer(200, [self.views.review_comment(call.repo, c) for c in page], link)

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/pulls/{number}/comments/{id}/replies",
        needs="pull_requests:write",
    )
    def reply_to_review_comment(self, call: _Call) -> _Answer:
        pull = self._pull(call)
        parent = call.repo.review_comments.get(call.int_param("id"))
        if parent is None or parent.pull_number != pull.number:
            raise _not_found()
        body = _required_text(call.fields(), "body")
        reply = _new_reply(self.state, call.repo, parent, body, self.state.bot_login)
        return _json_answer(201, self.views.review_comment(call.repo, reply))

    def _pull(self, call: _Call) -> _Pull:
        found = call.repo.pulls.get(call.int_param("number"))
        if found is None:
            raise _not_found()
        return found

    def _review(self, call: _Call) -> _Review:
        found = call.repo.reviews.get(call.int_param("id"))
        if found is None or found.pull_number != self._pull(call).number:
            raise _not_found()
        return found


def _own_branch(repo: _Repository, head: str) -> str:
    """The branch of `owner:branch` or `branch`; "" for another owner (forks are not served)."""
    owner, separator, branch = head.rpartition(":")
    if separator and owner.lower() != repo.owner.lower():
        return ""
    return branch


def _new_pull_ends(repo: _Repository, head: str, base: str) -> tuple[str, str]:
    """The head and base shas of a new pull request, or the 422 GitHub gives for a refused one."""
    head_sha, base_sha = _branch_sha(repo.path, head), _branch_sha(repo.path, base)
    if head_sha is None or base_sha is None:
        invalid = "head" if head_sha is None else "base"
        raise _validation_failed({"resource": "PullRequest", "field": invalid, "code": "invalid"})
    if any(pull.state == "open" and pull.head == head for pull in repo.pulls.values()):
        message = f"A pull request already exists for {repo.owner}:{head}."
        raise _validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
    if _is_ancestor(repo.path, head_sha, base_sha):
        message = f"No commits between {base} and {head}"
        raise _validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
    return head_sha, base_sha


def _new_reply(
    state: _State, repo: _Repository, parent: _ReviewComment, body: str, user: str
) -> _ReviewComment:
    """A reply in `parent`'s thread; a reply to a reply joins the thread's first comment."""
    now = _iso(_utc_now())
    reply = _ReviewComment(
        id=state.new_id(),
        # GitHub files a reply under a review of its own.
        review_id=state.new_id(),
        pull_number=parent.pull_number,
        user=user,
        path=parent.path,
        line=parent.line,
        body=body,
        commit_id=parent.commit_id,
        created_at=now,
        updated_at=now,
        in_reply_to_id=parent.in_reply_to_id or parent.id,
    )
    repo.review_comments[reply.id] = reply
    return reply


def _close_pull(views: _PullViews, repo: _Repository, pull: _Pull, merged_by: str | None) -> None:
    """Close `pull` at the head it has now; with `merged_by`, that person merged it first."""
    head = views.head_sha(repo, pull)  # remember the head it closes at
    now = _iso(_utc_now())
    if merged_by is not None:
        message = f"Merge pull request #{pull.number} from {repo.owner}/{pull.head}\n\n{pull.title}"
        merge = _merge(repo.path, pull.base, head, message, merged_by)
        if merge is None:
            raise ValueError(f"{repo.full_name}#{pull.number} conflicts with {pull.base}")
        pull.draft = False
        pull.merged_at, pull.merged_by, pull.merge_commit_sha = now, merged_by, merge
    pull.state, pull.closed_at, pull.updated_at = "closed", now, now
