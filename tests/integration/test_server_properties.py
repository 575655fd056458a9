"""Property-based: arbitrary JSON and arbitrary bytes at /v1/events never make a 5xx, never take the
server down, and every valid event in a mix is counted exactly once."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from agent_exporter import catalog

from exporters import running_exporter

SETTINGS = settings(max_examples=120, deadline=None)

# Label values: any text a JSON string can carry as UTF-8 (no lone surrogates), 1..40 characters.
names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
durations = st.floats(min_value=0, max_value=1e6, allow_nan=False)
counts = st.integers(min_value=0, max_value=10**9)
statuses = st.sampled_from(["success", "error"])
trace_ids = st.text("0123456789abcdef", min_size=32, max_size=32)

valid_events = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("agent_execution"), "agent": names, "status": statuses, "duration_seconds": durations},
        optional={"model": names, "input_tokens": counts, "output_tokens": counts,
                  "cost_usd": st.floats(min_value=0, max_value=1e6, allow_nan=False),
                  "error_type": names, "trace_id": trace_ids, "unknown_field": st.integers()}),
    st.fixed_dictionaries(
        {"type": st.just("tool_call"), "tool": names, "status": statuses, "duration_seconds": durations},
        optional={"agent": names, "error_type": names}),
    st.fixed_dictionaries({"type": st.just("state_transition"), "from_state": names, "to_state": names},
                          optional={"workflow": names}),
    st.fixed_dictionaries({"type": st.just("retry"), "agent": names, "attempt": st.integers(1, 100)}),
    st.fixed_dictionaries({"type": st.just("fallback"), "from_agent": names, "to_agent": names}),
    st.fixed_dictionaries({"type": st.just("circuit_state"), "agent": names,
                           "state": st.sampled_from(["closed", "half_open", "open"])}),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | names,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=12)
# Certainly invalid: not an object, or an object with neither `type` nor the legacy `agent_name`.
invalid_items = json_values.filter(
    lambda v: not isinstance(v, dict) or ("type" not in v and "agent_name" not in v))
# Objects that look like events but break one rule: these exercise the field-level validation.
broken_events = st.one_of(
    valid_events.map(lambda e: {**e, "type": e["type"].upper()}),
    valid_events.map(lambda e: {k: v for k, v in e.items() if k != "type"} | {"type": 7}),
    st.fixed_dictionaries({"type": st.just("agent_execution"), "agent": names, "status": statuses,
                           "duration_seconds": st.floats(max_value=-1e-9, allow_infinity=False) | st.booleans() | names}),
    st.fixed_dictionaries({"type": st.just("tool_call"), "tool": st.just(""), "status": statuses,
                           "duration_seconds": durations}),
)
# (is it valid?, the item)
items = valid_events.map(lambda e: (True, e)) | st.one_of(invalid_items, broken_events).map(lambda e: (False, e))


@pytest.fixture(scope="module")
def server():
    with running_exporter() as handle:
        yield handle


def counters(url: str) -> Counter:
    """Events accepted by type, and the per-kind series sums each valid event adds to."""
    text = requests.get(url + "/metrics", timeout=30).text
    totals: Counter = Counter()
    sums = {catalog.AGENT_EXECUTIONS.name: "agent_execution", catalog.TOOL_CALLS.name: "tool_call",
            catalog.STATE_TRANSITIONS.name: "state_transition", catalog.RETRIES.name: "retry",
            catalog.FALLBACKS.name: "fallback"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == catalog.EXPORTER_EVENTS.name:
                totals["events:" + sample.labels["type"]] += sample.value
            elif sample.name in sums:
                totals["series:" + sums[sample.name]] += sample.value
    return totals


def encode(mix: list, ndjson: bool, gzipped: bool) -> tuple[bytes, dict]:
    if ndjson:
        body = "\n".join(json.dumps(v) for v in mix).encode()
    else:
        body = json.dumps(mix).encode()
    headers = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return body, headers


@SETTINGS
@given(mix=st.lists(items, max_size=30), ndjson=st.booleans(), gzipped=st.booleans())
def test_every_valid_event_is_counted_exactly_once(server, mix, ndjson, gzipped):
    before = counters(server.url)
    body, headers = encode([v for _, v in mix], ndjson, gzipped)
    response = requests.post(server.url + "/v1/events", data=body, headers=headers, timeout=30)

    valid = [v for ok, v in mix if ok]
    invalid_indexes = [i for i, (ok, _) in enumerate(mix) if not ok]
    assert response.status_code == (200 if valid else 400)
    answer = response.json()
    assert answer["accepted"] == len(valid)
    assert [r["index"] for r in answer["rejected"]] == invalid_indexes

    after = counters(server.url)
    by_type = Counter(v["type"] for v in valid)
    for kind in ("agent_execution", "tool_call", "state_transition", "retry", "fallback", "circuit_state"):
        assert after["events:" + kind] - before["events:" + kind] == by_type[kind]
    for kind in ("agent_execution", "tool_call", "state_transition", "retry", "fallback"):
        assert after["series:" + kind] - before["series:" + kind] == by_type[kind]


@SETTINGS
@given(body=st.binary(max_size=2048),
       content_type=st.sampled_from(["application/json", "application/x-ndjson", "text/plain"]),
       gzipped=st.booleans())
def test_arbitrary_bytes_never_make_a_5xx(server, body, content_type, gzipped):
    before = counters(server.url)
    headers = {"Content-Type": content_type}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    response = requests.post(server.url + "/v1/events", data=body, headers=headers, timeout=30)
    assert response.status_code in (200, 400, 413, 415)
    accepted = response.json().get("accepted", 0)
    after = counters(server.url)
    assert sum(after[k] - before[k] for k in after if k.startswith("events:")) == accepted
    assert requests.get(server.url + "/-/healthy", timeout=30).status_code == 200
