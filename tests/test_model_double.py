"""The model double answers the real Anthropic and OpenAI SDK clients in their wire formats."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import TextBlock, ToolUseBlock
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.doubles.models import (
    STREAMING_REFUSED,
    ModelDouble,
    ModelError,
    ModelReply,
    RecordedCall,
    ScriptedToolCall,
    ScriptMistake,
)

# Plain dicts, as Baton builds them; the SDKs accept them as their TypedDict params.
MESSAGES: list[Any] = [{"role": "user", "content": "Fix the failing widget test."}]
TOOLS_REPLY = ModelReply(
    text="I will read both files.",
    tool_calls=(
        ScriptedToolCall("read_file", {"path": "src/widgets/__init__.py"}, id="call_read_1"),
        ScriptedToolCall("search", {"pattern": "render", "path": "tests"}),
    ),
    input_tokens=1200,
    output_tokens=45,
    cache_read_tokens=800,
    cache_write_tokens=300,
)
ANTHROPIC_HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"authorization": "Bearer test"}
ANTHROPIC_REQUEST = {"model": "claude-test", "max_tokens": 512, "messages": MESSAGES}
OPENAI_REQUEST = {"model": "gpt-test", "messages": MESSAGES}


@pytest.fixture
def models() -> Iterator[ModelDouble]:
    with ModelDouble() as double:
        yield double


def anthropic_client(models: ModelDouble, max_retries: int = 0) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=models.url, api_key="test", max_retries=max_retries)


def openai_client(models: ModelDouble, max_retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=models.url + "/v1", api_key="test", max_retries=max_retries)


async def ask_anthropic(models: ModelDouble, max_retries: int = 0) -> anthropic.types.Message:
    async with anthropic_client(models, max_retries) as client:
        return await client.messages.create(model="claude-test", max_tokens=512, messages=MESSAGES)


async def ask_openai(models: ModelDouble, max_retries: int = 0) -> openai.types.chat.ChatCompletion:
    async with openai_client(models, max_retries) as client:
        return await client.chat.completions.create(model="gpt-test", messages=MESSAGES)


async def ask(api: str, models: ModelDouble, max_retries: int = 0) -> Any:
    if api == "anthropic":
        return await ask_anthropic(models, max_retries)
    return await ask_openai(models, max_retries)


def statuses(models: ModelDouble) -> list[int]:
    return [call.status for call in models.calls]


# replies


async def test_anthropic_parses_text_two_tool_calls_and_usage(models: ModelDouble) -> None:
    models.add(TOOLS_REPLY)

    message = await ask_anthropic(models)

    text, read, search = message.content
    assert isinstance(text, TextBlock)
    assert text.text == "I will read both files."
    assert isinstance(read, ToolUseBlock)
    assert isinstance(search, ToolUseBlock)
    assert (read.id, read.name, read.input) == (
        "call_read_1",
        "read_file",
        {"path": "src/widgets/__init__.py"},
    )
    assert search.name == "search"
    assert search.input == {"pattern": "render", "path": "tests"}
    assert search.id.startswith("toolu_")
    assert message.id.startswith("msg_")
    assert (message.role, message.model, message.stop_reason) == (
        "assistant",
        "claude-test",
        "tool_use",
    )
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (1200, 45)
    assert usage.cache_read_input_tokens == 800
    assert usage.cache_creation_input_tokens == 300


async def test_openai_parses_text_two_tool_calls_and_usage(models: ModelDouble) -> None:
    models.add(TOOLS_REPLY)

    completion = await ask_openai(models)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will read both files."
    read, search = choice.message.tool_calls or []
    assert isinstance(read, ChatCompletionMessageFunctionToolCall)
    assert isinstance(search, ChatCompletionMessageFunctionToolCall)
    assert read.id == "call_read_1"
    assert search.id.startswith("call_")
    assert read.function.name == "read_file"
    assert json.loads(read.function.arguments) == {"path": "src/widgets/__init__.py"}
    assert search.function.name == "search"
    assert json.loads(search.function.arguments) == {"pattern": "render", "path": "tests"}
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-test"
    usage = completion.usage
    assert usage is not None
    # OpenAI counts every input token in prompt_tokens, the cached ones included.
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (2300, 45, 2345)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 800


async def test_openai_tool_calls_without_text_have_null_content(models: ModelDouble) -> None:
    models.add(ModelReply(tool_calls=[ScriptedToolCall("list_files", {})]))

    completion = await ask_openai(models)

    assert completion.choices[0].message.content is None
    assert json.loads(models.calls[0].body)["messages"] == MESSAGES


@pytest.mark.parametrize(
    ("reply", "anthropic_stop", "openai_stop"),
    [
        (ModelReply("done"), "end_turn", "stop"),
        (ModelReply("cut", stop="max_tokens"), "max_tokens", "length"),
        (ModelReply("cut", stop="length"), "max_tokens", "length"),
        (ModelReply(tool_calls=[ScriptedToolCall("list_files", {})]), "tool_use", "tool_calls"),
    ],
    ids=["plain", "max-tokens", "openai-name", "tool-call"],
)
async def test_one_script_renders_stop_reasons_in_each_vocabulary(
    models: ModelDouble, reply: ModelReply, anthropic_stop: str, openai_stop: str
) -> None:
    models.add(reply, reply)

    message = await ask_anthropic(models)
    completion = await ask_openai(models)

    assert message.stop_reason == anthropic_stop
    assert completion.choices[0].finish_reason == openai_stop
    assert [call.api for call in models.calls] == ["anthropic", "openai"]


async def test_openai_broken_json_arguments_arrive_verbatim(models: ModelDouble) -> None:
    broken = '{"path": "src/app.py",'
    models.add(ModelReply(tool_calls=[ScriptedToolCall("read_file", broken)]))

    completion = await ask_openai(models)

    (call,) = completion.choices[0].message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.arguments == broken


async def test_anthropic_takes_string_arguments_that_are_a_json_object(
    models: ModelDouble,
) -> None:
    models.add(ModelReply(tool_calls=[ScriptedToolCall("read_file", '{"path": "a.py"}')]))

    message = await ask_anthropic(models)

    block = message.content[0]
    assert isinstance(block, ToolUseBlock)
    assert block.input == {"path": "a.py"}


async def test_anthropic_refuses_arguments_that_are_not_an_object_without_retry(
    models: ModelDouble,
) -> None:
    models.add(ModelReply(tool_calls=[ScriptedToolCall("read_file", '{"path": ')]))

    with pytest.raises(anthropic.InternalServerError, match="not a JSON object"):
        await ask_anthropic(models, max_retries=2)

    assert statuses(models) == [500]


# errors and retries


@pytest.mark.parametrize("api", ["anthropic", "openai"])
async def test_rate_limit_is_retried_and_then_succeeds(models: ModelDouble, api: str) -> None:
    models.add(ModelError(429, retry_after=0), ModelReply("after the wait"))

    answer = await ask(api, models, max_retries=2)

    text = answer.content[0].text if api == "anthropic" else answer.choices[0].message.content
    assert text == "after the wait"
    assert statuses(models) == [429, 200]
    assert [call.headers["x-stainless-retry-count"] for call in models.calls] == ["0", "1"]
    assert models.calls[0].body == models.calls[1].body


@pytest.mark.parametrize(("api", "status"), [("anthropic", 529), ("openai", 500)])
async def test_server_errors_are_retried_and_then_succeed(
    models: ModelDouble, api: str, status: int
) -> None:
    models.add(ModelError(status), ModelReply("recovered"))

    await ask(api, models, max_retries=1)

    assert statuses(models) == [status, 200]
    assert models.remaining == 0


async def test_anthropic_errors_surface_as_the_sdk_exceptions(models: ModelDouble) -> None:
    models.add(ModelError(529), ModelError(429, message="slow down"))

    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await ask_anthropic(models)
    with pytest.raises(anthropic.RateLimitError, match="slow down") as limited:
        await ask_anthropic(models)

    assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.request_id is not None


async def test_openai_errors_surface_as_the_sdk_exceptions(models: ModelDouble) -> None:
    models.add(ModelError(429), ModelError(503, message="try later"))

    with pytest.raises(openai.RateLimitError) as limited:
        await ask_openai(models)
    with pytest.raises(openai.InternalServerError, match="try later") as unavailable:
        await ask_openai(models)

    assert (limited.value.type, limited.value.code) == ("requests", "rate_limit_exceeded")
    assert unavailable.value.status_code == 503
    assert unavailable.value.type == "server_error"


@pytest.mark.parametrize(
    ("path", "error_type"),
    [("/v1/messages", "rate_limit_error"), ("/v1/chat/completions", "requests")],
)
def test_retry_after_is_sent_in_seconds_and_milliseconds(
    models: ModelDouble, path: str, error_type: str
) -> None:
    models.add(ModelError(429, retry_after=1.5))
    anthropic_api = path == "/v1/messages"
    headers = ANTHROPIC_HEADERS if anthropic_api else OPENAI_HEADERS
    request = ANTHROPIC_REQUEST if anthropic_api else OPENAI_REQUEST

    response = httpx.post(models.url + path, json=request, headers=headers)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.json()["error"]["type"] == error_type


@pytest.mark.parametrize("api", ["anthropic", "openai"])
async def test_a_script_that_runs_out_fails_at_once(models: ModelDouble, api: str) -> None:
    models.add(ModelReply("the only answer"))
    await ask(api, models)

    with pytest.raises((anthropic.InternalServerError, openai.InternalServerError)) as error:
        await ask(api, models, max_retries=3)

    assert "script ran out" in str(error.value)
    assert statuses(models) == [200, 500]


def test_a_script_entry_no_api_could_render_is_refused_when_added() -> None:
    double = ModelDouble()

    with pytest.raises(ScriptMistake, match="unknown stop 'finished'"):
        double.add(ModelReply("x", stop="finished"))
    with pytest.raises(ScriptMistake, match="not an error status"):
        double.add(ModelError(200))
    assert double.remaining == 0


# policies


async def test_a_policy_answers_from_the_request_once_the_script_is_used_up() -> None:
    seen: list[RecordedCall] = []

    def echo(call: RecordedCall) -> ModelReply:
        seen.append(call)
        return ModelReply(f"you said: {call.json['messages'][-1]['content']}")

    with ModelDouble([ModelReply("scripted")], policy=echo) as models:
        first = await ask_anthropic(models)
        second = await ask_openai(models)

    assert isinstance(first.content[0], TextBlock)
    assert first.content[0].text == "scripted"
    assert second.choices[0].message.content == "you said: Fix the failing widget test."
    assert [(call.api, call.path) for call in seen] == [("openai", "/v1/chat/completions")]
    assert statuses(models) == [200, 200]


async def test_a_policy_can_answer_with_an_error(models: ModelDouble) -> None:
    models.policy = lambda call: ModelError(400, message=f"no model {call.json['model']}")

    with pytest.raises(openai.BadRequestError, match="no model gpt-test"):
        await ask_openai(models)

    assert statuses(models) == [400]


async def test_a_policy_that_raises_fails_the_request_without_retry(models: ModelDouble) -> None:
    def broken(call: RecordedCall) -> ModelReply:
        raise KeyError("tools")

    models.policy = broken

    with pytest.raises(anthropic.InternalServerError, match="the policy raised KeyError"):
        await ask_anthropic(models, max_retries=2)

    assert statuses(models) == [500]


# recording


async def test_recorded_body_is_what_the_client_sent(models: ModelDouble) -> None:
    models.add(ModelReply("one"), ModelReply("two"))
    system: list[Any] = [
        {"type": "text", "text": "You plan work.", "cache_control": {"type": "ephemeral"}}
    ]

    async with anthropic_client(models) as client:
        for _ in range(2):
            await client.messages.create(
                model="claude-test", max_tokens=64, system=system, messages=MESSAGES
            )

    first, second = models.calls
    assert first.api == "anthropic"
    assert first.path == "/v1/messages"
    assert json.loads(first.body) == first.json
    assert first.json["messages"] == MESSAGES
    assert first.json["system"] == system
    assert first.body == second.body
    assert first.headers["content-type"] == "application/json"


def test_recorded_body_keeps_the_exact_bytes(models: ModelDouble) -> None:
    models.add(ModelReply("ok"))
    sent = b'{ "model" : "gpt-test",\n  "messages": [{"role": "user", "content": "caf\\u00e9"}] }'

    response = httpx.post(
        models.url + "/v1/chat/completions",
        content=sent,
        headers=OPENAI_HEADERS | {"content-type": "application/json"},
    )

    assert response.status_code == 200
    assert models.calls[0].body == sent
    assert models.calls[0].json["messages"][0]["content"] == "café"


# requests refused as the real services refuse them


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("model", "model: Field required"),
        ("max_tokens", "max_tokens: Field required"),
        ("messages", "messages: Field required"),
    ],
)
def test_anthropic_refuses_a_request_missing_a_required_field(
    models: ModelDouble, drop: str, message: str
) -> None:
    models.add(ModelReply("unused"))
    request = {key: value for key, value in ANTHROPIC_REQUEST.items() if key != drop}

    response = httpx.post(models.url + "/v1/messages", json=request, headers=ANTHROPIC_HEADERS)

    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"] == {"type": "invalid_request_error", "message": message}
    assert statuses(models) == [400]
    assert models.remaining == 1


@pytest.mark.parametrize(
    ("drop", "param", "code"),
    [("model", None, None), ("messages", "messages", "missing_required_parameter")],
)
def test_openai_refuses_a_request_missing_a_required_field(
    models: ModelDouble, drop: str, param: str | None, code: str | None
) -> None:
    models.add(ModelReply("unused"))
    request = {key: value for key, value in OPENAI_REQUEST.items() if key != drop}

    response = httpx.post(models.url + "/v1/chat/completions", json=request, headers=OPENAI_HEADERS)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert drop in error["message"]
    assert statuses(models) == [400]
    assert models.remaining == 1


def test_anthropic_requires_a_key_and_a_version(models: ModelDouble) -> None:
    url = models.url + "/v1/messages"
    models.add(ModelReply("with x-api-key"))

    without_key = httpx.post(url, json=ANTHROPIC_REQUEST, headers={"anthropic-version": "1"})
    without_version = httpx.post(url, json=ANTHROPIC_REQUEST, headers={"x-api-key": "test"})
    accepted = httpx.post(url, json=ANTHROPIC_REQUEST, headers=ANTHROPIC_HEADERS)

    assert without_key.status_code == 401
    assert without_key.json()["error"]["type"] == "authentication_error"
    assert without_version.status_code == 400
    assert "anthropic-version" in without_version.json()["error"]["message"]
    assert accepted.json()["content"] == [{"type": "text", "text": "with x-api-key"}]
    assert accepted.headers["request-id"].startswith("req_")


async def test_openai_requires_a_bearer_key(models: ModelDouble) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(models.url + "/v1/chat/completions", json=OPENAI_REQUEST)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert models.calls[0].api == "openai"
    assert models.calls[0].status == 401


@pytest.mark.parametrize(
    ("path", "headers", "request_body"),
    [
        ("/v1/messages", ANTHROPIC_HEADERS, ANTHROPIC_REQUEST),
        ("/v1/chat/completions", OPENAI_HEADERS, OPENAI_REQUEST),
    ],
    ids=["anthropic", "openai"],
)
def test_streaming_is_refused(
    models: ModelDouble, path: str, headers: dict[str, str], request_body: dict[str, Any]
) -> None:
    response = httpx.post(models.url + path, json=request_body | {"stream": True}, headers=headers)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == STREAMING_REFUSED


async def test_a_wrong_base_url_gets_a_404_in_the_sdk_shape(models: ModelDouble) -> None:
    async with openai.AsyncOpenAI(base_url=models.url, api_key="test", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError, match="Invalid URL"):
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)

    assert (models.calls[0].path, models.calls[0].status) == ("/chat/completions", 404)
