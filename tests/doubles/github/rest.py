"""The REST plumbing every route shares: GitHub's answers and errors, the calls handlers get,
route declarations with the permissions they need, and paging.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlencode

from tests.doubles.github.state import ACCESS_LEVELS, DOCS, IssuedToken, _Repository


class _Answer(NamedTuple):
    status: int
    body: bytes
    headers: list[tuple[str, str]]


class _ApiError(Exception):
    """A GitHub error answer raised from inside a handler."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, **extra}


def _json_answer(status: int, body: Any, headers: Sequence[tuple[str, str]] = ()) -> _Answer:
    encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    content_type = ("content-type", "application/json; charset=utf-8")
    return _Answer(status, encoded, [content_type, *headers])


def _error_body(status: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra, "documentation_url": DOCS, "status": str(status)}


def _not_found(message: str = "Not Found") -> _ApiError:
    return _ApiError(404, message)


def _validation_failed(*errors: Mapping[str, Any]) -> _ApiError:
    return _ApiError(422, "Validation Failed", errors=[dict(error) for error in errors])


def _invalid_request(message: str) -> _ApiError:
    return _ApiError(422, f"Invalid request.\n\n{message}")


def _parsed_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


class _Incoming(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


APP_AUTH = "app"  # the App's JWT
INSTALLATION_AUTH = "installation"  # an installation token
NO_AUTH = "none"
USER_AUTH = "user"  # a user access token from the OAuth web flow


@dataclass
class _Call:
    """One REST request, with what the route and its auth resolved."""

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    token: IssuedToken | None = None
    repository: _Repository | None = None
    user: str | None = None  # the login a user access token acts for

    @property
    def repo(self) -> _Repository:
        assert self.repository is not None, "route has no {owner}/{repo}"
        return self.repository

    def fields(self) -> dict[str, Any]:
        """The JSON object body ({} when empty); GitHub answers 400 for anything else."""
        if not self.body.strip():
            return {}
        fields = _parsed_json(self.body)
        if not isinstance(fields, dict):
            raise _ApiError(400, "Problems parsing JSON")
        return fields

    def int_param(self, name: str) -> int:
        value = self.params[name]
        if not value.isdigit():
            raise _not_found()
        return int(value)


Handler = Callable[[_Call], _Answer]
HandlerT = TypeVar("HandlerT", bound=Callable[..., _Answer])
# Any one of these (permission, level) pairs lets an installation token use a route.
Needs = tuple[tuple[str, str], ...]


class _Route(NamedTuple):
    method: str
    template: str
    auth: str
    needs: Needs
    handler: Handler
    pattern: re.Pattern[str]

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _route(method: str, template: str, auth: str, needs: str, handler: Handler) -> _Route:
    # `{name}` is one path segment; `{name+}` one or more, `{name*}` any (branches, file paths).
    pattern = re.sub(r"\{(\w+)\+\}", r"(?P<\1>.+)", template)
    pattern = re.sub(r"\{(\w+)\*\}", r"(?P<\1>.*)", pattern)
    pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return _Route(method, template, auth, _needs(needs), handler, re.compile(pattern))


def _needs(text: str) -> Needs:
    """`"issues:write or pull_requests:write"` as pairs; every token route must name one."""
    pairs = tuple(choice.partition(":")[::2] for choice in text.split(" or ") if choice)
    assert all(level in ACCESS_LEVELS for _, level in pairs), text
    return pairs


def _handles(
    method: str, template: str, auth: str = INSTALLATION_AUTH, needs: str = ""
) -> Callable[[HandlerT], HandlerT]:
    """Declare the REST route a `_RestApi` method answers; one method may answer several.

    `needs` names the permissions GitHub requires of an installation token for the route
    ("contents:read", or alternatives joined by " or "), as GitHub's docs list them per endpoint.
    """
    assert (auth == INSTALLATION_AUTH) == bool(needs), (
        f"{method} {template}: name its permissions if, and only if, tokens use it"
    )

    def mark(handler: HandlerT) -> HandlerT:
        handler.__dict__.setdefault("routes", []).append((method, template, auth, needs))
        return handler

    return mark


def _page(call: _Call, api_url: str, items: Sequence[Any]) -> tuple[Sequence[Any], list[Any]]:
    """One page of `items` by `per_page` and `page`, and GitHub's `Link` header for the rest."""
    per_page = min(_positive(call.query.get("per_page"), 30), 100)
    page = _positive(call.query.get("page"), 1)
    last = max(1, math.ceil(len(items) / per_page))
    chosen = items[(page - 1) * per_page : page * per_page]
    relations = []
    if page > 1:
        relations.append(("prev", page - 1))
    if page < last:
        relations += [("next", page + 1), ("last", last)]
    if page > 1:
        relations.append(("first", 1))
    if not relations:
        return chosen, []
    links = [
        f'<{api_url}{call.path}?{urlencode(call.query | {"page": str(number)})}>; rel="{rel}"'
        for rel, number in relations
    ]
    return chosen, [("link", ", ".join(links))]


def _positive(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else default


def _required_text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise _invalid_request(f'"{name}" wasn\'t supplied.')
    return value
