"""Self-healing: retry policy, fallback chains, circuit breakers, selector, Healer, remediation, simulate."""

import asyncio
import copy
import gc
import logging
import random
import threading
import weakref

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog, events, tracing
from agent_exporter.config import AlertingConfig, Config, HealingConfig, MetricsConfig
from agent_exporter.healing import (
    AdaptiveSelector, AlertRemediator, CircuitBreaker, CircuitBreakers, CircuitOpenError, FallbackChain, Healer,
    RetryPolicy, format_table, run_simulation)
from agent_exporter.telemetry import Telemetry

from clocks import Clock


class Flaky(Exception):
    error_type = "RateLimitError"


class Fatal(Exception):
    pass


# -- retry policy ---------------------------------------------------------------------

def test_backoff_ceilings_grow_exponentially_up_to_the_cap():
    policy = RetryPolicy(6, initial=0.1, max_backoff=1.0, multiplier=2)
    assert [policy.ceiling(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_backoff_is_full_jitter_within_bounds():
    policy = RetryPolicy(4, initial=1.0, max_backoff=3.0, rng=random.Random(7))
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 3.0), (4, 3.0)):
        draws = [policy.backoff(attempt) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # spread over the whole range, not a fixed delay
        assert min(draws) < 0.1 * ceiling and max(draws) > 0.9 * ceiling
    delays = policy.delays()
    assert len(delays) == 3 and all(0.0 <= d <= 3.0 for d in delays)


def test_backoff_is_reproducible_with_a_seeded_rng():
    a = RetryPolicy(5, rng=random.Random(3)).delays()
    b = RetryPolicy(5, rng=random.Random(3)).delays()
    assert a == b and len(set(a)) == 4


def test_retryable_by_class_or_predicate():
    by_class = RetryPolicy(retryable=(Flaky, TimeoutError))
    assert by_class.is_retryable(Flaky()) and by_class.is_retryable(TimeoutError())
    assert not by_class.is_retryable(Fatal())
    by_predicate = RetryPolicy(retryable=lambda exc: getattr(exc, "error_type", "") == "RateLimitError")
    assert by_predicate.is_retryable(Flaky()) and not by_predicate.is_retryable(Fatal())
    with pytest.raises(TypeError):
        RetryPolicy(retryable=42)


def test_retry_policy_from_config_and_invalid_values():
    policy = RetryPolicy.from_config(HealingConfig(max_attempts=5, backoff_initial_seconds=0.5,
                                                   backoff_max_seconds=2.0))
    assert (policy.max_attempts, policy.initial, policy.max_backoff) == (5, 0.5, 2.0)
    assert len(policy.delays()) == 4
    with pytest.raises(ValueError):
        RetryPolicy(0)
    with pytest.raises(ValueError):
        RetryPolicy(3, initial=-1)
    with pytest.raises(ValueError):
        RetryPolicy(3, multiplier=0.5)     # backoff that shrinks with each failure
    assert RetryPolicy(3, initial=0.5, multiplier=1).ceiling(3) == 0.5     # constant backoff is fine


# -- fallback chains ------------------------------------------------------------------------

def test_fallback_order_is_first_then_alternatives_then_other_candidates():
    chain = FallbackChain.from_config(HealingConfig(fallbacks={"coder": ("coder-lite", "coder-mini")}))
    assert chain.alternatives("coder") == ("coder-lite", "coder-mini")
    assert chain.order("coder", ("coder", "coder-big", "coder-lite")) == [
        "coder", "coder-lite", "coder-mini", "coder-big"]
    assert chain.order("coder-big", ("coder", "coder-big")) == ["coder-big", "coder"]
    assert chain.alternatives("tester") == ()
    assert chain.agents() == {"coder", "coder-lite", "coder-mini"}


# -- circuit breaker ------------------------------------------------------------------------

def breaker(clock, **kwargs):
    settings = dict(window_seconds=60, error_ratio=0.5, min_calls=10, cooldown_seconds=30, half_open_probes=3)
    settings.update(kwargs)
    changes = []
    b = CircuitBreaker("coder", clock=clock, listener=lambda *change: changes.append(change[1:3]), **settings)
    return b, changes


def test_breaker_needs_the_minimum_number_of_calls():
    clock = Clock()
    b, changes = breaker(clock)
    for _ in range(9):
        b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow()
    assert changes == [("closed", "open")] and b.reason == "error_ratio"


def test_breaker_opens_at_the_error_ratio_threshold_only():
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(6):
        b.record_success()
    for _ in range(4):
        b.record_failure()
    assert b.state == "closed"          # 4 / 10 < 0.5
    b.record_failure()
    assert b.state == "closed"          # 5 / 11 < 0.5
    b.record_failure()
    assert b.state == "open"            # 6 / 12 >= 0.5


def test_breaker_window_forgets_old_calls():
    clock = Clock()
    b, _ = breaker(clock)
    for _ in range(9):
        b.record_failure()
    clock.now = 61.0                    # those nine left the window
    assert b.window() == (0, 0)
    b.record_failure()
    assert b.state == "closed" and b.window() == (1, 1)


def test_breaker_cooldown_then_half_open_probes_close_it():
    clock = Clock()
    b, changes = breaker(clock)
    for _ in range(10):
        b.record_failure()
    clock.now = 29.9
    assert not b.allow() and b.state == "open"
    clock.now = 30.0
    assert b.state == "half_open"
    assert [b.allow() for _ in range(4)] == [True, True, True, False]   # exactly 3 probes
    b.record_success()
    b.record_success()
    assert b.state == "half_open"
    b.record_success()
    assert b.state == "closed" and b.window() == (0, 0)
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_breaker_failed_probe_reopens_and_restarts_the_cooldown():
    clock = Clock()
    b, changes = breaker(clock)
    for _ in range(10):
        b.record_failure()
    clock.now = 30.0
    assert b.allow()
    b.record_success()
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and b.reason == "probe_failed"
    clock.now = 59.0
    assert b.state == "open"
    clock.now = 60.0
    assert b.state == "half_open"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open")]


def test_forced_open_ignores_cooldown_until_released():
    clock = Clock()
    b, changes = breaker(clock)
    b.force_open("OrchestratorAgentHighErrorRatio")
    assert b.forced and b.state == "open" and b.reason == "OrchestratorAgentHighErrorRatio"
    clock.now = 1000.0
    assert b.state == "open" and not b.allow()
    b.release("resolved")
    assert not b.forced and b.state == "half_open" and b.reason == "resolved"
    for _ in range(3):          # half_open_probes
        b.record_success(b.acquire())
    assert b.state == "closed" and b.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_released_breaker_whose_probe_fails_opens_again():
    # An alert can resolve only because the held agent got no calls to fail: its resolution says
    # nothing of the agent, so the first call after it probes, and a failing one reopens the breaker.
    clock = Clock()
    b, changes = breaker(clock)
    b.force_open("OrchestratorAgentHighErrorRatio")
    b.release("resolved")
    b.record_failure(b.acquire())
    assert b.state == "open" and b.reason == "probe_failed"
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]


