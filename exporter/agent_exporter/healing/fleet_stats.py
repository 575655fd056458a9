"""The fleet's per-agent statistics, read from Prometheus's query API for the selector.

Three instant queries over the shipped recording rules (render/rules.py), all
on healing.fleet.prometheus.window (1m by default, for which the rules are
rendered beside the alerts' windows):

  success ratio   1 - agent:orchestrator_agent_executions:error_ratio_rate1m
  latency         agent_quantile:orchestrator_agent_execution_duration_seconds:histogram_quantile1m
                  {quantile="0.5"}
  cost per call   rate(orchestrator_llm_cost_usd_total[1m]) / rate(orchestrator_agent_executions_total[1m])
                  by agent, in one query (no rule records cost per agent; over the executions rule,
                  recorded at another instant, the ratio of two young rates is off by tens of percent)

The window is short on purpose: a replica that joins mid-incident starts from
these figures, and over five minutes a failing agent still looks healthy
(`agent-exporter simulate --mode fleet` compares the two).

They sum every replica Prometheus scrapes.  The catalog's agent metrics carry
no task label, so the statistics are per agent: an agent that serves several
task types brings the same fleet statistics to each.  A failed query fails the
whole refresh, and the selector goes back to local learning until the next
one succeeds.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgspec

from ..render.series import AGENT_SLI, COST, EXECUTIONS, latency_quantile_rule
from .alertmanager import label_matchers
from .api_client import APIClient
from .selector import FleetStats

QUERY_PATH = "/api/v1/query"
MEDIAN = 'quantile="0.5"'


class Queries(NamedTuple):
    """The instant queries of one refresh, over one window of the recording rules."""
    success: str
    latency: str
    cost: str

    @classmethod
    def over(cls, window: str, job: str, deployment_labels: dict[str, str] | None = None) -> "Queries":
        """The queries over `window`, of this deployment's series (alerting.deployment_labels): the
        recording rules select `job` (alerting.job) themselves, raw series are selected here."""
        matchers = label_matchers(deployment_labels or {})
        job_matcher = f'job="{job}"'     # config.LabelValue: nothing to escape

        def selector(name: str, *more: str) -> str:
            return f"{name}{{{', '.join((*more, *matchers))}}}" if more or matchers else name

        return cls(success=f"1 - avg by (agent) ({selector(AGENT_SLI.error_ratio_rule(window))})",
                   latency=f"avg by (agent) ({selector(latency_quantile_rule(window), MEDIAN)})",
                   cost=f"sum by (agent) (rate({selector(COST, job_matcher)}[{window}])) / "
                        f"sum by (agent) (rate({selector(EXECUTIONS, job_matcher)}[{window}]))")


class _Sample(msgspec.Struct, frozen=True):
    metric: dict[str, str]
    value: tuple[float, str]


class _VectorData(msgspec.Struct, frozen=True):
    resultType: str
    result: list[_Sample]


class _QueryResponse(msgspec.Struct, frozen=True):
    status: str
    data: _VectorData | None = None
    error: str = ""


def _per_agent(body: bytes, query: str) -> dict[str, float]:
    """agent -> value of an instant vector query's answer (NaN and infinite values left out)."""
    try:
        response = msgspec.json.decode(body, type=_QueryResponse)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"unexpected answer to {query!r}: {exc}") from None
    if response.status != "success" or response.data is None:
        raise ValueError(f"{query!r} failed: {response.error or response.status}")
    if response.data.resultType != "vector":
        raise ValueError(f"{query!r} returned a {response.data.resultType}, expected a vector")
    values = {}
    for sample in response.data.result:
        agent = sample.metric.get("agent")
        value = float(sample.value[1])
        if agent and math.isfinite(value):
            values[agent] = value
    return values


class PrometheusStats:
    """One refresh of the selector's fleet statistics from Prometheus."""

    def __init__(self, client: APIClient, selector, window: str, job: str,
                 deployment_labels: dict[str, str] | None = None):
        self.client = client
        self.selector = selector
        self.queries = Queries.over(window, job, deployment_labels)

    def fetch(self) -> dict[str, FleetStats]:
        success, latency, cost = (
            _per_agent(self.client.get(QUERY_PATH, [("query", query)]), query) for query in self.queries)
        return {agent: FleetStats(success_ratio=_ratio(success.get(agent)), latency_seconds=latency.get(agent),
                                  cost_usd=cost.get(agent))
                for agent in success.keys() | latency.keys() | cost.keys()}

    def __call__(self) -> None:
        self.selector.set_fleet(self.fetch())

    def unavailable(self, exc: Exception) -> None:
        self.selector.clear_fleet()


def _ratio(value: float | None) -> float | None:
    return None if value is None else min(max(value, 0.0), 1.0)
