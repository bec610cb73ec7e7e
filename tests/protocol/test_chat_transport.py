"""Proof that `useChat`'s transport works against Parley's /agent routes unchanged.

`tests/protocol/chat_transport.mjs` runs the REAL `ai` package (ai@5.0.0, whose
chunk schema is strict, and the latest 5.x): `DefaultChatTransport` with
`api: http://127.0.0.1:<port>/agent/streaming` talks over real HTTP to the
in-process server (`sendMessages` → POST /agent/streaming; `reconnectToStream`
→ its default URL GET /agent/streaming/:chatId/stream), and the returned
stream is assembled by `readUIMessageStream`.  Every assembled message must
equal the assistant message that GET /agent/chatMessages returns.

Node runs through asyncio.create_subprocess_exec, so the server's loop keeps
serving while node talks to it.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from server import Config
from tests.helpers import INTERNAL_KEY, Client
from tests.protocol.test_ai_sdk import PACKAGES, _node

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "protocol" / "chat_transport.mjs"
NODE_TIMEOUT_S = 60.0

pytestmark = pytest.mark.parametrize("pkg", PACKAGES)


@pytest.fixture(autouse=True)
def node() -> str:
    """Checked before any run starts, so that a missing `node` skips at once."""
    return _node()


class Transport:
    """One `DefaultChatTransport` of a user, as a browser would hold it."""

    def __init__(self, http: Any, pkg: str, user: str = "alice") -> None:
        self.pkg = pkg
        self.api = http.get_url("/agent/streaming")
        self.headers = {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": user}

    async def call(self, op: str, chat_id: str, before: Any = None, **request: Any) -> dict[str, Any]:
        """Run chat_transport.mjs; `before` (a coroutine function) runs once node has loaded the package."""
        proc = await asyncio.create_subprocess_exec(
            _node(), str(SCRIPT), self.pkg, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            async with asyncio.timeout(NODE_TIMEOUT_S):
                ready = await proc.stdout.readline()
                if ready != b"ready\n":
                    _, err = await proc.communicate()
                    pytest.fail(f"chat_transport.mjs {self.pkg} did not start: {ready!r} {err.decode(errors='replace')}")
                if before is not None:
                    await before()
                payload = {"op": op, "api": self.api, "headers": self.headers, "chatId": chat_id, **request}
                out, err = await proc.communicate(json.dumps(payload).encode())
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        assert proc.returncode == 0, f"{self.pkg} refused Parley's stream (exit {proc.returncode}):\n{err.decode(errors='replace')}"
        return json.loads(out)

    async def send(self, chat_id: str, text: str, msg_id: str = "u1", **request: Any) -> dict[str, Any]:
        messages = [{"id": msg_id, "role": "user", "parts": [{"type": "text", "text": text}]}]
        return await self.call("send", chat_id, messages=request.pop("messages", messages), **request)


async def stored(client: Client, thread_id: str) -> list[dict[str, Any]]:
    resp = await client.request("GET", f"/agent/chatMessages/{thread_id}")
    assert resp.code == 200, resp.body
    return json.loads(resp.body)["messages"]


def same_message(assembled: dict[str, Any] | None, stored_message: dict[str, Any]) -> None:
    """The client's assembly equals the server's stored assistant message, part for part."""
    assert assembled is not None
    assert assembled["role"] == stored_message["role"] == "assistant"
    assert {k: assembled[k] for k in ("id", "parts")} == {k: stored_message[k] for k in ("id", "parts")}, (
        f"client: {json.dumps(assembled)}\nserver: {json.dumps(stored_message)}")


# -- sendMessages -----------------------------------------------------------------------------

async def test_send_messages(http_server_client, alice, pkg):
    result = await Transport(http_server_client, pkg).send("ct-text", "hello world", body={"agentId": "demo"})
    assert result["stream"] is True and result["errors"] == []
    user, assistant = await stored(alice, "ct-text")
    assert user["id"] == "u1" and user["parts"] == [{"type": "text", "text": "hello world"}]
    same_message(result["message"], assistant)
    assert [p["type"] for p in result["message"]["parts"]] == ["step-start", "text"]
    assert result["message"]["parts"][-1] == {"type": "text", "text": 'You said: "hello world"', "state": "done"}


async def test_send_messages_with_a_tool_call(http_server_client, alice, pkg):
    result = await Transport(http_server_client, pkg).send("ct-tool", "/tool calculator 2+3*4")
    assert result["errors"] == []
    same_message(result["message"], (await stored(alice, "ct-tool"))[1])
    (tool,) = [p for p in result["message"]["parts"] if p["type"].startswith("tool-")]
    assert tool["state"] == "output-available" and tool["output"] == {"expression": "2+3*4", "result": 14}


async def test_a_failed_run_is_an_error_chunk(http_server_client, alice, pkg):
    result = await Transport(http_server_client, pkg).send("ct-fail", "/fail")
    assert result["errors"] == ["The demo agent failed on purpose (/fail)."]
    _user, assistant = await stored(alice, "ct-fail")
    assert result["message"]["id"] == assistant["id"]


async def test_regenerate(http_server_client, alice, pkg):
    transport = Transport(http_server_client, pkg)
    first = await transport.send("ct-regen", "say it", "u1")
    old_id = first["message"]["id"]
    again = await transport.send("ct-regen", "say it", "u1", trigger="regenerate-message", messageId=old_id)
    assert again["errors"] == [] and again["message"]["id"] != old_id
    user, assistant = await stored(alice, "ct-regen")
    same_message(again["message"], assistant)
    # The client's user message keeps its id: the client can rewind or regenerate from it again.
    assert user["id"] == "u1"
    rewind = await alice.request("GET", "/agent/rewind/ct-regen/u1")
    assert rewind.code == 200 and json.loads(rewind.body) == {"messages": []}
    third = await transport.send("ct-regen", "say it", "u1", trigger="regenerate-message", messageId=assistant["id"])
    assert third["errors"] == []
    user, assistant = await stored(alice, "ct-regen")
    assert user["id"] == "u1"
    same_message(third["message"], assistant)
    # An edit of u1 (sendMessage({messageId: "u1"})) keeps the id as well.
    edited = await transport.send("ct-regen", "say it again", "u1", messageId="u1")
    assert edited["errors"] == []
    user, assistant = await stored(alice, "ct-regen")
    assert user["id"] == "u1" and user["parts"] == [{"type": "text", "text": "say it again"}]
    same_message(edited["message"], assistant)


async def test_a_busy_thread_is_refused_before_any_byte(http_server_client, alice, pkg):
    resp = await alice.request("POST", "/agent/task", {"threadId": "ct-busy", "content": "/sleep 30"})
    task_id = json.loads(resp.body)["taskId"]
    result = await Transport(http_server_client, pkg).send("ct-busy", "hi", "u2")
    assert json.loads(result["thrown"]) == {"message": "the thread already has a running task", "taskId": task_id}
    await alice.request("POST", "/agent/task/ct-busy/stop")


# -- reconnectToStream --------------------------------------------------------------------------

async def test_reconnect_is_null_when_nothing_runs(http_server_client, alice, pkg):
    transport = Transport(http_server_client, pkg)
    assert await transport.call("reconnect", "ct-idle") == {"stream": False}
    await transport.send("ct-idle", "hi")
    assert await transport.call("reconnect", "ct-idle") == {"stream": False}


class TestLiveReconnect:
    """A reconnect in the middle of a paced run gets the whole run, from its `start`."""

    @pytest.fixture
    def parley_config(self, tmp_path):
        return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=4)

    async def test_reconnect_replays_the_live_run(self, http_server_client, parley, alice, bob, pkg):
        thread = "ct live é"  # the transport builds the URL from the id (ai-latest percent-encodes it)
        task: dict[str, str] = {}

        async def start_and_wait_for_deltas() -> None:
            resp = await alice.request("POST", "/agent/task", {"threadId": thread, "content": "/count 300"})
            assert resp.code == 201, resp.body
            task["id"] = json.loads(resp.body)["taskId"]
            for _ in range(500):
                events = await parley.runs.events_after(task["id"], 0, 1000)
                if sum(e.type == "text.delta" for e in events) >= 10:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the run streamed no text")

        result = await Transport(http_server_client, pkg).call("reconnect", thread, before=start_and_wait_for_deltas)
        assert result["stream"] is True and result["errors"] == []
        text = "".join(f"{k} " for k in range(1, 301))
        assert result["message"]["parts"][-1] == {"type": "text", "text": text, "state": "done"}
        assert (await alice.task(task["id"]))["status"] == "completed"
        same_message(result["message"], (await stored(alice, quote(thread)))[1])

        # another user's transport is refused (403), and learns nothing
        resp = await alice.request("POST", "/agent/task", {"threadId": thread, "content": "/sleep 30"})
        refused = await Transport(http_server_client, pkg, "bob").call("reconnect", thread)
        assert set(json.loads(refused["thrown"])) == {"message"}
        await alice.request("POST", f"/agent/task/{quote(thread)}/stop")
        assert json.loads(resp.body)["taskId"] not in refused["thrown"]
