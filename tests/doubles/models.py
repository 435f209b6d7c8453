"""A loopback model provider: Anthropic's Messages API and OpenAI's Chat Completions, scripted.

One script drives both APIs: each request takes the next `ModelReply` or `ModelError` and the
double renders it in the wire format of the endpoint that was called, so the real SDK clients
parse, retry and raise exactly as they do against the real services. Requests are checked the
way the services check them (key present, required fields, no streaming) and every request,
refused or answered, is recorded byte for byte in `calls`.

Token accounting is the same physical turn on both APIs: `input_tokens` are the uncached input
tokens, as Anthropic reports them; OpenAI's `prompt_tokens` counts all input, so it is
`input_tokens + cache_read_tokens + cache_write_tokens`, of which `cached_tokens` were read.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.settings import Settings
from tests.support import serve

ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
STREAMING_REFUSED = "stream not supported by the double"
_ALPHANUMERIC = string.ascii_letters + string.digits
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

# Stop reasons in either vocabulary, as each API names them.
_ANTHROPIC_STOPS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "refusal",
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
_OPENAI_STOPS = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "stop_sequence": "stop",
    "refusal": "content_filter",
    "stop": "stop",
    "tool_calls": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
}

# status: (error type, usual message), as Anthropic documents its errors.
_ANTHROPIC_ERRORS = {
    400: ("invalid_request_error", "Invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not Found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed the rate limit for your organization."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}
# status: (error type, code, usual message), as OpenAI answers them.
_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", None, "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", None, "Invalid URL."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}


class ScriptedToolCall(NamedTuple):
    """A tool call the scripted model makes.

    `arguments` as a mapping is sent as JSON. As a string it is sent verbatim as OpenAI's
    `arguments`, so a test can send broken JSON; Anthropic always sends an object, so there the
    string must parse to one or the request is answered 500 naming the mistake.
    """

    name: str
    arguments: Mapping[str, Any] | str
    id: str | None = None  # generated, toolu_… or call_…, when None


class ModelReply(NamedTuple):
    """What the scripted model says in one turn, whichever API asked."""

    text: str = ""
    tool_calls: Sequence[ScriptedToolCall] = ()
    # None: tool_use / tool_calls with tool calls, else end_turn / stop; either API's names work.
    stop: str | None = None
    input_tokens: int = 100
    output_tokens: int = 20
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # Anthropic only: OpenAI does not report cache writes


class ModelError(NamedTuple):
    """An error answer instead of a reply, in the provider's error shape."""

    status: int  # 429, 500, 503, 529 (Anthropic overloaded)…
    retry_after: float | None = None  # seconds, sent as `retry-after` and `retry-after-ms`
    message: str = ""  # empty: the provider's usual message for `status`


class RecordedCall(NamedTuple):
    """One request the double received and how it answered."""

    api: str  # "anthropic" or "openai"
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes  # the exact request bytes
    json: Any  # the parsed body, None when it is not JSON
    status: int  # 0 while a policy is deciding


Answer = ModelReply | ModelError
Policy = Callable[[RecordedCall], Answer]


class ScriptMistake(Exception):
    """A script entry or policy answer the double cannot render; answered 500, not retried."""


