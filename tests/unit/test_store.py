import gc
import multiprocessing
import subprocess
import threading
import time
import weakref

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, events
from agent_exporter.config import Config, MetricsConfig, ModelPrice
from agent_exporter.pricing import PriceTable
from agent_exporter.store import SeriesStore

from binaries import binary

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PRICES = {"gpt-4o": ModelPrice(input=2.5, output=10.0)}


def samples(text: str, openmetrics: bool = False) -> dict:
    """{(sample name, frozenset(labels)): value} through prometheus_client's parsers."""
    parse = parse_openmetrics if openmetrics else parse_text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse(text) for s in family.samples}


def value(store: SeriesStore, name: str, **labels) -> float:
    return samples(store.render().decode())[(name, frozenset(labels.items()))]


def feed(store: SeriesStore, *objs) -> None:
    """Events as Telemetry records them: decoded, priced once, applied."""
    prices = PriceTable(PRICES)
    for obj in objs:
        store.apply(prices.priced(events.decode(obj)))


@pytest.fixture
def store():
    return SeriesStore(MetricsConfig(prices=PRICES))


def test_every_event_type_lands_in_its_metrics(store):
    feed(store,
         {"type": "agent_execution", "agent": "planner", "status": "success", "duration_seconds": 0.3,
          "model": "gpt-4o", "input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.5},
         {"type": "agent_execution", "agent": "planner", "status": "error", "duration_seconds": 12,
          "error_type": "Timeout", "model": "gpt-4o", "input_tokens": 100},
         {"type": "tool_call", "tool": "web_search", "status": "error", "duration_seconds": 0.02},
         {"type": "state_transition", "from_state": "queued", "to_state": "planning", "workflow": "feature"},
         {"type": "state_transition", "from_state": "planning", "to_state": "coding"},
         {"type": "retry", "agent": "coder", "attempt": 2, "error_type": "RateLimited"},
         {"type": "fallback", "from_agent": "coder", "to_agent": "coder-mini"},
         {"type": "circuit_state", "agent": "coder", "state": "open"})
    store.set_selector_weight("code", "coder", 0.25)
    store.set_budget("day", 100)
    got = samples(store.render().decode())

    def v(name, **labels):
        return got[(name, frozenset(labels.items()))]

    assert v("orchestrator_agent_executions_total", agent="planner", status="success") == 1
    assert v("orchestrator_agent_executions_total", agent="planner", status="error") == 1
    assert v("orchestrator_agent_execution_duration_seconds_count", agent="planner") == 2
    assert v("orchestrator_agent_execution_duration_seconds_sum", agent="planner") == 12.3
    assert v("orchestrator_agent_execution_duration_seconds_bucket", agent="planner", le="0.25") == 0
    assert v("orchestrator_agent_execution_duration_seconds_bucket", agent="planner", le="0.5") == 1
    assert v("orchestrator_agent_execution_duration_seconds_bucket", agent="planner", le="10.0") == 1
    assert v("orchestrator_agent_execution_duration_seconds_bucket", agent="planner", le="15.0") == 2
    assert v("orchestrator_agent_execution_duration_seconds_bucket", agent="planner", le="+Inf") == 2
    assert v("orchestrator_agent_errors_total", agent="planner", error_type="Timeout") == 1
    assert v("orchestrator_llm_tokens_total", agent="planner", model="gpt-4o", type="input") == 1100
    assert v("orchestrator_llm_tokens_total", agent="planner", model="gpt-4o", type="output") == 200
    # Second execution: cost computed from the price table (100 input tokens at $2.5/M).
    assert v("orchestrator_llm_cost_usd_total", agent="planner", model="gpt-4o") == pytest.approx(0.50025)
    assert v("orchestrator_tool_calls_total", tool="web_search", status="error") == 1
    assert v("orchestrator_tool_call_duration_seconds_bucket", tool="web_search", le="0.025") == 1
    assert v("orchestrator_tool_call_duration_seconds_bucket", tool="web_search", le="0.01") == 0
    assert v("orchestrator_state_transitions_total",
             workflow="feature", from_state="queued", to_state="planning") == 1
    assert v("orchestrator_state_transitions_total",
             workflow="default", from_state="planning", to_state="coding") == 1
    assert v("orchestrator_retries_total", agent="coder", error_type="RateLimited") == 1
    assert v("orchestrator_fallbacks_total", from_agent="coder", to_agent="coder-mini") == 1
    assert v("orchestrator_circuit_breaker_state", agent="coder") == 2
    assert v("orchestrator_selector_weight", task="code", agent="coder") == 0.25
    assert v("orchestrator_cost_budget_usd", period="day") == 100
    assert v("orchestrator_exporter_events_total", type="agent_execution") == 2
    assert v("orchestrator_exporter_events_total", type="state_transition") == 2
    assert v("orchestrator_exporter_events_total", type="circuit_state") == 1
    assert ("orchestrator_usage_unknown_total", frozenset({"agent": "planner"}.items())) not in got


def test_a_batch_with_an_item_that_is_not_an_event_stops_there_with_its_counts_consistent(store):
    retry = events.decode({"type": "retry", "agent": "x", "attempt": 1})
    with pytest.raises(TypeError, match="expected a decoded event .*, got dict"):
        store.apply_batch([retry, retry, {"type": "retry", "agent": "y", "attempt": 1}, retry])
    assert value(store, catalog.RETRIES.name, agent="x", error_type="unknown") == 2
    assert value(store, catalog.EXPORTER_EVENTS.name, type="retry") == 2


def test_usage_unknown_is_counted_never_priced_at_zero(store):
    feed(store,
         {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1},
         {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1,
          "model": "unpriced-model", "input_tokens": 50})
    got = samples(store.render().decode())
    assert got[("orchestrator_usage_unknown_total", frozenset({"agent": "a"}.items()))] == 2
    assert got[("orchestrator_llm_tokens_total",
                frozenset({"agent": "a", "model": "unpriced-model", "type": "input"}.items()))] == 50
    assert not [k for k in got if k[0] == "orchestrator_llm_cost_usd_total"]


def test_legacy_record_and_v1_event_produce_the_same_series(store):
    legacy = SeriesStore(MetricsConfig(prices=PRICES))
    feed(legacy, {"agent_name": "planner", "duration_ms": 2000, "success": False,
                  "tokens_used": 300, "cost": 0.02})
    feed(store, {"type": "agent_execution", "agent": "planner", "status": "error", "duration_seconds": 2.0,
                 "total_tokens": 300, "cost_usd": 0.02, "error_type": "unknown"})
    assert legacy.render() == store.render()
    assert value(store, "orchestrator_llm_tokens_total", agent="planner", model="unknown", type="unsplit") == 300


def test_a_total_given_with_its_split_is_not_counted_again(store):
    """total_tokens is only for a total whose split is unknown: next to input and output it is their sum."""
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1,
                 "model": "gpt-4o", "input_tokens": 100, "output_tokens": 20, "total_tokens": 120})
    tokens = {dict(labels)["type"]: v for (name, labels), v in samples(store.render().decode()).items()
              if name == "orchestrator_llm_tokens_total"}
    assert tokens == {"input": 100, "output": 20}


