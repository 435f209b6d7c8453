"""Repositories: their REST views (commits, branches, contents, collaborators) and routes."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from tests.doubles.github.app import _AccountViews
from tests.doubles.github.git_data import (
    _blob,
    _branch_sha,
    _commit_details,
    _commit_sha,
    _tree_entries,
    _TreeEntry,
)
from tests.doubles.github.git_writes import verification
from tests.doubles.github.rest import _Answer, _Call, _handles, _json_answer, _not_found, _page
from tests.doubles.github.state import FOLDED_PERMISSION, ROLES, _node_id, _Repository, _State

if TYPE_CHECKING:
    from tests.doubles.github.server import _Views


class _RepositoryViews(_AccountViews):
    """Repositories, their commits, branches and contents, and collaborators' roles."""

    def repository(self, repo: _Repository, full: bool = False) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.web}/{repo.full_name}"
        host = self.web.split("://", 1)[-1]
        open_count = sum(issue.state == "open" for issue in repo.issues.values()) + sum(
            pull.state == "open" for pull in repo.pulls.values()
        )
        body: dict[str, Any] = {
            "id": repo.id,
            "node_id": _node_id("R", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": self.organization(repo.owner),
            "html_url": html,
            "description": None,
            "fork": False,
            "url": api,
            **self._repository_urls(api),
            "git_url": f"git://{host}/{repo.full_name}.git",
            "ssh_url": f"git@{host}:{repo.full_name}.git",
            "clone_url": f"{html}.git",
            "svn_url": html,
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 1,
            "default_branch": repo.default_branch,
            "open_issues_count": open_count,
            "is_template": False,
            "topics": [],
            "has_issues": True,
            "has_projects": True,
            "has_wiki": False,
            "has_pages": False,
            "has_downloads": True,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "visibility": "private" if repo.private else "public",
            "pushed_at": repo.created_at,
            "created_at": repo.created_at,
            "updated_at": repo.created_at,
            "allow_forking": False,
            "web_commit_signoff_required": False,
            "license": None,
            "forks": 0,
            "open_issues": open_count,
            "watchers": 0,
        }
        if full:
            body |= {
                "temp_clone_token": None,
                "allow_squash_merge": True,
                "allow_merge_commit": True,
                "allow_rebase_merge": True,
                "allow_auto_merge": False,
                "delete_branch_on_merge": False,
                "network_count": 0,
                "subscribers_count": 1,
            }
        return body

    @staticmethod
    def _repository_urls(api: str) -> dict[str, str]:
        templates = {
            "archive_url": "/{archive_format}{/ref}",
            "assignees_url": "/assignees{/user}",
            "blobs_url": "/git/blobs{/sha}",
            "branches_url": "/branches{/branch}",
            "collaborators_url": "/collaborators{/collaborator}",
            "comments_url": "/comments{/number}",
            "commits_url": "/commits{/sha}",
            "compare_url": "/compare/{base}...{head}",
            "contents_url": "/contents/{+path}",
            "contributors_url": "/contributors",
            "deployments_url": "/deployments",
            "downloads_url": "/downloads",
            "events_url": "/events",
            "forks_url": "/forks",
            "git_commits_url": "/git/commits{/sha}",
            "git_refs_url": "/git/refs{/sha}",
            "git_tags_url": "/git/tags{/sha}",
            "hooks_url": "/hooks",
            "issue_comment_url": "/issues/comments{/number}",
            "issue_events_url": "/issues/events{/number}",
            "issues_url": "/issues{/number}",
            "keys_url": "/keys{/key_id}",
            "labels_url": "/labels{/name}",
            "languages_url": "/languages",
            "merges_url": "/merges",
            "milestones_url": "/milestones{/number}",
            "notifications_url": "/notifications{?since,all,participating}",
            "pulls_url": "/pulls{/number}",
            "releases_url": "/releases{/id}",
            "stargazers_url": "/stargazers",
            "statuses_url": "/statuses/{sha}",
            "subscribers_url": "/subscribers",
            "subscription_url": "/subscription",
            "tags_url": "/tags",
            "teams_url": "/teams",
            "trees_url": "/git/trees{/sha}",
        }
        return {name: api + suffix for name, suffix in templates.items()}

    def commit(self, repo: _Repository, sha: str) -> dict[str, Any]:
        details = _commit_details(repo.path, sha)
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.web}/{repo.full_name}"
        return {
            "sha": details.sha,
            "node_id": _node_id("C", int(details.sha[:15], 16)),
            "url": f"{api}/commits/{details.sha}",
            "html_url": f"{html}/commit/{details.sha}",
            "comments_url": f"{api}/commits/{details.sha}/comments",
            "commit": {
                "url": f"{api}/git/commits/{details.sha}",
                "author": details.author,
                "committer": details.committer,
                "message": details.message,
                "comment_count": 0,
                "tree": {"sha": details.tree, "url": f"{api}/git/trees/{details.tree}"},
                "verification": verification(details.sha in repo.verified_commits),
            },
            "author": None,
            "committer": None,
            "parents": [
                {
                    "sha": parent,
                    "url": f"{api}/commits/{parent}",
                    "html_url": f"{html}/commit/{parent}",
                }
                for parent in details.parents
            ],
        }

    def branch(self, repo: _Repository, name: str, sha: str) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}/branches/{name}"
        return {
            "name": name,
            "commit": self.commit(repo, sha),
            "_links": {"self": api, "html": f"{self.web}/{repo.full_name}/tree/{name}"},
            "protected": False,
            "protection": {
                "enabled": False,
                "required_status_checks": {
                    "enforcement_level": "off",
                    "contexts": [],
                    "checks": [],
                },
            },
            "protection_url": f"{api}/protection",
        }

    def content_item(self, repo: _Repository, entry: _TreeEntry, ref: str) -> dict[str, Any]:
        kind = {"blob": "file", "tree": "dir", "commit": "submodule"}[entry.kind]
        if entry.mode == "120000":
            kind = "symlink"
        api = f"{self.api}/repos/{repo.full_name}"
        self_url = f"{api}/contents/{entry.path}?ref={ref}"
        git_url = f"{api}/git/{'trees' if kind == 'dir' else 'blobs'}/{entry.sha}"
        html = f"{self.web}/{repo.full_name}/{'tree' if kind == 'dir' else 'blob'}/{ref}/"
        raw = f"{self.web}/{repo.full_name}/raw/{ref}/{entry.path}"
        return {
            "name": entry.path.rsplit("/", 1)[-1],
            "path": entry.path,
            "sha": entry.sha,
            "size": entry.size,
            "url": self_url,
            "html_url": html + entry.path,
            "git_url": git_url,
            "download_url": raw if kind == "file" else None,
            "type": kind,
            "_links": {"self": self_url, "git": git_url, "html": html + entry.path},
        }

    def content_file(self, repo: _Repository, entry: _TreeEntry, ref: str) -> dict[str, Any]:
        encoded = base64.b64encode(_blob(repo.path, entry.sha)).decode()
        # GitHub wraps the base64 at 60 characters, newline-terminated.
        wrapped = "".join(f"{encoded[at : at + 60]}\n" for at in range(0, len(encoded), 60))
        return {**self.content_item(repo, entry, ref), "content": wrapped, "encoding": "base64"}

    def author_association(self, repo: _Repository, login: str) -> str:
        return "MEMBER" if repo.roles.get(login.lower(), "none") != "none" else "NONE"

    def collaborator_permission(self, repo: _Repository, login: str) -> dict[str, Any]:
        role = repo.roles.get(login.lower(), "none")
        rank = ROLES.index(role)
        user = self.user(login) | {
            "permissions": {
                "admin": rank <= ROLES.index("admin"),
                "maintain": rank <= ROLES.index("maintain"),
                "push": rank <= ROLES.index("write"),
                "triage": rank <= ROLES.index("triage"),
                "pull": rank <= ROLES.index("read"),
            },
            "role_name": role,
        }
        return {"permission": FOLDED_PERMISSION.get(role, role), "role_name": role, "user": user}