def test_breakers_registry_reports_states_to_telemetry():
    recorded = []

    class FakeTelemetry:
        def set_circuit_state(self, agent, state):
            recorded.append((agent, state))

        def refresh_on_scrape(self, method):
            pass

    clock = Clock()
    breakers = CircuitBreakers.from_config(HealingConfig(breaker_min_calls=2), clock=clock,
                                           telemetry=FakeTelemetry())
    seen = []
    breakers.add_listener(lambda agent, old, new, reason: seen.append((agent, new)))
    assert breakers.get("coder") is breakers.get("coder")
    breakers.get("coder").record_failure()
    breakers.get("coder").record_failure()
    assert recorded == [("coder", "closed"), ("coder", "open")]
    assert seen == [("coder", "open")]
    assert [b.agent for b in breakers] == ["coder"]


def test_a_scrape_finds_a_breaker_past_its_cool_down_half_open_without_a_call():
    # With no traffic nothing asks an open breaker for its state: its gauge stayed at open, and
    # OrchestratorCircuitBreakerOpen fired all night for an agent that would take the next call.
    clock = Clock()
    tel = Telemetry(Config())
    breakers = CircuitBreakers.from_config(HealingConfig(breaker_min_calls=2, breaker_cooldown_seconds=30),
                                           clock=clock, telemetry=tel)
    seen = []
    breakers.add_listener(lambda agent, old, new, reason: seen.append((agent, new, reason)))
    breakers.get("coder").record_failure()
    breakers.get("coder").record_failure()
    gauge = catalog.CIRCUIT_BREAKER_STATE.name
    assert value_of(tel.render().decode(), gauge, agent="coder") == catalog.CIRCUIT_STATE_VALUES["open"]
    clock.now += 29
    assert value_of(tel.render().decode(), gauge, agent="coder") == catalog.CIRCUIT_STATE_VALUES["open"]
    clock.now += 1
    assert value_of(tel.render().decode(), gauge, agent="coder") == catalog.CIRCUIT_STATE_VALUES["half_open"]
    assert seen == [("coder", "open", "error_ratio"), ("coder", "half_open", "cooldown")]


