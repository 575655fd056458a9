"""The README's API, checked with mypy --strict, never run (tests/unit/test_typing.py): types flow through,
decorated functions keep their signatures, and each `type: ignore` is an error mypy must still find."""

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, assert_type

import agent_exporter
from agent_exporter import Telemetry, usage
from agent_exporter.config import Config
from agent_exporter.healing import Healer
from agent_exporter.telemetry import AgentRun, ToolRun, WorkflowRun

tel = Telemetry()
tel.no_such_method()        # type: ignore[attr-defined]   # an error only if Telemetry is not Any
agent_exporter.NoSuchName   # type: ignore[attr-defined]   # the lazy __getattr__ does not hide typos
assert_type(Telemetry.from_config("observability.yaml"), Telemetry)
handle = tel.serve("127.0.0.1:9464")
assert_type(handle.port, int | None)
assert_type(handle.url, str | None)
handle.stpo()               # type: ignore[union-attr]     # a typo in a method of the handle is an error
healer = Healer.from_config(Config(), tel)
assert_type(healer.run("coding", ("coder", "coder-lite"), lambda agent: len(agent)), int)
healer.run("coding", ("coder",), 42)   # type: ignore[arg-type]


@tel.agent_execution("planner", model="gpt-4o")
def plan(task: str, *, retries: int = 1) -> list[str]:
    return [task] * retries


@tel.agent_execution("coder")
async def code(task: str) -> int:
    return len(task)


@tel.tool_call("search", agent="planner")
def search(query: str) -> dict[str, int]:
    return {query: 1}


@tel.workflow("feature")
def stream(n: int) -> Iterator[int]:
    yield from range(n)


@tel.agent_execution("streamer")
async def astream(n: int) -> AsyncIterator[str]:
    for i in range(n):
        yield str(i)


def answer() -> int:
    with tel.agent_execution("answerer"):   # __exit__ never swallows: no "missing return" here
        return 42


assert_type(plan("x", retries=2), list[str])
coroutine: Coroutine[Any, Any, int] = code("x")   # an error if code() had lost its type
coroutine.close()
assert_type(search("q"), dict[str, int])
assert_type(stream(3), Iterator[int])
assert_type(astream(3), AsyncIterator[str])
plan(3)                     # type: ignore[arg-type]   # the signature is kept: a wrong argument is an error
plan("x", tries=2)          # type: ignore[call-arg]


async def main() -> None:
    assert_type(await code("abc"), int)
    assert_type(await healer.run_async("coding", ("coder",), code), int)
    await healer.run_async("coding", ("coder",), plan)   # type: ignore[arg-type]   # not awaitable
    async with tel.agent_execution("async_agent") as arun:
        assert_type(arun, AgentRun)
        arun.usage(input_tokens=1, output_tokens=2)
    async with tel.tool_call("fetch") as call:
        assert_type(call, ToolRun)
    async with tel.workflow("wf") as awf:
        assert_type(awf, WorkflowRun)
    async for item in astream(2):
        assert_type(item, str)


with tel.workflow("feature") as wf:
    assert_type(wf, WorkflowRun)
    with tel.agent_execution("coder", model="claude-sonnet", feature="login") as run:
        assert_type(run, AgentRun)
        run.first_token()
        run.usage(input_tokens=900, output_tokens=300, cache_read_tokens=12000, reasoning_tokens=150)
        run.usage(**usage.from_anthropic({"input_tokens": 1}))
        run.evaluate("tests_pass", 0.8)
        with tel.tool_call("run_tests") as tool:
            assert_type(tool, ToolRun)
            assert_type(tool.trace_id, str | None)
    tel.state_transition("coding", "reviewing")
tel.record({"type": "retry", "agent": "coder", "attempt": 2, "error_type": "RateLimited"})
assert_type(Telemetry.current_run(), AgentRun | None)
for value in stream(2):
    assert_type(value, int)
asyncio.run(main())
assert_type(answer(), int)