class _RepositoryRoutes:
    """The repository, branch, contents and collaborator routes."""

    state: _State
    views: _Views

    @_handles("GET", "/installation/repositories", needs="metadata:read")
    def installed_repos(self, call: _Call) -> _Answer:
        assert call.token is not None
        held = [repo for repo in self.state.repositories.values() if call.token.sees(repo)]
        page, link = _page(call, self.state.api_url, held)
        body = {
            "total_count": len(held),
            "repository_selection": "selected",
            "repositories": [self.views.repository(repo) for repo in page],
        }
        return _json_answer(200, body, link)

    @_handles("GET", "/repos/{owner}/{repo}", needs="metadata:read")
    def get_repository(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.repository(call.repo, full=True))

    @_handles("GET", "/repos/{owner}/{repo}/branches/{branch+}", needs="contents:read")
    def get_branch(self, call: _Call) -> _Answer:
        name = call.params["branch"]
        sha = _branch_sha(call.repo.path, name)
        if sha is None:
            raise _not_found("Branch not found")
        return _json_answer(200, self.views.branch(call.repo, name, sha))

    @_handles("GET", "/repos/{owner}/{repo}/contents", needs="contents:read")
    @_handles("GET", "/repos/{owner}/{repo}/contents/{path*}", needs="contents:read")
    def get_content(self, call: _Call) -> _Answer:
        repo = call.repo
        ref = call.query.get("ref") or repo.default_branch
        commit = _commit_sha(repo.path, ref)
        if commit is None:
            raise _not_found(f"No commit found for the ref {ref}")
        path = call.params.get("path", "").strip("/")
        if not path:
            return self._listing(repo, commit, "", ref)
        found = [entry for entry in _tree_entries(repo.path, commit, path) if entry.path == path]
        if not found:
            raise _not_found()
        entry = found[0]
        if entry.kind == "tree":
            return self._listing(repo, commit, path + "/", ref)
        # Symlinks and submodules are described, not inlined.
        is_file = entry.kind == "blob" and entry.mode != "120000"
        view = self.views.content_file if is_file else self.views.content_item
        return _json_answer(200, view(repo, entry, ref))

    def _listing(self, repo: _Repository, commit: str, directory: str, ref: str) -> _Answer:
        entries = _tree_entries(repo.path, commit, directory)
        return _json_answer(200, [self.views.content_item(repo, entry, ref) for entry in entries])

    @_handles("GET", "/users/{username}", needs="metadata:read")
    def get_user(self, call: _Call) -> _Answer:
        return _json_answer(200, self.views.user(call.params["username"]))

    @_handles(
        "GET",
        "/repos/{owner}/{repo}/collaborators/{username}/permission",
        needs="metadata:read",
    )
    def permission(self, call: _Call) -> _Answer:
        login = call.params["username"]
        return _json_answer(200, self.views.collaborator_permission(call.repo, login))
