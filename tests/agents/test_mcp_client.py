"""Tools of MCP servers named in config, through the official SDK client (stdio and streamable HTTP)."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import AgentRegistry
from agents.mcp_client import McpServerConfig, McpTools
from agents.tools import ToolEnv, ToolError
from config import check_file

SAMPLE = str(Path(__file__).with_name("mcp_sample_server.py"))
ENV = ToolEnv(user_id="alice", task_id="t", thread_id="th")


def stdio_table(name="sample"):
    return {"name": name, "command": [sys.executable, SAMPLE]}


async def check_sample_tools(registry):
    tools = registry.tools
    assert {"sample.add", "sample.shout", "sample.fail"} <= set(tools)
    assert tools["sample.add"].input_schema["properties"].keys() == {"a", "b"}
    assert "Adds" in tools["sample.add"].description
    assert await tools["sample.add"].run({"a": 2, "b": 3}, ENV) == {"result": 5}
    assert await tools["sample.shout"].run({"text": "hi"}, ENV) == {"result": "HI!"}
    with pytest.raises(ToolError, match="nope"):
        await tools["sample.fail"].run({"reason": "nope"}, ENV)
    with pytest.raises(ToolError):
        await tools["sample.add"].run({"a": "x"}, ENV)  # invalid arguments: isError from the server


async def test_stdio_server_tools():
    registry = AgentRegistry()
    mcp = await McpTools.start([stdio_table()], registry)
    try:
        assert sorted(mcp.registered) == ["sample.add", "sample.fail", "sample.shout"]
        await check_sample_tools(registry)
    finally:
        await mcp.close()
    assert "sample.add" not in registry.tools
    with pytest.raises(ToolError, match="not connected"):
        await mcp_tool_after_close()


async def mcp_tool_after_close():
    registry = AgentRegistry()
    mcp = await McpTools.start([stdio_table()], registry)
    tool = registry.tools["sample.add"]
    await mcp.close()
    await tool.run({"a": 1, "b": 1}, ENV)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_sample():
    port = free_port()
    proc = subprocess.Popen([sys.executable, SAMPLE, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "the sample HTTP server exited"
                assert time.monotonic() < deadline, "the sample HTTP server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_streamable_http_server_tools(http_sample):
    registry = AgentRegistry()
    mcp = await McpTools.start([{"name": "sample", "url": http_sample, "headers": {"X-Test": "1"}}], registry)
    try:
        assert "sample.add" in mcp.registered
        await check_sample_tools(registry)
    finally:
        await mcp.close()


async def test_bad_servers_are_skipped(caplog):
    caplog.set_level(logging.WARNING, logger="parley.mcp")
    registry = AgentRegistry()
    tables = [
        {"name": "broken", "command": ["/nonexistent/mcp-server"]},
        {"name": "exits", "command": [sys.executable, "-c", "import sys; sys.exit(3)"]},
        {"name": "silent", "command": [sys.executable, "-c", "import time; time.sleep(30)"], "connect_timeout": 1},
        {"name": "nowhere", "url": f"http://127.0.0.1:{free_port()}/mcp", "connect_timeout": 3},
        {"name": "neither"},
        stdio_table(),
    ]
    t0 = time.monotonic()
    mcp = await McpTools.start(tables, registry)
    try:
        assert time.monotonic() - t0 < 15
        assert sorted(mcp.connections) == ["sample"]
        assert await registry.tools["sample.add"].run({"a": 1, "b": 2}, ENV) == {"result": 3}
        text = caplog.text
        for name in ("broken", "exits", "silent", "nowhere", "neither"):
            assert f"'{name}'" in text, name
        assert "skipped" in text
    finally:
        await mcp.close()


def test_config_tables():
    cfg = McpServerConfig.from_table(0, {"name": "t", "command": ["x", "-y"], "timeout": 5})
    assert cfg.command == ("x", "-y") and cfg.timeout_s == 5.0 and cfg.url is None
    for neither_or_both in ({"name": "t"}, {"name": "t", "command": ["x"], "url": "http://h/mcp"}):
        with pytest.raises(ValueError, match="give either command"):
            McpServerConfig.from_table(0, neither_or_both)
    for bad, problem in (({"name": "a.b", "command": ["x"]}, 'name: expected 1-64 letters, digits, _ or -, got "a.b"'),
                         ({"name": "t", "url": "ftp://x"}, "url: expected an http(s) URL"),
                         ({"name": "t", "command": []}, "command: expected an array (not empty), each a non-empty string, got an array"),
                         ({"name": "t", "command": ["x"], "nope": 1}, "nope: unknown key"),
                         ({"name": "t", "command": ["x"], "timeout": 0}, "timeout: expected a number of seconds, above 0"),
                         ({"name": "t", "url": "http://h/mcp", "headers": {"a": 1}}, "headers.a: expected a string, got 1")):
        problems = check_file({"mcp_servers": [bad]})[1]
        assert len(problems) == 1 and problems[0].startswith(f"[[mcp_servers]] #1 {problem}"), problems


async def test_run_uses_an_mcp_tool_end_to_end(parley, alice):
    mcp = await McpTools.start([stdio_table()], parley.agents)
    try:
        resp = await alice.request("POST", "/api/agents", {"name": "m", "type": "demo", "tools": ["sample.add"]})
        assert resp.code == 201, resp.body
        agent_id = json.loads(resp.body)["id"]
        task_id = await alice.start_ok("mcp-thread-1", '/tool sample.add {"a": 2, "b": 3}', agentId=agent_id)
        code, frames = await alice.stream(task_id)
        assert code == 200
        chunks = [c for f in frames if f.id is not None and f.event is None for c in f.chunks]
        start = next(c for c in chunks if c["type"] == "tool-input-available")
        assert start["toolName"] == "sample.add" and start["input"] == {"a": 2, "b": 3}
        out = next(c for c in chunks if c["type"] == "tool-output-available")
        assert out["output"] == {"result": 5}
        assert (await alice.task(task_id))["status"] == "completed"
    finally:
        await mcp.close()


async def test_parley_tools_over_mcp_include_proxied_ones(parley, http_server_client):
    """A tool proxied from an MCP server is itself offered at Parley's /mcp."""
    from tests.handlers.mcp.test_server import mcp_session
    from tests.helpers import INTERNAL_KEY

    mcp = await McpTools.start([stdio_table()], parley.agents)
    try:
        headers = {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": "alice"}
        async with mcp_session(http_server_client.get_url("/mcp"), headers) as session:
            await session.initialize()
            assert "sample.add" in {t.name for t in (await session.list_tools()).tools}
            result = await session.call_tool("sample.add", {"a": 20, "b": 22})
            assert result.structured_content == {"result": 42}
    finally:
        await mcp.close()
    await asyncio.sleep(0)


# A server in a fresh interpreter (this one has imported the SDK long ago): it serves a request
# that is not /mcp, then a whole MCP exchange at /mcp, and prints whether the SDK was imported.
SERVE_AND_ASK = r"""
import asyncio, json, sys
from pathlib import Path
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from server import Config, Parley

async def main():
    parley = Parley(Config(data_dir=Path(sys.argv[1]), internal_key="k", demo_delay_ms=0, extra=json.loads(sys.argv[2])))
    server = HTTPServer(await parley.open())
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    head = {"X-Internal-Key": "k", "X-User-Id": "alice", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}
    http = AsyncHTTPClient()
    out = {"tools": sorted(t for t in parley.agents.tools if t.startswith("sample.")),
           "health": (await http.fetch(url + "/health")).code, "sdk_after_health": "mcp" in sys.modules}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    resp = await http.fetch(url + "/mcp", method="POST", headers=head, body=json.dumps(init))
    head["Mcp-Session-Id"] = resp.headers["Mcp-Session-Id"]
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "calculator", "arguments": {"expression": "6*7"}}}
    result = json.loads((await http.fetch(url + "/mcp", method="POST", headers=head, body=json.dumps(call))).body)
    out.update(calculated=result["result"]["structuredContent"]["result"], sdk_after_mcp="mcp" in sys.modules)
    server.stop()
    await parley.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def serve_and_ask(tmp_path, extra):
    root = Path(__file__).parents[2]
    proc = subprocess.run([sys.executable, "-c", SERVE_AND_ASK, str(tmp_path / "data"), json.dumps(extra)],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_the_sdk_is_imported_only_when_a_server_is_configured(tmp_path):
    """The SDK (and the web framework it pulls in) is not imported by a server without [[mcp_servers]],
    not even when /mcp is used: Parley's own MCP endpoint does not need it."""
    plain = serve_and_ask(tmp_path, {})
    assert plain == {"tools": [], "health": 200, "sdk_after_health": False, "calculated": 42, "sdk_after_mcp": False}
    configured = serve_and_ask(tmp_path, {"mcp_servers": [stdio_table()]})
    assert configured["tools"] == ["sample.add", "sample.fail", "sample.shout"]
    assert configured["sdk_after_health"] and configured["calculated"] == 42
