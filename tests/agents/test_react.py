"""The react agent against a scripted OpenAI-compatible server (tests/agents/fake_openai.py)."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest

from agents import AgentDef, AgentRegistry
from agents.react import history_messages, tool_schemas
from agents.tools import BUILTIN_TOOLS
from config import check_file
from server import Config, Parley
from tests.agents import fake_openai as fo
from tests.helpers import INTERNAL_KEY, text_of

INSTRUCTIONS = "You are a helpful assistant."


@pytest.fixture
def fake(io_loop):
    server = fo.FakeOpenAI()
    server.start()
    yield server
    io_loop.run_sync(server.stop)


@pytest.fixture
def refused_url():
    """A URL where nothing listens: a bound socket that never listens refuses connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


def _agent(agent_id: str, llm: str, **more):
    return {"id": agent_id, "name": agent_id.title(), "type": "react", "llm": llm,
            "tools": ["calculator", "clock", "wait_approval"], "instructions": INSTRUCTIONS, **more}


@pytest.fixture
def parley_config(tmp_path, fake, refused_url):
    extra = {
        "llm": {
            "fake": {"base_url": fake.base_url, "model": "m", "timeout_s": 10},
            "impatient": {"base_url": fake.base_url, "model": "m", "timeout_s": 0.3},
            "down": {"base_url": refused_url, "model": "m"},
        },
        "agents": [
            _agent("assistant", "fake"),
            _agent("impatient", "impatient"),
            _agent("unreachable", "down"),
            _agent("brief", "fake", max_steps=2),
        ],
    }
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, extra=extra)


@pytest.fixture
def parley(io_loop, parley_config):
    server = Parley(parley_config)
    server.agents.configure(parley_config.extra)  # until server.py's Parley.open() does it
    io_loop.run_sync(server.open)
    yield server
    io_loop.run_sync(server.close)

    async def close_providers():
        for provider in server.agents.providers.values():
            await provider.aclose()

    io_loop.run_sync(close_providers)


def chunks_of(frames):
    return [c for f in frames if f.id is not None and f.event is None for c in f.chunks]


def types_of(frames):
    return [c["type"] for c in chunks_of(frames)]


async def run_to_end(client, thread, content, agent="assistant"):
    task_id = await client.start_ok(thread, content, agentId=agent)
    code, frames = await client.stream(task_id)
    assert code == 200
    return task_id, frames, await client.task(task_id)


async def assert_failed(client, parley, thread, task_id, frames, info, reason):
    assert info["status"] == "failed", info
    assert info["error"]["reason"] == reason, info["error"]
    assert info["error"]["message"]
    assert frames[-1].event == "error"
    assert reason in frames[-1].data or info["error"]["message"] in frames[-1].data
    assert parley.runs.live_runs == 0
    # The thread's lock is free: the next run starts (and the demo agent answers it).
    next_id = await client.start_ok(thread, "again", agentId="demo")
    _, next_frames = await client.stream(next_id)
    assert next_frames[-1].event == "done"


# -- answers -------------------------------------------------------------------------


