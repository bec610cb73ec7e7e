"""Parley as an MCP server at /mcp (seed 003, SPEC section 11): the streamable HTTP transport, JSON-RPC errors."""
from __future__ import annotations

from typing import Any

from handlers.mcp import server

default_handlers: list[Any] = [*server.default_handlers]
OPENAPI: dict[str, dict[str, dict[str, Any]]] = {**server.OPENAPI}
