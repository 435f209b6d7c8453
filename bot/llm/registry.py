"""From a `provider/model` name to a model object, and from a role to its model name."""

from __future__ import annotations

from collections.abc import Mapping

import anthropic
import openai

from bot.llm.anthropic_adapter import AnthropicModel
from bot.llm.openai_adapter import OpenAIModel
from bot.llm.types import Model, split_model_name
from bot.settings import Settings, SettingsError

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
    settings: Settings,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> Model:
    """A model for `provider/model`, with the provider's key and address from `settings`."""
    provider, model = split_model_name(name)
    if provider == "anthropic":
        return AnthropicModel(model, _anthropic_client(settings, timeout, max_retries))
    if provider == "openai":
        return OpenAIModel(model, _openai_client(settings, timeout, max_retries))
    raise SettingsError(f"model {name!r}: unknown provider {provider!r}; use anthropic or openai")


def provider_key_problem(provider: str, settings: Settings) -> str | None:
    """Why `provider`'s models cannot be called with these settings, if they cannot."""
    if provider == "anthropic" and settings.anthropic_api_key is None:
        return "ANTHROPIC_API_KEY is not set; the anthropic models need it"
    if provider == "openai" and settings.openai_api_key is None and not settings.openai_base_url:
        return "OPENAI_API_KEY is not set; the openai models need it"
    return None


def _anthropic_client(
    settings: Settings, timeout: float, max_retries: int
) -> anthropic.AsyncAnthropic:
    key = settings.anthropic_api_key
    if key is None:
        raise SettingsError("ANTHROPIC_API_KEY is not set; the anthropic models need it")
    return anthropic.AsyncAnthropic(
        api_key=key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        timeout=timeout,
        max_retries=max_retries,
    )


def _openai_client(settings: Settings, timeout: float, max_retries: int) -> openai.AsyncOpenAI:
    problem = provider_key_problem("openai", settings)
    if problem:
        raise SettingsError(problem)
    key = settings.openai_api_key
    # A local OpenAI-compatible server often wants no key, but the SDK insists on one.
    return openai.AsyncOpenAI(
        api_key=key.get_secret_value() if key else "unused",
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_retries=max_retries,
    )
