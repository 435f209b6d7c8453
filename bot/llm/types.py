"""A model turn in and out, the same for every provider.

Adapters translate these to and from each provider's wire format; the agent loop, budgets and
records only ever see these types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

StopReason = Literal["tool_use", "end_turn", "max_tokens", "refusal", "other"]


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and a JSON schema for its input."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for; `arguments` is None unless `raw_arguments` is a JSON object."""

    id: str
    name: str
    arguments: Mapping[str, Any] | None
    raw_arguments: str


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class UserMessage:
    text: str


@dataclass(frozen=True)
class AssistantMessage:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class ToolResults:
    """The answers to every tool call of the previous assistant message, in its order."""

    results: tuple[ToolResult, ...]
    note: str = ""  # extra guidance sent with the results, e.g. what to fix


Message = UserMessage | AssistantMessage | ToolResults


@dataclass(frozen=True)
class TurnRequest:
    """One request to a model.

    `system` and `context` form the stable prefix: the same bytes for every call of a run that
    shares them (sibling tasks, reviews), so providers can serve them from their prompt cache.
    """

    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    context: tuple[str, ...] = ()
    max_tokens: int = 4096


@dataclass(frozen=True)
class Usage:
    """Tokens of one call. `input_tokens` excludes the cached ones, which are counted apart."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total(self) -> int:
        cached = self.cache_read_tokens + self.cache_write_tokens
        return self.input_tokens + self.output_tokens + cached

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True)
class Turn:
    """What the model answered."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    stop_reason: StopReason
    usage: Usage
    retries: int = 0
    raw_stop_reason: str | None = field(default=None, compare=False)

    def as_message(self) -> AssistantMessage:
        return AssistantMessage(self.text, self.tool_calls)


class ModelFailed(Exception):
    """The provider could not answer, after the SDK's retries; the message names model and cause
    and may hold the provider's own words, so it is logged, never posted. `status` is the HTTP
    status the provider answered with, None when it could not be reached."""

    def __init__(self, message: str, retries: int = 0, status: int | None = None) -> None:
        super().__init__(message)
        self.retries = retries
        self.status = status


class Model(Protocol):
    """A model behind one provider. `name` is `provider/model` as in the settings."""

    @property
    def name(self) -> str: ...

    async def turn(self, request: TurnRequest) -> Turn: ...


def split_model_name(name: str) -> tuple[str, str]:
    """`anthropic/claude-opus-4-6` -> (`anthropic`, `claude-opus-4-6`), split at the first `/`."""
    provider, _, model = name.partition("/")
    if not provider or not model:
        raise ValueError(f"expected a model as 'provider/model', got {name!r}")
    return provider, model


def arguments_from_json(raw: str) -> Mapping[str, Any] | None:
    """The tool arguments as an object, or None when `raw` is not a JSON object."""
    try:
        parsed = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def arguments_problem(raw: str) -> str:
    """Why `raw` is not usable as tool arguments, in words the model can act on."""
    try:
        parsed = json.loads(raw)
    except ValueError as error:
        return f"the arguments are not valid JSON ({error}); send one JSON object"
    return f"the arguments must be a JSON object, got {type(parsed).__name__}"


def status_failure(name: str, status: int, message: str, max_retries: int) -> ModelFailed:
    """A provider's error answer, as the SDK raised it after retrying what it retries."""
    retried = max_retries if status in (408, 409, 429) or status >= 500 else 0
    return ModelFailed(
        f"{name}: the provider answered {status} ({message}) after {retried} retries",
        retried,
        status,
    )
