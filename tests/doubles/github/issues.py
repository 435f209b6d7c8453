"""Issues, comments, labels and reactions: their REST views and routes."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from tests.doubles.github.repositories import _RepositoryViews
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
    REACTIONS,
    _Comment,
    _iso,
    _Issue,
    _Label,
    _node_id,
    _Reaction,
    _Repository,
    _State,
    _utc_now,
)

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


class _IssueViews(_RepositoryViews):
    """Issues, their comments, labels and reactions."""

    def label(self, repo: _Repository, name: str) -> dict[str, Any]:
        """The repository's label `name`; an issue's label the repository lacked is made, as
        GitHub makes a label that an issue is given."""
        found = repo.labels.get(name.lower())
        if found is None:
            color = hashlib.sha256(name.encode()).hexdigest()[:6]
            found = repo.labels[name.lower()] = _Label(self.state.new_id(), name, color)
        return {
            "id": found.id,
            "node_id": _node_id("LA", found.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{found.name}",
            "name": found.name,
            "color": found.color,
            "default": False,
            "description": found.description,
            "archived_at": None,
            "archived_by": None,
        }

    def reactions_summary(
        self, repo: _Repository, url: str, issue: int | None = None, comment: int | None = None
    ) -> dict[str, Any]:
        chosen = [
            reaction.content
            for reaction in repo.reactions
            if (issue is not None and reaction.issue_number == issue)
            or (comment is not None and reaction.comment_id == comment)
        ]
        counts = {content: chosen.count(content) for content in REACTIONS}
        return {"url": f"{url}/reactions", "total_count": len(chosen), **counts}

    def issue(self, repo: _Repository, number: int) -> dict[str, Any]:
        """The issue, or the issue side of a pull request (with its `pull_request` key)."""
        pull = repo.pulls.get(number)
        record = repo.issues.get(number)
        if pull is not None:
            record = _Issue(
                number,
                pull.issue_id,
                pull.title,
                pull.body,
                pull.user,
                [],
                pull.created_at,
                pull.updated_at,
                pull.state,
                pull.closed_at,
            )
        if record is None:
            raise _not_found()
        api = f"{self.api}/repos/{repo.full_name}/issues/{number}"
        html = f"{self.web}/{repo.full_name}/{'pull' if pull else 'issues'}/{number}"
        body: dict[str, Any] = {
            "url": api,
            "repository_url": f"{self.api}/repos/{repo.full_name}",
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": html,
            "id": record.id,
            "node_id": _node_id("PR" if pull else "I", record.id),
            "number": number,
            "title": record.title,
            "user": self.user(record.user),
            "labels": [self.label(repo, name) for name in record.labels],
            "state": record.state,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": sum(comment.number == number for comment in repo.comments.values()),
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "closed_at": record.closed_at,
            "author_association": self.author_association(repo, record.user),
            "active_lock_reason": None,
            "body": record.body,
            "reactions": self.reactions_summary(repo, api, issue=number),
            "timeline_url": f"{api}/timeline",
            "performed_via_github_app": self.actor_app(record.user),
            "state_reason": None,
        }
        if pull is not None:
            body["draft"] = pull.draft
            body["pull_request"] = {
                "url": f"{self.api}/repos/{repo.full_name}/pulls/{number}",
                "html_url": html,
                "diff_url": f"{html}.diff",
                "patch_url": f"{html}.patch",
                "merged_at": pull.merged_at,
            }
        return body

    def comment(self, repo: _Repository, comment: _Comment) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/issues/comments/{comment.id}"
        kind = "pull" if comment.number in repo.pulls else "issues"
        html = f"{self.web}/{repo.full_name}/{kind}/{comment.number}#issuecomment-{comment.id}"
        return {
            "url": api,
            "html_url": html,
            "issue_url": f"{self.api}/repos/{repo.full_name}/issues/{comment.number}",
            "id": comment.id,
            "node_id": _node_id("IC", comment.id),
            "user": self.user(comment.user),
            "created_at": comment.created_at,
            "updated_at": comment.updated_at,
            "author_association": self.author_association(repo, comment.user),
            "body": comment.body,
            "reactions": self.reactions_summary(repo, api, comment=comment.id),
            "performed_via_github_app": self.actor_app(comment.user),
        }

    def reaction(self, reaction: _Reaction) -> dict[str, Any]:
        return {
            "id": reaction.id,
            "node_id": _node_id("REA", reaction.id),
            "user": self.user(reaction.user),
            "content": reaction.content,
            "created_at": reaction.created_at,
        }


class _IssueRoutes:
    """The label, issue, comment and reaction routes."""

    state: _State
    views: _Views

    @_handles(
        "GET", "/repos/{owner}/{repo}/labels/{name}", needs="issues:read or pull_requests:read"
    )
    def get_label(self, call: _Call) -> _Answer:
        if call.params["name"].lower() not in call.repo.labels:
            raise _not_found()
        return _json_answer(200, self.views.label(call.repo, call.params["name"]))

    @_handles("POST", "/repos/{owner}/{repo}/labels", needs="issues:write or pull_requests:write")
    def create_label(self, call: _Call) -> _Answer:
        fields = call.fields()
        name = _required_text(fields, "name")
        color = str(fields.get("color") or "ededed").removeprefix("#").lower()
        description = fields.get("description")
        if not re.fullmatch(r"[0-9a-f]{6}", color):
            raise _validation_failed({"resource": "Label", "code": "invalid", "field": "color"})
        if description is not None and (not isinstance(description, str) or len(description) > 100):
            raise _validation_failed(
                {"resource": "Label", "code": "invalid", "field": "description"}
            )
        if name.lower() in call.repo.labels:
            raise _validation_failed(
                {"resource": "Label", "code": "already_exists", "field": "name"}
            )
        call.repo.labels[name.lower()] = _Label(self.state.new_id(), name, color, description)
        return _json_answer(201, self.views.label(call.repo, name))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/issues/{number}",
        needs="issues:read or pull_requests:read",
    )
    def get_issue(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.issue(call.repo, call.int_param("number")))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/issues/{number}/comments",
        needs="issues:read or pull_requests:read",
    )
    def comments(self, call: _Call) -> _Answer:
        number = self._issue_number(call)
        found = [c for c in call.repo.comments.values() if c.number == number]
        page, link = _page(call, self.state.api_url, found)
        return _json_answer(200, [self.views.comment(call.repo, c) for c in page], link)

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/issues/{number}/comments",
        needs="issues:write or pull_requests:write",
    )
    def add_comment(self, call: _Call) -> _Answer:
        number = self._issue_number(call)
        body = _required_text(call.fields(), "body")
        comment = _new_comment(self.state, call.repo, number, body, self.state.bot_login)
        return _json_answer(201, self.views.comment(call.repo, comment))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        needs="issues:read or pull_requests:read",
    )
    def get_comment(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.comment(call.repo, self._comment(call)))

    @_handles(
        "PATCH",
        "/repos/{owner}/{repo}/issues/comments/{id}",
        needs="issues:write or pull_requests:write",
    )
    def edit_comment(self, call: _Call) -> _Answer:
        comment = self._comment(call)
        comment.body = _required_text(call.fields(), "body")
        comment.updated_at = _iso(_utc_now())
        return _json_answer(200, self.views.comment(call.repo, comment))

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/issues/{number}/reactions",
        needs="issues:write or pull_requests:write",
    )
    def react_to_issue(self, call: _Call) -> _Answer:
        number = self._issue_number(call)
        return self._react(call, issue_number=number)

    @_handles(
        "POST",
        "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
        needs="issues:write or pull_requests:write",
    )
    def react_to_comment(self, call: _Call) -> _Answer:
        return self._react(call, comment_id=self._comment(call).id)

    def _react(
        self, call: _Call, issue_number: int | None = None, comment_id: int | None = None
    ) -> _Answer:
        content = _required_text(call.fields(), "content")
        if content not in REACTIONS:
            raise _invalid_request(f'"{content}" is not a member of {list(REACTIONS)}.')
        user = self.state.bot_login
        reaction = _Reaction(
            self.state.new_id(), content, user, _iso(_utc_now()), issue_number, comment_id
        )
        for existing in call.repo.reactions:
            if existing.key() == reaction.key():
                return _json_answer(200, self.views.reaction(existing))
        call.repo.reactions.append(reaction)
        return _json_answer(201, self.views.reaction(reaction))

    def _issue_number(self, call: _Call) -> int:
        number = call.int_param("number")
        if number not in call.repo.issues and number not in call.repo.pulls:
            raise _not_found()
        return number

    def _comment(self, call: _Call) -> _Comment:
        found = call.repo.comments.get(call.int_param("id"))
        if found is None:
            raise _not_found()
        return found


def _new_comment(state: _State, repo: _Repository, number: int, body: str, user: str) -> _Comment:
    now = _iso(_utc_now())
    comment = _Comment(state.new_id(), number, body, user, now, now)
    repo.comments[comment.id] = comment
    return comment