def test_extra_labels_are_appended_when_configured():
    store = SeriesStore(MetricsConfig(extra_labels=("feature",)))
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1,
                 "feature": "login", "cost_usd": 0.1, "model": "m"},
         {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1})
    assert value(store, "orchestrator_agent_executions_total", agent="a", status="success", feature="login") == 1
    # An unset extra label is empty, which Prometheus reads as absent.
    assert value(store, "orchestrator_agent_executions_total", agent="a", status="success", feature="") == 1
    assert value(store, "orchestrator_llm_cost_usd_total", agent="a", model="m", feature="login") == 0.1
    assert value(store, "orchestrator_agent_execution_duration_seconds_count", agent="a", feature="login") == 1


def test_configured_buckets_are_used():
    store = SeriesStore(MetricsConfig(execution_buckets=(1.0, 2.0)))
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1.5})
    les = [s.labels["le"] for f in parse_text(store.render().decode()) for s in f.samples
           if s.name == "orchestrator_agent_execution_duration_seconds_bucket"]
    assert les == ["1.0", "2.0", "+Inf"]


def test_label_values_round_trip_through_both_formats(store):
    awkward = 'quote" back\\slash\nnewline ünïcødé 🤖'
    feed(store, {"type": "agent_execution", "agent": awkward, "status": "success", "duration_seconds": 1,
                 "trace_id": TRACE_ID})
    for openmetrics in (False, True):
        got = samples(store.render(openmetrics).decode(), openmetrics)
        assert got[("orchestrator_agent_executions_total", frozenset({"agent": awkward, "status": "success"}.items()))] == 1


