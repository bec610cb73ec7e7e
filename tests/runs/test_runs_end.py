"""Whatever an agent or a tool raises, the run ends with its terminal event and frees its thread
(SPEC 13; issue 9: `10**100*10**100` through the demo's calculator left a task `running` forever).

The failures are injected with test-only tools and agents registered through the AgentRegistry,
and with a writer that fails a group commit once.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from agents import AgentDef
from agents.context import RunContext
from agents.tools import Tool
from store.writer import Job
from tests.helpers import text_of

TERMINAL = ("completed", "failed", "cancelled")


class Detonation(BaseException):
    """Not an Exception: what a task group's BaseExceptionGroup or a library's own signal looks like."""


async def ended(client, task_id, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        info = await client.task(task_id)
        if info["status"] in TERMINAL:
            return info
        assert loop.time() < deadline, f"task {task_id} still {info['status']} after {timeout}s"
        await asyncio.sleep(0.01)


async def assert_failed_and_freed(parley, client, thread_id, task_id, reason):
    """The task ended `failed` with `reason`, run.error is its log's last event and its stream's end,
    and the thread takes a new run."""
    info = await ended(client, task_id)
    assert info["status"] == "failed", info
    assert info["error"]["reason"] == reason, info
    last = await parley.runs.last_event(task_id)
    assert last.type == "run.error" and last.data["status"] == "failed"
    code, frames = await client.stream(task_id)
    assert code == 200 and frames[-1].event == "error", frames[-3:]
    assert (await client.request("GET", f"/thread/{thread_id}/current-task")).body == b'{"task":null}'
    again = await client.start(thread_id, "hello again")
    assert again.code == 201, again.body
    assert (await ended(client, json.loads(again.body)["taskId"]))["status"] == "completed"


def add_tool(parley, name, run):
    parley.agents.tools[name] = Tool(name, f"test tool {name}", {"type": "object"}, run)


def add_demo_agent(parley, agent_id, tools):
    parley.agents.add(AgentDef(id=agent_id, name=agent_id, type="demo", tools=tuple(tools)))


def add_agent(parley, monkeypatch, agent_id, fn):
    """A test-only agent: `fn(ctx)` runs for it; every other agent runs as before."""
    parley.agents.add(AgentDef(id=agent_id, name=agent_id, type="demo"))
    real = parley.agents.runner_for
    monkeypatch.setattr(parley.agents, "runner_for",
                        lambda agent, recording=None: fn if agent.id == agent_id else real(agent, recording))


# -- a tool ------------------------------------------------------------------------------------

async def test_a_tool_raising_a_base_exception_fails_the_run(parley, alice):
    async def detonate(args, env):
        raise Detonation("boom")

    add_tool(parley, "detonate", detonate)
    add_demo_agent(parley, "with-detonate", ["detonate"])
    task_id = await alice.start_ok("t-tool-base", "/tool detonate", agentId="with-detonate")
    await assert_failed_and_freed(parley, alice, "t-tool-base", task_id, "internal_error")
    assert (await alice.task(task_id))["error"]["message"] == "The agent crashed: Detonation"


async def test_a_tool_raising_an_exception_is_a_tool_error_and_the_run_ends(parley, alice):
    """An ordinary exception is the tool's failure, told to the agent (agents/context.py): the run goes on and ends."""
    async def broken(args, env):
        raise RuntimeError("broken")

    add_tool(parley, "broken", broken)
    add_demo_agent(parley, "with-broken", ["broken"])
    task_id = await alice.start_ok("t-tool-exc", "/tool broken", agentId="with-broken")
    info = await ended(alice, task_id)
    assert info["status"] == "completed"
    types = [e.type for e in await parley.runs.task_events(task_id)]
    assert "tool.error" in types and types[-1] == "run.finished"
    assert (await alice.start("t-tool-exc", "hello again")).code == 201


# -- encoding an event -----------------------------------------------------------------------------

@pytest.mark.parametrize("output", [
    {"result": 10**200},  # what 10**100*10**100 gave
    {"result": 2**64},  # the first int orjson refuses
    {"result": object()},  # no JSON form
    {"result": "\ud800"},  # a lone surrogate is no UTF-8
], ids=["huge-int", "int-2**64", "object", "surrogate"])
async def test_a_tool_output_that_cannot_be_encoded_fails_the_run(parley, alice, output):
    async def unencodable(args, env):
        return output

    add_tool(parley, "unencodable", unencodable)
    add_demo_agent(parley, "with-unencodable", ["unencodable"])
    task_id = await alice.start_ok("t-encode", "/tool unencodable", agentId="with-unencodable")
    await assert_failed_and_freed(parley, alice, "t-encode", task_id, "unencodable_event")
    info = await alice.task(task_id)
    assert "tool.result event that cannot be stored as JSON" in info["error"]["message"]
    # The event never reached the log, nor the stored reply.
    assert "tool.result" not in [e.type for e in await parley.runs.task_events(task_id)]
    messages = json.loads((await alice.request("GET", "/messages/t-encode")).body)["messages"]
    assert messages[1]["role"] == "assistant"