def test_breakers_are_not_kept_alive_by_the_telemetry_they_report_to():
    tel = Telemetry(Config())
    breakers = CircuitBreakers.from_config(HealingConfig(), telemetry=tel)
    breakers.get("coder")
    gone = weakref.ref(breakers)
    del breakers
    gc.collect()
    assert gone() is None
    tel.render()                 # a scrape after they are gone has nothing to refresh, and fails nothing


def test_a_breaker_changed_while_it_is_made_keeps_the_change_on_its_gauge():
    # Another thread opening the breaker as it is made: its "open" must not be overwritten by the
    # "closed" the new breaker's gauge starts with.
    class Telemetry:
        def __init__(self):
            self.gauge = {}
            self.opener = None

        def refresh_on_scrape(self, method):
            pass

        def set_circuit_state(self, agent, state):
            if self.opener is None:
                self.opener = threading.Thread(target=breakers.force_open, args=(agent, "alert"))
                self.opener.start()
                self.opener.join(1)     # bounded: where the breaker is not yet visible, it waits for us
            self.gauge[agent] = state

    telemetry = Telemetry()
    breakers = CircuitBreakers.from_config(HealingConfig(), telemetry=telemetry)
    breakers.get("coder")
    telemetry.opener.join(10)
    assert breakers.get("coder").state == "open"
    assert telemetry.gauge == {"coder": "open"}


# -- adaptive selector ------------------------------------------------------------------------

def drive(selector, rates, tasks, rng, task="coding", latencies=None):
    """Run `tasks` choices with per-agent success rates; returns the chosen agents."""
    chosen = []
    for _ in range(tasks):
        agent = selector.choose(task, tuple(rates))
        latency = latencies[agent] if latencies else None
        selector.observe(task, agent, rng.random() < rates[agent], latency)
        chosen.append(agent)
    return chosen


def test_selector_converges_on_the_better_agent():
    selector = AdaptiveSelector(rng=random.Random(1))
    chosen = drive(selector, {"a": 0.5, "b": 0.97}, 300, random.Random(2))
    assert chosen[-100:].count("b") >= 90


def test_selector_follows_a_change_and_comes_back():
    selector = AdaptiveSelector(rng=random.Random(3))
    rng = random.Random(4)
    drive(selector, {"a": 0.97, "b": 0.5}, 200, rng)
    after_change = drive(selector, {"a": 0.5, "b": 0.97}, 300, rng)
    assert after_change[100:].count("b") >= 0.9 * 200
    after_recovery = drive(selector, {"a": 0.97, "b": 0.5}, 400, rng)
    assert after_recovery[-150:].count("a") >= 0.9 * 150


def test_selector_penalises_latency_between_equally_reliable_agents():
    selector = AdaptiveSelector(rng=random.Random(5), latency_weight=0.3)
    chosen = drive(selector, {"slow": 1.0, "fast": 1.0}, 400, random.Random(6),
                   latencies={"slow": 20.0, "fast": 2.0})
    assert chosen[-200:].count("fast") >= 160


def test_selector_skips_agents_whose_breaker_is_open_and_exports_weights():
    clock = Clock()
    breakers = CircuitBreakers(clock=clock)
    weights = {}

    class FakeTelemetry:
        def set_selector_weight(self, task, agent, weight):
            weights[(task, agent)] = weight

    selector = AdaptiveSelector(rng=random.Random(7), breakers=breakers, telemetry=FakeTelemetry())
    breakers.force_open("a")
    assert {selector.choose("coding", ("a", "b")) for _ in range(50)} == {"b"}
    assert selector.weights("coding") == {"a": 0.0, "b": 1.0}
    assert weights == {("coding", "a"): 0.0, ("coding", "b"): 1.0}
    breakers.release("a")
    published = selector.publish("coding")
    assert sum(published.values()) == pytest.approx(1.0) and published["a"] > 0
    assert selector.published()["coding"] == published


def test_exported_weights_follow_a_breaker_change_at_once():
    telemetry = Telemetry(Config())
    try:
        remediator = AlertRemediator(Config(), telemetry)
        healer = Healer.from_config(Config(), telemetry, remediator=remediator)
        for _ in range(3):
            healer.run("coding", ("coder", "coder-lite"), lambda agent: agent)
        remediator.breakers.force_open("coder", "OrchestratorAgentHighErrorRatio")
        # No task has chosen since: the gauge and /v1/agents said 0.5 for an agent that got nothing.
        weight = catalog.SELECTOR_WEIGHT.name
        text = telemetry.store.render().decode()
        assert value_of(text, weight, task="coding", agent="coder") == 0.0
        assert value_of(text, weight, task="coding", agent="coder-lite") == 1.0
        assert remediator.agents_status()["agents"]["coder"]["selector_weight"] == {"coding": 0.0}
        remediator.breakers.release("coder", "resolved")
        assert value_of(telemetry.store.render().decode(), weight, task="coding", agent="coder") > 0
    finally:
        telemetry.shutdown()