def test_openmetrics_exemplar_carries_trace_id(store):
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 0.7,
                 "trace_id": TRACE_ID, "timestamp": 1700000000.5},
         {"type": "tool_call", "tool": "t", "status": "success", "duration_seconds": 0.003, "trace_id": TRACE_ID})
    text = store.render(openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    exemplars = {(s.name, s.labels["le"]): s.exemplar for f in parse_openmetrics(text) for s in f.samples
                 if s.exemplar}
    exemplar = exemplars[("orchestrator_agent_execution_duration_seconds_bucket", "1.0")]
    assert exemplar.labels == {"trace_id": TRACE_ID}
    assert exemplar.value == 0.7
    # Stamped when recorded, not with the event's own (old) time: Prometheus keeps exemplars in time order.
    assert abs(float(exemplar.timestamp) - time.time()) < 60
    assert exemplars[("orchestrator_tool_call_duration_seconds_bucket", "0.005")].labels == {"trace_id": TRACE_ID}
    assert len(exemplars) == 2
    assert "trace_id" not in store.render().decode()  # text 0.0.4 has no exemplars


def test_openmetrics_family_names_and_types(store):
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1})
    families = {f.name: f.type for f in parse_openmetrics(store.render(openmetrics=True).decode())}
    assert families["orchestrator_agent_executions"] == "counter"
    assert families["orchestrator_agent_execution_duration_seconds"] == "histogram"
    assert families["orchestrator_exporter_build"] == "info"


def test_overflow_folds_new_label_sets_and_counts_them():
    store = SeriesStore(MetricsConfig(max_series=1000))
    batch = [events.AgentExecution(agent=f"agent-{i}", status="success", duration_seconds=0.1)
             for i in range(20_000)]
    store.apply_batch(batch)
    got = samples(store.render().decode())
    executions = {(dict(labels)["agent"], dict(labels)["status"]): v for (name, labels), v in got.items()
                  if name == "orchestrator_agent_executions_total"}
    # 1000 label sets: 500 agents, each under both statuses (error at 0), then the fold.
    assert len(executions) == 1001
    assert {status for _, status in executions} == {"success", "error", "__overflow__"}
    assert executions["__overflow__", "__overflow__"] == 19_500
    assert sum(executions.values()) == 20_000
    overflow = got[("orchestrator_exporter_series_overflow_total",
                    frozenset({"metric": "orchestrator_agent_executions_total"}.items()))]
    assert overflow == 19_500
    assert got[("orchestrator_agent_execution_duration_seconds_count",
                frozenset({"agent": "__overflow__"}.items()))] == 19_000
    # An agent already tracked keeps its own series after the cap is reached.
    store.apply(events.AgentExecution(agent="agent-5", status="success", duration_seconds=0.1))
    assert value(store, "orchestrator_agent_executions_total", agent="agent-5", status="success") == 2


def test_every_series_is_rendered_across_chunks(store):
    """The exposition is written in chunks (128 histogram series, 2048 others): none is lost at a seam."""
    agents = 1100           # 9 histogram chunks; 2200 execution counters, 2 chunks
    store.apply_batch([events.AgentExecution(agent=f"agent-{i}", status="success", duration_seconds=0.1)
                       for i in range(agents)])
    names = [s.name for f in parse_text(store.render().decode()) for s in f.samples]
    assert names.count("orchestrator_agent_execution_duration_seconds_count") == agents
    assert names.count("orchestrator_agent_executions_total") == 2 * agents


def test_the_execution_series_cache_is_bounded():
    """Its key includes the model, which max_series does not cap: one agent's models must not grow it forever."""
    store = SeriesStore(MetricsConfig(max_series=2))
    store.apply_batch([events.AgentExecution(agent="a", status="success", duration_seconds=0.1, model=f"m{i}")
                       for i in range(100)])
    assert 0 < len(store._execution_series) <= 4 * 2
    assert value(store, "orchestrator_agent_executions_total", agent="a", status="success") == 100


