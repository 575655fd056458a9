"""Providers' usage fields mapped onto the disjoint token types of the catalog.

`orchestrator_llm_tokens_total{type}` counts disjoint types, so a sum over
`type` is every token processed.  Providers and the GenAI conventions count
differently:

| source | input | cache_read | cache_write | output | reasoning |
|---|---|---|---|---|---|
| OpenAI (`usage`) | prompt_tokens − cached | prompt_tokens_details.cached_tokens | — | completion_tokens − reasoning | completion_tokens_details.reasoning_tokens |
| Anthropic (`usage`) | input_tokens | cache_read_input_tokens | cache_creation_input_tokens | output_tokens | — (thinking is billed inside output_tokens) |
| GenAI conventions (span attributes) | gen_ai.usage.input_tokens − cache_read − cache_creation | gen_ai.usage.cache_read.input_tokens | gen_ai.usage.cache_creation.input_tokens | gen_ai.usage.output_tokens − reasoning | gen_ai.usage.reasoning.output_tokens |

OpenAI's prompt_tokens includes the cached tokens and its completion_tokens the
reasoning tokens; Anthropic's input_tokens excludes both cache reads and cache
writes; the conventions follow OpenAI (input includes the cache, output the
reasoning).  Each function returns keyword arguments for `AgentRun.usage()`
(and the fields of an `agent_execution` event); a field the source does not
report is left out, so it is neither counted nor priced.

    run.usage(**usage.from_openai(response.usage))
    run.usage(**usage.from_anthropic(message.usage))
"""

from __future__ import annotations

from collections.abc import Mapping


def _get(source, *path):
    """A nested field of a dict or an SDK object (attribute access), or None."""
    for key in path:
        if source is None:
            return None
        source = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
    return source


def _is_count(value) -> bool:
    return type(value) in (int, float) and value >= 0 and float(value).is_integer()


def _less(total, part):
    """`total` without `part`, never below 0 (a provider's rounding must not make it negative).
    What is not a count (a string, a negative number) is passed on as it is, for run.usage() to
    refuse naming its field, rather than turned into a plausible number here."""
    if part is None or not (_is_count(total) and _is_count(part)):
        return total
    return max(total - part, 0)


def _present(**counts) -> dict[str, int]:
    return {name: count for name, count in counts.items() if count is not None}


def from_openai(usage) -> dict[str, int]:
    """OpenAI Chat Completions (prompt_/completion_tokens) or Responses (input_/output_tokens) usage."""
    prompt = _get(usage, "prompt_tokens")
    completion = _get(usage, "completion_tokens")
    cached = _get(usage, "prompt_tokens_details", "cached_tokens")
    reasoning = _get(usage, "completion_tokens_details", "reasoning_tokens")
    if prompt is None and completion is None:       # the Responses API's names
        prompt, completion = _get(usage, "input_tokens"), _get(usage, "output_tokens")
        cached = _get(usage, "input_tokens_details", "cached_tokens")
        reasoning = _get(usage, "output_tokens_details", "reasoning_tokens")
    return _present(input_tokens=_less(prompt, cached), cache_read_tokens=cached,
                    output_tokens=_less(completion, reasoning), reasoning_tokens=reasoning)


def from_anthropic(usage) -> dict[str, int]:
    """Anthropic Messages usage: input_tokens already excludes the cache reads and writes."""
    return _present(input_tokens=_get(usage, "input_tokens"),
                    cache_read_tokens=_get(usage, "cache_read_input_tokens"),
                    cache_write_tokens=_get(usage, "cache_creation_input_tokens"),
                    output_tokens=_get(usage, "output_tokens"))


def from_semconv(input_tokens: int | None, output_tokens: int | None, *, cache_read: int | None = None,
                 cache_creation: int | None = None, reasoning: int | None = None) -> dict[str, int]:
    """The GenAI conventions' usage attributes, whose input includes the cache and output the reasoning."""
    cache = None
    if (cache_read is not None or cache_creation is not None) and all(
            count is None or _is_count(count) for count in (cache_read, cache_creation)):
        cache = (cache_read or 0) + (cache_creation or 0)
    return _present(input_tokens=_less(input_tokens, cache), cache_read_tokens=cache_read,
                    cache_write_tokens=cache_creation, output_tokens=_less(output_tokens, reasoning),
                    reasoning_tokens=reasoning)
