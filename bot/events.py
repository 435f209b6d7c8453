"""Which GitHub events Baton acts on, and the few fields it reads from them.

GitHub adds and drops payload fields over time and Enterprise Server versions differ, so each
event has a small model of only what Baton needs, with every other field ignored. A payload that
lacks one of those fields is answered `ignored`, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# GitHub ids are stored as 64-bit integers; anything else is not a GitHub id.
GitHubId = Annotated[int, Field(ge=0, lt=2**63)]


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Account(_Tolerant):
    login: str
    id: GitHubId | None = None
    type: str = "User"


class InstallationRef(_Tolerant):
    id: GitHubId


class InstallationFull(_Tolerant):
    id: GitHubId
    account: Account | None = None
    repository_selection: str = "selected"


class RepositoryRef(_Tolerant):
    id: GitHubId
    full_name: str
    private: bool = False


class Label(_Tolerant):
    name: str


class IssueRef(_Tolerant):
    number: GitHubId
    title: str = ""


class CommentRef(_Tolerant):
    id: GitHubId
    body: str = ""


class PullRequestRef(_Tolerant):
    number: GitHubId


class ReviewRef(_Tolerant):
    id: GitHubId
    state: str = ""
    body: str | None = None


class IssueLabeled(_Tolerant):
    installation: InstallationRef
    repository: RepositoryRef
    issue: IssueRef
    label: Label
    sender: Account


class IssueCommentCreated(_Tolerant):
    installation: InstallationRef
    repository: RepositoryRef
    issue: IssueRef
    comment: CommentRef
    sender: Account


class PullRequestReviewSubmitted(_Tolerant):
    installation: InstallationRef
    repository: RepositoryRef
    pull_request: PullRequestRef
    review: ReviewRef
    sender: Account


class InstallationEvent(_Tolerant):
    action: str
    installation: InstallationFull
    repositories: list[RepositoryRef] | None = None


class InstallationRepositoriesEvent(_Tolerant):
    action: str
    installation: InstallationFull
    repositories_added: list[RepositoryRef] = []
    repositories_removed: list[RepositoryRef] = []


@dataclass(frozen=True)
class Route:
    """What to do with a delivery: a job to enqueue, or none and the reason it is ignored."""

    job: str | None
    reason: str | None = None


# (event, action) -> (job, payload model); action None means every action of the event.
_ROUTES: dict[tuple[str, str | None], tuple[str, type[_Tolerant]]] = {
    ("issues", "labeled"): ("start_run", IssueLabeled),
    ("issue_comment", "created"): ("handle_issue_comment", IssueCommentCreated),
    ("pull_request_review", "submitted"): ("handle_review", PullRequestReviewSubmitted),
    ("installation", None): ("sync_installation", InstallationEvent),
    ("installation_repositories", None): (
        "sync_installation_repositories",
        InstallationRepositoriesEvent,
    ),
}


def route(event: str, payload: dict[str, Any]) -> Route:
    """Decide what a delivery means. Never raises: an unexpected shape is `ignored` with why."""
    action = payload.get("action")
    key = (event, action if isinstance(action, str) else None)
    target = _ROUTES.get(key) or _ROUTES.get((event, None))
    if target is None:
        label = f"{event}.{action}" if isinstance(action, str) else event
        return Route(None, f"Baton does not act on {label}")
    job, model = target
    try:
        model.model_validate(payload)
    except ValidationError as error:
        return Route(None, f"{event} payload lacks what Baton reads: {_first_problem(error)}")
    return Route(job)


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}"


def summary_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """Installation id, repository and sender as recorded with a delivery, when present and sane."""
    return {
        "installation_id": _nested(payload, "installation", "id", int),
        "repository": _nested(payload, "repository", "full_name", str),
        "sender": _nested(payload, "sender", "login", str),
    }


def _nested(payload: dict[str, Any], outer: str, inner: str, kind: type) -> Any:
    container = payload.get(outer)
    value = container.get(inner) if isinstance(container, dict) else None
    if isinstance(value, str) and kind is str:
        return value[:255]
    if isinstance(value, int) and not isinstance(value, bool) and kind is int:
        return value if 0 <= value < 2**63 else None
    return None