def test_counters_by_outcome_start_every_status_at_zero():
    """A series born at 1 shows rate() no increase: the first error of an agent, tool or workflow
    that has only succeeded so far must land on a series Prometheus has already seen at 0."""
    store = SeriesStore(MetricsConfig(extra_labels=("feature",)))
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 0.1,
                 "feature": "login"},
         {"type": "tool_call", "tool": "t", "status": "error", "duration_seconds": 0.1},
         {"type": "workflow_run", "workflow": "w", "status": "success", "duration_seconds": 1})
    assert value(store, "orchestrator_agent_executions_total", agent="a", status="error", feature="login") == 0
    assert value(store, "orchestrator_tool_calls_total", tool="t", status="success") == 0
    assert value(store, "orchestrator_workflow_runs_total", workflow="w", status="error") == 0
    feed(store, {"type": "agent_execution", "agent": "a", "status": "error", "duration_seconds": 0.1,
                 "feature": "login"})
    assert value(store, "orchestrator_agent_executions_total", agent="a", status="error", feature="login") == 1
    assert value(store, "orchestrator_agent_executions_total", agent="a", status="success", feature="login") == 1


def test_a_label_set_is_kept_under_both_statuses_or_folded_whole():
    """With an odd max_series, the last free slot used to take an agent's success series alone:
    its errors folded, and its error ratio read 0."""
    store = SeriesStore(MetricsConfig(max_series=3))
    feed(store, *({"type": "agent_execution", "agent": agent, "status": "success", "duration_seconds": 0.1}
                  for agent in ("a", "b")),
         {"type": "agent_execution", "agent": "b", "status": "error", "duration_seconds": 0.1})
    executions = {(dict(labels)["agent"], dict(labels)["status"]): v for (name, labels), v in samples(
        store.render().decode()).items() if name == "orchestrator_agent_executions_total"}
    assert executions == {("a", "success"): 1, ("a", "error"): 0, ("__overflow__", "__overflow__"): 2}


def test_a_label_set_spelled_overflow_before_the_fold_is_the_one_overflow_series():
    """A page never holds one label set twice, and the cap holds."""
    store = SeriesStore(MetricsConfig(max_series=5))
    # On the page at 0 before the first fold, so that increase() sees the first burst.
    assert value(store, "orchestrator_exporter_series_overflow_total",
                 metric="orchestrator_circuit_breaker_state") == 0
    feed(store, {"type": "circuit_state", "agent": "__overflow__", "state": "open"},
         *({"type": "circuit_state", "agent": f"a{i}", "state": "half_open"} for i in range(1, 8)))
    text = store.render(openmetrics=True).decode()
    families = list(parse_openmetrics(text))     # refuses a label set given twice
    (circuit,) = [f for f in families if f.name == "orchestrator_circuit_breaker_state"]
    agents = [sample.labels["agent"] for sample in circuit.samples]
    assert sorted(agents) == ["__overflow__", "a1", "a2", "a3", "a4"]
    assert value(store, "orchestrator_exporter_series_overflow_total",
                 metric="orchestrator_circuit_breaker_state") == 3


def test_a_label_value_spelled_overflow_does_not_alias_the_overflow_series():
    store = SeriesStore(MetricsConfig(max_series=1))
    feed(store, {"type": "retry", "agent": "a", "attempt": 1}, {"type": "retry", "agent": "b", "attempt": 1},
         {"type": "retry", "agent": "__overflow__", "error_type": "__overflow__", "attempt": 1})
    assert value(store, "orchestrator_retries_total", agent="__overflow__", error_type="__overflow__") == 2


