"""An OpenAI client instrumented with OpenTelemetry's GenAI instrumentation, exporting OTLP to agent-exporter.

    pip install 'agent-exporter[test]'      # openai and opentelemetry-instrumentation-openai-v2
    python examples/otlp_openai_agent.py

Everything runs on loopback, nothing leaves the machine: a fake OpenAI-compatible
model server, the exporter (its OTLP/gRPC receiver and /metrics), and the
application, which uses the real `openai` client and the unmodified
opentelemetry-instrumentation-openai-v2 under an agent span of its own.  The
script prints the catalog metrics the spans became.  Point the same
application at a running `agent-exporter serve` instead by changing only the
OTLP endpoint (docs/otlp.md).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from openai import OpenAI
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from agent_exporter import Telemetry
from agent_exporter.config import Config, MetricsConfig, ModelPrice
from agent_exporter.otlp import OTLPReceiver

USAGE = {"prompt_tokens": 850, "completion_tokens": 120, "total_tokens": 970}


class FakeModel(BaseHTTPRequestHandler):
    """POST /v1/chat/completions: a fixed answer and usage, as an OpenAI-compatible server sends them."""

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({
            "id": "chatcmpl-example", "object": "chat.completion", "created": 1760000000, "model": request["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Done."}}],
            "usage": USAGE,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def application(otlp_endpoint: str, model_url: str) -> None:
    """The instrumented application: only its OTLP endpoint knows about agent-exporter."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    client = OpenAI(base_url=model_url, api_key="not-needed", max_retries=0)
    tracer = provider.get_tracer("support-bot")
    for ticket in ("refund for order 42", "password reset", "invoice copy"):
        # An agent span as the GenAI conventions spell it; the chat spans inside come from the instrumentation.
        with tracer.start_as_current_span("invoke_agent triage", kind=SpanKind.INTERNAL, attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": ticket}])
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "summarise"}])
    instrumentor.uninstrument()
    provider.shutdown()     # flushes the spans to the exporter


def main() -> None:
    model = ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    threading.Thread(target=model.serve_forever, daemon=True).start()

    config = Config(metrics=MetricsConfig(prices={"gpt-4o-mini": ModelPrice(input=0.15, output=0.60)}))
    telemetry = Telemetry(config)
    receiver = OTLPReceiver(telemetry, config)
    grpc = receiver.start_grpc("127.0.0.1:0")
    http = telemetry.serve("127.0.0.1:0")
    metrics_url = f"{http.url}/metrics"
    try:
        application(f"http://127.0.0.1:{grpc.port}", f"http://127.0.0.1:{model.server_port}/v1")
        with urllib.request.urlopen(metrics_url, timeout=10) as reply:
            metrics = reply.read().decode()
    finally:
        receiver.close()
        http.stop()
        telemetry.shutdown()
        model.shutdown()
    print(f"spans went over OTLP/gRPC to 127.0.0.1:{grpc.port}; {metrics_url} now has:")
    for line in metrics.splitlines():
        if line.startswith(("orchestrator_agent_executions_total", "orchestrator_llm_tokens_total",
                            "orchestrator_llm_cost_usd_total", "orchestrator_exporter_otlp_spans_total")):
            print("  " + line)


if __name__ == "__main__":
    main()
