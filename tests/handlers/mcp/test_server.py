"""Parley as an MCP server at /mcp, proven with the official `mcp` SDK client."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from handlers import openapi
from tests.helpers import INTERNAL_KEY


@asynccontextmanager
async def mcp_session(url, headers):
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                yield session


def internal(user="alice"):
    return {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": user}


async def check_session(session):
    init = await session.initialize()
    assert init.server_info.name == "parley"
    assert init.protocol_version == "2025-11-25"
    assert init.capabilities.tools is not None
    names = {t.name for t in (await session.list_tools()).tools}
    assert {"clock", "calculator"} <= names
    assert "wait_approval" not in names
    result = await session.call_tool("calculator", {"expression": "6*7"})
    assert not result.is_error
    assert result.structured_content == {"expression": "6*7", "result": 42}
    assert json.loads(result.content[0].text)["result"] == 42
    failed = await session.call_tool("calculator", {"expression": "1/0"})
    assert failed.is_error
    assert "division by zero" in failed.content[0].text
    await session.send_ping()


async def test_sdk_client_with_internal_key(app, http_server_client):
    async with mcp_session(http_server_client.get_url("/mcp"), internal()) as session:
        await check_session(session)


async def test_sdk_client_with_bearer_jwt(app, parley, http_server_client):
    token = parley.auth.issue_jwt("alice")
    async with mcp_session(http_server_client.get_url("/mcp"), {"Authorization": f"Bearer {token}"}) as session:
        await check_session(session)
        clock = await session.call_tool("clock", {"timezone": "UTC"})
        assert not clock.is_error and clock.structured_content["timezone"] == "UTC"


async def test_sdk_client_unknown_tool(app, http_server_client):
    from mcp.shared.exceptions import MCPError

    async with mcp_session(http_server_client.get_url("/mcp"), internal()) as session:
        await session.initialize()
        with pytest.raises(MCPError) as info:
            await session.call_tool("no_such_tool", {})
        assert info.value.error.code == -32602


async def test_sdk_client_without_credentials_fails(app, http_server_client):
    from mcp.shared.exceptions import MCPError

    async with mcp_session(http_server_client.get_url("/mcp"), {}) as session:
        with pytest.raises(MCPError):
            await session.initialize()


async def rpc(http, body, headers=None, raw=None):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **internal()}
    h.update(headers or {})
    return await http.fetch("/mcp", method="POST", body=raw if raw is not None else json.dumps(body), headers=h, raise_error=False)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


async def test_raw_protocol(app, http_server_client):
    http = http_server_client
    resp = await http.fetch("/mcp", method="POST", body=json.dumps(INIT), raise_error=False,
                            headers={"Content-Type": "application/json"})
    assert resp.code == 401
    resp = await rpc(http, INIT)
    assert resp.code == 200 and resp.headers["Content-Type"].startswith("application/json")
    body = json.loads(resp.body)
    assert body["id"] == 1 and body["result"]["protocolVersion"] == "2025-11-25"
    sid = resp.headers["Mcp-Session-Id"]
    session = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    resp = await rpc(http, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
    assert resp.code == 202 and not resp.body
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {}}, session)
    assert json.loads(resp.body)["error"]["code"] == -32601
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, session)
    assert "calculator" in {t["name"] for t in json.loads(resp.body)["result"]["tools"]}
    resp = await rpc(http, None, session, raw=b"{not json")
    assert resp.code == 400 and json.loads(resp.body)["error"]["code"] == -32700
    resp = await rpc(http, [{"jsonrpc": "2.0", "id": 4, "method": "ping"}], session)
    assert json.loads(resp.body)["error"]["code"] == -32600
    resp = await rpc(http, {"id": 5, "method": "ping"}, session)
    assert json.loads(resp.body)["error"]["code"] == -32600
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "calculator", "arguments": "x"}}, session)
    assert json.loads(resp.body)["error"]["code"] == -32602
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "wait_approval", "arguments": {"prompt": "x"}}}, session)
    assert json.loads(resp.body)["error"]["code"] == -32602
    # another user cannot use alice's session
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 8, "method": "ping"}, {**session, "X-User-Id": "bob"})
    assert resp.code == 404
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 9, "method": "ping"}, {**session, "MCP-Protocol-Version": "1999-01-01"})
    assert resp.code == 400
    resp = await http.fetch("/mcp", headers=internal(), raise_error=False)
    assert resp.code == 405
    resp = await http.fetch("/mcp", method="DELETE", headers={**internal(), **session}, raise_error=False)
    assert resp.code == 204
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 10, "method": "ping"}, session)
    assert resp.code == 404
    resp = await rpc(http, {"jsonrpc": "2.0", "id": 11, "method": "ping"})
    assert resp.code == 200 and json.loads(resp.body)["result"] == {}


async def test_openapi_documents_mcp(app, http_server_client):
    doc = json.loads((await http_server_client.fetch("/openapi.json")).body)
    assert doc["paths"]["/mcp"]["post"]["responses"]
    assert "/mcp" in openapi.route_paths(app)
