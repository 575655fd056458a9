"""The legacy `observability.tracer` API, on GenAI semantic-convention spans.

`get_tracer()` returns the process-wide `OrchestratorTracer`, as before;
`.tracer` is an OpenTelemetry tracer (legacy code calls
`get_tracer().tracer.start_as_current_span(...)`) and `.provider` the tracer
provider (None when tracing is disabled in the config), which the shared
tracer also installs as OpenTelemetry's global one, as before.

What changed underneath: agent spans are named `invoke_agent {agent}` instead
of `agent.execute.{agent}`, tool spans `execute_tool {tool}`, and a state
transition is an event on the current span and a count in
`orchestrator_state_transitions_total`.  Tool parameters and the context of
`trace_error` reach spans only with `tracing.capture_content`.
`trace_tool_call` and `trace_error` come after the fact and carry no
duration, so they make spans only; agent execution metrics come from the
metrics collector shim (or the new API), not from these spans, so nothing is
counted twice.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from opentelemetry import trace

from ..telemetry import Telemetry
from . import default_telemetry

# The legacy tracer put str(context) on error spans; it may hold user data, so only with capture_content.
ERROR_CONTEXT = "orchestrator.error.context"


class OrchestratorTracer:
    """Main tracer for orchestrator operations (legacy API).

    `service_name` is the legacy argument: it names the service of the shared
    default Telemetry (see compat.default_telemetry); `telemetry` records elsewhere.
    """

    def __init__(self, service_name: str | None = None, *, telemetry: Telemetry | None = None):
        self.telemetry = telemetry or default_telemetry(service_name)
        self.provider = self.telemetry.tracer_provider
        if telemetry is None and self.provider is not None and trace.get_tracer_provider() is not self.provider:
            # As the legacy tracer did: spans the application starts with trace.get_tracer() go where ours go.
            trace.set_tracer_provider(self.provider)
        self.tracer = self.telemetry.tracer
        self._spans = self.telemetry.spans
        self._capture_content = self.telemetry.config.tracing.capture_content

    def start_agent_execution(self, agent_name: str, context: dict[str, Any]) -> trace.Span:
        """Start an invoke_agent span; the caller ends it (span.end()), as before."""
        context = context or {}
        return self._spans.start_agent(
            agent_name, model=context.get("model"), feature=context.get("feature"),
            priority=context.get("priority"), request_id=context.get("request_id"))

    def trace_state_transition(self, from_state: str, to_state: str, context: dict[str, Any]) -> None:
        """A transition; the context's `workflow` and `agent`, when they are names, label it."""
        # The legacy context is free-form (it only ever became str(context)): an agent object in it is no error.
        context = context or {}
        names = {key: context[key] for key in ("workflow", "agent") if isinstance(context.get(key), str)}
        self.telemetry.state_transition(from_state, to_state, **names)

    def trace_tool_call(self, tool_name: str, parameters: dict[str, Any], result: Any) -> None:
        """A zero-length execute_tool span; an exception as `result` marks it failed."""
        now = time.time_ns()
        arguments = _arguments(parameters) if self._capture_content else None
        span = self._spans.start_tool(tool_name, arguments=arguments, start_time=now)
        self._spans.end_tool(span, exception=result if isinstance(result, BaseException) else None,
                             end_time=now)

    def trace_error(self, error: Exception, context: dict[str, Any]) -> None:
        """Record `error` on the current span, or on an `error` span when none is current."""
        self._spans.error(error, {ERROR_CONTEXT: str(context) if self._capture_content else None})


def _arguments(parameters: Any) -> str:
    """Tool parameters as JSON; what JSON cannot hold (tuple keys, a cycle) as the legacy str() of them."""
    try:
        return json.dumps(parameters, default=str)
    except (TypeError, ValueError):
        return str(parameters)


_lock = threading.Lock()
_tracer_instance: OrchestratorTracer | None = None


def get_tracer() -> OrchestratorTracer:
    """The singleton tracer, recording into compat.default_telemetry()."""
    global _tracer_instance
    with _lock:
        if _tracer_instance is None:
            _tracer_instance = OrchestratorTracer()
        return _tracer_instance


__all__ = ["OrchestratorTracer", "get_tracer"]