def test_an_agent_dropped_from_a_tasks_candidates_is_exported_with_weight_0():
    telemetry = Telemetry(Config())
    try:
        remediator = AlertRemediator(Config(), telemetry)
        healer = Healer.from_config(Config(), telemetry, remediator=remediator)
        healer.run("coding", ("coder", "coder-lite"), lambda agent: agent)
        for _ in range(11):
            healer.run("coding", ("coder-lite", "coder-mini"), lambda agent: agent)
        # coder kept its last weight (0.5): the task's weights summed to 1.5.
        text = telemetry.store.render().decode()
        assert value_of(text, catalog.SELECTOR_WEIGHT.name, task="coding", agent="coder") == 0.0
        assert remediator.agents_status()["agents"]["coder"]["selector_weight"] == {"coding": 0.0}
    finally:
        telemetry.shutdown()


def test_weights_are_exported_from_the_first_choice_whatever_the_cadence():
    weights = {}

    class FakeTelemetry:
        def set_selector_weight(self, task, agent, weight):
            weights[(task, agent)] = weight

    selector = AdaptiveSelector(rng=random.Random(0), telemetry=FakeTelemetry(), publish_every=1)
    selector.choose("coding", ("a", "b"))
    assert set(weights) == {("coding", "a"), ("coding", "b")}
    with pytest.raises(ValueError):
        AdaptiveSelector(publish_every=0)


def test_selector_decays_old_evidence():
    selector = AdaptiveSelector(decay=0.5, rng=random.Random(0))
    selector.observe("t", "a", False)
    selector.observe("t", "b", True)
    assert selector.evidence("t", "a") == (0.0, 0.5)
    assert selector.evidence("t", "b") == (1.0, 0.0)


def test_selector_treats_measurements_that_are_no_numbers_as_unknown():
    nan = float("nan")
    selector = AdaptiveSelector(rng=random.Random(0))
    # A NaN evaluation score (an evaluator averaging nothing) made the evidence NaN for good, and
    # random.betavariate(nan, ...) never returns: choose() hung with the selector's lock held.
    selector.observe("coding", "coder", True, 1.0, 0.01, score=nan)
    assert selector.evidence("coding", "coder") == (1.0, 0.0)
    # A NaN cost made every draw of its agent NaN, never the best: it never got a task again.
    for _ in range(10):
        selector.observe("coding", "coder", True, 1.0, 0.01)
        selector.observe("coding", "coder-lite", True, 1.0, nan)
    selector.choose("coding", ("coder", "coder-lite"))
    assert selector.weights("coding")["coder-lite"] > 0.2


# -- healer -------------------------------------------------------------------------------

def make_healer(telemetry=None, fallbacks=None, selector=None, max_attempts=3, **breaker_settings):
    clock = Clock()
    sleeps = []
    policy = RetryPolicy(max_attempts, initial=1.0, max_backoff=4.0, retryable=Flaky, rng=random.Random(0),
                         sleep=sleeps.append)
    breakers = CircuitBreakers(clock=clock, telemetry=telemetry, **breaker_settings)
    healer = Healer(policy=policy, breakers=breakers, selector=selector, fallbacks=FallbackChain(fallbacks),
                    telemetry=telemetry, clock=clock)
    return healer, sleeps


def scripted(outcomes):
    """fn(agent) failing with Flaky per the script {agent: [True/False, ...]}; records calls."""
    calls = []

    def fn(agent):
        calls.append(agent)
        if not outcomes[agent].pop(0):
            raise Flaky(agent)
        return f"done by {agent}"

    return fn, calls


def test_healer_retries_with_backoff_then_succeeds():
    healer, sleeps = make_healer()
    fn, calls = scripted({"coder": [False, False, True]})
    assert healer.run("coding", ("coder",), fn) == "done by coder"
    assert calls == ["coder"] * 3
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 2.0


def test_healer_falls_back_in_chain_order():
    healer, _ = make_healer(fallbacks={"coder": ("coder-lite", "coder-mini")})
    fn, calls = scripted({"coder": [False] * 3, "coder-lite": [False] * 3, "coder-mini": [True]})
    assert healer.run("coding", ("coder",), fn) == "done by coder-mini"
    assert calls == ["coder"] * 3 + ["coder-lite"] * 3 + ["coder-mini"]


