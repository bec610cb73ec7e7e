"""MCP sessions at /mcp are kept per user (SPEC 13; issue 9 item 11).

A user holds at most 100 sessions: one more evicts that user's least recently
used one, never another user's; a session unused for 30 minutes expires; a
session id of another user is "session not found" (404, as the MCP streamable
HTTP transport says, so that the client initializes again).  Time is a fake
clock given to the application's session table, so nothing sleeps.
"""
from __future__ import annotations

import json

from handlers.mcp.server import MAX_SESSIONS_PER_USER, SESSION_IDLE_S, McpSessions
from tests.handlers.mcp.test_server import INIT, internal, mcp_session, rpc


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def initialize(http, user: str) -> str:
    resp = await rpc(http, INIT, internal(user))
    assert resp.code == 200, resp.body
    return str(resp.headers["Mcp-Session-Id"])


async def ping(http, sid: str, user: str):
    return await rpc(http, {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                     {**internal(user), "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})


def assert_not_found(resp) -> None:
    assert resp.code == 404, (resp.code, resp.body)
    assert json.loads(resp.body)["error"]["message"] == "session not found"


async def test_a_user_over_the_cap_evicts_only_their_own_least_recently_used(app, http_server_client):
    http = http_server_client
    bob = await initialize(http, "bob")
    alice = [await initialize(http, "alice") for _ in range(MAX_SESSIONS_PER_USER)]
    assert (await ping(http, alice[0], "alice")).code == 200  # used: now alice[1] is her least recently used
    newest = await initialize(http, "alice")  # her 101st
    assert_not_found(await ping(http, alice[1], "alice"))
    for sid in (alice[0], alice[2], alice[-1], newest):
        assert (await ping(http, sid, "alice")).code == 200
    for _ in range(3 * MAX_SESSIONS_PER_USER):  # a flood of initializes costs bob nothing
        await initialize(http, "alice")
    assert (await ping(http, bob, "bob")).code == 200
    sessions = app.settings["mcp_sessions"]
    assert (sessions.count("alice"), sessions.count("bob")) == (MAX_SESSIONS_PER_USER, 1)


async def test_another_users_session_id_is_not_found(app, http_server_client):
    http = http_server_client
    sid = await initialize(http, "alice")
    assert_not_found(await ping(http, sid, "bob"))
    resp = await http.fetch("/mcp", method="DELETE", headers={**internal("bob"), "Mcp-Session-Id": sid}, raise_error=False)
    assert resp.code == 404
    assert (await ping(http, sid, "alice")).code == 200  # bob's tries changed nothing


async def test_an_sdk_session_survives_another_users_flood(app, http_server_client):
    async with mcp_session(http_server_client.get_url("/mcp"), internal("bob")) as session:
        await session.initialize()
        for _ in range(2 * MAX_SESSIONS_PER_USER + 1):
            await initialize(http_server_client, "alice")
        result = await session.call_tool("calculator", {"expression": "6*7"})
        assert not result.is_error and result.structured_content["result"] == 42


async def test_an_idle_session_expires(app, http_server_client):
    http = http_server_client
    clock = FakeClock()
    app.settings["mcp_sessions"] = McpSessions(clock=clock)
    sid = await initialize(http, "alice")
    kept = await initialize(http, "alice")
    clock.now += SESSION_IDLE_S - 60
    assert (await ping(http, kept, "alice")).code == 200  # a use restarts its idle time
    clock.now += 120
    assert_not_found(await ping(http, sid, "alice"))
    resp = await http.fetch("/mcp", method="DELETE", headers={**internal("alice"), "Mcp-Session-Id": sid}, raise_error=False)
    assert resp.code == 404
    assert (await ping(http, kept, "alice")).code == 200
    clock.now += SESSION_IDLE_S + 1
    assert_not_found(await ping(http, kept, "alice"))
    assert len(app.settings["mcp_sessions"]) == 0  # expired sessions are dropped, not only refused


def test_the_table_bounds_each_user_and_forgets_idle_ones():
    clock = FakeClock()
    sessions = McpSessions(per_user=3, idle_s=60, clock=clock)
    bob = sessions.open("bob", "2025-11-25")
    alice = [sessions.open("alice", "2025-11-25") for _ in range(50)]
    assert sessions.count("alice") == 3 and sessions.owned(bob, "bob")
    assert [sessions.owned(sid, "alice") for sid in alice[-4:]] == [False, True, True, True]
    assert not sessions.owned(bob, "alice")
    sessions.end(alice[-1])
    assert sessions.count("alice") == 2
    clock.now += 61
    assert len(sessions) == 0 and not sessions.owned(bob, "bob")
