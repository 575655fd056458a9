"""Fallback chains: the ordered alternatives tried when an agent fails."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


class FallbackChain:
    """Per agent, the agents (or strategies) to hand work to when it fails, best first."""

    def __init__(self, fallbacks: Mapping[str, Sequence[str]] | None = None):
        self._fallbacks = {agent: tuple(alternatives) for agent, alternatives in (fallbacks or {}).items()}

    @classmethod
    def from_config(cls, healing) -> "FallbackChain":
        return cls(healing.fallbacks)

    def alternatives(self, agent: str) -> tuple[str, ...]:
        """The configured alternatives of `agent`, in order."""
        return self._fallbacks.get(agent, ())

    def order(self, first: str, candidates: Iterable[str] = ()) -> list[str]:
        """Who to try for one task: `first`, its alternatives, then the other candidates; each once."""
        seen: dict[str, None] = {first: None}
        for agent in (*self.alternatives(first), *candidates):
            seen.setdefault(agent, None)
        return list(seen)

    def agents(self) -> set[str]:
        """Every agent the chains name."""
        return set(self._fallbacks) | {a for alternatives in self._fallbacks.values() for a in alternatives}
