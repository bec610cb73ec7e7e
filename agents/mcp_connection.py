"""One configured MCP server's session, through the official `mcp` SDK client.

Only agents/mcp_client.py imports this module, and only when `[[mcp_servers]]`
names a server: the SDK pulls in a web framework that a server without MCP
tools never needs.  The SDK's context managers are anyio-based and must be
entered and exited in one task, so each connection lives in one long-lived
asyncio task that opens them, signals readiness, waits for the stop event and
closes them.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

import orjson
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from agents.tools import Tool, ToolEnv, ToolError

if TYPE_CHECKING:  # agents/mcp_client.py imports this module only when a server is configured
    from agents.mcp_client import McpServerConfig

log = logging.getLogger("parley.mcp")
CLOSE_TIMEOUT_S = 10.0


def _text_of(content: list[Any]) -> str:
    return "\n".join(c.text for c in content if isinstance(c, types.TextContent))


def _output_of(result: types.CallToolResult) -> Any:
    """A tool's JSON output: its structured content, else its text (JSON if it parses), else its content."""
    if result.structured_content is not None:
        return result.structured_content
    if len(result.content) == 1 and isinstance(result.content[0], types.TextContent):
        text = result.content[0].text
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content]


class McpConnection:
    """One configured server: a session kept open in its own task until `close()`."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.session: ClientSession | None = None
        self.tools: list[types.Tool] = []
        self.error: BaseException | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.session is not None

    async def start(self) -> bool:
        """Connect, initialize and list the tools within connect_timeout; False (logged) when that fails."""
        self._task = asyncio.create_task(self._main(), name=f"mcp:{self.config.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.config.connect_timeout_s)
        except TimeoutError:
            log.warning("MCP server %r: not ready within %ss; skipped", self.config.name, self.config.connect_timeout_s)
            await self.close()
            return False
        if self.session is None:
            log.warning("MCP server %r: cannot connect (%s); skipped", self.config.name, _describe(self.error))
            await self.close()
            return False
        return True

    async def _main(self) -> None:
        cfg = self.config
        try:
            async with contextlib.AsyncExitStack() as stack:
                if cfg.command:
                    params = StdioServerParameters(command=cfg.command[0], args=list(cfg.command[1:]), env=cfg.env or None)
                    read, write = await stack.enter_async_context(stdio_client(params, errlog=sys.stderr))
                else:
                    assert cfg.url is not None
                    http = await stack.enter_async_context(create_mcp_http_client(headers=cfg.headers or None))
                    read, write = await stack.enter_async_context(streamable_http_client(cfg.url, http_client=http))
                session = await stack.enter_async_context(ClientSession(read, write, read_timeout_seconds=cfg.connect_timeout_s))
                await session.initialize()
                tools: list[types.Tool] = []
                cursor: str | None = None
                while True:
                    listed = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                    tools.extend(listed.tools)
                    cursor = listed.next_cursor
                    if not cursor:
                        break
                self.tools = tools
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
        except Exception as exc:  # the server failed to start, or the connection broke
            self.error = exc
            if self.session is not None:
                log.warning("MCP server %r: connection lost (%s)", cfg.name, _describe(exc))
        finally:
            self.session = None
            self._ready.set()

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        session = self.session
        if session is None:
            raise ToolError(f"MCP server {self.config.name} is not connected")
        try:
            result = await asyncio.wait_for(
                session.call_tool(tool, args, read_timeout_seconds=self.config.timeout_s), self.config.timeout_s + 1)
        except TimeoutError:
            raise ToolError(f"MCP tool {self.config.name}.{tool} timed out after {self.config.timeout_s}s") from None
        except Exception as exc:  # MCPError, a broken connection, an invalid result
            raise ToolError(f"MCP tool {self.config.name}.{tool} failed: {_describe(exc)}") from None
        if result.is_error:
            raise ToolError(_text_of(result.content) or f"MCP tool {self.config.name}.{tool} failed")
        return _output_of(result)

    def as_tools(self) -> list[Tool]:
        out = []
        for t in self.tools:
            async def run(args: dict[str, Any], env: ToolEnv, _name: str = t.name) -> Any:
                return await self.call(_name, args)

            out.append(Tool(
                name=f"{self.config.name}.{t.name}",
                description=t.description or f"{t.name} (MCP server {self.config.name})",
                input_schema=dict(t.input_schema) if t.input_schema else {"type": "object"},
                run=run,
                meta={"mcp_server": self.config.name, "mcp_tool": t.name},
            ))
        return out

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:  # already logged by the task
            pass


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _describe(exc.exceptions[0])
    return f"{type(exc).__name__}: {exc}"
