"""kira-be's /agent routes (seed 001, SPEC section 10): statuses, shapes, ownership, the AI SDK framing."""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from server import Config
from tests.helpers import INTERNAL_KEY, Client, Cut, body, status_in, wait_until

FRAME = re.compile(rb"data: ([^\n]*)\n\n")


def sdk_chunks(raw: bytes, done: bool = True) -> list[dict[str, Any]]:
    """The chunks of an AI SDK framed body; asserts the framing exactly: only `data: {json}\\n\\n`
    frames (no `id:`, `event:` or other lines), ending with `data: [DONE]\\n\\n` when `done`."""
    pos = 0
    out: list[dict[str, Any]] = []
    finished = False
    while pos < len(raw):
        m = FRAME.match(raw, pos)
        assert m is not None, f"not a `data: ...` frame at {pos}: {raw[pos:pos + 80]!r}"
        assert not finished, f"a frame after data: [DONE]: {raw[pos:]!r}"
        pos = m.end()
        if m.group(1) == b"[DONE]":
            finished = True
            continue
        chunk = json.loads(m.group(1))
        assert isinstance(chunk, dict) and isinstance(chunk.get("type"), str), chunk
        assert m.group(1) == json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode(), "not compact JSON"
        out.append(chunk)
    assert finished == done, raw[-120:]
    return out


def check_headers(resp: Any) -> None:
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert resp.headers["Cache-Control"] == "no-cache"


def chat_body(thread_id: str, text: str, msg_id: str = "u1", **extra: Any) -> dict[str, Any]:
    """What `DefaultChatTransport.sendMessages` posts."""
    return {"id": thread_id, "trigger": "submit-message",
            "messages": [{"id": msg_id, "role": "user", "parts": [{"type": "text", "text": text}]}], **extra}


async def post_stream(client: Client, payload: dict[str, Any] | bytes, path: str = "/agent/streaming",
                      stop: Callable[[bytes], bool] | None = None) -> tuple[Any, bytes]:
    """POST (or GET, for a resume path) and read the response; with `stop`, drop the connection once
    `stop(body so far)` holds.  Returns (response or None when cut, body)."""
    buf = bytearray()

    def on_chunk(data: bytes) -> None:
        buf.extend(data)
        if stop is not None and stop(bytes(buf)):
            raise Cut()

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    method = "POST" if path == "/agent/streaming" else "GET"
    try:
        resp = await client.http.fetch(path, method=method, body=raw if method == "POST" else None,
                                       headers=client.headers(), streaming_callback=on_chunk,
                                       raise_error=False, request_timeout=30)
    except (Cut, HTTPClientError):
        if stop is None:
            raise
        return None, bytes(buf)
    return resp, bytes(buf)


def upto(types: str) -> Callable[[bytes], bool]:
    """A `stop` for post_stream: a complete frame of this chunk type has arrived."""
    needle = b'"type":"' + types.encode() + b'"'
    return lambda raw: needle in raw[: raw.rfind(b"\n\n") + 2]


async def history(client: Client, thread_id: str) -> list[dict[str, Any]]:
    resp = await client.request("GET", f"/agent/chatMessages/{thread_id}")
    assert resp.code == 200, resp.body
    return body(resp)["messages"]


async def status(client: Client, thread_id: str) -> dict[str, Any]:
    resp = await client.request("GET", f"/agent/task/{thread_id}/status")
    assert resp.code == 200, resp.body
    return body(resp)


# -- POST /agent/streaming ---------------------------------------------------------------

async def test_streaming_answers_in_the_ai_sdk_framing(alice):
    resp, raw = await post_stream(alice, chat_body("s-text", "hello world", agentId="demo"))
    assert resp.code == 200
    check_headers(resp)
    assert b"\nid:" not in raw and b"event:" not in raw and not raw.startswith(b"id:")
    chunks = sdk_chunks(raw)
    assert [c["type"] for c in chunks] == [
        "start", "start-step", "text-start", *["text-delta"] * 4, "text-end", "finish-step", "finish"]
    assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta") == 'You said: "hello world"'
    user, assistant = await history(alice, "s-text")
    assert user["id"] == "u1" and user["parts"] == [{"type": "text", "text": "hello world"}]
    assert assistant["id"] == chunks[0]["messageId"]
    assert assistant["parts"][-1] == {"type": "text", "text": 'You said: "hello world"', "state": "done"}


