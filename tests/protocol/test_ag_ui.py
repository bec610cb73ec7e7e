"""Proof that Parley's AG-UI endpoint works with the REAL `@ag-ui/client` HttpAgent (1.x).

`tests/protocol/ag_ui_client.mjs` runs `new HttpAgent({url, headers}).runAgent(...)`
against the live in-process server (node runs as an asyncio subprocess, so the
loop keeps serving): the client's own request body, SSE parser, event schemas
(unknown fields are stripped with a warning: none may appear), sequence
verifier and message assembly.  The messages the client assembles must be the
thread's messages of `GET /messages/:threadId`, seen the AG-UI way.
"""
from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from handlers.sse import AgUiRun, ag_ui_tool_result_id
from runs.hub import Batch
from store import Event
from tests.helpers import Client

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "protocol" / "ag_ui_client.mjs"
PACKAGE = "@ag-ui/client"
NODE_TIMEOUT_S = 60.0
PATH = "/api/v1/agent/ag-ui"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the AG-UI protocol proof needs Node.js >= 20")
    if not (ROOT / "node_modules" / PACKAGE / "package.json").is_file():
        pytest.fail(f"node_modules lacks {PACKAGE}: run `npm ci --no-audit --no-fund` in {ROOT} (`make test` does it)",
                    pytrace=False)
    return node


@pytest.fixture(autouse=True)
def node() -> str:
    return _node()


async def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ag_ui_client.mjs on `spec`: `{turns: [{runId, events, error, newMessages}], messages, logs}`."""
    proc = await asyncio.create_subprocess_exec(
        _node(), str(SCRIPT), cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(spec).encode()), NODE_TIMEOUT_S)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode == 0, f"ag_ui_client.mjs failed (exit {proc.returncode}):\n{err.decode(errors='replace')}"
    return json.loads(out)


def spec_for(client: Client, thread_id: str, *texts: str) -> dict[str, Any]:
    """One turn per text, on one agent (later turns send the whole history)."""
    turns = [{"runId": f"{thread_id}-run{n}", "message": {"id": f"{thread_id}-u{n}", "role": "user", "content": text}}
             for n, text in enumerate(texts, 1)]
    return {"url": client.http.get_url(PATH), "headers": client.headers(), "threadId": thread_id, "turns": turns}


def warnings(result: dict[str, Any]) -> list[str]:
    return [entry["text"] for entry in result["logs"] if entry["level"] == "warn"]


def types(turn: dict[str, Any]) -> list[str]:
    return [e["type"] for e in turn["events"]]


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def as_ag_ui(ui_messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The thread's UIMessages as an AG-UI client assembles them from Parley's events: one
    assistant message per run (its text parts joined, its tool calls), and a tool message
    per tool result right after it.  Tool arguments and results are compared parsed."""
    out: list[dict[str, Any]] = []
    for m in ui_messages:
        parts = m["parts"]
        text = [p["text"] for p in parts if p["type"] == "text"]
        if m["role"] == "user":
            out.append({"id": m["id"], "role": "user", "content": "".join(text)})
            continue
        tools = [p for p in parts if p["type"].startswith("tool-")]
        if not text and not tools:
            continue
        msg: dict[str, Any] = {"id": m["id"], "role": "assistant"}
        if text:
            msg["content"] = "".join(text)
        if tools:
            msg["toolCalls"] = [{"id": p["toolCallId"], "type": "function",
                                 "function": {"name": p["type"].removeprefix("tool-"), "arguments": p.get("input")}}
                                for p in tools]
        out.append(msg)
        for p in tools:
            if p["state"] in ("output-available", "output-error"):
                content = p["output"] if p["state"] == "output-available" else p["errorText"]
                out.append({"id": ag_ui_tool_result_id(p["toolCallId"]), "toolCallId": p["toolCallId"],
                            "role": "tool", "content": content})
    return out


def parsed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The client's messages with tool arguments and tool results parsed from their JSON text."""
    out = []
    for m in messages:
        m = dict(m)
        if "toolCalls" in m:
            m["toolCalls"] = [{**c, "function": {**c["function"], "arguments": _json_or_text(c["function"]["arguments"])}}
                              for c in m["toolCalls"]]
        if m["role"] == "tool":
            m["content"] = _json_or_text(m["content"])
        out.append(m)
    return out


async def stored(client: Client, thread_id: str) -> list[dict[str, Any]]:
    resp = await client.request("GET", f"/messages/{thread_id}")
    assert resp.code == 200, resp.body
    return json.loads(resp.body)["messages"]