async def test_an_agent_emitting_an_unencodable_event_fails_only_its_own_run(parley, alice, bob, monkeypatch):
    async def emits_garbage(ctx: RunContext) -> None:
        part = await ctx.text_start()
        await ctx.text_delta(part, "fine so far ")
        await ctx.sink.emit("text.delta", {"partId": part, "delta": object()})

    add_agent(parley, monkeypatch, "garbage", emits_garbage)
    other = await bob.start_ok("t-bob-beside", "/count 300")
    task_id = await alice.start_ok("t-garbage", "hi", agentId="garbage")
    await assert_failed_and_freed(parley, alice, "t-garbage", task_id, "unencodable_event")
    messages = json.loads((await alice.request("GET", "/messages/t-garbage")).body)["messages"]
    assert "fine so far" in json.dumps(messages[1]["parts"])
    # The run beside it, sharing the writer, is untouched.
    assert (await ended(bob, other))["status"] == "completed"
    code, frames = await bob.stream(other)
    assert code == 200 and frames[-1].event == "done"


# -- the agent -----------------------------------------------------------------------------------

async def test_an_agent_raising_a_base_exception_fails_the_run(parley, alice, monkeypatch):
    async def detonates(ctx: RunContext) -> None:
        await ctx.say("about to go")
        raise Detonation("agent")

    add_agent(parley, monkeypatch, "detonating", detonates)
    task_id = await alice.start_ok("t-agent-base", "hi", agentId="detonating")
    await assert_failed_and_freed(parley, alice, "t-agent-base", task_id, "internal_error")


async def test_an_agent_raising_an_exception_fails_the_run(parley, alice, monkeypatch):
    async def raises(ctx: RunContext) -> None:
        await ctx.say("about to go")
        raise KeyError("agent")

    add_agent(parley, monkeypatch, "raising", raises)
    task_id = await alice.start_ok("t-agent-exc", "hi", agentId="raising")
    await assert_failed_and_freed(parley, alice, "t-agent-exc", task_id, "internal_error")


# -- the writer ------------------------------------------------------------------------------------

def fail_commits(parley, monkeypatch, job_name, times):
    """The first `times` group commits that hold a job named `job_name` fail as a whole (as an I/O
    error would); returns the sizes of the batches failed."""
    real = parley.db._commit_sync
    failed = []

    def commit(batch):
        if len(failed) < times and any(isinstance(i, Job) and getattr(i.fn, "__name__", "") == job_name
                                       for i in batch):
            failed.append(len(batch))
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return real(batch)

    monkeypatch.setattr(parley.db, "_commit_sync", commit)
    return failed


async def test_a_group_commit_that_fails_once_loses_no_write(parley, alice, bob, monkeypatch):
    running = await bob.start_ok("t-beside", "/count 2000")
    failed = fail_commits(parley, monkeypatch, "_start", 1)
    task_id = await alice.start_ok("t-commit-once", "/count 20")  # its start's batch failed, then committed
    assert failed == [failed[0]]
    for client, tid in ((alice, task_id), (bob, running)):
        assert (await ended(client, tid))["status"] == "completed"
        code, frames = await client.stream(tid)
        assert code == 200 and frames[-1].event == "done"
    _, frames = await bob.stream(running)
    assert text_of(frames) == "".join(f"{k} " for k in range(1, 2001))  # not one event lost


async def test_a_run_whose_end_cannot_be_committed_twice_still_ends(parley, alice, monkeypatch):
    failed = fail_commits(parley, monkeypatch, "_finish", 2)  # the batch and its retry in the writer
    task_id = await alice.start_ok("t-commit-twice", "/count 5")
    info = await ended(alice, task_id)
    assert info["status"] == "completed", info
    code, frames = await alice.stream(task_id)
    assert code == 200 and frames[-1].event == "done"
    assert (await alice.start("t-commit-twice", "again")).code == 201
    assert len(failed) == 2


async def test_a_reply_that_cannot_be_stored_is_rebuilt_from_the_log(parley, alice, monkeypatch):
    async def mutates_after_emit(ctx: RunContext) -> None:
        part = await ctx.text_start()
        await ctx.text_delta(part, "kept ")
        result = {"toolCallId": "call_1", "output": {"n": 1}, "executed": True}
        await ctx.sink.emit("tool.call.start", {"toolCallId": "call_1", "toolName": "x"})
        await ctx.sink.emit("tool.result", result)
        result["output"]["n"] = object()  # the stored event is fine; the reply in memory is not

    add_agent(parley, monkeypatch, "mutating", mutates_after_emit)
    task_id = await alice.start_ok("t-rebuilt", "hi", agentId="mutating")
    info = await ended(alice, task_id)
    assert info["status"] == "completed", info
    messages = json.loads((await alice.request("GET", "/messages/t-rebuilt")).body)["messages"]
    assert "kept" in json.dumps(messages[1]["parts"]) and '"n": 1' in json.dumps(messages[1]["parts"])
    assert (await alice.start("t-rebuilt", "again")).code == 201


async def test_a_park_that_cannot_be_written_fails_the_run(parley, alice, monkeypatch):
    failed = fail_commits(parley, monkeypatch, "_park", 2)
    task_id = await alice.start_ok("t-park-fail", "/approve ship it")
    await assert_failed_and_freed(parley, alice, "t-park-fail", task_id, "internal_error")
    assert (await alice.task(task_id))["error"]["message"] == "The run could not be parked."
    assert len(failed) == 2