class ModelDouble:
    """Anthropic and OpenAI on loopback; `with ModelDouble([...]) as models:` serves them.

    `url` is Anthropic's base URL; OpenAI's is `url + "/v1"`. Each request takes the next
    script entry, or asks `policy` once the script is used up; with neither it is answered 500
    "script ran out" with `x-should-retry: false`, so a test fails at once. Refused requests
    (401, 400, 404) do not use a script entry. The server answers from another thread, so the
    script and `calls` are guarded by one lock.
    """

    def __init__(self, script: Sequence[Answer] = (), policy: Policy | None = None) -> None:
        self.policy = policy
        self.calls: list[RecordedCall] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._url = ""
        self._app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=_METHODS)])
        self.add(*script)

    def __enter__(self) -> Self:
        self._url = self._stack.enter_context(serve(self._app))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stack.close()
        self._url = ""

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("the model double is not serving: use it as a context manager")
        return self._url

    def serving(self, settings: Settings) -> Settings:
        """`settings` with both providers' keys and addresses pointing here."""
        return settings.model_copy(
            update={
                "anthropic_api_key": SecretStr("test-key"),
                "anthropic_base_url": self.url,
                "openai_api_key": SecretStr("test-key"),
                "openai_base_url": self.url + "/v1",
            }
        )

    @property
    def remaining(self) -> int:
        """Script entries not yet used."""
        with self._lock:
            return len(self._script)

    def add(self, *answers: Answer) -> None:
        """Append to the script; an entry no API could render is refused here, not mid-test."""
        for answer in answers:
            _check_answer(answer)
        with self._lock:
            self._script.extend(answers)

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        headers = {name.lower(): value for name, value in request.headers.items()}
        api = _api_for(request.url.path, headers)
        call = RecordedCall(api.name, request.url.path, headers, body, _parsed(body), 0)
        # In a thread: a policy may hold one call (until a test lets it go) while others answer.
        response = await asyncio.to_thread(self._respond, api, request.method, call)
        with self._lock:
            self.calls.append(call._replace(status=response.status_code))
        return response

    def _respond(self, api: _Api, method: str, call: RecordedCall) -> Response:
        refusal = api.refusal(method, call)
        if refusal is not None:
            return refusal
        try:
            answer = self._next_answer(call)
            if isinstance(answer, ModelError):
                return api.error(answer.status, answer.message, retry_after=answer.retry_after)
            return api.reply(answer, call.json)
        except ScriptMistake as mistake:
            return api.error(500, f"model double: {mistake}", should_retry=False)

    def _next_answer(self, call: RecordedCall) -> Answer:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.policy is None:
            raise ScriptMistake("the script ran out and there is no policy; add more answers")
        try:
            answer = self.policy(call)
        except Exception as error:
            raise ScriptMistake(f"the policy raised {error!r}") from error
        _check_answer(answer)
        return answer


def _check_answer(answer: object) -> None:
    if isinstance(answer, ModelError):
        if not 400 <= answer.status <= 599:
            raise ScriptMistake(f"ModelError status {answer.status} is not an error status")
    elif isinstance(answer, ModelReply):
        if answer.stop is not None and answer.stop not in _ANTHROPIC_STOPS:
            known = ", ".join(sorted(_ANTHROPIC_STOPS))
            raise ScriptMistake(f"unknown stop {answer.stop!r}; use one of {known}")
    else:
        raise ScriptMistake(f"expected a ModelReply or ModelError, got {answer!r}")


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _random_id(prefix: str, length: int, alphabet: str = _ALPHANUMERIC) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def _retry_headers(retry_after: float | None, should_retry: bool | None) -> dict[str, str]:
    headers = {}
    if retry_after is not None:
        # The standard header carries whole seconds; the SDKs prefer the precise one.
        headers["retry-after"] = str(math.ceil(retry_after))
        headers["retry-after-ms"] = f"{retry_after * 1000:g}"
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return headers


