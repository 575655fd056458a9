"""The legacy tracer and metrics collector API, on the new series and spans."""

import json

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode
from opentelemetry.util._once import Once
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from agent_exporter import catalog, compat, events
from agent_exporter.compat import metrics_collector, tracer
from agent_exporter.compat.metrics_collector import MetricsCollector, get_metrics_collector
from agent_exporter.compat.tracer import OrchestratorTracer, get_tracer
from agent_exporter.config import Config, TracingConfig
from agent_exporter.telemetry import Telemetry

# (agent_name, duration_ms, success, tokens_used, cost) as legacy callers pass them.
LEGACY_CALLS = [
    ("planner", 1200.0, True, 1500, 0.03),
    ("planner", 800.0, True, 0, 0.0),          # usage unknown: never a free execution
    ("coder", 15000.0, False, 4000, 0.12),
    ("reviewer", 300.0, True, 250, 0.0),       # tokens without cost
]


def samples(tel: Telemetry) -> dict:
    """The catalog's samples (the process's own, process_* and python_*, move between two renders)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in parse_text(tel.render().decode()) if family.name.startswith("orchestrator_")
            for s in family.samples}


def value(tel: Telemetry, name: str, **labels) -> float:
    return samples(tel)[(name, frozenset(labels.items()))]


def legacy_record(agent_name, duration_ms, success, tokens_used, cost) -> dict:
    return {"timestamp": "2024-05-01T12:00:00", "agent_name": agent_name, "duration_ms": duration_ms,
            "success": success, "tokens_used": tokens_used, "cost": cost}


@pytest.fixture
def fresh_singletons(monkeypatch):
    """Each test gets its own default Telemetry and legacy singletons, and OpenTelemetry's
    global tracer provider back as it was (the legacy tracer installs its own)."""
    monkeypatch.setattr(compat, "_default", None)
    monkeypatch.setattr(tracer, "_tracer_instance", None)
    monkeypatch.setattr(metrics_collector, "_collector_instance", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace._TRACER_PROVIDER)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())


# -- metrics collector -----------------------------------------------------------------


def test_legacy_api_and_legacy_record_form_produce_the_same_series(tmp_path):
    via_api, via_records = Telemetry(), Telemetry()
    collector = MetricsCollector(storage_dir=str(tmp_path), telemetry=via_api)
    for call in LEGACY_CALLS:
        collector.record_agent_execution(*call)
        via_records.record(legacy_record(*call))
    assert samples(via_api) == samples(via_records)

    # ... and those series say what the legacy records said.
    assert value(via_api, catalog.AGENT_EXECUTIONS.name, agent="planner", status="success") == 2
    assert value(via_api, catalog.AGENT_ERRORS.name, agent="coder", error_type="unknown") == 1
    assert value(via_api, catalog.AGENT_EXECUTION_DURATION.name + "_sum", agent="coder") == 15.0
    assert value(via_api, catalog.LLM_TOKENS.name, agent="planner", model="unknown", type="unsplit") == 1500
    assert value(via_api, catalog.LLM_COST.name, agent="planner", model="unknown") == 0.03
    assert value(via_api, catalog.USAGE_UNKNOWN.name, agent="planner") == 1
    assert value(via_api, catalog.USAGE_UNKNOWN.name, agent="reviewer") == 1


def test_success_is_taken_as_the_legacy_collector_took_it(tmp_path):
    # It tested `if success:`: callers passed 1 and 0 (a database row's column) as well as bools.
    telemetry = Telemetry()
    collector = MetricsCollector(storage_dir=str(tmp_path), telemetry=telemetry)
    collector.record_agent_execution("planner", 100.0, 1)
    collector.record_agent_execution("planner", 100.0, 0)
    assert value(telemetry, catalog.AGENT_EXECUTIONS.name, agent="planner", status="success") == 1
    assert value(telemetry, catalog.AGENT_EXECUTIONS.name, agent="planner", status="error") == 1
    assert [r["success"] for r in collector.metrics["agent_executions"]] == [True, False]


def test_summary_keeps_the_legacy_keys_and_values(tmp_path):
    collector = MetricsCollector(storage_dir=str(tmp_path), telemetry=Telemetry())
    assert collector.get_summary() == {"message": "No metrics collected yet"}
    for call in LEGACY_CALLS:
        collector.record_agent_execution(*call)
    assert collector.get_summary() == {
        "total_executions": 4,
        "success_rate": 0.75,
        "total_cost": pytest.approx(0.15),
        "total_tokens": 5750,
        "average_latency_ms": 4325.0,
        "agents_used": 3,
    }
    assert collector.metrics["latencies"]["planner"] == [1200.0, 800.0]
    assert collector.metrics["success_counts"] == {"planner": 2, "reviewer": 1}
    assert collector.metrics["failure_counts"] == {"coder": 1}
    assert collector.metrics["token_usage"]["coder"] == 4000
    assert [r["agent_name"] for r in collector.metrics["agent_executions"]] == [
        "planner", "planner", "coder", "reviewer"]


def test_saved_metrics_have_the_legacy_shape_and_replay_to_the_same_series(tmp_path):
    recorded = Telemetry()
    collector = MetricsCollector(storage_dir=str(tmp_path / "metrics"), telemetry=recorded)
    for call in LEGACY_CALLS:
        collector.record_agent_execution(*call)
    path = collector.save_metrics()

    assert path.parent == tmp_path / "metrics" and path.name.startswith("metrics_")
    document = json.loads(path.read_text())
    assert set(document) == {"timestamp", "summary", "detailed_metrics", "agent_executions"}
    assert document["summary"] == collector.get_summary()
    assert document["detailed_metrics"] == {
        "latencies": {"planner": [1200.0, 800.0], "coder": [15000.0], "reviewer": [300.0]},
        "token_usage": {"planner": 1500, "coder": 4000, "reviewer": 250},
        "costs": {"planner": 0.03, "coder": 0.12, "reviewer": 0.0},
        "success_counts": {"planner": 2, "reviewer": 1},
        "failure_counts": {"coder": 1},
    }
    replayed = Telemetry()
    batch = events.decode_body(json.dumps(document["agent_executions"]).encode(), "application/json")
    assert batch.rejected == []
    replayed.record_batch(batch.events)
    assert samples(replayed) == samples(recorded)


def test_saved_summary_agrees_with_the_saved_records_while_others_record(tmp_path):
    collector = MetricsCollector(storage_dir=str(tmp_path), telemetry=Telemetry())
    collector.record_agent_execution("planner", 1200.0, True, 1500, 0.03)

    class AnotherThreadRecordsOnRelease:
        """The collector's lock, with another thread's record slipping in the first time it is released."""
        def __init__(self, lock):
            self.lock, self.pending = lock, True

        def __enter__(self):
            return self.lock.__enter__()

        def __exit__(self, *exc):
            self.lock.__exit__(*exc)
            if self.pending:
                self.pending = False
                collector.record_agent_execution("coder", 500.0, False)

    collector._lock = AnotherThreadRecordsOnRelease(collector._lock)
    document = json.loads(collector.save_metrics().read_text())
    assert document["summary"]["total_executions"] == len(document["agent_executions"]) == 1
    assert document["detailed_metrics"]["failure_counts"] == {}
    assert collector.get_summary()["total_executions"] == 2


@pytest.mark.parametrize("call, field", [
    (("", 10.0, True), "agent_name"),
    (("planner", -5.0, True), "duration_ms"),
    (("planner", 10.0, "yes"), "success"),
    (("planner", 10.0, True, -1), "tokens_used"),
    (("planner", 10.0, True, 10, float("nan")), "cost"),
])
def test_invalid_legacy_calls_raise_and_record_nothing(tmp_path, call, field):
    tel = Telemetry()
    collector = MetricsCollector(storage_dir=str(tmp_path), telemetry=tel)
    collector.record_agent_execution("planner", 10.0, True)
    before = tel.store.render()
    with pytest.raises(ValueError) as raised:
        collector.record_agent_execution(*call)
    assert raised.value.field == field
    assert tel.store.render() == before
    assert collector.get_summary()["total_executions"] == 1


def test_collector_creates_no_directory_until_it_saves(tmp_path, monkeypatch, fresh_singletons):
    monkeypatch.chdir(tmp_path)
    collector = get_metrics_collector()
    collector.record_agent_execution("planner", 10.0, True, 100, 0.01)
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / collector.save_metrics()    # the legacy default dir, relative to the cwd
    assert path.is_file() and path.parent == tmp_path / ".claude" / "orchestrator" / "metrics"


# -- tracer -----------------------------------------------------------------------------


def test_legacy_tracer_spans(spans):
    provider, exporter = spans
    tel = Telemetry(tracer_provider=provider)
    legacy = OrchestratorTracer(telemetry=tel)
    assert legacy.provider is provider

    with legacy.tracer.start_as_current_span("orchestrator.execute_request") as request_span:
        span = legacy.start_agent_execution("planner", {"priority": "high", "feature": "login",
                                                        "request_id": "req-7"})
        span.end()
        legacy.trace_state_transition("planning", "coding", {"workflow": "feature", "agent": "planner"})
        legacy.trace_tool_call("web_search", {"q": "otel"}, result=["hit"])
        legacy.trace_tool_call("fetch", {"url": "x"}, result=TimeoutError("slow"))
        legacy.trace_error(KeyError("missing"), {"step": 3})

    finished = {s.name: s for s in exporter.get_finished_spans()}
    agent = finished["invoke_agent planner"]
    assert dict(agent.attributes) == {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner",
        "orchestrator.priority": "high", "orchestrator.feature": "login", "orchestrator.request_id": "req-7"}
    assert agent.parent.span_id == request_span.get_span_context().span_id

    tool = finished["execute_tool web_search"]
    assert dict(tool.attributes) == {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "web_search"}
    assert tool.status.status_code == StatusCode.UNSET
    failed_tool = finished["execute_tool fetch"]
    assert failed_tool.status.status_code == StatusCode.ERROR
    assert failed_tool.attributes["error.type"] == "TimeoutError"

    request = finished["orchestrator.execute_request"]
    assert [e.name for e in request.events] == ["orchestrator.state_transition", "exception"]
    assert request.events[1].attributes["exception.type"] == "KeyError"
    assert "orchestrator.error.context" not in request.events[1].attributes   # content stays out by default
    assert value(tel, catalog.STATE_TRANSITIONS.name, workflow="feature",
                 from_state="planning", to_state="coding") == 1
    # Only transitions count: tool calls without a duration and bare spans do not make series.
    assert not any(name.startswith(catalog.TOOL_CALLS.name) or name == catalog.AGENT_EXECUTIONS.name
                   for name, _ in samples(tel))


def test_a_run_traced_and_recorded_the_legacy_way_is_one_agent_span(spans, tmp_path):
    provider, exporter = spans
    tel = Telemetry(tracer_provider=provider)
    legacy = OrchestratorTracer(telemetry=tel)
    collector = MetricsCollector(storage_dir=str(tmp_path), telemetry=tel)
    with legacy.tracer.start_as_current_span("orchestrator.execute_request") as request_span:
        span = legacy.start_agent_execution("planner", {"request_id": "req-7"})
        span.end()
        collector.record_agent_execution("planner", 1200.0, True, 1500, 0.03)

    # The legacy tracer made the agent's span and the legacy collector none.
    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "invoke_agent planner", "orchestrator.execute_request"]
    # The execution's observation still points at the trace it was recorded in.
    trace_id = f"{request_span.get_span_context().trace_id:032x}"
    assert [s.exemplar.labels["trace_id"] for family in parse_openmetrics(tel.render(True).decode())
            for s in family.samples
            if s.name == catalog.AGENT_EXECUTION_DURATION.name + "_bucket" and s.exemplar] == [trace_id]


def test_content_reaches_spans_only_when_asked(spans):
    provider, exporter = spans
    tel = Telemetry(Config(tracing=TracingConfig(capture_content=True)), tracer_provider=provider)
    legacy = OrchestratorTracer(telemetry=tel)
    legacy.trace_tool_call("web_search", {"q": "otel"}, result=None)
    legacy.trace_error(KeyError("missing"), {"step": 3})
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert finished["execute_tool web_search"].attributes["gen_ai.tool.call.arguments"] == '{"q": "otel"}'
    error = finished["error"]
    assert error.status.status_code == StatusCode.ERROR and error.attributes["error.type"] == "KeyError"
    assert error.events[0].attributes["orchestrator.error.context"] == "{'step': 3}"


@pytest.mark.parametrize("capture_content", [False, True])
def test_tool_parameters_that_json_cannot_hold_raise_nothing(spans, capture_content):
    provider, exporter = spans
    tel = Telemetry(Config(tracing=TracingConfig(capture_content=capture_content)), tracer_provider=provider)
    legacy = OrchestratorTracer(telemetry=tel)
    cyclic = {"q": "otel"}
    cyclic["self"] = cyclic
    legacy.trace_tool_call("grep", {("src", "tests"): "*.py"}, result=None)    # the legacy str() took any dict
    legacy.trace_tool_call("web_search", cyclic, result=None)
    arguments = [s.attributes.get("gen_ai.tool.call.arguments") for s in exporter.get_finished_spans()]
    assert arguments == (["{('src', 'tests'): '*.py'}", "{'q': 'otel', 'self': {...}}"] if capture_content
                         else [None, None])


def test_transition_context_is_free_form_as_before():
    tel = Telemetry()
    legacy = OrchestratorTracer(telemetry=tel)

    class Agent:
        name = "planner"

    legacy.trace_state_transition("planning", "coding", {"agent": Agent(), "workflow": 7, "request": "add login"})
    legacy.trace_state_transition("coding", "review", {"workflow": "feature"})
    assert value(tel, catalog.STATE_TRANSITIONS.name, workflow="default", from_state="planning", to_state="coding") == 1
    assert value(tel, catalog.STATE_TRANSITIONS.name, workflow="feature", from_state="coding", to_state="review") == 1


def test_singletons_share_one_default_telemetry(fresh_singletons):
    legacy_tracer, collector = get_tracer(), get_metrics_collector()
    assert get_tracer() is legacy_tracer and get_metrics_collector() is collector
    assert legacy_tracer.telemetry is collector.telemetry is compat.default_telemetry()
    assert isinstance(legacy_tracer.tracer, trace.Tracer)
    collector.record_agent_execution("planner", 10.0, True, 100, 0.01)
    assert value(compat.default_telemetry(), catalog.AGENT_EXECUTIONS.name, agent="planner", status="success") == 1


def test_set_default_telemetry_routes_the_singletons(fresh_singletons):
    mine = Telemetry()
    compat.set_default_telemetry(mine)
    get_metrics_collector().record_agent_execution("coder", 10.0, False)
    get_tracer().trace_state_transition("a", "b", {})
    assert value(mine, catalog.AGENT_EXECUTIONS.name, agent="coder", status="error") == 1
    assert value(mine, catalog.STATE_TRANSITIONS.name, workflow="default", from_state="a", to_state="b") == 1


def test_the_legacy_service_name_names_the_shared_telemetry(fresh_singletons, caplog):
    legacy = OrchestratorTracer(service_name="magnus-orchestrator")
    assert legacy.telemetry is compat.default_telemetry()
    assert legacy.telemetry.config.service_name == "magnus-orchestrator"
    assert legacy.provider.resource.attributes["service.name"] == "magnus-orchestrator"
    again = OrchestratorTracer("another-name")           # positional, as legacy code may pass it
    assert again.telemetry is legacy.telemetry
    assert "already runs as 'magnus-orchestrator'" in caplog.text
    with pytest.raises(ValueError, match="service_name"):
        OrchestratorTracer(service_name="")