def test_healer_raises_the_last_error_when_everything_fails():
    healer, _ = make_healer(max_attempts=2, fallbacks={"coder": ("coder-lite",)})
    fn, calls = scripted({"coder": [False] * 2, "coder-lite": [False] * 2})
    with pytest.raises(Flaky, match="coder-lite"):
        healer.run("coding", ("coder",), fn)
    assert len(calls) == 4


def test_healer_does_not_retry_or_blame_non_retryable_errors():
    healer, sleeps = make_healer(fallbacks={"coder": ("coder-lite",)})
    calls = []

    def fn(agent):
        calls.append(agent)
        raise Fatal("bad input")

    with pytest.raises(Fatal):
        healer.run("coding", ("coder",), fn)
    assert calls == ["coder"] and sleeps == []
    assert healer.breakers.get("coder").window() == (0, 0)


def test_healer_skips_open_breakers_and_raises_when_all_are_open():
    healer, _ = make_healer(fallbacks={"coder": ("coder-lite",)})
    healer.breakers.force_open("coder")
    fn, calls = scripted({"coder-lite": [True]})
    assert healer.run("coding", ("coder",), fn) == "done by coder-lite"
    assert calls == ["coder-lite"]
    healer.breakers.force_open("coder-lite")
    # Both are open only because of alerts: the first still gets one attempt (the last resort).
    last_resort = []
    assert healer.run("coding", ("coder",), lambda agent: last_resort.append(agent) or agent) == "coder"
    assert last_resort == ["coder"]


def test_healer_stops_retrying_an_agent_whose_breaker_opened():
    healer, _ = make_healer(max_attempts=5, min_calls=2, error_ratio=0.5,
                            fallbacks={"coder": ("coder-lite",)})
    fn, calls = scripted({"coder": [False] * 5, "coder-lite": [True]})
    assert healer.run("coding", ("coder",), fn) == "done by coder-lite"
    assert calls == ["coder", "coder", "coder-lite"]


def test_healer_async():
    healer, sleeps = make_healer(fallbacks={"coder": ("coder-lite",)})
    awaited = []

    async def fake_sleep(seconds):
        awaited.append(seconds)

    healer.policy.async_sleep = fake_sleep
    fn, calls = scripted({"coder": [False] * 3, "coder-lite": [False, True]})

    async def afn(agent):
        await asyncio.sleep(0)
        return fn(agent)

    assert asyncio.run(healer.run_async("coding", ("coder",), afn)) == "done by coder-lite"
    assert calls == ["coder"] * 3 + ["coder-lite"] * 2
    assert len(awaited) == 3 and sleeps == []


def test_healer_feeds_the_selector():
    selector = AdaptiveSelector(rng=random.Random(0))
    healer, _ = make_healer(selector=selector)
    rng = random.Random(1)

    def fn(agent):
        if agent == "bad" and rng.random() < 0.9:
            raise Flaky(agent)
        return agent

    for _ in range(200):
        healer.run("coding", ("bad", "good"), fn)
    firsts = [selector.choose("coding", ("bad", "good")) for _ in range(100)]
    assert firsts.count("good") >= 85


def test_healer_spans_link_retries_to_the_first_attempt():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    healer, _ = make_healer(fallbacks={"coder": ("coder-lite",)})
    healer.tracer = provider.get_tracer("test")
    fn, _ = scripted({"coder": [False] * 3, "coder-lite": [True]})
    healer.run("coding", ("coder",), fn)
    spans = exporter.get_finished_spans()
    attempts = [s for s in spans if s.name.startswith("attempt ")]
    run = next(s for s in spans if s.name == "heal coding")
    assert [s.name for s in attempts] == ["attempt coder"] * 3 + ["attempt coder-lite"]
    first = attempts[0].context
    assert not attempts[0].links
    for span in attempts[1:]:
        assert [link.context.span_id for link in span.links] == [first.span_id]
        assert span.parent.span_id == run.context.span_id
    # One span-event name per fact, tracing.py's (issue 13: it was "retry"/"fallback" here).
    assert [e.name for e in run.events] == [tracing.RETRY_EVENT, tracing.RETRY_EVENT, tracing.FALLBACK_EVENT]
    assert dict(run.events[2].attributes)["orchestrator.to_agent"] == "coder-lite"