async def test_the_last_message_is_the_new_one(alice):
    await post_stream(alice, chat_body("s-hist", "one", "u1"))
    first = await history(alice, "s-hist")
    # useChat sends the whole conversation: only the last message is new, the history is the server's
    payload = chat_body("s-hist", "two", "u2")
    payload["messages"] = [*first, *payload["messages"]]
    resp, raw = await post_stream(alice, payload)
    assert resp.code == 200 and sdk_chunks(raw)[-1] == {"type": "finish"}
    assert [(m["id"], m["role"]) for m in await history(alice, "s-hist")][:3] == [
        ("u1", "user"), (first[1]["id"], "assistant"), ("u2", "user")]


async def test_a_failed_run_ends_with_an_error_chunk_then_done(alice):
    resp, raw = await post_stream(alice, chat_body("s-fail", "/fail"))
    assert resp.code == 200
    chunks = sdk_chunks(raw)
    assert raw.endswith(b'data: {"type":"error","errorText":"The demo agent failed on purpose (/fail)."}\n\ndata: [DONE]\n\n')
    assert [c["type"] for c in chunks] == ["start", "start-step", "error"]


async def test_a_stopped_run_ends_with_an_error_chunk_then_done(alice):
    reading = asyncio.ensure_future(post_stream(alice, chat_body("s-stop", "/sleep 30")))
    running = await wait_until(lambda: status(alice, "s-stop"), status_in("running"))
    stop = await alice.request("POST", "/agent/task/s-stop/stop")
    assert stop.code == 200 and body(stop) == {"success": True, "taskId": running["taskId"]}
    resp, raw = await reading
    assert resp.code == 200
    assert sdk_chunks(raw)[-1] == {"type": "error", "errorText": "The run was cancelled."}
    assert (await alice.task(running["taskId"]))["status"] == "cancelled"


async def test_a_client_that_goes_away_does_not_stop_the_run(alice):
    resp, raw = await post_stream(alice, chat_body("s-away", "/sleep 0.2"), stop=upto("start"))
    assert resp is None and b'"type":"start"' in raw
    st = await status(alice, "s-away")
    assert st["status"] in ("pending", "running")
    await wait_until(lambda: status(alice, "s-away"), status_in("idle"))
    assert (await alice.task(st["taskId"]))["status"] == "completed"
    assert (await history(alice, "s-away"))[-1]["parts"][-1]["text"] == "I slept 0.2 seconds."


async def test_streaming_refusals(parley, alice, bob, http_server_client):
    busy = await alice.request("POST", "/agent/task", {"threadId": "s-busy", "content": "/sleep 30"})
    assert busy.code == 201
    task_id = body(busy)["taskId"]
    conflict = await alice.request("POST", "/agent/streaming", chat_body("s-busy", "again", "u9"))
    assert conflict.code == 409
    assert body(conflict) == {"message": "the thread already has a running task", "taskId": task_id}
    # another user's thread: 403, never the live task's id
    forbidden = await bob.request("POST", "/agent/streaming", chat_body("s-busy", "mine?", "b1"))
    assert forbidden.code == 403 and set(body(forbidden)) == {"message"}
    assert task_id.encode() not in forbidden.body
    anon = await http_server_client.fetch("/agent/streaming", method="POST", body=json.dumps(chat_body("x", "hi")),
                                          raise_error=False)
    assert anon.code == 401 and "message" in body(anon)
    parley.runs.draining = True
    try:
        draining = await alice.request("POST", "/agent/streaming", chat_body("s-new", "hi"))
        assert draining.code == 503 and "message" in body(draining)
    finally:
        parley.runs.draining = False
    assert parley.streams.total == 0  # a refused start holds no stream slot
    await alice.request("POST", "/agent/task/s-busy/stop")