async def check_messages(client: Client, thread_id: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    server = await stored(client, thread_id)
    assert parsed(result["messages"]) == as_ag_ui(server), (
        f"the client's messages differ from GET /messages:\nclient: {json.dumps(result['messages'])}\nserver: {json.dumps(server)}")
    return server


def check_sequence(turn: dict[str, Any], thread_id: str) -> None:
    events = turn["events"]
    assert turn["error"] is None, turn["error"]
    assert events[0] == {"type": "RUN_STARTED", "threadId": thread_id, "runId": turn["runId"]}
    assert events[-1]["type"] in ("RUN_FINISHED", "RUN_ERROR")
    if events[-1]["type"] == "RUN_FINISHED":
        assert events[-1] == {"type": "RUN_FINISHED", "threadId": thread_id, "runId": turn["runId"]}


# -- scenarios -------------------------------------------------------------------------------

async def test_text_run(alice):
    result = await run_client(spec_for(alice, "ag-text", "hello world"))
    (turn,) = result["turns"]
    check_sequence(turn, "ag-text")
    assert types(turn) == ["RUN_STARTED", "STEP_STARTED", "TEXT_MESSAGE_START", *["TEXT_MESSAGE_CONTENT"] * 4,
                           "TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
    assert warnings(result) == [] and result["logs"] == []
    server = await check_messages(alice, "ag-text", result)
    assert turn["newMessages"] == [{"id": server[1]["id"], "role": "assistant", "content": 'You said: "hello world"'}]


async def test_tool_call_run_after_a_text_run_sends_the_whole_history(alice):
    result = await run_client(spec_for(alice, "ag-tool", "hi", "/tool calculator 6*7"))
    first, second = result["turns"]
    check_sequence(first, "ag-tool")
    check_sequence(second, "ag-tool")
    assert warnings(result) == [] and result["logs"] == []
    seq = types(second)
    assert seq[:6] == ["RUN_STARTED", "STEP_STARTED", "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]
    assert seq.index("TOOL_CALL_RESULT") < seq.index("TEXT_MESSAGE_START")
    server = await check_messages(alice, "ag-tool", result)
    assert [m["role"] for m in server] == ["user", "assistant", "user", "assistant"]
    assistant, tool = second["newMessages"]
    assert assistant["content"] == "6*7 = 42" and assistant["toolCalls"][0]["function"]["name"] == "calculator"
    assert json.loads(tool["content"]) == {"expression": "6*7", "result": 42}
    assert tool["toolCallId"] == assistant["toolCalls"][0]["id"]


async def test_a_run_again_from_a_user_message_keeps_its_id(alice):
    """A client that drops the last reply and runs again (regenerate), then edits its first message:
    the thread is rewound to that message, which keeps the client's id; client and server agree."""
    spec = spec_for(alice, "ag-again", "first", "second")
    spec["turns"] += [
        {"runId": "ag-again-regen", "keep": 3},  # [u1, a1, u2]: the reply to u2 again
        {"runId": "ag-again-edit", "keep": 0, "message": {"id": "ag-again-u1", "role": "user", "content": "first, edited"}},
    ]
    result = await run_client(spec)
    assert [t["error"] for t in result["turns"]] == [None] * 4, result["turns"]
    assert warnings(result) == [] and result["logs"] == []
    server = await check_messages(alice, "ag-again", result)
    assert [(m["id"], m["role"]) for m in server] == [("ag-again-u1", "user"), (server[1]["id"], "assistant")]
    assert server[0]["parts"] == [{"type": "text", "text": "first, edited"}]


async def test_failed_run_ends_with_run_error(alice):
    result = await run_client(spec_for(alice, "ag-fail", "/fail"))
    (turn,) = result["turns"]
    check_sequence(turn, "ag-fail")
    assert turn["events"][-1] == {"type": "RUN_ERROR", "message": "The demo agent failed on purpose (/fail).",
                                  "code": "demo_failure"}
    assert "RUN_FINISHED" not in types(turn)
    assert warnings(result) == []
    await check_messages(alice, "ag-fail", result)
    status = json.loads((await alice.request("GET", "/thread/ag-fail/current-task")).body)
    assert status == {"task": None}


async def test_409_refusal_reaches_the_client_as_an_http_error(alice):
    resp = await alice.request("POST", "/api/v1/agent/runs", {
        "threadId": "ag-busy", "runId": "hold", "messages": [{"id": "hold-u", "role": "user", "content": "/approve hold"}]})
    assert resp.code == 201, resp.body
    task_id = json.loads(resp.body)["taskId"]
    await alice.wait_status(task_id, "parked")
    result = await run_client(spec_for(alice, "ag-busy", "me too"))
    (turn,) = result["turns"]
    assert turn["events"] == []
    assert turn["error"]["status"] == 409
    assert turn["error"]["payload"] == {"detail": "the thread already has a live run", "taskId": task_id}
    await alice.request("DELETE", f"/task/{task_id}")


async def test_422_refusal_reaches_the_client_as_an_http_error(alice):
    spec = spec_for(alice, "ag-bad", "x")
    spec["turns"][0]["message"]["content"] = [{"type": "image", "source": {"type": "file", "value": "file-123"}}]
    (turn,) = (await run_client(spec))["turns"]
    assert turn["events"] == [] and turn["error"]["status"] == 422 and set(turn["error"]["payload"]) == {"detail"}


async def test_parked_run_streams_on_after_its_signal(alice):
    client = asyncio.ensure_future(run_client(spec_for(alice, "ag-park", "/approve ship it")))
    task = None
    for _ in range(1000):
        task = json.loads((await alice.request("GET", "/thread/ag-park/current-task")).body)["task"]
        if task is not None and task["status"] == "parked":
            break
        await asyncio.sleep(0.01)
    assert task is not None and task["status"] == "parked"
    assert not client.done()  # the AG-UI stream stays open while the run waits
    resp = await alice.request("POST", f"/api/jobs/{task['taskId']}/signal",
                               {"correlation_key": task["parked"]["correlationKey"], "payload": {"approved": True}})
    assert resp.code == 200, resp.body
    result = await client
    (turn,) = result["turns"]
    check_sequence(turn, "ag-park")
    assert warnings(result) == [] and result["logs"] == []
    customs = [e for e in turn["events"] if e["type"] == "CUSTOM"]
    assert [c["name"] for c in customs] == ["parked", "signal"]
    assert customs[0]["value"]["correlationKey"] == task["parked"]["correlationKey"]
    assert customs[1]["value"]["payload"] == {"approved": True}
    await check_messages(alice, "ag-park", result)
    assert "Approved: ship it" in json.dumps(result["messages"])


async def test_every_mapping_passes_the_client_verifier(io_loop):
    # Events no demo run emits (two text parts, reasoning, ui, file, a tool call announced
    # whole, a step reopened after a park, parts left open at the end), through the same renderer.
    def ev(n: int, type: str, **data: Any) -> Event:
        return Event(n, "task-x", "th-x", type, data, 0)

    log = [
        ev(1, "run.started", messageId="m-x", agentId="demo"),
        ev(2, "step.started", node="think"),
        ev(20, "text.start", messageId="m-x", partId="t0"),
        ev(21, "text.delta", partId="t0", delta="first, "),
        ev(22, "text.end", partId="t0"),
        ev(3, "reasoning.start", messageId="m-x", partId="r1"),
        ev(4, "reasoning.delta", partId="r1", delta="hmm"),
        ev(5, "reasoning.end", partId="r1"),
        ev(6, "step.started", node="think"),
        ev(7, "tool.call.end", toolCallId="c1", toolName="clock", input={"timezone": "UTC"}),
        ev(8, "tool.error", toolCallId="c1", error="no clock"),
        ev(9, "ui", uiSchema={"version": "2.0"}),
        ev(10, "file", url="https://example.com/x.png", mediaType="image/png"),
        ev(11, "text.start", messageId="m-x", partId="t1"),
        ev(12, "text.delta", partId="t1", delta=""),
        ev(13, "text.delta", partId="t1", delta="done"),
        ev(14, "tool.call.start", toolCallId="c2", toolName="calculator"),
        ev(15, "run.finished"),
    ]
    renderer = AgUiRun("th-x", "run-x")
    sse = b"".join(renderer.frames(Batch(log))).decode()
    result = await run_client({"threadId": "th-x", "sse": sse,
                               "turns": [{"runId": "run-x", "message": {"id": "u-x", "role": "user", "content": "go"}}]})
    (turn,) = result["turns"]
    assert turn["error"] is None and result["logs"] == []
    assert types(turn)[-1] == "RUN_FINISHED"
    by_id = {m["id"]: m for m in result["messages"]}
    assert by_id["r1"] == {"id": "r1", "role": "reasoning", "content": "hmm"}
    assert by_id["m-x"]["content"] == "first, done"  # every text part of the run, in the one message
    assert [c["id"] for c in by_id["m-x"]["toolCalls"]] == ["c1", "c2"]
    assert json.loads(by_id["m-x"]["toolCalls"][0]["function"]["arguments"]) == {"timezone": "UTC"}
    assert by_id[ag_ui_tool_result_id("c1")]["content"] == "no clock"
    assert [(e["name"], e["value"]) for e in turn["events"] if e["type"] == "CUSTOM"] == [
        ("ui", {"uiSchema": {"version": "2.0"}}), ("file", {"url": "https://example.com/x.png", "mediaType": "image/png"})]


async def test_harness_is_strict(io_loop):
    # Control: the proof is not vacuous.  The client refuses content before its start and
    # anything left open at RUN_FINISHED, and warns about a field its schema lacks.
    def body(*events: dict[str, Any]) -> str:
        return "".join(f"data: {json.dumps(e)}\n\n" for e in events)

    start = {"type": "RUN_STARTED", "threadId": "t", "runId": "r"}
    finish = {"type": "RUN_FINISHED", "threadId": "t", "runId": "r"}
    turn = [{"runId": "r", "message": {"id": "u", "role": "user", "content": "go"}}]
    cases = {
        "content before start": body(start, {"type": "TEXT_MESSAGE_CONTENT", "messageId": "m", "delta": "x"}, finish),
        "open at finish": body(start, {"type": "STEP_STARTED", "stepName": "s"}, finish),
    }
    for name, sse in cases.items():
        result = await run_client({"threadId": "t", "sse": sse, "turns": turn})
        assert result["turns"][0]["error"] is not None, name
    extra = body(start, {"type": "STEP_STARTED", "stepName": "s", "node": "s"}, {"type": "STEP_FINISHED", "stepName": "s"}, finish)
    result = await run_client({"threadId": "t", "sse": extra, "turns": turn})
    assert result["turns"][0]["error"] is None and any("node" in w for w in warnings(result)), result["logs"]