def _missing_field(json_body: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    return next((name for name in fields if json_body.get(name) in (None, [])), None)


class _Api(Protocol):
    name: str

    def refusal(self, method: str, call: RecordedCall) -> Response | None: ...

    def reply(self, reply: ModelReply, request: Mapping[str, Any]) -> Response: ...

    def error(
        self,
        status: int,
        message: str = "",
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> Response: ...


def _api_for(path: str, headers: Mapping[str, str]) -> _Api:
    if path == ANTHROPIC_PATH:
        return _ANTHROPIC
    if path == OPENAI_PATH:
        return _OPENAI
    # A wrong path still gets the error shape of the SDK that sent it.
    return _ANTHROPIC if "anthropic-version" in headers else _OPENAI


class _AnthropicApi:
    name = "anthropic"

    def refusal(self, method: str, call: RecordedCall) -> Response | None:
        if (method, call.path) != ("POST", ANTHROPIC_PATH):
            return self.error(404, "Not Found")
        if not (call.headers.get("x-api-key") or _bearer(call.headers)):
            return self.error(401, "x-api-key header is required")
        if "anthropic-version" not in call.headers:
            return self.error(400, "anthropic-version: header is required")
        if not isinstance(call.json, dict):
            return self.error(400, "There was an error parsing the body: expected a JSON object")
        if call.json.get("stream"):
            return self.error(400, STREAMING_REFUSED)
        missing = _missing_field(call.json, ("model", "max_tokens", "messages"))
        if missing is not None:
            return self.error(400, f"{missing}: Field required")
        return None

    def reply(self, reply: ModelReply, request: Mapping[str, Any]) -> Response:
        content = [{"type": "text", "text": reply.text}] if reply.text else []
        content += [_anthropic_tool_use(call) for call in reply.tool_calls]
        default_stop = "tool_use" if reply.tool_calls else "end_turn"
        message = {
            "id": _random_id("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": request["model"],
            "content": content,
            "stop_reason": _ANTHROPIC_STOPS[reply.stop or default_stop],
            "stop_sequence": None,
            "usage": _anthropic_usage(reply),
        }
        return JSONResponse(message, headers=self._headers())

    def error(
        self,
        status: int,
        message: str = "",
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> Response:
        fallback = "invalid_request_error" if status < 500 else "api_error"
        kind, usual = _ANTHROPIC_ERRORS.get(status, (fallback, "Error"))
        request_id = _random_id("req_011C", 20)
        body = {
            "type": "error",
            "error": {"type": kind, "message": message or usual},
            "request_id": request_id,
        }
        headers = self._headers(request_id) | _retry_headers(retry_after, should_retry)
        return JSONResponse(body, status_code=status, headers=headers)

    @staticmethod
    def _headers(request_id: str | None = None) -> dict[str, str]:
        return {"request-id": request_id or _random_id("req_011C", 20)}


def _bearer(headers: Mapping[str, str]) -> str:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _anthropic_tool_use(call: ScriptedToolCall) -> dict[str, Any]:
    arguments = call.arguments
    if isinstance(arguments, str):
        arguments = _parsed(arguments.encode())
        if not isinstance(arguments, dict):
            raise ScriptMistake(
                f"tool call {call.name!r} has arguments that are not a JSON object; "
                "Anthropic always sends an object as `input`"
            )
    return {
        "type": "tool_use",
        "id": call.id or _random_id("toolu_01", 22),
        "name": call.name,
        "input": dict(arguments),
    }


def _anthropic_usage(reply: ModelReply) -> dict[str, Any]:
    return {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_write_tokens,
        "cache_read_input_tokens": reply.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": reply.cache_write_tokens,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": reply.output_tokens,
        "service_tier": "standard",
    }


class _OpenAiApi:
    name = "openai"

    def refusal(self, method: str, call: RecordedCall) -> Response | None:
        if (method, call.path) != ("POST", OPENAI_PATH):
            return self.error(404, f"Invalid URL ({method} {call.path})")
        if not _bearer(call.headers):
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if not isinstance(call.json, dict):
            return self.error(400, "We could not parse the JSON body of your request.")
        if call.json.get("stream"):
            return self.error(400, STREAMING_REFUSED, param="stream")
        if _missing_field(call.json, ("model",)):
            return self.error(400, "you must provide a model parameter")
        if _missing_field(call.json, ("messages",)):
            return self.error(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        return None

    def reply(self, reply: ModelReply, request: Mapping[str, Any]) -> Response:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": (reply.text or None) if reply.tool_calls else reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [_openai_tool_call(call) for call in reply.tool_calls]
        default_stop = "tool_calls" if reply.tool_calls else "stop"
        completion = {
            "id": _random_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _OPENAI_STOPS[reply.stop or default_stop],
                }
            ],
            "usage": _openai_usage(reply),
            "service_tier": "default",
            "system_fingerprint": "fp_d0b1e5c4a7",
        }
        return JSONResponse(completion, headers=self._headers())

    def error(
        self,
        status: int,
        message: str = "",
        *,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> Response:
        fallback = "invalid_request_error" if status < 500 else "server_error"
        kind, usual_code, usual = _OPENAI_ERRORS.get(status, (fallback, None, "Error."))
        body = {
            "error": {
                "message": message or usual,
                "type": kind,
                "param": param,
                "code": code or usual_code,
            }
        }
        headers = self._headers() | _retry_headers(retry_after, should_retry)
        return JSONResponse(body, status_code=status, headers=headers)

    @staticmethod
    def _headers() -> dict[str, str]:
        return {
            "x-request-id": _random_id("req_", 32, string.hexdigits[:16]),
            "openai-version": "2020-10-01",
            "openai-processing-ms": "42",
        }


def _openai_tool_call(call: ScriptedToolCall) -> dict[str, Any]:
    arguments = call.arguments
    if not isinstance(arguments, str):
        arguments = json.dumps(dict(arguments), separators=(",", ":"))
    return {
        "id": call.id or _random_id("call_", 24),
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def _openai_usage(reply: ModelReply) -> dict[str, Any]:
    prompt_tokens = reply.input_tokens + reply.cache_read_tokens + reply.cache_write_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": prompt_tokens + reply.output_tokens,
        "prompt_tokens_details": {"cached_tokens": reply.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


_ANTHROPIC: _Api = _AnthropicApi()
_OPENAI: _Api = _OpenAiApi()
