"""From a `provider/model` name to a model object, and from a role to its model name."""

from __future__ import annotations

import os
from collections.abc import Mapping

import anthropic
import openai

from bot.llm.anthropic_adapter import AnthropicModel
from bot.llm.openai_adapter import OpenAIModel
from bot.llm.types import Model, split_model_name
from bot.settings import Settings, SettingsError

WORKER_ROLES = ("implementer", "test_writer", "refactorer", "static_analyst")
# Long enough for a large plan; the SDKs retry 408, 409, 429, 5xx and overload themselves.
DEFAULT_TIMEOUT_SECONDS = 600.0
DEFAULT_MAX_RETRIES = 3


def model_name_for(
    role: str, settings: Settings, repository_models: Mapping[str, str] | None = None
) -> str:
    """The repository's choice for `role` (`.github/baton.yml` `models:`), else the settings'."""
    chosen = (repository_models or {}).get(role)
    if chosen:
        return chosen
    if role in ("orchestrator", "planner", "reviewer"):
        return settings.orchestrator_model
    return settings.worker_model


def make_model(
    name: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> Model:
    """A model for `provider/model`; keys and addresses come from the SDKs' own variables."""
    provider, model = split_model_name(name)
    if provider == "anthropic":
        return AnthropicModel(model, _anthropic_client(timeout, max_retries))
    if provider == "openai":
        return OpenAIModel(model, _openai_client(timeout, max_retries))
    raise SettingsError(f"model {name!r}: unknown provider {provider!r}; use anthropic or openai")


def _anthropic_client(timeout: float, max_retries: int) -> anthropic.AsyncAnthropic:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise SettingsError("ANTHROPIC_API_KEY is not set; the anthropic models need it")
    return anthropic.AsyncAnthropic(timeout=timeout, max_retries=max_retries)


def _openai_client(timeout: float, max_retries: int) -> openai.AsyncOpenAI:
    key = os.environ.get("OPENAI_API_KEY")
    if not key and not os.environ.get("OPENAI_BASE_URL"):
        raise SettingsError("OPENAI_API_KEY is not set; the openai models need it")
    # A local OpenAI-compatible server often wants no key, but the SDK insists on one.
    return openai.AsyncOpenAI(api_key=key or "unused", timeout=timeout, max_retries=max_retries)
