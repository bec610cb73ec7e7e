"""The calculator tool (SPEC 13, trust boundaries): bounded integers, off the event loop, at most 1 s,
and any failure an error result, never a 500 nor a run that stays running."""
import asyncio
import json
import math
import time

import pytest

from agents import calculator, tools
from agents.calculator import CalculationError, evaluate
from agents.sandbox import Sandbox
from tests.helpers import INTERNAL_KEY

HOSTILE = ["2**2**2**2**2", "9**9**9", "10**100*10**100", "1<<10**9", "round(1,-3*10**6)", "round(1, -10**7)",
           "(2**62)**(2**62)", "99999999999999999999*9", "1e308*10", "10.0**400", "round(1e300)", "(-8)**(1/3)",
           "-(2**62)*2-1", "exp(1000)"]


@pytest.mark.parametrize("expression, value", [
    ("6*7", 42), ("2**10", 1024), ("(1+2)/3", 1), ("round(3.14159, 2)", 3.14), ("2**62", 2**62),
    ("-2**62", -2**62), ("2.0**100", 2.0**100), ("2**-2", 0.25), ("7//2", 3), ("7 % 3", 1), ("sqrt(16)", 4),
    ("round(1234.5678, -2)", 1200), ("max(1, 2, 3)", 3), ("abs(-5)", 5), ("2^8", 256), ("3×4", 12),
    ("9223372036854775806 + 1", 2**63 - 1), ("round(5, -30)", 0), ("1e308", 1e308), ("(-8)**(1/1)", -8),
    ("-" * 199 + "1", -1), ("(" * 99 + "1" + ")" * 99, 1),
])
def test_normal_arithmetic(expression, value):
    assert evaluate(expression) == value


def test_floats_stay_floats_and_pi():
    assert math.isclose(evaluate("sin(pi/2) + log(e)"), 2.0)
    assert evaluate("0.1+0.2") == 0.1 + 0.2


@pytest.mark.parametrize("expression", HOSTILE)
def test_every_number_is_bounded(expression):
    start = time.perf_counter()
    with pytest.raises(CalculationError):
        evaluate(expression)
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize("expression, message", [
    ("1/0", "division by zero"), ("round(1, 31)", "digits"), ("round(1, 0.5)", "whole number"),
    ("sqrt(-1)", "domain"), ("__import__('os')", "unsupported"), ("1" * 201, "longer than"),
    ("2 +", "not an arithmetic expression"), ("True + 1", "unsupported"),
])
def test_errors_say_why(expression, message):
    with pytest.raises(CalculationError, match=message):
        evaluate(expression)


def test_integer_results_fit_64_bits():
    assert evaluate("3**39") == 3**39
    for expression in ("3**40", "2**63", "-(2**62)*2-1", "9223372036854775807 + 1"):
        with pytest.raises(CalculationError, match="64 bits"):
            evaluate(expression)
    assert calculator.MAX_INT == 2**63 - 1


# -- through the server ------------------------------------------------------------------------

def headers(user="alice"):
    return {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": user, "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}


async def call_tool(http, expression, **kw):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "calculator", "arguments": {"expression": expression}}}
    resp = await http.fetch("/mcp", method="POST", body=json.dumps(body), headers=headers(), raise_error=False, **kw)
    assert resp.code == 200, (resp.code, resp.body)
    return json.loads(resp.body)["result"]


async def watch_health(http, until: asyncio.Future) -> list[float]:
    """GET /health over and over until `until` is done: the latency of each."""
    latencies = []
    while not until.done():
        start = time.perf_counter()
        resp = await http.fetch("/health", raise_error=False)
        assert resp.code == 200
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(0.005)
    return latencies


async def test_hostile_expressions_over_mcp_are_fast_error_results(app, http_server_client):
    for expression in HOSTILE:
        start = time.perf_counter()
        call = asyncio.ensure_future(call_tool(http_server_client, expression))
        latencies = await watch_health(http_server_client, call)
        result = call.result()
        assert time.perf_counter() - start < 1.5, expression
        assert result["isError"] is True, (expression, result)
        assert result["content"][0]["text"], expression
        assert max(latencies) < 0.6, (expression, latencies)  # blocked, a probe would wait the 1 s limit


async def test_normal_arithmetic_over_mcp(app, http_server_client):
    for expression, value in (("6*7", 42), ("2**10", 1024), ("(1+2)/3", 1), ("round(3.14159, 2)", 3.14)):
        result = await call_tool(http_server_client, expression)
        assert not result["isError"] and result["structuredContent"] == {"expression": expression, "result": value}


async def test_health_answers_while_a_runaway_evaluation_is_stopped_at_1_s(app, http_server_client, monkeypatch):
    runaway = Sandbox("tests.agents.sandbox_jobs:slow_evaluate", workers=1)
    monkeypatch.setattr(tools, "CALCULATOR", runaway)
    try:
        start = time.perf_counter()
        call = asyncio.ensure_future(call_tool(http_server_client, "6*7"))
        pids: list[int] = []
        for _ in range(500):  # its worker starts (well under a second, even on a loaded machine)
            if pids := runaway.pids:
                break
            await asyncio.sleep(0.01)
        latencies = await watch_health(http_server_client, call)
        elapsed = time.perf_counter() - start
        result = call.result()
        assert result["isError"] and "longer than 1 s" in result["content"][0]["text"]
        assert 0.9 < elapsed < 6.5  # the 1 s limit, after the worker's start
        assert len(latencies) > 20 and max(latencies) < 0.6, latencies  # blocked: ~1 s
        assert len(pids) == 1 and runaway.pids == []  # the worker was killed at the limit
    finally:
        runaway.close()


async def test_a_huge_result_through_a_demo_run_ends_the_run(alice):
    task_id = await alice.start_ok("calc", "/tool calculator 10**100*10**100")
    code, frames = await asyncio.wait_for(alice.stream(task_id), 10)
    assert code == 200 and frames[-1].event == "done"
    chunks = [c for f in frames if f.id is not None and f.event is None for c in f.chunks]
    error = next(c for c in chunks if c["type"] == "tool-output-error")
    assert "64 bits" in error["errorText"]
    assert (await alice.task(task_id))["status"] == "completed"
    assert await alice.start_ok("calc", "/tool calculator 6*7")  # the thread is free again
