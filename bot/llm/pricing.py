"""What a model call costs, from one table of list prices that a deployment may override.

Prices are US dollars per million tokens. A model is matched by its exact name first, then by
the longest family prefix (`claude-sonnet-4-5` also prices `claude-sonnet-4-5-20250929`). A model
in neither has no known price: its calls record tokens and a null cost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.llm.types import Usage, split_model_name
from bot.settings import Settings, SettingsError

TOKENS_PER_PRICE = 1_000_000


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens. Cache prices default to the providers' usual multiples."""

    input: float
    output: float
    cache_read: float | None = None  # default: a tenth of input
    cache_write: float | None = None  # default: 1.25 times input (Anthropic's five-minute cache)

    def cost(self, usage: Usage) -> float:
        cache_read = self.input * 0.1 if self.cache_read is None else self.cache_read
        cache_write = self.input * 1.25 if self.cache_write is None else self.cache_write
        micro_dollars = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * cache_read
            + usage.cache_write_tokens * cache_write
        )
        return micro_dollars / TOKENS_PER_PRICE


# List prices by `provider/model` family; keep in step with the providers' pricing pages. OpenAI
# bills tokens written to its cache as plain input.
LIST_PRICES: Mapping[str, Price] = {
    "anthropic/claude-opus-4-6": Price(5.0, 25.0),
    "anthropic/claude-opus-4-5": Price(5.0, 25.0),
    "anthropic/claude-opus-4-1": Price(15.0, 75.0),
    "anthropic/claude-opus-4-0": Price(15.0, 75.0),
    "anthropic/claude-sonnet-4": Price(3.0, 15.0),
    "anthropic/claude-haiku-4-5": Price(1.0, 5.0),
    "anthropic/claude-3-5-haiku": Price(0.8, 4.0),
    "openai/gpt-5": Price(1.25, 10.0, cache_read=0.125, cache_write=1.25),
    "openai/gpt-5-mini": Price(0.25, 2.0, cache_read=0.025, cache_write=0.25),
    "openai/gpt-5-nano": Price(0.05, 0.4, cache_read=0.005, cache_write=0.05),
    "openai/gpt-4.1": Price(2.0, 8.0, cache_read=0.5, cache_write=2.0),
    "openai/gpt-4.1-mini": Price(0.4, 1.6, cache_read=0.1, cache_write=0.4),
    "openai/gpt-4o": Price(2.5, 10.0, cache_read=1.25, cache_write=2.5),
    "openai/gpt-4o-mini": Price(0.15, 0.6, cache_read=0.075, cache_write=0.15),
}


class PriceTable:
    """List prices with a deployment's overrides on top (settings, then `.github/baton.yml`)."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices = {**LIST_PRICES, **(overrides or {})}

    @classmethod
    def from_settings(cls, settings: Settings) -> PriceTable:
        """List prices with `BATON_MODEL_PRICES` on top; a bad entry names the model."""
        overrides = {}
        for model, fields in settings.model_prices.items():
            split_model_name(model)
            try:
                overrides[model] = Price(**fields)
            except TypeError as error:
                raise SettingsError(f"BATON_MODEL_PRICES[{model!r}]: {error}") from None
        return cls(overrides)

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**self._prices, **overrides})

    def price(self, model_name: str) -> Price | None:
        """The price of `provider/model`: exact name, else the longest matching family."""
        split_model_name(model_name)
        if model_name in self._prices:
            return self._prices[model_name]
        families = [name for name in self._prices if _in_family(model_name, name)]
        return self._prices[max(families, key=len)] if families else None

    def cost(self, model_name: str, usage: Usage) -> float | None:
        """Dollars for `usage` on `model_name`; None when its price is unknown."""
        price = self.price(model_name)
        return None if price is None else price.cost(usage)


def _in_family(model_name: str, family: str) -> bool:
    # `gpt-5` prices `gpt-5-2025-08-07` and `gpt-5.3-codex`, but not `gpt-50`.
    return model_name.startswith(family) and model_name[len(family)] in "-.:@"
