"""Which GitHub events Baton acts on, and the few fields it reads from them.

GitHub adds and drops payload fields over time and Enterprise Server versions differ, so each
event has a small model of only what Baton needs, with every other field ignored. A payload that
lacks one of those fields is answered `ignored`, never an error; so is JSON that is not an object
(`[]`, `null`, a number) and JSON nested deeper than the parser reads (200 levels; no payload
nests a tenth of that). Only a body that is not JSON at all is an error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    create_model,
)

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
    created_at: datetime | None = None


class BranchRef(_Tolerant):
    ref: str


class PullRequestRef(_Tolerant):
    number: GitHubId
    # The head branch names the run even before the run recorded the pull request's number.
    head: BranchRef | None = None
    merged: bool = False


class ReviewRef(_Tolerant):
    id: GitHubId
    state: str = ""
    body: str | None = None


class IssueLabeled(_Tolerant):
    action: str
    installation: InstallationRef
    repository: RepositoryRef
    issue: IssueRef
    label: Label
    sender: Account


class IssueCommentCreated(_Tolerant):
    action: str
    installation: InstallationRef
    repository: RepositoryRef
    issue: IssueRef
    comment: CommentRef
    sender: Account


class PullRequestReviewSubmitted(_Tolerant):
    action: str
    installation: InstallationRef
    repository: RepositoryRef
    pull_request: PullRequestRef
    review: ReviewRef
    sender: Account


class PullRequestClosed(_Tolerant):
    action: str
    installation: InstallationRef
    repository: RepositoryRef
    pull_request: PullRequestRef
    sender: Account


class AppRef(_Tolerant):
    id: GitHubId | None = None
    slug: str | None = None


class CheckSuiteRef(_Tolerant):
    id: GitHubId
    head_sha: str
    head_branch: str | None = None
    conclusion: str | None = None
    app: AppRef | None = None


class CheckSuiteCompleted(_Tolerant):
    action: str
    installation: InstallationRef
    repository: RepositoryRef
    check_suite: CheckSuiteRef
    sender: Account


class PushedRepository(RepositoryRef):
    default_branch: str | None = None


class PushEvent(_Tolerant):
    ref: str
    after: str
    deleted: bool = False
    installation: InstallationRef
    repository: PushedRepository
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


class PayloadError(ValueError):
    """The body is not JSON."""


class _OddShape(Exception):
    """The body is JSON, but not of a shape any event has; the message says how."""


# The first character of a JSON text that is not an object names its kind; any other is a number.
_JSON_KINDS = {
    b"[": "a JSON array",
    b'"': "a JSON string",
    b"n": "JSON null",
    b"t": "a JSON boolean",
    b"f": "a JSON boolean",
}


def _none_if_invalid(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _lenient(model: type[_Tolerant]) -> Any:
    """A field that holds `model` when the payload's value fits it, and None otherwise."""
    return Annotated[model | None, WrapValidator(_none_if_invalid)]


class _Named(_Tolerant):
    full_name: str


class _Glance(_Tolerant):
    """What every delivery records (the action, and who and where when those fields are sane),
    read in one parse that fails only when the body is not one JSON object."""

    action: Any = None
    installation: _lenient(InstallationRef) = None  # type: ignore[valid-type]
    repository: _lenient(_Named) = None  # type: ignore[valid-type]
    sender: _lenient(Account) = None  # type: ignore[valid-type]


class _QuickGlance(_Tolerant):
    """`_Glance` for the usual body, whose fields are absent or sane: without lenient fields,
    whose validator is handed each field's whole value rebuilt as Python objects."""

    action: Any = None
    installation: InstallationRef | None = None
    repository: _Named | None = None
    sender: Account | None = None


def _partial(model: type[_Tolerant]) -> type[_Tolerant]:
    """`model` with each required field None when missing or null. A missing field is then no
    validation error: pydantic reports one with its input, the whole payload rebuilt as Python
    objects, which took four times as long as reading the payload."""
    fields: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation: Any = field.annotation
        fields[name] = (annotation | None, None) if field.is_required() else (annotation, field)
    return create_model(f"Partial{model.__name__}", __base__=_Tolerant, **fields)


class Decision(NamedTuple):
    """What a delivery means: the job to enqueue with the fields it reads, or why it is ignored."""

    action: str | None
    job: str | None
    reason: str | None = None
    fields: bytes | None = None
    installation_id: int | None = None
    repository: str | None = None
    sender: str | None = None


# event -> (the action Baton acts on, or None for all, job, the fields the job reads).
_ROUTES: dict[str, tuple[str | None, str, type[_Tolerant]]] = {
    "issues": ("labeled", "start_run", IssueLabeled),
    "issue_comment": ("created", "handle_issue_comment", IssueCommentCreated),
    "pull_request_review": ("submitted", "handle_review", PullRequestReviewSubmitted),
    "pull_request": ("closed", "handle_pull_request_closed", PullRequestClosed),
    "check_suite": ("completed", "handle_check_suite", CheckSuiteCompleted),
    "push": (None, "handle_push", PushEvent),
    "installation": (None, "sync_installation", InstallationEvent),
    "installation_repositories": (
        None,
        "sync_installation_repositories",
        InstallationRepositoriesEvent,
    ),
}