async def test_text_answer_streams_and_completes(alice, fake):
    fake.script(fo.text("Hello there, how can I help you today?", pieces=4))
    _, frames, info = await run_to_end(alice, "t-text", "hi")
    assert info["status"] == "completed"
    assert frames[-1].event == "done"
    assert text_of(frames) == "Hello there, how can I help you today?"
    types = types_of(frames)
    assert types.count("text-delta") == 4
    assert types.count("text-start") == 1 and types.count("text-end") == 1
    assert types.index("text-start") < types.index("text-delta") < types.index("text-end")
    assert types[0] == "start" and types[-1] == "finish"
    # What the model got: the instructions, then the user's message; stream on; the agent's tools.
    [request] = fake.requests
    assert request["model"] == "m" and request["stream"] is True
    assert request["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "hi"},
    ]
    assert sorted(t["function"]["name"] for t in request["tools"]) == ["calculator", "clock", "wait_approval"]
    calc = next(t for t in request["tools"] if t["function"]["name"] == "calculator")
    assert calc["type"] == "function"
    assert calc["function"]["parameters"] == BUILTIN_TOOLS["calculator"].input_schema
    # No key configured: a placeholder goes out.
    assert fake.headers[0]["Authorization"] == "Bearer not-needed"
    messages = json.loads((await alice.request("GET", "/messages/t-text")).body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert "".join(p.get("text", "") for p in messages[1]["parts"]) == "Hello there, how can I help you today?"


async def test_history_goes_to_the_model(alice, fake):
    fake.script(fo.text("First answer."), fo.text("Second answer."))
    await run_to_end(alice, "t-hist", "first question")
    _, _, info = await run_to_end(alice, "t-hist", "second question")
    assert info["status"] == "completed"
    assert fake.requests[1]["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "second question"},
    ]


async def test_api_key_comes_from_the_named_env_var(alice, fake, parley, monkeypatch):
    monkeypatch.setenv("PARLEY_TEST_LLM_KEY", "sk-test-123")
    parley.agents.configure({
        "llm": {"keyed": {"base_url": fake.base_url, "model": "m2", "api_key_env": "PARLEY_TEST_LLM_KEY"}},
        "agents": [_agent("keyed", "keyed")],
    })
    fake.script(fo.text("ok"))
    _, _, info = await run_to_end(alice, "t-key", "hi", agent="keyed")
    assert info["status"] == "completed"
    assert fake.headers[0]["Authorization"] == "Bearer sk-test-123"
    assert fake.requests[0]["model"] == "m2"


async def test_missing_api_key_variable_fails_clearly(alice, fake, parley, monkeypatch):
    monkeypatch.delenv("PARLEY_TEST_NO_SUCH_KEY", raising=False)
    parley.agents.configure({
        "llm": {"nokey": {"base_url": fake.base_url, "model": "m", "api_key_env": "PARLEY_TEST_NO_SUCH_KEY"}},
        "agents": [_agent("nokey", "nokey")],
    })
    task_id, frames, info = await run_to_end(alice, "t-nokey", "hi", agent="nokey")
    await assert_failed(alice, parley, "t-nokey", task_id, frames, info, "llm_config")
    assert "PARLEY_TEST_NO_SUCH_KEY" in info["error"]["message"]
    assert fake.requests == []


# -- tools ---------------------------------------------------------------------------


async def test_tool_call_with_fragmented_arguments(alice, fake):
    fake.script(
        fo.tool_calls(("call_calc1", "calculator", ['{"expr', 'ession": "', '6*7', '"}'])),
        fo.text("6*7 is 42."),
    )
    _, frames, info = await run_to_end(alice, "t-tool", "what is 6*7?")
    assert info["status"] == "completed" and frames[-1].event == "done"
    chunks = chunks_of(frames)
    types = [c["type"] for c in chunks]
    start = types.index("tool-input-start")
    assert chunks[start] == {"type": "tool-input-start", "toolCallId": "call_calc1", "toolName": "calculator"}
    deltas = [c["inputTextDelta"] for c in chunks if c["type"] == "tool-input-delta"]
    assert deltas == ['{"expr', 'ession": "', '6*7', '"}']  # streamed as the fragments arrived
    available = next(c for c in chunks if c["type"] == "tool-input-available")
    assert available["input"] == {"expression": "6*7"} and available["toolName"] == "calculator"
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output["toolCallId"] == "call_calc1" and output["output"]["result"] == 42
    assert start < types.index("tool-input-delta") < types.index("tool-input-available") \
        < types.index("tool-output-available") < types.index("text-start")
    assert text_of(frames) == "6*7 is 42."
    # The second request carries the call and its result.
    assert len(fake.requests) == 2
    second = fake.requests[1]["messages"]
    assert second[:2] == [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": "what is 6*7?"}]
    assistant, tool = second[2], second[3]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"] == [{"id": "call_calc1", "type": "function",
                                        "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_calc1"
    assert json.loads(tool["content"]) == {"expression": "6*7", "result": 42}
    # The stored assistant message holds the tool part; a later turn sends it back as a call + result.
    fake.script(fo.text("Sure."))
    await run_to_end(alice, "t-tool", "thanks")
    third = fake.requests[2]["messages"]
    assert [m["role"] for m in third] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert third[2]["tool_calls"][0]["id"] == "call_calc1"
    assert json.loads(third[2]["tool_calls"][0]["function"]["arguments"]) == {"expression": "6*7"}
    assert json.loads(third[3]["content"])["result"] == 42
    assert third[4] == {"role": "assistant", "content": "6*7 is 42."}


async def test_two_tool_calls_in_one_step_and_a_tool_error(alice, fake):
    fake.script(
        fo.tool_calls(("call_a", "calculator", ['{"expression": "1/0"}']),
                      ("call_b", "clock", ['{"timezone":', ' "UTC"}'])),
        fo.text("Division by zero; the clock works."),
    )
    _, frames, info = await run_to_end(alice, "t-two", "do both")
    assert info["status"] == "completed"
    chunks = chunks_of(frames)
    error = next(c for c in chunks if c["type"] == "tool-output-error")
    assert error["toolCallId"] == "call_a" and "division by zero" in error["errorText"]
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output["toolCallId"] == "call_b" and output["output"]["timezone"] == "UTC"
    tools = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == ["call_a", "call_b"]
    assert json.loads(tools[0]["content"]) == {"error": "division by zero"}


async def test_invalid_tool_arguments_are_reported_to_the_model(alice, fake):
    fake.script(
        fo.tool_calls(("call_bad", "calculator", ['{"expression": ', '"2+'])),  # never closed
        fo.text("Sorry, let me answer directly: 4."),
    )
    _, frames, info = await run_to_end(alice, "t-badargs", "2+2?")
    assert info["status"] == "completed"
    chunks = chunks_of(frames)
    error = next(c for c in chunks if c["type"] == "tool-output-error")
    assert error["toolCallId"] == "call_bad" and "not valid JSON" in error["errorText"]
    assert not any(c["type"] == "tool-output-available" for c in chunks)
    tool = next(m for m in fake.requests[1]["messages"] if m["role"] == "tool")
    assert "not valid JSON" in json.loads(tool["content"])["error"]


async def test_unknown_tool_is_reported_to_the_model(alice, fake):
    fake.script(fo.tool_calls(("call_x", "rm_rf", ["{}"])), fo.text("I cannot do that."))
    _, frames, info = await run_to_end(alice, "t-unknown", "delete everything")
    assert info["status"] == "completed"
    error = next(c for c in chunks_of(frames) if c["type"] == "tool-output-error")
    assert "unknown tool" in error["errorText"]
    tool = next(m for m in fake.requests[1]["messages"] if m["role"] == "tool")
    assert json.loads(tool["content"]) == {"error": "unknown tool: rm_rf"}


async def test_wait_approval_parks_and_the_signal_resumes(alice, fake, parley):
    fake.script(
        fo.tool_calls(("call_ok", "wait_approval", ['{"prompt": "Refund ', 'order 7?"}'])),
        fo.text("The refund of order 7 is approved."),
    )
    task_id = await alice.start_ok("t-park", "refund order 7", agentId="assistant")
    info = await alice.wait_status(task_id, "parked")
    assert info["parked"]["prompt"] == "Refund order 7?"
    assert len(fake.requests) == 1
    resp = await alice.start("t-park", "next")  # the parked run holds the thread
    assert resp.code == 409
    await parley.runs.signal(task_id, info["parked"]["correlationKey"], {"approved": True, "reason": "ok"})
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "done"
    assert (await alice.task(task_id))["status"] == "completed"
    chunks = chunks_of(frames)
    types = [c["type"] for c in chunks]
    assert types.index("tool-input-available") < types.index("data-parked") < types.index("tool-output-available")
    output = next(c for c in chunks if c["type"] == "tool-output-available")
    assert output == {"type": "tool-output-available", "toolCallId": "call_ok", "output": {"approved": True, "reason": "ok"}}
    assert "The refund of order 7 is approved." in text_of(frames)
    # The model got the whole conversation back, with the approval as the tool's result.
    second = fake.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[2]["tool_calls"][0]["function"]["name"] == "wait_approval"
    assert second[3] == {"role": "tool", "tool_call_id": "call_ok", "content": '{"approved":true,"reason":"ok"}'}
    messages = json.loads((await alice.request("GET", "/messages/t-park")).body)["messages"]
    parts = messages[-1]["parts"]
    tool_part = next(p for p in parts if p["type"] == "tool-wait_approval")
    assert tool_part["state"] == "output-available" and tool_part["output"]["approved"] is True


async def test_park_then_the_other_calls_of_the_step_run_after_the_signal(alice, fake, parley):
    fake.script(
        fo.tool_calls(("call_w", "wait_approval", ['{"prompt": "Go?"}']),
                      ("call_c", "calculator", ['{"expression": "2**10"}'])),
        fo.text("Approved, and 2**10 = 1024."),
    )
    task_id = await alice.start_ok("t-park2", "approve then compute", agentId="assistant")
    info = await alice.wait_status(task_id, "parked")
    await parley.runs.signal(task_id, info["parked"]["correlationKey"], {"approved": False})
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "done"
    outputs = [c for c in chunks_of(frames) if c["type"] == "tool-output-available"]
    assert [o["toolCallId"] for o in outputs] == ["call_w", "call_c"]
    assert outputs[1]["output"]["result"] == 1024
    tools = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert [t["tool_call_id"] for t in tools] == ["call_w", "call_c"]
    assert json.loads(tools[0]["content"]) == {"approved": False}


async def test_a_parked_run_resumes_after_a_restart(alice, fake, parley, parley_config):
    fake.script(
        fo.tool_calls(("call_r", "wait_approval", ['{"prompt": "Ship it?"}'])),
        fo.text("Shipped."),
    )
    task_id = await alice.start_ok("t-restart", "ship it", agentId="assistant")
    info = await alice.wait_status(task_id, "parked")
    await parley.close()
    again = Parley(parley_config)
    again.agents.configure(parley_config.extra)
    await again.open()
    try:
        await again.runs.signal(task_id, info["parked"]["correlationKey"], {"approved": True})
        for _ in range(500):
            task = await again.runs.get_task(task_id)
            if not task.live:
                break
            await asyncio.sleep(0.01)
        assert task.status == "completed", task
        second = fake.requests[1]["messages"]
        assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
        assert json.loads(second[3]["content"]) == {"approved": True}
        [assistant] = [m for m in await again.runs.history("t-restart") if m["role"] == "assistant"]
        assert "Shipped." in "".join(p.get("text", "") for p in assistant["parts"])
    finally:
        await again.close()
        for provider in again.agents.providers.values():
            await provider.aclose()


async def test_max_steps(alice, fake, parley):
    fake.script(*(fo.tool_calls((f"call_{i}", "clock", ["{}"])) for i in range(2)))
    task_id, frames, info = await run_to_end(alice, "t-steps", "loop forever", agent="brief")
    await assert_failed(alice, parley, "t-steps", task_id, frames, info, "max_steps")
    assert len(fake.requests) == 2


# -- provider failures -----------------------------------------------------------------


async def test_malformed_chunk_fails_the_run(alice, fake, parley):
    fake.script(fo.malformed())
    task_id, frames, info = await run_to_end(alice, "t-malformed", "hi")
    await assert_failed(alice, parley, "t-malformed", task_id, frames, info, "llm_bad_response")
    assert "malformed" in info["error"]["message"]
    types = types_of(frames)
    assert types.count("text-start") == types.count("text-end") == 1  # the open part was closed


async def test_dropped_connection_fails_the_run(alice, fake, parley):
    fake.script(fo.dropped())
    task_id, frames, info = await run_to_end(alice, "t-dropped", "hi")
    await assert_failed(alice, parley, "t-dropped", task_id, frames, info, "llm_connection_lost")
    assert text_of(frames).startswith("one ")


async def test_stream_without_finish_reason_fails_the_run(alice, fake, parley):
    reply = fo.text("cut short")
    reply.chunks = reply.chunks[:-1]  # no finish_reason ...
    reply.done = False  # ... and no [DONE]: the server just ended the body
    fake.script(reply)
    task_id, frames, info = await run_to_end(alice, "t-nofinish", "hi")
    await assert_failed(alice, parley, "t-nofinish", task_id, frames, info, "llm_connection_lost")


async def test_http_500_fails_the_run(alice, fake, parley):
    fake.script(fo.http_error(500, "The engine is on fire."))
    task_id, frames, info = await run_to_end(alice, "t-500", "hi")
    await assert_failed(alice, parley, "t-500", task_id, frames, info, "llm_http_error")
    assert "500" in info["error"]["message"] and "The engine is on fire." in info["error"]["message"]
    assert len(fake.requests) == 1  # no retries


async def test_error_event_inside_the_stream_fails_the_run(alice, fake, parley):
    fake.script(fo.Reply(['{"error": {"message": "model overloaded", "type": "server_error"}}']))
    task_id, frames, info = await run_to_end(alice, "t-errevent", "hi")
    await assert_failed(alice, parley, "t-errevent", task_id, frames, info, "llm_error")
    assert "model overloaded" in info["error"]["message"]


async def test_connection_refused_is_llm_unavailable(alice, parley):
    task_id, frames, info = await run_to_end(alice, "t-refused", "hi", agent="unreachable")
    await assert_failed(alice, parley, "t-refused", task_id, frames, info, "llm_unavailable")
    assert "cannot be reached" in info["error"]["message"]


async def test_slow_server_times_out(alice, fake, parley):
    fake.script(fo.slow(30))
    loop = asyncio.get_running_loop()
    began = loop.time()
    task_id, frames, info = await run_to_end(alice, "t-slow", "hi", agent="impatient")
    assert loop.time() - began < 5
    await assert_failed(alice, parley, "t-slow", task_id, frames, info, "llm_timeout")


async def test_stalled_stream_times_out(alice, fake, parley):
    fake.script(fo.stalled(after=2))
    task_id, frames, info = await run_to_end(alice, "t-stall", "hi", agent="impatient")
    await assert_failed(alice, parley, "t-stall", task_id, frames, info, "llm_timeout")


async def test_total_timeout_bounds_a_trickling_stream(alice, fake, parley):
    parley.agents.configure({
        "llm": {"bounded": {"base_url": fake.base_url, "model": "m", "timeout_s": 5, "total_timeout_s": 0.4}},
        "agents": [_agent("bounded", "bounded")],
    })
    reply = fo.text(" ".join(["word"] * 40), pieces=40)
    reply.chunk_delay_s = 0.05  # each piece comes in time, the whole does not
    fake.script(reply)
    task_id, frames, info = await run_to_end(alice, "t-trickle", "hi", agent="bounded")
    await assert_failed(alice, parley, "t-trickle", task_id, frames, info, "llm_timeout")


async def test_cancel_during_a_model_call(alice, fake, parley):
    fake.script(fo.stalled(after=2))
    task_id = await alice.start_ok("t-cancel", "hi", agentId="assistant")
    for _ in range(500):
        if fake.requests:
            break
        await asyncio.sleep(0.01)
    resp = await alice.request("DELETE", f"/task/{task_id}")
    assert resp.code in (200, 202, 204), resp.body
    _, frames = await alice.stream(task_id)
    assert frames[-1].event == "error"
    assert (await alice.task(task_id))["status"] == "cancelled"


# -- configuration and conversion (no server) ---------------------------------------------


def test_configure_rejects_an_agent_without_a_provider():
    registry = AgentRegistry()
    with pytest.raises(ValueError, match=r"llm 'nope' names no configured provider"):
        registry.configure({"agents": [{"id": "a", "type": "react", "llm": "nope"}]})
    assert check_file({"llm": {"x": {"model": "m"}}})[1] == [
        "[llm.x] base_url: missing (expected an http(s) URL such as https://host.example)"]
    assert check_file({"agents": [{"id": "a", "type": "graph"}]})[1] == [
        '[[agents]] #1 type: expected one of react, demo, got "graph"']
    with pytest.raises(ValueError, match=r"a react agent needs llm"):
        registry.configure({"agents": [{"id": "a"}]})
    assert [a.id for a in registry.all()] == ["demo"]  # nothing half-configured


def test_configure_reads_providers_and_agents():
    registry = AgentRegistry()
    registry.configure({
        "llm": {"local": {"base_url": "http://127.0.0.1:11434/v1/", "api_key_env": "OLLAMA_API_KEY",
                          "model": "llama3.2", "timeout_s": 30}},
        "agents": [{"id": "assistant", "name": "Assistant", "type": "react", "llm": "local",
                    "tools": ["clock", "calculator"], "instructions": "Be brief.", "description": "helps"}],
    })
    cfg = registry.providers["local"].config
    assert (cfg.base_url, cfg.model, cfg.api_key_env, cfg.timeout_s) == ("http://127.0.0.1:11434/v1", "llama3.2", "OLLAMA_API_KEY", 30)
    agent = registry.get("assistant")
    assert agent == AgentDef(id="assistant", name="Assistant", type="react", description="helps", llm="local",
                             tools=("clock", "calculator"), instructions="Be brief.")
    assert registry.runner_for(agent) is not None
    assert set(registry.tools_for(agent)) == {"clock", "calculator"}


def test_history_conversion():
    history = [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "what is 2+2"}]},
        {"id": "a1", "role": "assistant", "parts": [
            {"type": "step-start"},
            {"type": "text", "text": "Let me compute.", "state": "done"},
            {"type": "tool-calculator", "toolCallId": "c1", "state": "output-available",
             "input": {"expression": "2+2"}, "output": {"result": 4}},
            {"type": "step-start"},
            {"type": "step-start"},
            {"type": "text", "text": "4", "state": "done"},
        ]},
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "approve?"}]},
        {"id": "a2", "role": "assistant", "parts": [  # a run that failed while its call was open
            {"type": "step-start"},
            {"type": "tool-wait_approval", "toolCallId": "c2", "state": "input-available", "input": {"prompt": "x"}},
            {"type": "data-parked", "data": {}},
        ]},
    ]
    current = {"id": "u3", "role": "user", "parts": [{"type": "text", "text": "hello"}]}
    assert history_messages(history, current) == [
        {"role": "user", "content": "what is 2+2"},
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression":"2+2"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"result":4}'},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "approve?"},
        {"role": "user", "content": "hello"},
    ]


def test_tool_names_are_made_valid_for_the_wire():
    tools = {"time.now": BUILTIN_TOOLS["clock"], "time_now": BUILTIN_TOOLS["clock"]}
    schemas, names = tool_schemas(tools)
    wires = [s["function"]["name"] for s in schemas]
    assert wires == ["time_now", "time_now_2"]
    assert names == {"time_now": "time.now", "time_now_2": "time_now"}