def value_of(text, name, **labels):
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_metrics_through_a_real_telemetry():
    config = Config(healing=HealingConfig(max_attempts=2, breaker_min_calls=4, breaker_error_ratio=0.5,
                                          fallbacks={"coder": ("coder-lite",)}))
    telemetry = Telemetry(config)
    try:
        clock = Clock()
        breakers = CircuitBreakers.from_config(config.healing, clock=clock, telemetry=telemetry)
        selector = AdaptiveSelector(rng=random.Random(0), breakers=breakers, telemetry=telemetry)
        healer = Healer.from_config(config, telemetry, breakers=breakers, selector=selector, clock=clock,
                                    policy=RetryPolicy(2, 0.0, 0.0, sleep=lambda s: None))
        fn, _ = scripted({"coder": [False] * 4, "coder-lite": [True] * 10})
        for _ in range(2):
            healer.run("coding", ("coder",), fn)     # coder first, coder-lite by the config's chain
        assert selector.choose("coding", ("coder", "coder-lite")) == "coder-lite"
        selector.publish("coding")
        text = telemetry.store.render().decode()
        assert value_of(text, catalog.RETRIES.name, agent="coder", error_type="RateLimitError") == 2
        assert value_of(text, catalog.FALLBACKS.name, from_agent="coder", to_agent="coder-lite") == 2
        state = catalog.CIRCUIT_BREAKER_STATE.name
        assert value_of(text, state, agent="coder") == catalog.CIRCUIT_STATE_VALUES["open"]
        assert value_of(text, state, agent="coder-lite") == catalog.CIRCUIT_STATE_VALUES["closed"]
        weight = catalog.SELECTOR_WEIGHT.name
        assert value_of(text, weight, task="coding", agent="coder") == 0.0
        assert value_of(text, weight, task="coding", agent="coder-lite") == 1.0
    finally:
        telemetry.shutdown()


def test_with_healing_off_a_task_runs_once_on_its_first_candidate():
    config = Config(healing=HealingConfig(enabled=False, fallbacks={"coder": ("coder-lite",)}))
    telemetry = Telemetry(config)
    try:
        healer = Healer.from_config(config, telemetry)
        fn, calls = scripted({"coder": [False, True], "coder-lite": [False]})
        with pytest.raises(Flaky):
            healer.run("coding", ("coder", "coder-lite"), fn)
        assert calls == ["coder"]           # no retry, no fallback
        assert healer.run("coding", ("coder", "coder-lite"), fn) == "done by coder"

        async def acall(agent):
            return fn(agent)
        with pytest.raises(Flaky):
            asyncio.run(healer.run_async("coding", ("coder-lite", "coder"), acall))
        assert calls == ["coder", "coder", "coder-lite"]
        assert healer.run("coding", ("coder",), lambda agent: "done", workflow="feature") == "done"
        text = telemetry.store.render().decode()
        assert value_of(text, catalog.RETRIES.name) is None
        assert value_of(text, catalog.FALLBACKS.name) is None
        assert value_of(text, catalog.WORKFLOW_RUNS.name, workflow="feature", status="success") == 1
        with pytest.raises(ValueError, match="no candidate agents"):
            healer.run("coding", (), fn)
    finally:
        telemetry.shutdown()


# -- alert-driven remediation ------------------------------------------------------------------

