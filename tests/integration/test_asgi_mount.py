"""Telemetry.asgi_app() mounted in an orchestrator's own Starlette app, under a path prefix, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from agent_exporter import Telemetry, catalog, stack
from agent_exporter.config import Config, HealingConfig
from agent_exporter.healing import AlertRemediator, Healer
from alertmanager_webhook import notification


def test_asgi_app_serves_metrics_ingest_and_healing_under_a_prefix():
    config = Config(healing=HealingConfig(fallbacks={"coder": ("coder-lite",)}))
    tel = Telemetry(config)
    remediator = AlertRemediator(config, tel)
    healer = Healer.from_config(config, tel, remediator=remediator)

    async def plan(request):
        with tel.agent_execution("planner", model="gpt-4o") as run:     # the orchestrator's own work
            run.usage(input_tokens=10, output_tokens=5)
        return JSONResponse({"planned": True})

    app = Starlette(routes=[Route("/plan", plan, methods=["POST"]),
                            Mount("/telemetry", app=tel.asgi_app(remediator=remediator))])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stack.wait_for(lambda: server.started, timeout=30, interval=0.01, what="uvicorn started")
    assert server.started
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    try:
        assert requests.post(url + "/plan", timeout=10).json() == {"planned": True}
        posted = requests.post(url + "/telemetry/v1/events", timeout=10, json=[
            {"type": "tool_call", "tool": "web_search", "status": "success", "duration_seconds": 0.25}])
        assert posted.json() == {"accepted": 1, "rejected": []}
        landing = requests.get(url + "/telemetry/", timeout=10)
        assert 'href="/telemetry/metrics"' in landing.text
        assert requests.get(url + "/telemetry/-/ready", timeout=10).status_code == 200
        assert requests.get(url + "/telemetry/nowhere", timeout=10).status_code == 404
        # Alertmanager's webhook opens the breaker the orchestrator's own healer uses.
        opened = requests.post(url + "/telemetry/v1/alertmanager", json=notification("firing"), timeout=10)
        assert opened.json()["opened"] == ["coder"]
        agents = requests.get(url + "/telemetry/v1/agents", timeout=10).json()["agents"]
        assert agents["coder"]["circuit_state"] == "open"
        assert healer.run("coding", ("coder",), lambda agent: agent) == "coder-lite"
        traces = requests.post(url + "/telemetry/v1/traces", timeout=10, json={})
        assert traces.status_code == 404
        assert traces.json() == {"error": "no such endpoint: /v1/traces (OTLP in is served by `agent-exporter serve`)"}
        metrics = requests.get(url + "/telemetry/metrics", timeout=10)
        assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(metrics.text) for s in family.samples}
        assert samples[(catalog.AGENT_EXECUTIONS.name, (("agent", "planner"), ("status", "success")))] == 1
        assert samples[(catalog.TOOL_CALLS.name, (("status", "success"), ("tool", "web_search")))] == 1
        assert samples[(catalog.EXPORTER_HTTP_REQUESTS.name, (("code", "200"), ("handler", "/v1/events")))] == 1
    finally:
        server.should_exit = True
        thread.join(10)
        tel.shutdown()


@pytest.mark.parametrize("arguments, field", [
    ({"bearer_token": ""}, "bearer_token"),             # an unset variable read as "": never "no auth"
    ({"bearer_token": " token"}, "bearer_token"),
    ({"bearer_token": 123}, "bearer_token"),
    ({"bearer_token": "sécret"}, "bearer_token"),       # sent as UTF-8, read as latin-1: never a match
    ({"max_body_bytes": 0}, "max_body_bytes"),
    ({"max_body_bytes": -1}, "max_body_bytes"),
    ({"max_body_bytes": 1.5}, "max_body_bytes"),
    ({"max_body_bytes": "10"}, "max_body_bytes"),
    ({"max_body_bytes": True}, "max_body_bytes"),
])
def test_asgi_app_refuses_arguments_it_could_not_act_on(arguments, field):
    tel = Telemetry(Config())
    with pytest.raises(ValueError, match=f"^{field}: "):
        tel.asgi_app(**arguments)
    tel.shutdown()


def test_asgi_app_answers_while_the_orchestrators_threads_are_all_busy():
    """Blocking work the orchestrator hands to asyncio.to_thread() (a synchronous LLM client) fills the
    loop's default executor; a scrape and a large batch still get their answers."""
    before = set(threading.enumerate())
    tel = Telemetry(Config())
    calling, released = threading.Event(), threading.Event()

    def blocking_client():
        calling.set()
        released.wait(60)

    @contextlib.asynccontextmanager
    async def one_default_thread(app):
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        yield

    async def call_model(request):
        await asyncio.to_thread(blocking_client)
        return JSONResponse({"answered": True})

    app = Starlette(routes=[Route("/call", call_model, methods=["POST"]), Mount("/telemetry", app=tel.asgi_app())],
                    lifespan=one_default_thread)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    stack.wait_for(lambda: server.started, timeout=30, interval=0.01, what="uvicorn started")
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    with ThreadPoolExecutor(1) as client:
        busy = client.submit(requests.post, url + "/call", timeout=70)
        try:
            assert calling.wait(30)       # the default executor's one thread is taken
            batch = [{"type": "tool_call", "tool": "web_search", "status": "success", "duration_seconds": 0.25}] * 3000
            posted = requests.post(url + "/telemetry/v1/events", json=batch, timeout=10)
            assert posted.json()["accepted"] == 3000      # over INLINE_BODY_BYTES: decoded in a thread
            metrics = requests.get(url + "/telemetry/metrics", timeout=10)
            assert f'{catalog.TOOL_CALLS.name}{{tool="web_search",status="success"}} 3000.0' in metrics.text
            assert not busy.done()
        finally:
            released.set()
            assert busy.result().json() == {"answered": True}
            server.should_exit = True
            thread.join(10)
            tel.shutdown()
    # A mounted app gets no lifespan of its own: the Telemetry's shutdown ends its threads.
    stack.wait_for(lambda: not [t for t in set(threading.enumerate()) - before
                                if t.name.startswith("agent-exporter-worker")],
                   timeout=10, interval=0.01, what="the app's worker threads ended")