def test_the_exporters_own_metrics_are_never_folded():
    # Their label values are a fixed few the exporter sets itself; max_series guards against events.
    store = SeriesStore.from_config(Config(metrics=MetricsConfig(max_series=1)))
    store.apply_batch([events.AgentExecution(agent=f"a{i}", status="success", duration_seconds=0.1)
                       for i in range(3)])
    store.count_rejected("invalid_type")
    store.count_rejected("missing_field", 2)
    for handler, code in (("/v1/events", 200), ("/v1/events", 400), ("/metrics", 200)):
        store.count_http_request(handler, code)
    export = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    for method, code in ((export, "OK"), (export, "INVALID_ARGUMENT"), (export, "UNAUTHENTICATED"),
                         ("other", "UNIMPLEMENTED")):
        store.count_grpc_request(method, code)
    store.count_otlp_spans("mapped")
    store.count_otlp_spans("ignored")
    store.count_forwarded_spans("sent", 3)
    store.count_forwarded_spans("dropped", 0)
    store.set_fleet_source_up("alertmanager", True)
    store.set_fleet_source_up("prometheus", False)
    assert value(store, "orchestrator_exporter_events_total", type="agent_execution") == 3
    assert value(store, "orchestrator_exporter_events_total", type="tool_call") == 0
    assert value(store, "orchestrator_exporter_events_rejected_total", reason="missing_field") == 2
    assert value(store, "orchestrator_exporter_http_requests_total", handler="/v1/events", code="400") == 1
    assert value(store, "orchestrator_exporter_http_requests_total", handler="/metrics", code="200") == 1
    assert value(store, "orchestrator_exporter_grpc_requests_total", method=export, code="UNAUTHENTICATED") == 1
    assert value(store, "orchestrator_exporter_grpc_requests_total", method="other", code="UNIMPLEMENTED") == 1
    assert value(store, "orchestrator_exporter_otlp_spans_total", outcome="ignored") == 1
    assert value(store, "orchestrator_exporter_otlp_forwarded_spans_total", outcome="sent") == 3
    assert value(store, "orchestrator_exporter_otlp_forwarded_spans_total", outcome="dropped") == 0
    assert value(store, "orchestrator_cost_budget_usd", period="month") == 2000
    assert value(store, "orchestrator_fleet_source_up", source="prometheus") == 0
    # One slot holds no agent under both statuses: all three fold.
    assert value(store, "orchestrator_exporter_series_overflow_total",
                 metric="orchestrator_agent_executions_total") == 3
    assert value(store, "orchestrator_exporter_series_overflow_total",
                 metric="orchestrator_agent_execution_duration_seconds") == 2
    own = [name for (name, labels), _ in samples(store.render().decode()).items()
           if "__overflow__" in dict(labels).values()]
    assert set(own) == {"orchestrator_agent_executions_total", "orchestrator_agent_execution_duration_seconds_bucket",
                        "orchestrator_agent_execution_duration_seconds_sum",
                        "orchestrator_agent_execution_duration_seconds_count", "orchestrator_usage_unknown_total"}


def test_concurrent_batches_are_counted_exactly_once(store):
    batch = [events.AgentExecution(agent=f"a{i % 7}", status="success", duration_seconds=0.2, model="gpt-4o",
                                   input_tokens=10, output_tokens=5) for i in range(700)]
    threads = [threading.Thread(target=lambda: [store.apply_batch(batch) for _ in range(20)]) for _ in range(4)]
    renders = []
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        renders.append(store.render())
    for t in threads:
        t.join()
    assert renders      # else the check of intermediate scrapes below checks nothing
    assert sum(v for (name, _), v in samples(store.render().decode()).items()
               if name == "orchestrator_agent_executions_total") == 4 * 20 * 700
    # Every intermediate scrape saw whole events: count == executions, per agent.
    for text in renders[::max(1, len(renders) // 20)]:
        got = samples(text.decode())
        by_agent: dict[str, float] = {}
        for (name, labels), v in got.items():
            if name == "orchestrator_agent_executions_total":
                by_agent[dict(labels)["agent"]] = by_agent.get(dict(labels)["agent"], 0) + v
        for agent, v in by_agent.items():
            assert got[("orchestrator_agent_execution_duration_seconds_count",
                        frozenset({"agent": agent}.items()))] == v


def test_works_in_a_prometheus_client_registry(store):
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 0.7,
                 "model": "gpt-4o", "input_tokens": 3, "trace_id": TRACE_ID},
         {"type": "circuit_state", "agent": "a", "state": "half_open"})
    registry = CollectorRegistry()
    registry.register(store)
    assert samples(generate_latest(registry).decode()) == samples(store.render().decode())
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
    theirs = samples(generate_openmetrics(registry).decode(), openmetrics=True)
    ours = samples(store.render(openmetrics=True).decode(), openmetrics=True)
    assert theirs == ours


def test_from_config_sets_budget_gauges():
    store = SeriesStore.from_config(Config())
    assert value(store, "orchestrator_cost_budget_usd", period="day") == 100
    assert value(store, "orchestrator_cost_budget_usd", period="month") == 2000


