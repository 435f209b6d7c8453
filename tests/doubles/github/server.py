"""The double's server: one ASGI app routing REST, the manifest pages and git, with recorded
requests, scripted failures and rate-limit headers.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from urllib.parse import parse_qsl

import anyio.to_thread
from starlette.types import Message, Receive, Scope, Send

from tests.doubles.git_http import GitHttpBackend, GitRefusal
from tests.doubles.github.app import _AppRoutes, _credential, _jwt_problem
from tests.doubles.github.checks import _CheckRoutes, _CheckViews
from tests.doubles.github.ci import _CiRoutes
from tests.doubles.github.git_writes import _GitWriteRoutes, _GitWriteViews
from tests.doubles.github.issues import _IssueRoutes
from tests.doubles.github.manifest import _ManifestPages, _ManifestRoutes
from tests.doubles.github.oauth import _OAuthPages, _UserRoutes
from tests.doubles.github.pulls import _PullRoutes
from tests.doubles.github.repositories import _RepositoryRoutes
from tests.doubles.github.rest import (
    APP_AUTH,
    INSTALLATION_AUTH,
    USER_AUTH,
    _Answer,
    _ApiError,
    _Call,
    _error_body,
    _Incoming,
    _json_answer,
    _not_found,
    _parsed_json,
    _Route,
    _route,
)
from tests.doubles.github.state import (
    API_PREFIX,
    API_VERSION,
    NOT_ACCESSIBLE,
    RATE_LIMIT,
    SECONDARY_RATE_LIMIT,
    RecordedRequest,
    _Failure,
    _State,
)

_GIT_PATH = re.compile(r"/[^/]+/[^/]+/(?:info/refs|git-upload-pack|git-receive-pack)")


class _Views(_CheckViews, _GitWriteViews):
    """Renders state records as the REST API's JSON bodies."""


class _RestApi(
    _AppRoutes,
    _ManifestRoutes,
    _RepositoryRoutes,
    _IssueRoutes,
    _CheckRoutes,
    _PullRoutes,
    _UserRoutes,
    _GitWriteRoutes,
    _CiRoutes,
):
    """The REST routes the double serves, each a small handler over the state."""

    def __init__(self, state: _State, views: _Views) -> None:
        self.state = state
        self.views = views
        self.routes = [
            _route(method, template, auth, needs, getattr(self, name))
            # Each concern's routes, in the order of the classes this one is made of.
            for kind in type(self).__mro__
            for name, handler in vars(kind).items()
            for method, template, auth, needs in getattr(handler, "routes", ())
        ]

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found and route.method == method:
                return route, found.groupdict()
        return None


