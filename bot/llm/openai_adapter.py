"""OpenAI Chat Completions with tool calls, through the official SDK.

Every OpenAI-compatible server (vLLM, Ollama, LM Studio) speaks this API, reached through
`OPENAI_BASE_URL`. OpenAI caches long prompt prefixes by itself; keeping the system message and
context byte-identical across calls is what lets it.
"""

from __future__ import annotations

from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion

from bot.llm.types import (
    AssistantMessage,
    Message,
    ModelFailed,
    StopReason,
    ToolCall,
    Turn,
    TurnRequest,
    Usage,
    UserMessage,
    arguments_from_json,
    status_failure,
)

STOP_REASONS: dict[str, StopReason] = {
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
}


class OpenAIModel:
    """One model behind OpenAI or a compatible server; the client carries its address and key."""

    def __init__(self, model: str, client: openai.AsyncOpenAI) -> None:
        self.model = model
        self._client = client

    @property
    def name(self) -> str:
        return f"openai/{self.model}"

    async def turn(self, request: TurnRequest) -> Turn:
        tools = tool_params(request)
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self.model,
                max_completion_tokens=request.max_tokens,
                messages=cast(Any, message_params(request)),
                **({"tools": cast(Any, tools)} if tools else {}),
            )
        except openai.APIError as error:
            raise _failure(self.name, error, self._client.max_retries) from None
        return _turn(raw.parse(), raw.retries_taken)


def message_params(request: TurnRequest) -> list[dict[str, Any]]:
    """System prompt and context first (the cacheable prefix), then the conversation."""
    system = "\n\n".join((request.system, *request.context))
    params: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for message in request.messages:
        params += _messages(message)
    return params


def tool_params(request: TurnRequest) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.input_schema,
            },
        }
        for tool in request.tools
    ]


def _messages(message: Message) -> list[dict[str, Any]]:
    if isinstance(message, UserMessage):
        return [{"role": "user", "content": message.text}]
    if isinstance(message, AssistantMessage):
        return [_assistant(message)]
    results: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
        for result in message.results
    ]
    if message.note:
        results.append({"role": "user", "content": message.note})
    return results


def _assistant(message: AssistantMessage) -> dict[str, Any]:
    param: dict[str, Any] = {"role": "assistant", "content": message.text or None}
    if message.tool_calls:
        param["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.raw_arguments},
            }
            for call in message.tool_calls
        ]
    return param


def _turn(completion: ChatCompletion, retries: int) -> Turn:
    if not completion.choices:
        raise ModelFailed(f"openai/{completion.model}: the answer held no choices", retries)
    choice = completion.choices[0]
    calls = tuple(
        ToolCall(
            call.id,
            call.function.name,
            arguments_from_json(call.function.arguments),
            call.function.arguments,
        )
        for call in choice.message.tool_calls or ()
        if call.type == "function"
    )
    return Turn(
        text=choice.message.content or "",
        tool_calls=calls,
        stop_reason=STOP_REASONS.get(choice.finish_reason or "", "other"),
        usage=_usage(completion),
        retries=retries,
        raw_stop_reason=choice.finish_reason,
    )


def _usage(completion: ChatCompletion) -> Usage:
    usage = completion.usage
    if usage is None:
        return Usage()
    details = usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    written = (details.cache_write_tokens or 0) if details else 0
    # OpenAI counts cached and cache-written tokens inside prompt_tokens; Baton counts them apart.
    return Usage(
        input_tokens=usage.prompt_tokens - cached - written,
        output_tokens=usage.completion_tokens,
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )


def _failure(name: str, error: openai.APIError, max_retries: int) -> ModelFailed:
    if isinstance(error, openai.APIStatusError):
        return status_failure(name, error.status_code, error.message, max_retries)
    return ModelFailed(f"{name}: no answer from the provider ({error})", max_retries)