def alert(status="firing", alertname="OrchestratorAgentHighErrorRatio", agent="coder", fingerprint="f1"):
    labels = {"alertname": alertname, "severity": "critical"}
    if agent:
        labels["agent"] = agent
    return {"status": status, "labels": labels, "annotations": {"summary": "errors"},
            "startsAt": "2024-05-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T10:05:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint}


def payload(*alerts, status="firing"):
    return {"version": "4", "groupKey": "{}:{alertname=\"OrchestratorAgentHighErrorRatio\"}",
            "truncatedAlerts": 0, "status": status, "receiver": "healing",
            "groupLabels": {"alertname": "OrchestratorAgentHighErrorRatio"}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}


def remediator(**kwargs):
    config = Config(healing=HealingConfig(fallbacks={"coder": ("coder-lite",)}),
                    alerting=AlertingConfig(remediation_alerts=("OrchestratorAgentHighErrorRatio",)))
    return AlertRemediator(config, **kwargs)


def test_firing_alert_opens_the_breaker_and_resolution_lets_it_probe():
    changes = []
    rem = remediator(on_change=lambda agent, old, new, reason: changes.append((agent, new, reason)))
    summary = rem.handle_webhook(payload(alert()))
    assert summary["opened"] == ["coder"] and summary["released"] == []
    status = rem.agents_status()["agents"]["coder"]
    assert status["circuit_state"] == "open" and status["forced"] is True
    assert status["alerts"] == ["OrchestratorAgentHighErrorRatio"]
    assert rem.agents_status()["agents"]["coder-lite"]["circuit_state"] == "closed"
    summary = rem.handle_webhook(payload(alert("resolved"), status="resolved"))
    assert summary["released"] == ["coder"]
    status = rem.agents_status()["agents"]["coder"]
    assert status["circuit_state"] == "half_open" and status["forced"] is False
    assert changes == [("coder", "open", "OrchestratorAgentHighErrorRatio"),
                       ("coder", "half_open", "resolved:OrchestratorAgentHighErrorRatio")]


def test_agent_stays_open_while_any_of_its_alerts_fires():
    rem = remediator()
    rem.handle_webhook(payload(alert(fingerprint="f1"), alert(fingerprint="f2")))
    rem.handle_webhook(payload(alert("resolved", fingerprint="f1"), status="resolved"))
    assert rem.breakers.get("coder").state == "open"
    rem.handle_webhook(payload(alert("resolved", fingerprint="f2"), status="resolved"))
    assert rem.breakers.get("coder").state == "half_open"


def test_alerts_not_for_remediation_change_nothing():
    rem = remediator()
    summary = rem.handle_webhook(payload(alert(alertname="OrchestratorAgentSlow"), alert(agent=None)))
    assert summary["ignored"] == 2 and summary["opened"] == []
    assert rem.breakers.get("coder").state == "closed"


def test_alerts_about_more_agents_than_max_series_are_ignored_and_logged(caplog):
    config = Config(metrics=MetricsConfig(max_series=3),
                    alerting=AlertingConfig(remediation_alerts=("OrchestratorAgentHighErrorRatio",)))
    rem = AlertRemediator(config)
    summary = rem.handle_webhook(payload(*(alert(agent=f"a{i}", fingerprint=f"f{i}") for i in range(5))))
    assert summary["opened"] == ["a0", "a1", "a2"] and summary["ignored"] == 2
    assert sorted(rem.agents_status()["agents"]) == ["a0", "a1", "a2"]
    assert "ignored 2 remediation alert(s) about new agents" in caplog.text
    # the agents it tracks still act: a2 resolves, a0 fires again from another alert
    summary = rem.handle_webhook(payload(alert("resolved", agent="a2", fingerprint="f2"),
                                         alert(agent="a0", fingerprint="g0"), alert(agent="a9", fingerprint="f9")))
    assert summary["released"] == ["a2"] and summary["ignored"] == 1
    assert rem.breakers.get("a0").state == "open" and "a9" not in rem.breakers
    assert caplog.text.count("about new agents") == 1       # said once in a while, not per webhook


def test_every_change_of_a_breaker_is_a_log_line(caplog):
    """An on-call engineer reads in the log why an agent stopped being used, and when it came back."""
    caplog.set_level(logging.INFO, logger="agent_exporter.healing.breaker")
    rem = remediator()
    rem.handle_webhook(payload(alert(fingerprint="f1")))
    rem.handle_webhook(payload(alert("resolved", fingerprint="f1"), status="resolved"))
    assert [r.getMessage() for r in caplog.records if r.name == "agent_exporter.healing.breaker"] == [
        "circuit breaker of coder: closed -> open (OrchestratorAgentHighErrorRatio)",
        "circuit breaker of coder: open -> half_open (resolved:OrchestratorAgentHighErrorRatio)"]


def _malformed():
    def mutate(fn):
        body = payload(alert(agent="coder-lite", fingerprint="ok"), alert())
        fn(body)
        return body

    yield "not an object", ["alerts"]
    yield "missing version", mutate(lambda b: b.pop("version"))
    yield "wrong version", mutate(lambda b: b.update(version="3"))
    yield "bad status", mutate(lambda b: b.update(status="pending"))
    yield "alerts not a list", mutate(lambda b: b.update(alerts={}))
    yield "alert not an object", mutate(lambda b: b["alerts"].append("x"))
    yield "alert missing labels", mutate(lambda b: b["alerts"][1].pop("labels"))
    yield "alert missing fingerprint", mutate(lambda b: b["alerts"][1].pop("fingerprint"))
    yield "alert bad status", mutate(lambda b: b["alerts"][1].update(status="active"))
    yield "label value not a string", mutate(lambda b: b["alerts"][1]["labels"].update(agent=3))
    yield "no alertname", mutate(lambda b: b["alerts"][1]["labels"].pop("alertname"))
    yield "truncatedAlerts not int", mutate(lambda b: b.update(truncatedAlerts="0"))


@pytest.mark.parametrize("name,body", list(_malformed()), ids=[n for n, _ in _malformed()])
def test_malformed_payloads_raise_and_change_nothing(name, body):
    rem = remediator()
    before = copy.deepcopy(rem.agents_status())
    with pytest.raises(ValueError):
        rem.handle_webhook(body)
    assert rem.agents_status() == before
    assert rem.breakers.get("coder-lite").state == "closed"      # the valid first alert was not acted on


def test_remediator_shares_state_with_the_healer():
    telemetry_free = remediator()
    healer = Healer.from_config(Config(), remediator=telemetry_free)
    assert healer.breakers is telemetry_free.breakers and healer.selector is telemetry_free.selector


# -- simulation -------------------------------------------------------------------------------

def test_simulation_meets_the_claims():
    result = run_simulation(seeds=3, tasks=2000)
    assert set(result) == {"policies", "selector"}
    assert set(result["policies"]) == {"static", "round_robin", "retry_only", "full"}
    for row in result["policies"].values():
        assert set(row) == {"success_rate", "p95_task_seconds", "cost_per_task_usd"}
    policies = result["policies"]
    assert policies["full"]["success_rate"] >= 0.99
    assert policies["static"]["success_rate"] < 0.75
    assert policies["full"]["p95_task_seconds"] < policies["static"]["p95_task_seconds"]
    selector = result["selector"]
    assert selector["tasks_to_shift"] is not None and selector["tasks_to_shift"] <= 100
    assert selector["share_on_failing_after_shift"] <= 0.10
    assert selector["tasks_to_return"] is not None
    table = format_table(result)
    for policy in policies:
        assert policy in table


def test_a_run_too_short_to_see_the_shift_says_so():
    lines = format_table(run_simulation(seeds=1, tasks=40)).splitlines()
    assert lines[-1] == "selector: traffic did not move off the failing agent within the run (try more --tasks)"
    assert "None" not in "\n".join(lines)


def test_simulation_is_deterministic():
    assert run_simulation(seeds=1, tasks=400) == run_simulation(seeds=1, tasks=400)


def test_fallback_is_recorded_only_to_an_agent_that_takes_the_work():
    recorded = []

    class FakeTelemetry:
        tracer = trace.get_tracer("test")

        def record(self, event):
            recorded.append(event)

        def set_circuit_state(self, agent, state):
            pass

        def refresh_on_scrape(self, method):
            pass

    healer, _ = make_healer(telemetry=FakeTelemetry(), max_attempts=1,
                            fallbacks={"coder": ("coder-lite", "coder-mini")})
    healer.breakers.force_open("coder-lite")
    fn, calls = scripted({"coder": [False], "coder-mini": [True]})
    assert healer.run("coding", ("coder",), fn) == "done by coder-mini"
    assert calls == ["coder", "coder-mini"]
    # Typed events, not dicts validated again (issue 13).
    assert [e for e in recorded if isinstance(e, events.Fallback)] == [
        events.Fallback(from_agent="coder", to_agent="coder-mini", reason="RateLimitError")]
    recorded.clear()
    healer.breakers.force_open("coder")
    fn, calls = scripted({"coder-mini": [True]})
    healer.run("coding", ("coder",), fn)
    assert [e for e in recorded if isinstance(e, events.Fallback)] == [
        events.Fallback(from_agent="coder", to_agent="coder-mini", reason="circuit_open")]


def test_alerts_never_stop_the_work_of_a_task_entirely():
    remediator = AlertRemediator(Config())
    healer = Healer.from_config(Config(), remediator=remediator)
    for agent in ("coder", "coder-lite"):
        remediator.breakers.force_open(agent, "alert firing")
    calls = []
    assert healer.run("coding", ("coder", "coder-lite"), lambda agent: calls.append(agent) or "done") == "done"
    assert len(calls) == 1          # one attempt on one alert-opened agent, no retries


def test_a_breaker_opened_by_its_own_errors_is_not_a_last_resort():
    healer = Healer.from_config(Config())
    breaker = healer.breakers.get("coder")
    for _ in range(20):
        breaker.record_failure()
    with pytest.raises(CircuitOpenError):
        healer.run("coding", ("coder",), lambda agent: "never")


def test_a_last_resort_is_no_fallback_from_the_agent_to_itself():
    telemetry = Telemetry(Config())
    try:
        remediator = AlertRemediator(Config(), telemetry)
        healer = Healer.from_config(Config(), telemetry, remediator=remediator)
        for agent in ("coder", "coder-lite"):
            remediator.breakers.force_open(agent, "alert firing")
        assert healer.run("coding", ("coder", "coder-lite"), lambda agent: agent) in ("coder", "coder-lite")
        # The task ran on its first choice, the last resort: nothing was handed on.
        assert value_of(telemetry.store.render().decode(), catalog.FALLBACKS.name) is None
    finally:
        telemetry.shutdown()