class _Server(_ManifestPages, _OAuthPages):
    """The double as an ASGI app: REST, web pages and git on one server, every request
    recorded."""

    _state: _State
    _api: _RestApi
    _lock: threading.RLock
    _git: GitHttpBackend
    requests: list[RecordedRequest]
    before_replying: list[Callable[[str, str, int], None]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The double as an ASGI app: REST, web pages and git on one server."""
        if scope["type"] == "lifespan":
            await _answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        at = time.monotonic()
        if _GIT_PATH.fullmatch(scope["path"]):
            await self._serve_git(scope, receive, send, at)
            return
        incoming = _Incoming(
            scope["method"],
            scope["path"],
            dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)),
            _headers(scope),
            await _read_body(receive),
            at,
        )
        # Handlers run git; a worker thread keeps the loop free for git traffic meanwhile.
        answer = await anyio.to_thread.run_sync(self._answer, incoming)
        path = incoming.path.removeprefix(API_PREFIX)
        await self._before_replying(incoming.method, path, answer.status)
        headers = [(name.encode(), value.encode()) for name, value in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _before_replying(self, method: str, path: str, status: int) -> None:
        for hook in list(self.before_replying):
            await anyio.to_thread.run_sync(hook, method, path, status)

    async def _serve_git(self, scope: Scope, receive: Receive, send: Send, at: float) -> None:
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # git did its work (a push moved the branch); the client still waits for the end.
                await self._before_replying(scope["method"], scope["path"], status)
            await send(message)

        await self._git(scope, receive, send_and_note)
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        record = RecordedRequest(
            scope["method"], scope["path"], query, _headers(scope), None, status, at, "git", False
        )
        with self._lock:
            self.requests.append(record)

    def _may_use_git(self, full_name: str, token: str) -> bool:
        """Any live token signs in; what it may then do is `_git_refusal`'s to say."""
        with self._lock:
            return self._state.live_token(token) is not None

    def _git_refusal(self, full_name: str, token: str, service: str) -> GitRefusal | None:
        """GitHub's answer to a live token that may not run `service` on the repository:
        404 when it cannot see it or read its contents, 403 for a push without contents:write."""
        with self._lock:
            repo = self._state.repositories.get(full_name.lower())
            issued = self._state.live_token(token)
            if repo is None or issued is None or not issued.sees(repo):
                return GitRefusal(404, "Repository not found.")
            if not issued.grants("contents", "read"):
                return GitRefusal(404, "Repository not found.")
            if service == "git-receive-pack" and not issued.grants("contents", "write"):
                return GitRefusal(
                    403, f"Permission to {full_name}.git denied to {self._state.bot_login}."
                )
            return None

    def _answer(self, incoming: _Incoming) -> _Answer:
        is_api = incoming.path == API_PREFIX or incoming.path.startswith(API_PREFIX + "/")
        path = incoming.path.removeprefix(API_PREFIX) if is_api else incoming.path
        with self._lock:
            if is_api:
                answer, route = self._answer_rest(incoming, path)
            else:
                answer, route = self._answer_oauth(incoming) or self._answer_web(incoming)
            record = RecordedRequest(
                incoming.method,
                path,
                incoming.query,
                incoming.headers,
                _parsed_json(incoming.body),
                answer.status,
                incoming.at,
                route,
                is_api,
            )
            self.requests.append(record)
            return answer

    def _answer_rest(self, incoming: _Incoming, path: str) -> tuple[_Answer, str | None]:
        matched = self._api.match(incoming.method, path)
        route_name = matched[0].name if matched else None
        failure = self._take_failure(incoming.method, path)
        if failure is not None and not failure.after_route:
            return self._failure_answer(failure), route_name
        if matched is None:
            return self._with_rate_limit(_json_answer(404, _error_body(404, "Not Found"))), None
        route, params = matched
        call = _Call(incoming.method, path, incoming.query, incoming.body, params)
        try:
            self._authorize(route, call, incoming.headers)
            answer = route.handler(call)
        except _ApiError as error:
            answer = _json_answer(error.status, _error_body(error.status, **error.body))
        if failure is not None:
            return self._failure_answer(failure), route_name
        return self._with_rate_limit(answer), route_name

    def _authorize(self, route: _Route, call: _Call, headers: Mapping[str, str]) -> None:
        """Fill in the caller's token and repository, or raise GitHub's refusal: 401 for the
        credentials, 404 for a repository the token cannot see, 403 for a missing permission."""
        credential = _credential(headers)
        if route.auth == APP_AUTH:
            problem = self._app_auth_problem(credential)
            if problem:
                raise _ApiError(401, problem)
        elif route.auth == INSTALLATION_AUTH:
            if credential is None:
                raise _ApiError(401, "Requires authentication")
            scheme, token = credential
            call.token = self._state.live_token(token)
            if scheme not in ("token", "bearer") or call.token is None:
                raise _ApiError(401, "Bad credentials")
        elif route.auth == USER_AUTH:
            call.user = self._state.user_tokens.get(credential[1]) if credential else None
            if call.user is None:
                raise _ApiError(401, "Bad credentials" if credential else "Requires authentication")
        if "owner" in call.params:
            self._resolve_repository(call)
        if call.token is not None and not any(call.token.grants(*need) for need in route.needs):
            raise _ApiError(403, NOT_ACCESSIBLE)

    def _app_auth_problem(self, credential: tuple[str, str] | None) -> str | None:
        if credential is None:
            return "Requires authentication"
        scheme, token = credential
        if scheme != "bearer":
            return "A JSON web token could not be decoded: send it as 'Authorization: Bearer'"
        return _jwt_problem(token, self._state)

    def _resolve_repository(self, call: _Call) -> None:
        full_name = f"{call.params['owner']}/{call.params['repo']}"
        repo = self._state.repositories.get(full_name.lower())
        # Like GitHub for a private repository: one the token cannot reach (another
        # installation's, or one of its own installation the token was not asked for) is not there.
        if repo is None or (call.token is not None and not call.token.sees(repo)):
            raise _not_found()
        call.repository = repo

    def _take_failure(self, method: str, path: str) -> _Failure | None:
        for failure in self._state.failures:
            if failure.method == method and failure.pattern.fullmatch(path):
                failure.times -= 1
                if failure.times <= 0:
                    self._state.failures.remove(failure)
                return failure
        return None

    def _failure_answer(self, failure: _Failure) -> _Answer:
        headers = []
        message = failure.message
        if failure.retry_after is not None:
            headers.append(("retry-after", str(failure.retry_after)))
            if failure.status in (403, 429):
                message = message or SECONDARY_RATE_LIMIT
        if failure.rate_limit_remaining == 0 and failure.status in (403, 429):
            message = message or "API rate limit exceeded for installation."
        if failure.status == 403:
            message = message or "Resource not accessible by integration"
        message = message or HTTPStatus(failure.status).phrase
        answer = _json_answer(failure.status, _error_body(failure.status, message), headers)
        return self._with_rate_limit(answer, failure.rate_limit_remaining)

    def _with_rate_limit(self, answer: _Answer, remaining: int | None = None) -> _Answer:
        state = self._state
        state.rate_limit_used += 1
        if remaining is None:
            remaining = max(1, RATE_LIMIT - state.rate_limit_used)
        headers = [
            ("x-github-api-version-selected", API_VERSION),
            ("x-github-media-type", "github.v3; format=json"),
            ("x-github-request-id", uuid.uuid4().hex[:20].upper()),
            ("x-ratelimit-limit", str(RATE_LIMIT)),
            ("x-ratelimit-remaining", str(remaining)),
            ("x-ratelimit-reset", str(state.rate_limit_reset)),
            ("x-ratelimit-used", str(RATE_LIMIT - remaining)),
            ("x-ratelimit-resource", "core"),
        ]
        return answer._replace(headers=[*answer.headers, *headers])


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _answer_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