_PARTIAL = {model: _partial(model) for _, _, model in _ROUTES.values()}

# Events that report what happened rather than ask Baton for anything: acted on whoever caused
# them (a merge queue's bot merging a pull request still ends its run).
_FACTS = frozenset({"pull_request", "check_suite", "push"})


def decide(event: str, body: bytes) -> Decision:
    """Read a delivery's body. Raises PayloadError only when it is not JSON; any unexpected
    shape is a Decision to ignore it, with the reason."""
    try:
        return _decide(event, body)
    except _OddShape as shape:
        return Decision(None, None, f"{event} body is {shape}")


def _decide(event: str, body: bytes) -> Decision:
    route = _ROUTES.get(event)
    if route is None:
        glance = _glance(body)
        return _ignored(glance, f"Baton does not act on {_label(event, _action_of(glance))}")
    wanted, job, model = route
    # One parse on the common path: the job's own model, with its fields optional, also reads
    # the action and tells a payload that lacks a field from one whose field is odd.
    try:
        parsed = _PARTIAL[model].model_validate_json(body)
    except ValidationError:
        return _decide_odd(event, body, wanted, model)
    action = getattr(parsed, "action", None)
    if wanted is not None and action != wanted:
        reason = f"Baton does not act on {_label(event, action)}"
        return Decision(action, None, reason, None, **_who_and_where(parsed))
    missing = next(
        (name for name, value in parsed if value is None and _required(model, name)), None
    )
    if missing is not None:
        reason = f"{event} payload lacks what Baton reads: {missing}: Field required"
        return Decision(action, None, reason, None, **_who_and_where(parsed))
    if event == "push" and not _moves_default_branch(parsed):
        reason = "Baton acts only on pushes that move a repository's default branch"
        return Decision(action, None, reason, None, **_who_and_where(parsed))
    sender = getattr(parsed, "sender", None)
    if isinstance(sender, Account) and sender.type == "Bot" and event not in _FACTS:
        # Baton's own comments and pushes come back as events; no bot may steer a run either.
        reason = f"{_label(event, action)} was caused by the bot {sender.login}"
        return Decision(action, None, reason, None, **_who_and_where(parsed))
    # Only the fields the job reads are kept: a few hundred bytes instead of the payload. With
    # none missing, the partial model's fields and dump are the job's model's.
    fields = parsed.model_dump_json().encode()
    return Decision(action, job, None, fields, **_who_and_where(parsed))


def _moves_default_branch(push: BaseModel) -> bool:
    """Whether a push (its fields read tolerantly) moved its repository's default branch."""
    repository = getattr(push, "repository", None)
    default = getattr(repository, "default_branch", None)
    deleted = bool(getattr(push, "deleted", False))
    return (
        not deleted
        and default is not None
        and getattr(push, "ref", None) == f"refs/heads/{default}"
    )


def _required(model: type[_Tolerant], name: str) -> bool:
    return model.model_fields[name].is_required()


def _decide_odd(event: str, body: bytes, wanted: str | None, model: type[_Tolerant]) -> Decision:
    """The decision for a body that is not JSON, not an object, or has a field of an odd shape:
    the job's model names the first problem."""
    try:
        model.model_validate_json(body)
    except ValidationError as error:
        glance = _glance(body)
        action = _action_of(glance)
        if wanted is not None and action != wanted:
            return _ignored(glance, f"Baton does not act on {_label(event, action)}")
        reason = f"{event} payload lacks what Baton reads: {_first_problem(error)}"
        return _ignored(glance, reason)
    raise AssertionError("a body the partial model refused passed the whole model")


def _label(event: str, action: str | None) -> str:
    return f"{event}.{action}" if action else event


def _glance(body: bytes) -> _QuickGlance | _Glance:
    """The body's action, installation, repository and sender, read in one parse; raises
    PayloadError when the body is not JSON and `_OddShape` when it is JSON of no event's shape."""
    try:
        return _QuickGlance.model_validate_json(body)
    except ValidationError:
        pass
    try:
        return _Glance.model_validate_json(body)
    except ValidationError as error:
        problem = error.errors(include_url=False, include_input=False)[0]
        if problem["type"] == "model_type":
            kind = _JSON_KINDS.get(body.lstrip()[:1], "a JSON number")
            raise _OddShape(f"{kind}, not an object") from None
        if "recursion limit" in str(problem.get("ctx", {}).get("error", "")):
            raise _OddShape("JSON nested deeper than Baton reads") from None
        raise PayloadError("body is not JSON") from None


def _action_of(glance: _QuickGlance | _Glance) -> str | None:
    return glance.action if isinstance(glance.action, str) else None


def _ignored(glance: _QuickGlance | _Glance, reason: str) -> Decision:
    return Decision(_action_of(glance), None, reason, None, **_who_and_where(glance))


def _who_and_where(event: BaseModel) -> dict[str, Any]:
    installation = getattr(event, "installation", None)
    repository = getattr(event, "repository", None)
    sender = getattr(event, "sender", None)
    return {
        "installation_id": installation.id if installation else None,
        "repository": repository.full_name[:255] if repository else None,
        "sender": sender.login[:255] if sender else None,
    }


def _first_problem(error: ValidationError) -> str:
    problem = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in problem["loc"])
    return f"{where}: {problem['msg']}"
