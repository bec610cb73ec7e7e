"""Proof that Parley's native streams are valid AI SDK v5 UI message streams.

Each test runs the demo agent, reads `GET /stream/:taskId` (kira's framing:
`data: [chunk, ...]` arrays), collects the chunks in order and feeds them to
the REAL `ai` package (ai@5.0.0, whose chunk schema is strict, and the latest
5.x) through `tests/protocol/ui_stream.mjs`: the `DefaultChatTransport` →
`uiMessageChunkSchema` → `readUIMessageStream` path that `useChat` uses.

Both framings are proven: the package's own encoder (`JsonToSseTransformStream`,
the default mode) and the AI SDK wire framing built here from the native frames
(`data: {chunk}\\n\\n` … `data: [DONE]\\n\\n`, the `--sse` mode), which the
`/agent/stream…` routes will emit.

Every assembled message must also equal, part for part, the assistant message
that `GET /messages/:threadId` returns (the server's own assembly,
runs/assemble.py).
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.helpers import Client, Cut, Frame, complete_frames

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "protocol" / "ui_stream.mjs"
PACKAGES = ("ai-5.0.0", "ai-latest")
NODE_TIMEOUT_S = 60.0

pytestmark = pytest.mark.parametrize("pkg", PACKAGES)


# -- the Node side ---------------------------------------------------------------

def _node() -> str:
    """The `node` binary; skips without it, fails when the packages are not installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the AI SDK protocol proof needs Node.js >= 20")
    missing = [p for p in PACKAGES if not (ROOT / "node_modules" / p / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"node_modules lacks {', '.join(missing)}: run `npm ci --no-audit --no-fund` in {ROOT}"
            " (`make test` does it)",
            pytrace=False,
        )
    return node


@pytest.fixture(autouse=True)
def node() -> str:
    """Checked before any run starts, so that a missing `node` skips at once."""
    return _node()


async def run_node(pkg: str, payload: bytes, *, sse: bool = False) -> tuple[int, bytes, bytes]:
    """Run ui_stream.mjs on `payload`: (exit code, stdout, stderr)."""
    args = [str(SCRIPT), pkg, *(["--sse"] if sse else [])]
    proc = await asyncio.create_subprocess_exec(
        _node(), *args, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(payload), NODE_TIMEOUT_S)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


async def run_ui_stream(pkg: str, payload: bytes, *, sse: bool = False) -> dict[str, Any]:
    """Feed `payload` to ui_stream.mjs; returns `{message, errors}` (asserts exit 0)."""
    try:
        code, out, err = await run_node(pkg, payload, sse=sse)
    except asyncio.TimeoutError:
        pytest.fail(f"ui_stream.mjs {pkg} did not finish within {NODE_TIMEOUT_S:g}s")
    mode = "--sse" if sse else "chunks"
    assert code == 0, f"{pkg} ({mode}) refused Parley's stream (exit {code}):\n{err.decode(errors='replace')}"
    return json.loads(out)


def sse_body(chunks: list[dict[str, Any]]) -> bytes:
    """The AI SDK's own framing: one compact JSON chunk per `data:` frame, then `data: [DONE]`."""
    frames = [b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n" for c in chunks]
    return b"".join(frames) + b"data: [DONE]\n\n"


async def assemble(pkg: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The client's result for `chunks`, read in both framings (which must agree)."""
    results = await asyncio.gather(
        run_ui_stream(pkg, json.dumps(chunks).encode()),
        run_ui_stream(pkg, sse_body(chunks), sse=True),
        return_exceptions=True,
    )
    for r in results:
        if isinstance(r, BaseException):
            raise r
    by_chunks, by_sse = results
    assert by_sse == by_chunks, f"the --sse framing assembled a different result:\n{by_sse}\n{by_chunks}"
    return by_chunks  # type: ignore[return-value]


# -- the Parley side ---------------------------------------------------------------

def chunks_of(frames: list[Frame]) -> list[dict[str, Any]]:
    """The UI message chunks of a native stream, in order.

    An `event: error` frame becomes the `error` chunk that the AI SDK framing
    carries; `event: done` carries nothing.  Comments and `retry:` are skipped.
    """
    out: list[dict[str, Any]] = []
    for f in frames:
        if f.event == "error":
            out.append({"type": "error", "errorText": f.data})
        elif f.event == "done":
            assert f.data == ""
        elif f.event is not None:
            raise AssertionError(f"unexpected event frame {f.event!r}")
        elif f.id is not None:
            chunks = f.chunks
            assert isinstance(chunks, list) and chunks, f"frame {f.id}: data is not a non-empty chunk array: {f.data!r}"
            out.extend(chunks)
        else:
            assert f.comment or f.retry is not None, f"frame without id: {f.raw!r}"
    return out


async def read_stream(
    client: Client, task_id: str, *, last_event_id: int | None = None,
    stop: Callable[[list[Frame]], bool] | None = None,
) -> list[Frame]:
    """The complete frames of `GET /stream/:taskId`, read to its end or until `stop(frames)` holds.

    (`Client.stream(cut_after=...)` cannot be used for the cut: its `Cut` reaches
    `Client.request` as an HTTPStreamClosedError without a response.)
    """
    buf = bytearray()
    cut = [False]

    def complete() -> list[Frame]:
        return complete_frames(buf)

    def on_chunk(data: bytes) -> None:
        buf.extend(data)
        if stop is not None and stop(complete()):
            cut[0] = True
            raise Cut()

    headers = client.headers()
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    try:
        resp = await client.http.fetch(f"/stream/{task_id}", headers=headers, raise_error=False,
                                       streaming_callback=on_chunk, request_timeout=30)
    except (Cut, HTTPClientError):
        if not cut[0]:
            raise
    else:
        assert resp.code == 200, (resp.code, bytes(buf))
        assert stop is None, f"the stream ended before the awaited frame: {bytes(buf)!r}"
    return complete()


async def read_all(client: Client, task_id: str) -> tuple[list[Frame], list[dict[str, Any]]]:
    frames = await read_stream(client, task_id)
    assert frames and frames[-1].event in ("done", "error"), f"stream did not end with a terminal frame: {frames[-1:]}"
    return frames, chunks_of(frames)


async def stored_assistant(client: Client, thread_id: str) -> dict[str, Any]:
    resp = await client.request("GET", f"/messages/{thread_id}")
    assert resp.code == 200, (resp.code, resp.body)
    messages = json.loads(resp.body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"], messages
    return messages[1]


# -- checks shared by the scenarios ------------------------------------------------

def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["delta"] for c in chunks if c["type"] == "text-delta")


# Chunks after which processUIMessageStream does not call write(): a message
# that readUIMessageStream yields never shows what they changed.
_NO_WRITE = {"start-step", "finish-step", "finish", "error", "abort"}


def sdk_state_parts(chunks: list[dict[str, Any]], emitted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts of the SDK's final `state.message`, from its last yielded message.

    `start-step` pushes a `step-start` part without write(), so a run that
    ends (error, finish) right after a `start-step` leaves that part out of
    every message that readUIMessageStream yields, although it is in the
    state that the SDK hands to `onFinish` (and that its own server-side
    `toUIMessageStreamResponse({onFinish})` would persist).  Parley's
    `/messages` keeps it, like that state.
    """
    trailing = 0
    for c in reversed(chunks):
        if c["type"] not in _NO_WRITE or c.get("messageMetadata") is not None:
            break
        trailing += c["type"] == "start-step"
    return emitted + [{"type": "step-start"}] * trailing


def check_common(chunks: list[dict[str, Any]], result: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """Assertions every run shares; returns the assembled message."""
    assert chunks[0]["type"] == "start" and chunks[0]["messageId"], chunks[:1]
    assert sum(c["type"] == "start" for c in chunks) == 1
    message = result["message"]
    assert message is not None, result
    assert message["id"] == chunks[0]["messageId"]
    assert message["role"] == "assistant"
    # The server's folding (runs/assemble.py) must give what the client assembled.
    assert stored["id"] == message["id"]
    expected = sdk_state_parts(chunks, message["parts"])
    assert stored["parts"] == expected, (
        "GET /messages differs from the AI SDK's assembly:\n"
        f"server: {json.dumps(stored['parts'])}\nclient: {json.dumps(expected)}"
    )
    return message


def text_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p["type"] == "text"]


def tool_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in message["parts"] if p["type"].startswith("tool-")]


def check_finished(chunks: list[dict[str, Any]], result: dict[str, Any]) -> None:
    assert chunks[-1] == {"type": "finish"}
    assert result["errors"] == []


# -- scenarios ---------------------------------------------------------------------

async def test_plain_text_reply(alice, pkg):
    task_id = await alice.start_ok("t-text", "hello world")
    frames, chunks = await read_all(alice, task_id)
    assert frames[-1].event == "done"
    result = await assemble(pkg, chunks)
    check_finished(chunks, result)
    message = check_common(chunks, result, await stored_assistant(alice, "t-text"))

    expected = 'You said: "hello world"'
    assert streamed_text(chunks) == expected
    assert [c["delta"] for c in chunks if c["type"] == "text-delta"] == ["You ", "said: ", '"hello ', 'world"']
    assert text_parts(message) == [{"type": "text", "text": expected, "state": "done"}]
    assert [p["type"] for p in message["parts"]] == ["step-start", "text"]


async def test_non_ascii_text(alice, pkg):
    # Multi-byte UTF-8 and JSON escapes, split mid-character by the --sse reader's 16-byte pieces.
    content = 'héllo wörld «quotes» \\ back\\slash 🌍 日本語'
    task_id = await alice.start_ok("t-utf8", content)
    _, chunks = await read_all(alice, task_id)
    result = await assemble(pkg, chunks)
    check_finished(chunks, result)
    message = check_common(chunks, result, await stored_assistant(alice, "t-utf8"))
    expected = f'You said: "{content}"'
    assert streamed_text(chunks) == expected
    assert text_parts(message) == [{"type": "text", "text": expected, "state": "done"}]


async def test_many_deltas_across_frames(alice, pkg):
    # More deltas than one native frame holds (MAX_CHUNKS_PER_FRAME = 512).
    task_id = await alice.start_ok("t-count", "/count 1200")
    frames, chunks = await read_all(alice, task_id)
    assert sum(1 for f in frames if f.id is not None and f.event is None) > 1
    result = await assemble(pkg, chunks)
    check_finished(chunks, result)
    message = check_common(chunks, result, await stored_assistant(alice, "t-count"))

    expected = "".join(f"{k} " for k in range(1, 1201))
    assert sum(c["type"] == "text-delta" for c in chunks) == 1200
    assert text_parts(message) == [{"type": "text", "text": expected, "state": "done"}]


async def test_replayed_and_resumed_streams(alice, pkg):
    # A replay groups chunks differently but carries the same ones; the chunks up to
    # any frame plus those after its id (Last-Event-ID) are the whole run again.
    task_id = await alice.start_ok("t-resume", "/count 30")
    live, full = await read_all(alice, task_id)
    _, replayed = await read_all(alice, task_id)
    assert replayed == full
    data_frames = [i for i, f in enumerate(live) if f.id is not None and f.event is None]
    resumed = []
    for i in data_frames[:-1]:
        tail = await read_stream(alice, task_id, last_event_id=live[i].id)
        chunks = chunks_of(live[: i + 1]) + chunks_of(tail)
        assert chunks == full, f"resuming after frame {live[i].id}"
        resumed.append(chunks)
    if not resumed:  # every chunk came in one commit: resume after the first frame only
        head = await read_stream(alice, task_id, stop=lambda fs: any(f.id is not None for f in fs))
        tail = await read_stream(alice, task_id, last_event_id=[f for f in head if f.id is not None][-1].id)
        resumed.append(chunks_of(head) + chunks_of(tail))
        assert resumed[0] == full
    result = await assemble(pkg, resumed[0])
    check_finished(full, result)
    message = check_common(full, result, await stored_assistant(alice, "t-resume"))
    assert text_parts(message)[0]["text"] == "".join(f"{k} " for k in range(1, 31))


async def test_calculator_tool(alice, pkg):
    task_id = await alice.start_ok("t-calc", "/tool calculator 2+3*4")
    _, chunks = await read_all(alice, task_id)
    result = await assemble(pkg, chunks)
    check_finished(chunks, result)
    message = check_common(chunks, result, await stored_assistant(alice, "t-calc"))

    tools = tool_parts(message)
    assert len(tools) == 1
    tool = tools[0]
    call_ids = {c["toolCallId"] for c in chunks if c["type"].startswith("tool-")}
    assert call_ids == {tool["toolCallId"]}
    assert tool["type"] == "tool-calculator"
    assert tool["state"] == "output-available"
    assert tool["input"] == {"expression": "2+3*4"}
    assert tool["output"] == {"expression": "2+3*4", "result": 14}
    assert streamed_text(chunks) == "2+3*4 = 14"
    assert text_parts(message) == [{"type": "text", "text": "2+3*4 = 14", "state": "done"}]
    # The tool's step, then the answer's step.
    assert [p["type"] for p in message["parts"]] == ["step-start", "tool-calculator", "step-start", "text"]
    types = [c["type"] for c in chunks]
    assert types.index("tool-input-start") < types.index("tool-input-delta") < types.index("tool-input-available")
    assert types.index("tool-input-available") < types.index("tool-output-available") < types.index("text-start")


async def test_clock_tool(alice, pkg):
    task_id = await alice.start_ok("t-clock", "/tool clock")
    _, chunks = await read_all(alice, task_id)
    result = await assemble(pkg, chunks)
    check_finished(chunks, result)
    message = check_common(chunks, result, await stored_assistant(alice, "t-clock"))

    (tool,) = tool_parts(message)
    assert tool["type"] == "tool-clock"
    assert tool["state"] == "output-available"
    assert tool["input"] == {}
    output = tool["output"]
    assert output["timezone"] == "UTC" and isinstance(output["epochMs"], int)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", output["iso"]), output
    expected = f"It is {output['iso']} (UTC)."
    assert streamed_text(chunks) == expected
    assert text_parts(message) == [{"type": "text", "text": expected, "state": "done"}]


async def test_tool_error(alice, pkg):
    task_id = await alice.start_ok("t-toolerr", "/tool calculator 1/0")
    _, chunks = await read_all(alice, task_id)
    result = await assemble(pkg, chunks)
    check_finished(chunks, result)
    message = check_common(chunks, result, await stored_assistant(alice, "t-toolerr"))

    (tool,) = tool_parts(message)
    assert tool["type"] == "tool-calculator"
    assert tool["state"] == "output-error"
    assert tool["input"] == {"expression": "1/0"}
    assert tool["errorText"] == "division by zero"
    assert "output" not in tool
    assert streamed_text(chunks) == "The calculator tool failed."


async def test_failed_run(alice, pkg):
    task_id = await alice.start_ok("t-fail", "/fail")
    frames, chunks = await read_all(alice, task_id)
    assert frames[-1].event == "error"
    failure = "The demo agent failed on purpose (/fail)."
    assert frames[-1].data == failure
    assert not any(c["type"] == "finish" for c in chunks)
    result = await assemble(pkg, chunks)
    assert result["errors"] == [failure]
    stored = await stored_assistant(alice, "t-fail")
    message = check_common(chunks, result, stored)
    # The step opened before the failure: in the SDK's state and in /messages, but
    # never in a message that readUIMessageStream yields (see sdk_state_parts).
    assert [c["type"] for c in chunks] == ["start", "start-step", "error"]
    assert message["parts"] == []
    assert stored["parts"] == [{"type": "step-start"}]
    info = await alice.task(task_id)
    assert info["status"] == "failed" and info["error"]["message"] == failure


async def test_cancelled_mid_text(alice, pkg):
    # DELETE while a text part is open: the part stays `streaming` in the client
    # (as useChat leaves it) and in /messages.
    task_id = await alice.start_ok("t-cancel", "/count 100000")  # the demo's bound; cancelled long before its end
    await read_stream(alice, task_id, stop=lambda fs: any(c["type"] == "text-delta" for c in chunks_of(fs)))
    resp = await alice.request("DELETE", f"/task/{task_id}")
    assert resp.code == 204
    frames, chunks = await read_all(alice, task_id)
    assert frames[-1].event == "error"
    assert frames[-1].data == "The run was cancelled."
    assert not any(c["type"] in ("text-end", "finish") for c in chunks)
    result = await assemble(pkg, chunks)
    assert result["errors"] == ["The run was cancelled."]
    message = check_common(chunks, result, await stored_assistant(alice, "t-cancel"))
    assert text_parts(message) == [{"type": "text", "text": streamed_text(chunks), "state": "streaming"}]
    assert (await alice.task(task_id))["status"] == "cancelled"


async def test_parked_run(alice, pkg):
    task_id = await alice.start_ok("t-park", "/approve some text")
    frames = await read_stream(
        alice, task_id, stop=lambda fs: any(c["type"] == "data-parked" for c in chunks_of(fs)))
    chunks = chunks_of(frames)
    info = await alice.wait_status(task_id, "parked")
    assert chunks[-1]["type"] == "data-parked", chunks[-3:]
    result = await assemble(pkg, chunks)
    assert result["errors"] == []
    message = check_common(chunks, result, await stored_assistant(alice, "t-park"))

    parked = [p for p in message["parts"] if p["type"] == "data-parked"]
    assert len(parked) == 1
    assert parked[0]["data"]["correlationKey"] == info["parked"]["correlationKey"]
    assert parked[0]["data"] == {"node": "wait_approval", **info["parked"]}
    assert info["parked"]["prompt"] == "some text"
    (tool,) = tool_parts(message)
    assert tool["type"] == "tool-wait_approval"
    assert tool["state"] == "input-available"
    assert tool["input"] == {"prompt": "some text"}


async def test_parked_run_signalled(alice, pkg):
    # After the signal the run goes on; the SDK keeps the data-signal part, and so must /messages.
    task_id = await alice.start_ok("t-park-signal", "/approve ship it")
    info = await alice.wait_status(task_id, "parked")
    key = info["parked"]["correlationKey"]
    resp = await alice.request("POST", f"/api/jobs/{task_id}/signal",
                               {"correlation_key": key, "payload": {"approved": True, "reason": "ok"}})
    assert resp.code == 200, resp.body
    frames, chunks = await read_all(alice, task_id)
    assert frames[-1].event == "done"
    result = await assemble(pkg, chunks)
    assert result["errors"] == []
    message = check_common(chunks, result, await stored_assistant(alice, "t-park-signal"))
    types = [p["type"] for p in message["parts"]]
    assert types.index("data-parked") < types.index("data-signal")
    (signal,) = [p for p in message["parts"] if p["type"] == "data-signal"]
    assert signal["data"] == {"correlationKey": key, "payload": {"approved": True, "reason": "ok"}}
    assert "approved" in streamed_text(chunks).lower()


async def test_parked_run_cancelled(alice, pkg):
    task_id = await alice.start_ok("t-park-cancel", "/approve some text")
    info = await alice.wait_status(task_id, "parked")
    resp = await alice.request("DELETE", f"/task/{task_id}")
    assert resp.code == 204
    frames, chunks = await read_all(alice, task_id)
    assert frames[-1].event == "error"
    result = await assemble(pkg, chunks)
    assert result["errors"] == [frames[-1].data]
    message = check_common(chunks, result, await stored_assistant(alice, "t-park-cancel"))
    parked = [p for p in message["parts"] if p["type"] == "data-parked"]
    assert [p["data"]["correlationKey"] for p in parked] == [info["parked"]["correlationKey"]]
    assert (await alice.task(task_id))["status"] == "cancelled"


async def test_harness_is_strict(io_loop, pkg):
    # Control: the proof is not vacuous.  ai@5.0.0 rejects a field its strict schema
    # lacks (latest ignores it), and both refuse a delta before its start.
    start = {"type": "start", "messageId": "m1"}
    code, _, err = await run_node(pkg, json.dumps([start, {"type": "finish", "finishReason": "stop"}]).encode())
    if pkg == "ai-5.0.0":
        assert code == 1 and b"chunk rejected by uiMessageChunkSchema" in err, err
    else:
        assert code == 0, err
    code, _, err = await run_node(pkg, sse_body([start, {"type": "text-delta", "id": "x", "delta": "a"}]), sse=True)
    assert code == 1, err
