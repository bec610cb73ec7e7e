"""Tools of MCP servers named in config (`[[mcp_servers]]`), through the official `mcp` SDK client.

    [[mcp_servers]]
    name = "time"
    command = ["python", "-m", "mcp_server_time"]   # stdio, or:
    # url = "http://127.0.0.1:9000/mcp"            # streamable HTTP
    # headers = {Authorization = "Bearer ..."}     # HTTP only
    # env = {TZ = "UTC"}                           # stdio only
    # timeout = 60                                 # seconds a tool call may take
    # connect_timeout = 15                         # seconds to start, initialize and list tools

Each server's tools register as "<server>.<tool>".  A server that cannot be
reached in time is logged and skipped: Parley starts without it.  The SDK is
imported (agents/mcp_connection.py) only when a server is configured: it pulls
in a web framework that a server without MCP tools never needs.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.tools import Tool

if TYPE_CHECKING:
    from agents.mcp_connection import McpConnection

log = logging.getLogger("parley.mcp")
DEFAULT_CALL_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class McpServerConfig:
    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    @classmethod
    def from_table(cls, i: int, entry: dict[str, Any]) -> McpServerConfig:
        """One `[[mcp_servers]]` table, as config.py's schema checked it; ValueError when it names
        neither or both of a command and a URL."""
        name = entry["name"]
        command, url = entry.get("command"), entry.get("url")
        if (command is None) == (url is None):
            raise ValueError(f"[[mcp_servers]] #{i + 1} ({name!r}): give either command = [...] (stdio) "
                             "or url = \"http://.../mcp\"")
        return cls(name=name, command=tuple([command] if isinstance(command, str) else command or ()), url=url,
                   headers=dict(entry.get("headers", {})), env=dict(entry.get("env", {})),
                   timeout_s=float(entry.get("timeout", DEFAULT_CALL_TIMEOUT_S)),
                   connect_timeout_s=float(entry.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)))


class McpTools:
    """The `[[mcp_servers]]` connections, their tools registered into an AgentRegistry's `tools`."""

    def __init__(self, tools: dict[str, Tool]) -> None:
        self._registry_tools = tools
        self.connections: dict[str, McpConnection] = {}
        self.registered: list[str] = []

    @classmethod
    async def start(cls, tables: list[dict[str, Any]], registry: Any) -> McpTools:
        """Connect to every configured server at once (each bounded by its connect_timeout).

        `registry` is an AgentRegistry (anything with a `tools` dict); `tables` are as config.py's
        schema checked them.  A table with neither or both of command and url, and servers that
        fail, are logged and skipped; this never raises for them.
        """
        self = cls(registry.tools)
        if not tables:
            return self
        configs: list[McpServerConfig] = []
        for i, entry in enumerate(tables):
            try:
                cfg = McpServerConfig.from_table(i, entry)
            except ValueError as exc:
                log.warning("%s; skipped", exc)
                continue
            if cfg.name in {c.name for c in configs}:
                log.warning("[[mcp_servers]] %r is defined more than once; the later one is skipped", cfg.name)
                continue
            configs.append(cfg)
        if not configs:
            return self
        from agents.mcp_connection import McpConnection  # the SDK, only now that a server is configured

        conns = [McpConnection(cfg) for cfg in configs]
        results = await asyncio.gather(*(c.start() for c in conns))
        for conn, ok in zip(conns, results, strict=True):
            if not ok:
                continue
            self.connections[conn.config.name] = conn
            for tool in conn.as_tools():
                if tool.name in self._registry_tools:
                    log.warning("MCP tool %r clashes with a tool of that name; skipped", tool.name)
                    continue
                self._registry_tools[tool.name] = tool
                self.registered.append(tool.name)
            log.info("MCP server %r: %d tool(s)", conn.config.name, len(conn.tools))
        return self

    async def close(self) -> None:
        """Unregister the tools and close every session."""
        for name in self.registered:
            self._registry_tools.pop(name, None)
        self.registered = []
        conns = list(self.connections.values())
        self.connections = {}
        await asyncio.gather(*(c.close() for c in conns))