@pytest.mark.parametrize("payload", [
    {"id": "s-bad", "trigger": "submit-message"},
    {"id": "s-bad", "messages": []},
    {"id": "s-bad", "messages": "hi"},
    {"messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
    {"id": "x" * 129, "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
    {"id": "s-bad", "messages": [{"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]},
    {"id": "s-bad", "messages": [{"id": "u1", "role": "user", "parts": []}]},
    {"id": "s-bad", "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text"}]}]},
    {"id": "s-bad", "messages": ["hi"]},
    {"id": "s-bad", "trigger": "resume-stream", "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
    {"id": "s-bad", "agentId": "nope", "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]},
    [1],
], ids=["no-messages", "empty", "not-a-list", "no-id", "long-id", "last-is-assistant", "no-parts",
        "text-without-text", "not-a-message", "unknown-trigger", "unknown-agent", "not-an-object"])
async def test_bad_bodies_are_422(alice, payload):
    resp = await alice.request("POST", "/agent/streaming", payload)
    assert resp.code == 422, resp.body
    assert set(body(resp)) == {"message"}
    assert (await alice.request("GET", "/agent/chatMessages/s-bad")).body == b'{"messages":[]}'


async def test_not_json_is_400(alice):
    resp = await alice.request("POST", "/agent/streaming", raw=b"{not json")
    assert resp.code == 400 and set(body(resp)) == {"message"}


async def test_a_message_id_used_twice_is_422(alice):
    await post_stream(alice, chat_body("s-twice", "one", "u1"))
    resp = await alice.request("POST", "/agent/streaming", chat_body("s-twice", "one again", "u1"))
    assert resp.code == 422


# -- regenerate and edit (useChat's regenerate() and sendMessage({messageId})) ------------------

async def test_regenerate_rewinds_from_the_message(alice):
    _, raw = await post_stream(alice, chat_body("s-regen", "first", "u1"))
    old_assistant = sdk_chunks(raw)[0]["messageId"]
    # regenerate(): the messages up to the user message, messageId = the assistant message
    regen = {**chat_body("s-regen", "first", "u1"), "trigger": "regenerate-message", "messageId": old_assistant}
    resp, raw = await post_stream(alice, regen)
    assert resp.code == 200
    new_assistant = sdk_chunks(raw)[0]["messageId"]
    assert new_assistant != old_assistant
    user, assistant = await history(alice, "s-regen")
    assert user["parts"] == [{"type": "text", "text": "first"}] and user["id"] == "u1"
    assert assistant["id"] == new_assistant
    # again, with the ids the client holds: still one turn
    resp, raw = await post_stream(alice, {**regen, "messageId": new_assistant})
    assert resp.code == 200 and sdk_chunks(raw)[-1] == {"type": "finish"}
    assert [m["role"] for m in await history(alice, "s-regen")] == ["user", "assistant"]
    # regenerate() without a messageId (the last message)
    resp, raw = await post_stream(alice, {**regen, "messageId": None})
    assert resp.code == 200
    assert [m["role"] for m in await history(alice, "s-regen")] == ["user", "assistant"]


async def test_edit_rewinds_from_the_edited_message(alice):
    await post_stream(alice, chat_body("s-edit", "one", "u1"))
    await post_stream(alice, chat_body("s-edit", "two", "u2"))
    edit = {**chat_body("s-edit", "one, edited", "u1"), "messageId": "u1"}
    resp, raw = await post_stream(alice, edit)
    assert resp.code == 200 and sdk_chunks(raw)[-1] == {"type": "finish"}
    messages = await history(alice, "s-edit")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["parts"][0]["text"] == "one, edited"
    assert messages[0]["id"] == "u1"
    assert "one, edited" in messages[1]["parts"][-1]["text"]
    # the client still knows the message as u1: rewind and edit from it again
    resp = await alice.request("GET", "/agent/rewind/s-edit/u1")
    assert resp.code == 200 and json.loads(resp.body) == {"messages": []}
    resp, raw = await post_stream(alice, {**chat_body("s-edit", "one, edited twice", "u1"), "messageId": "u1"})
    assert resp.code == 200
    messages = await history(alice, "s-edit")
    assert [(m["id"], m["role"]) for m in messages] == [("u1", "user"), (messages[1]["id"], "assistant")]
    assert messages[0]["parts"][0]["text"] == "one, edited twice"


# -- resuming: GET /agent/stream/:threadId and /agent/streaming/:threadId/stream --------------

RESUME_PATHS = ["/agent/stream/{}", "/agent/streaming/{}/stream"]


@pytest.mark.parametrize("path", RESUME_PATHS)
async def test_resume_is_204_when_nothing_runs(alice, path):
    resp = await alice.request("GET", path.format("r-unknown"))
    assert resp.code == 204 and resp.body == b""
    await post_stream(alice, chat_body("r-done", "hi"))
    resp = await alice.request("GET", path.format("r-done"))
    assert resp.code == 204 and resp.body == b""


@pytest.mark.parametrize("path", RESUME_PATHS)
async def test_resume_replays_the_live_run_from_its_start(alice, bob, path):
    thread = f"r-live-{RESUME_PATHS.index(path)}"
    _, first = await post_stream(alice, chat_body(thread, "/approve ship it"), stop=upto("data-parked"))
    first_chunks = sdk_chunks(first[: first.rfind(b"\n\n") + 2], done=False)
    parked = await wait_until(lambda: status(alice, thread), status_in("parked"))
    assert parked["parked"]["correlationKey"]

    forbidden = await bob.request("GET", path.format(thread))
    assert forbidden.code == 403 and set(body(forbidden)) == {"message"}

    resp, again = await post_stream(alice, b"", path=path.format(thread), stop=upto("data-parked"))
    chunks = sdk_chunks(again[: again.rfind(b"\n\n") + 2], done=False)
    assert chunks == first_chunks
    assert chunks[0] == {"type": "start", "messageId": chunks[0]["messageId"]}

    # open a resume, wake the run, read it to its end
    reading = asyncio.ensure_future(post_stream(alice, b"", path=path.format(thread)))
    await asyncio.sleep(0.05)
    signal = await alice.request("POST", f"/api/jobs/{parked['taskId']}/signal",
                                 {"correlation_key": parked["parked"]["correlationKey"], "payload": {"approved": True}})
    assert signal.code == 200, signal.body
    resp, full = await reading
    assert resp.code == 200
    check_headers(resp)
    whole = sdk_chunks(full)
    assert whole[: len(first_chunks)] == first_chunks
    assert [c["type"] for c in whole].count("start") == 1
    assert whole[-1] == {"type": "finish"}
    assert (await history(alice, thread))[-1]["id"] == whole[0]["messageId"]


# -- history, rewind, status, stop, POST /agent/task -----------------------------------------

async def test_chat_messages(alice, bob):
    assert body(await alice.request("GET", "/agent/chatMessages/h-none")) == {"messages": []}
    await post_stream(alice, chat_body("h-1", "hello", "u1"))
    messages = await history(alice, "h-1")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages == body(await alice.request("GET", "/messages/h-1"))["messages"]
    resp = await bob.request("GET", "/agent/chatMessages/h-1")
    assert resp.code == 403 and set(body(resp)) == {"message"} and b"hello" not in resp.body


async def test_rewind_lists_the_messages_before(alice, bob):
    await post_stream(alice, chat_body("w-1", "one", "u1"))
    await post_stream(alice, chat_body("w-1", "two", "u2"))
    messages = await history(alice, "w-1")
    assert len(messages) == 4
    resp = await alice.request("GET", "/agent/rewind/w-1/u2")
    assert resp.code == 200 and body(resp) == {"messages": messages[:2]}
    assert body(await alice.request("GET", "/agent/rewind/w-1/u1")) == {"messages": []}
    assert body(await alice.request("GET", f"/agent/rewind/w-1/{messages[3]['id']}")) == {"messages": messages[:3]}
    missing = await alice.request("GET", "/agent/rewind/w-1/nope")
    assert missing.code == 404 and set(body(missing)) == {"message"}
    assert (await alice.request("GET", "/agent/rewind/w-unknown/u1")).code == 404
    forbidden = await bob.request("GET", "/agent/rewind/w-1/u2")
    assert forbidden.code == 403 and b"one" not in forbidden.body


async def test_status_and_stop(alice, bob):
    assert await status(alice, "st-1") == {"status": "idle", "taskId": None, "threadId": "st-1"}
    started = await alice.request("POST", "/agent/task", {"threadId": "st-1", "content": "/sleep 30"})
    assert started.code == 201
    task_id = body(started)["taskId"]
    assert body(started) == {"taskId": task_id, "threadId": "st-1"}
    st = await wait_until(lambda: status(alice, "st-1"), status_in("running"))
    assert st["taskId"] == task_id and st["threadId"] == "st-1" and st["agentId"] == "demo"
    assert isinstance(st["createdAt"], int) and st["parked"] is None

    assert (await bob.request("GET", "/agent/task/st-1/status")).code == 403
    bob_stop = await bob.request("POST", "/agent/task/st-1/stop")
    assert bob_stop.code == 403 and task_id.encode() not in bob_stop.body
    assert (await status(alice, "st-1"))["status"] == "running"

    stop = await alice.request("POST", "/agent/task/st-1/stop")
    assert stop.code == 200 and body(stop) == {"success": True, "taskId": task_id}
    assert (await alice.task(task_id))["status"] == "cancelled"
    again = await alice.request("POST", "/agent/task/st-1/stop")
    assert again.code == 200 and body(again) == {"success": True, "taskId": None}
    nothing = await alice.request("POST", "/agent/task/st-never/stop")
    assert nothing.code == 200 and body(nothing) == {"success": True, "taskId": None}
    assert (await status(alice, "st-1"))["status"] == "idle"


async def test_post_agent_task(alice, bob):
    resp = await alice.request("POST", "/agent/task", {"threadId": "pt-1", "message": {
        "id": "m1", "role": "user", "parts": [{"type": "text", "text": "/sleep 30"}]}})
    assert resp.code == 201
    task_id = body(resp)["taskId"]
    busy = await alice.request("POST", "/agent/task", {"threadId": "pt-1", "content": "again"})
    assert busy.code == 409 and body(busy) == {"message": "the thread already has a running task", "taskId": task_id}
    forbidden = await bob.request("POST", "/agent/task", {"threadId": "pt-1", "content": "mine"})
    assert forbidden.code == 403 and task_id.encode() not in forbidden.body
    for bad in ({"threadId": "pt-2"}, {"threadId": "pt-2", "content": ""}, {"threadId": 5, "content": "x"},
                {"threadId": "pt-2", "content": "x", "message": {"role": "user", "parts": []}}):
        bad_resp = await alice.request("POST", "/agent/task", bad)
        assert bad_resp.code == 422 and set(body(bad_resp)) == {"message"}, bad
    await alice.request("POST", "/agent/task/pt-1/stop")
    fresh = await alice.request("POST", "/agent/task", {"content": "hi"})
    assert fresh.code == 201 and body(fresh)["threadId"]


class TestStreamCap:
    @pytest.fixture
    def parley_config(self, tmp_path):
        return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, max_streams_per_user=1)

    async def test_a_user_over_the_stream_cap_gets_429_and_no_run(self, parley, alice):
        started = await alice.request("POST", "/agent/task", {"threadId": "cap-1", "content": "/approve x"})
        assert started.code == 201
        await wait_until(lambda: status(alice, "cap-1"), status_in("parked"))
        holding = asyncio.ensure_future(post_stream(alice, b"", path="/agent/stream/cap-1"))
        for _ in range(500):
            if parley.streams.total:
                break
            await asyncio.sleep(0.01)
        refused = await alice.request("POST", "/agent/streaming", chat_body("cap-2", "hi"))
        assert refused.code == 429 and "message" in body(refused)
        assert await status(alice, "cap-2") == {"status": "idle", "taskId": None, "threadId": "cap-2"}
        assert await history(alice, "cap-2") == []
        assert (await alice.request("GET", "/agent/streaming/cap-1/stream")).code == 429
        await alice.request("POST", "/agent/task/cap-1/stop")
        _, raw = await holding
        assert sdk_chunks(raw)[-1] == {"type": "error", "errorText": "The run was cancelled."}
        assert parley.streams.total == 0
