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
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.tools import Tool

if TYPE_CHECKING:
    from agents.mcp_connection import McpConnection

log = logging.getLogger("parley.mcp")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
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
    def from_table(cls, i: int, entry: Any) -> McpServerConfig:
        """One `[[mcp_servers]]` table; ValueError names what is wrong."""
        if not isinstance(entry, dict):
            raise ValueError(f"[[mcp_servers]] #{i + 1} must be a table")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"[[mcp_servers]] #{i + 1}: name must be 1-64 letters, digits, _ or -")
        where = f"[[mcp_servers]] {name!r}"
        known = {"name", "command", "url", "headers", "env", "timeout", "connect_timeout"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        command = entry.get("command")
        url = entry.get("url")
        if (command is None) == (url is None):
            raise ValueError(f"{where}: give either command = [...] (stdio) or url = \"http://.../mcp\"")
        if isinstance(command, str):
            command = [command]
        if command is not None and (not isinstance(command, list) or not command
                                    or not all(isinstance(c, str) and c for c in command)):
            raise ValueError(f"{where}: command must be a non-empty list of strings")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ValueError(f"{where}: url must be an http:// or https:// URL")
        tables: dict[str, dict[str, str]] = {}
        for key in ("headers", "env"):
            value = entry.get(key, {})
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValueError(f"{where}: {key} must be a table of strings")
            tables[key] = dict(value)
        times: dict[str, float] = {}
        for key, default in (("timeout", DEFAULT_CALL_TIMEOUT_S), ("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)):
            value = entry.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3600:
                raise ValueError(f"{where}: {key} must be a number of seconds from 0 to 3600")
            times[key] = float(value)
        return cls(name=name, command=tuple(command or ()), url=url, headers=tables["headers"], env=tables["env"],
                   timeout_s=times["timeout"], connect_timeout_s=times["connect_timeout"])


class McpTools:
    """The `[[mcp_servers]]` connections, their tools registered into an AgentRegistry's `tools`."""

    def __init__(self, tools: dict[str, Tool]) -> None:
        self._registry_tools = tools
        self.connections: dict[str, McpConnection] = {}
        self.registered: list[str] = []

    @classmethod
    async def start(cls, tables: Any, registry: Any) -> McpTools:
        """Connect to every configured server at once (each bounded by its connect_timeout).

        `registry` is an AgentRegistry (anything with a `tools` dict).  Bad tables and
        servers that fail are logged and skipped; this never raises for them.
        """
        self = cls(registry.tools)
        if not tables:
            return self
        if not isinstance(tables, list):
            log.warning("mcp_servers must be an array of tables [[mcp_servers]]; ignored")
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
