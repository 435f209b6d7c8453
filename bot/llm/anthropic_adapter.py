"""Anthropic Messages API with tool use, through the official SDK.

The stable prefix (tools, system prompt, context documents) ends in a cache breakpoint, and so
does the conversation, so each turn of an agent loop and each sibling task reuses the cache.
"""

from __future__ import annotations

import json
from typing import Any, cast

import anthropic

from bot.llm.types import (
    AssistantMessage,
    Message,
    ModelFailed,
    StopReason,
    ToolCall,
    ToolResults,
    Turn,
    TurnRequest,
    Usage,
    UserMessage,
    status_failure,
)

EPHEMERAL = {"type": "ephemeral"}
STOP_REASONS: dict[str, StopReason] = {
    "tool_use": "tool_use",
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "max_tokens": "max_tokens",
    "refusal": "refusal",
}


class AnthropicModel:
    """One Anthropic model; the client carries key, base URL, retries and timeout."""

    def __init__(self, model: str, client: anthropic.AsyncAnthropic) -> None:
        self.model = model
        self._client = client

    @property
    def name(self) -> str:
        return f"anthropic/{self.model}"

    async def turn(self, request: TurnRequest) -> Turn:
        try:
            raw = await self._client.messages.with_raw_response.create(
                model=self.model,
                max_tokens=request.max_tokens,
                system=cast(Any, system_blocks(request)),
                messages=cast(Any, message_params(request.messages)),
                tools=cast(Any, tool_params(request)),
            )
        except anthropic.APIError as error:
            raise _failure(self.name, error, self._client.max_retries) from None
        return _turn(await raw.parse(), raw.retries_taken)


def system_blocks(request: TurnRequest) -> list[dict[str, Any]]:
    """System prompt and context documents, the last block marked as the cache breakpoint."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": request.system}]
    blocks += [{"type": "text", "text": document} for document in request.context]
    blocks[-1]["cache_control"] = EPHEMERAL
    return blocks


def tool_params(request: TurnRequest) -> list[dict[str, Any]]:
    return [
        {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}
        for tool in request.tools
    ]


def message_params(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """The conversation in Anthropic's shape, its last block a cache breakpoint."""
    params = [_message(message) for message in messages]
    if params and params[-1]["content"]:
        params[-1]["content"][-1]["cache_control"] = EPHEMERAL
    return params


def _message(message: Message) -> dict[str, Any]:
    if isinstance(message, UserMessage):
        return {"role": "user", "content": [{"type": "text", "text": message.text}]}
    if isinstance(message, AssistantMessage):
        return {"role": "assistant", "content": _assistant_blocks(message)}
    return {"role": "user", "content": _result_blocks(message)}


def _assistant_blocks(message: AssistantMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.text}] if message.text else []
    for call in message.tool_calls:
        arguments = dict(call.arguments) if call.arguments is not None else {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _result_blocks(message: ToolResults) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {
            "type": "tool_result",
            "tool_use_id": result.call_id,
            "content": result.content,
            "is_error": result.is_error,
        }
        for result in message.results
    ]
    if message.note:
        blocks.append({"type": "text", "text": message.note})
    return blocks


def _turn(message: anthropic.types.Message, retries: int) -> Turn:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            arguments = block.input if isinstance(block.input, dict) else None
            calls.append(ToolCall(block.id, block.name, arguments, json.dumps(block.input)))
    usage = message.usage
    return Turn(
        text="".join(texts),
        tool_calls=tuple(calls),
        stop_reason=STOP_REASONS.get(message.stop_reason or "", "other"),
        usage=Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens or 0,
            cache_write_tokens=usage.cache_creation_input_tokens or 0,
        ),
        retries=retries,
        raw_stop_reason=message.stop_reason,
    )


def _failure(name: str, error: anthropic.APIError, max_retries: int) -> ModelFailed:
    if isinstance(error, anthropic.APIStatusError):
        return status_failure(name, error.status_code, _message_of(error), max_retries)
    return ModelFailed(f"{name}: no answer from the provider ({error})", max_retries)


def _message_of(error: anthropic.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return error.message