def test_a_budget_is_for_a_day_or_a_month(store):
    with pytest.raises(ValueError, match="period"):
        store.set_budget("week", 500)
    assert not [name for (name, _), _ in samples(store.render().decode()).items()
                if name == "orchestrator_cost_budget_usd"]


def test_build_info_and_only_catalog_names_are_exposed(store):
    feed(store, *[events.decode(obj) for obj in (
        {"type": "agent_execution", "agent": "a", "status": "error", "duration_seconds": 1},
        {"type": "tool_call", "tool": "t", "status": "success", "duration_seconds": 1})])
    store.count_rejected("invalid_type")
    got = samples(store.render().decode())
    assert {name for name, _ in got} <= catalog.sample_names()
    assert [v for (name, _), v in got.items() if name == "orchestrator_exporter_build_info"] == [1]


def test_promtool_check_metrics_accepts_the_output(store):
    promtool = binary("promtool")
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 1,
                 "model": "gpt-4o", "input_tokens": 3, "output_tokens": 4},
         {"type": "tool_call", "tool": "t", "status": "success", "duration_seconds": 1},
         {"type": "circuit_state", "agent": "a", "state": "open"})
    result = subprocess.run([promtool, "check", "metrics"], input=store.render(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_registry_refuses_a_collector_whose_names_clash_with_the_catalog(store, monkeypatch):
    from prometheus_client import Counter, Gauge

    def scrape():
        raise AssertionError("describe() collected")

    monkeypatch.setattr(store, "snapshot", scrape)
    registry = CollectorRegistry()
    registry.register(store)                  # names from describe(), nothing collected
    with pytest.raises(ValueError, match="orchestrator_agent_executions_total"):
        Counter("orchestrator_agent_executions", "Clashes with the catalog's counter.", registry=registry)
    with pytest.raises(ValueError, match="orchestrator_tool_call_duration_seconds_bucket"):
        Gauge("orchestrator_tool_call_duration_seconds_bucket", "Clashes with a histogram's series.",
              registry=registry)
    with pytest.raises(ValueError, match="orchestrator_exporter_build_info"):
        Gauge("orchestrator_exporter_build_info", "Clashes with the info metric.", registry=registry)
    Counter("orchestrator_other_events", "No clash.", registry=registry)


def test_a_restricted_registry_serves_the_catalog_names_asked_for(store):
    feed(store, {"type": "agent_execution", "agent": "a", "status": "success", "duration_seconds": 0.7,
                 "model": "gpt-4o", "input_tokens": 3},
         {"type": "tool_call", "tool": "t", "status": "error", "duration_seconds": 0.2})
    registry = CollectorRegistry()
    registry.register(store)
    asked = ["orchestrator_tool_calls_total", "orchestrator_agent_execution_duration_seconds_count"]
    got = samples(generate_latest(registry.restricted_registry(asked)).decode())
    assert got == {("orchestrator_tool_calls_total", frozenset({"tool": "t", "status": "error"}.items())): 1,
                   ("orchestrator_tool_calls_total", frozenset({"tool": "t", "status": "success"}.items())): 0,
                   ("orchestrator_agent_execution_duration_seconds_count", frozenset({"agent": "a"}.items())): 1}


def _record_in_forked_child(tel) -> None:
    with tel.agent_execution("child"):
        pass
    assert value(tel.store, catalog.AGENT_EXECUTIONS.name, agent="child", status="success") == 1


def test_a_process_forked_while_another_thread_records_can_record():
    from agent_exporter import Telemetry
    tel = Telemetry()
    holding, release = threading.Event(), threading.Event()

    def recording():
        with tel.store._lock:       # the moment of a fork while this thread is mid-event
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=recording)
    thread.start()
    assert holding.wait(10)
    child = multiprocessing.get_context("fork").Process(target=_record_in_forked_child, args=(tel,))
    try:
        child.start()
        child.join(10)
    finally:
        release.set()
        thread.join()
        if child.exitcode is None:  # deadlocked on the lock the thread held at the fork
            child.kill()
            child.join()
    assert child.exitcode == 0


def test_the_fork_hook_keeps_no_store_alive():
    store = SeriesStore()
    collected = weakref.ref(store)
    del store
    gc.collect()
    assert collected() is None
