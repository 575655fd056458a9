"""LLM cost from token counts and the configured price table (`metrics.prices`).

Prices are USD per million tokens, per model and token type.  The token types
are disjoint (events.AgentExecution), so the cost of an execution is the sum
over its types of tokens x price.  What cannot be priced has no cost: no price
for the model, no token counts, legacy totals with no split, or a token type
that occurs without its price.  The caller then counts the usage as unknown;
it is never $0.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from . import events
from .config import ModelPrice

_PER_TOKEN = 1e-6   # prices are per million tokens


class PriceTable:
    """Prices by model; `priced(event)` fills in an agent execution's missing cost."""

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None):
        self._prices = dict(prices or {})

    def __bool__(self) -> bool:
        return bool(self._prices)

    def cost(self, model: str | None, *, input_tokens: int | None = None, output_tokens: int | None = None,
             cache_read_tokens: int | None = None, cache_write_tokens: int | None = None,
             reasoning_tokens: int | None = None) -> float | None:
        """USD for these tokens of `model`, or None when that cannot be known."""
        price = self._prices.get(model) if model else None
        if price is None:
            return None
        usage = ((input_tokens, price.input), (output_tokens, price.output),
                 (cache_read_tokens, price.cache_read), (cache_write_tokens, price.cache_write),
                 (reasoning_tokens, price.reasoning))
        total, counted = 0.0, False
        for tokens, per_million in usage:
            if tokens is None:
                continue
            counted = True
            if tokens:
                if per_million is None:
                    return None     # a token type without its price: unknown, not a guess
                total += tokens * per_million
        return total * _PER_TOKEN if counted else None

    def priced(self, event):
        """`event` with its cost filled in from the table when it has none and it can be priced."""
        if type(event) is not events.AgentExecution or event.cost_usd is not None or event.model not in self._prices:
            return event
        cost = self.cost(event.model, input_tokens=event.input_tokens, output_tokens=event.output_tokens,
                         cache_read_tokens=event.cache_read_tokens, cache_write_tokens=event.cache_write_tokens,
                         reasoning_tokens=event.reasoning_tokens)
        if cost is None:
            return event
        return msgspec.structs.replace(event, cost_usd=cost)
