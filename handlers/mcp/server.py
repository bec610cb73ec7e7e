"""Parley as an MCP server at /mcp (SPEC section 7): streamable HTTP, JSON responses only.

JSON-RPC 2.0 over POST, one message a request (no batches: the protocol
revisions served here dropped them).  `initialize` issues an
`Mcp-Session-Id`; requests may carry it (an unknown, expired or another user's
id is 404, so that the client starts over).  Each user holds at most 100
sessions (one more evicts that user's least recently used), and a session
expires after 30 minutes unused.  There is no server-initiated stream:
GET is 405.  DELETE ends the session.  Auth is the same as every route.
"""
from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson

from agents.tools import InsufficientCredits, Tool, ToolEnv, ToolError, for_model
from handlers.base import APIHandler
from handlers.errors import ApiError

# Newest first; the SDK's `initialize` handshake accepts these.
PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
LATEST = PROTOCOL_VERSIONS[0]
SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
MAX_SESSIONS_PER_USER = 100
SESSION_IDLE_S = 30 * 60

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


@dataclass
class _Session:
    user_id: str
    version: str
    last_used: float


class McpSessions:
    """Session id -> its user and protocol version, kept per user.

    A user holds at most `per_user` sessions: one more evicts that user's least
    recently used one (its client gets 404 and initializes again, as the protocol
    says), never another user's.  A session unused for `idle_s` seconds expires.
    """

    def __init__(self, per_user: int = MAX_SESSIONS_PER_USER, idle_s: float = SESSION_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_user = per_user
        self.idle_s = idle_s
        self.clock = clock
        self._recent: OrderedDict[str, _Session] = OrderedDict()  # every session, least recently used first
        self._by_user: dict[str, OrderedDict[str, None]] = {}    # each user's, least recently used first

    def open(self, user_id: str, version: str) -> str:
        self._expire()
        sid = uuid.uuid4().hex
        self._recent[sid] = _Session(user_id, version, self.clock())
        mine = self._by_user.setdefault(user_id, OrderedDict())
        mine[sid] = None
        while len(mine) > self.per_user:
            oldest, _ = mine.popitem(last=False)
            del self._recent[oldest]
        return sid

    def owned(self, sid: str, user_id: str) -> bool:
        """Whether `sid` is a live session of `user_id` (and, if so, it was just used)."""
        self._expire()
        session = self._recent.get(sid)
        if session is None or session.user_id != user_id:
            return False
        session.last_used = self.clock()
        self._recent.move_to_end(sid)
        self._by_user[user_id].move_to_end(sid)
        return True

    def end(self, sid: str) -> None:
        session = self._recent.pop(sid, None)
        if session is not None:
            self._forget(session.user_id, sid)

    def count(self, user_id: str) -> int:
        self._expire()
        return len(self._by_user.get(user_id, ()))

    def __len__(self) -> int:
        self._expire()
        return len(self._recent)

    def _forget(self, user_id: str, sid: str) -> None:
        mine = self._by_user.get(user_id)
        if mine is not None:
            mine.pop(sid, None)
            if not mine:
                del self._by_user[user_id]

    def _expire(self) -> None:
        """Drop the sessions idle for `idle_s`: the least recently used come first, so this stops at the first live one."""
        cutoff = self.clock() - self.idle_s
        while self._recent:
            sid, session = next(iter(self._recent.items()))
            if session.last_used > cutoff:
                return
            del self._recent[sid]
            self._forget(session.user_id, sid)


class _RpcError(Exception):
    def __init__(self, code: int, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class _Refused(_RpcError):
    """A message answered at once with an error for `msg_id`: 400 when it is malformed, 404 for an unknown session."""

    def __init__(self, msg_id: Any, code: int, message: str, status: int = 400) -> None:
        super().__init__(code, message, status)
        self.msg_id = msg_id


@dataclass(frozen=True)
class Call:
    """A JSON-RPC request (`has_id`: it is answered) or notification (it is not)."""

    method: str
    params: dict[str, Any]
    msg_id: str | int | None
    has_id: bool


def json_rpc_message(body: bytes) -> dict[str, Any]:
    """The body as one JSON-RPC 2.0 message; _Refused (400, no id) otherwise, batches included."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _Refused(None, PARSE_ERROR, "parse error: the body is not valid JSON") from None
    if isinstance(message, list):
        raise _Refused(None, INVALID_REQUEST, "batches are not supported (protocol revisions 2025-06-18 and later)")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise _Refused(None, INVALID_REQUEST, "invalid request: not a JSON-RPC 2.0 message")
    return message


def call_of(message: dict[str, Any]) -> Call | None:
    """The request or notification a message holds; None for a response (to a server request:
    none are sent, so it is accepted and ignored); _Refused (400) when it is neither."""
    method, has_id, msg_id = message.get("method"), "id" in message, message.get("id")
    if method is None:
        if has_id and ("result" in message or "error" in message):
            return None
        raise _Refused(msg_id, INVALID_REQUEST, "invalid request: no method")
    if not isinstance(method, str) or (has_id and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int)))):
        raise _Refused(None, INVALID_REQUEST, "invalid request: bad method or id")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _Refused(msg_id, INVALID_REQUEST, "invalid request: params must be an object")
    return Call(method, params, msg_id, has_id)


def exposed_tools(tools: dict[str, Tool]) -> list[Tool]:
    """The tools an MCP client may call: every tool that runs at once (a call cannot park)."""
    return [t for t in tools.values() if not t.parks and t.run is not None]


_MCP_MEDIA = {"image": "image", "audio": "audio"}  # MCP content types for inline base64 media


def tool_result(tool: Tool, output: Any) -> dict[str, Any]:
    """The result of a call: the output as JSON text (and structured), and a file the tool made
    (an image, a sound) as MCP image/audio content rather than as a data: URL inside the text."""
    structured = output if isinstance(output, dict) else {"result": output}
    content: list[dict[str, Any]] = []
    file = tool.file_of(output)
    if file is not None and file["url"].startswith("data:") and ";base64," in file["url"]:
        kind = _MCP_MEDIA.get(file["mediaType"].split("/")[0])
        if kind is not None:
            content.append({"type": kind, "data": file["url"].split(",", 1)[1], "mimeType": file["mediaType"]})
            structured = for_model(structured)  # the pixels travel once, in the media item
    text = orjson.dumps(structured if content else output).decode()
    return {"content": [{"type": "text", "text": text}, *content], "structuredContent": structured, "isError": False}


def tool_error(message: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": message}], "isError": True}


class McpHandler(APIHandler):
    surface = "mcp"

    @property
    def sessions(self) -> McpSessions:
        """The application's sessions (settings["mcp_sessions"]; made on first use)."""
        return cast(McpSessions, self.settings.setdefault("mcp_sessions", McpSessions()))

    @property
    def registry_tools(self) -> dict[str, Tool]:
        return self.runs.agents.tools

    def _rpc(self, msg_id: Any, *, result: Any = None, error: _RpcError | None = None) -> dict[str, Any]:
        if error is not None:
            return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": error.code, "message": error.message}}
        return {"jsonrpc": "2.0", "id": msg_id, "result": result}

    async def get(self) -> None:
        """No server-initiated stream: 405 (the client then only uses POST)."""
        self.set_header("Allow", "POST, DELETE")
        raise ApiError(405, "this server offers no server-initiated SSE stream; POST JSON-RPC messages", "METHOD_NOT_ALLOWED")

    async def delete(self) -> None:
        """End the session named by Mcp-Session-Id: 204; an unknown session is 404."""
        sid = self.request.headers.get(SESSION_HEADER)
        if not sid:
            raise ApiError(400, f"{SESSION_HEADER} header is required")
        if not self.sessions.owned(sid, self.user_id):
            raise ApiError(404, "no such MCP session")
        self.sessions.end(sid)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    async def post(self) -> None:
        """One JSON-RPC message: a request gets a JSON response; a notification or response gets 202."""
        if self._too_large:
            raise self._payload_too_large()
        try:
            call = call_of(json_rpc_message(bytes(self._body)))
            if call is not None and call.method != "initialize":
                self._check_session(call.msg_id)
        except _Refused as refused:
            self.write_json(self._rpc(refused.msg_id, error=refused), refused.status)
            return
        if call is None or not call.has_id:
            self._accepted()  # a response (none are asked for), or a notification: notifications/initialized, ...
            return
        try:
            result = await self._dispatch(call.method, call.params)
        except _RpcError as err:
            self.write_json(self._rpc(call.msg_id, error=err), err.status)
            return
        self.write_json(self._rpc(call.msg_id, result=result))

    def _check_session(self, msg_id: Any) -> None:
        """_Refused unless the protocol version asked for (if any) is served here and the session
        named (if any) is a live one of the caller's (404: the client initializes again)."""
        version = self.request.headers.get(VERSION_HEADER)
        if version is not None and version not in PROTOCOL_VERSIONS:
            raise _Refused(msg_id, INVALID_REQUEST, f"unsupported {VERSION_HEADER}: {version}")
        sid = self.request.headers.get(SESSION_HEADER)
        if sid and not self.sessions.owned(sid, self.user_id):
            raise _Refused(msg_id, INVALID_REQUEST, "session not found", 404)

    def _accepted(self) -> None:
        self.set_status(202)
        self.clear_header("Content-Type")
        self.finish()

    async def _dispatch(self, method: str, params: dict[str, Any]) -> Any:
        if method == "initialize":
            return self._handshake(params)
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": [
                {"name": t.name, "description": t.description, "inputSchema": t.input_schema}
                for t in exposed_tools(self.registry_tools)
            ]}
        if method == "tools/call":
            return await self._call(params)
        raise _RpcError(METHOD_NOT_FOUND, f"method not found: {method}")

    def _handshake(self, params: dict[str, Any]) -> dict[str, Any]:
        requested = params.get("protocolVersion")
        version = requested if isinstance(requested, str) and requested in PROTOCOL_VERSIONS else LATEST
        sid = self.sessions.open(self.user_id, version)
        self.set_header(SESSION_HEADER, sid)
        return {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "parley", "version": str(self.settings.get("version", "0"))},
            "instructions": "Parley's tools (clock, calculator, ...), run as the authenticated user.",
        }

    async def _call(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        args = params.get("arguments", {})
        if args is None:
            args = {}
        if not isinstance(name, str) or not isinstance(args, dict):
            raise _RpcError(INVALID_PARAMS, "tools/call takes {name: string, arguments?: object}")
        tool = next((t for t in exposed_tools(self.registry_tools) if t.name == name), None)
        if tool is None:
            raise _RpcError(INVALID_PARAMS, f"unknown tool: {name}")
        assert tool.run is not None
        env = ToolEnv(user_id=self.user_id, task_id="mcp", thread_id="mcp")
        billing = self.runs.plans  # a tool that costs credits costs them here too
        try:
            charged = await billing.debit(tool.name, env)
        except InsufficientCredits as exc:
            return tool_error(str(exc))
        try:
            output = await tool.run(args, env)
        except ToolError as exc:
            await billing.refund(tool.name, charged, env)
            return tool_error(str(exc))
        except Exception:
            await billing.refund(tool.name, charged, env)
            raise
        return tool_result(tool, output)


OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/mcp": {
        "post": {
            "summary": "MCP server (streamable HTTP, JSON responses): one JSON-RPC 2.0 message "
                       "(initialize, ping, tools/list, tools/call; notifications)",
            "parameters": [
                {"name": SESSION_HEADER, "in": "header", "schema": {"type": "string"}, "description": "issued by initialize"},
                {"name": VERSION_HEADER, "in": "header", "schema": {"type": "string", "enum": list(PROTOCOL_VERSIONS)}},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["jsonrpc"], "properties": {
                "jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]}, "method": {"type": "string"}, "params": {"type": "object"}}}}}},
            "responses": {
                "200": {"description": "the JSON-RPC response (errors: -32601 unknown method, -32602 bad params)",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "202": {"description": "a notification or response, accepted"},
                "400": {"description": "JSON-RPC -32700 parse error or -32600 invalid request (batches included)",
                        "content": {"application/json": {"schema": {"type": "object"}}}},
                "401": {"description": "missing or invalid credentials", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "404": {"description": "unknown MCP session: initialize again"},
                "413": {"description": "body too large", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        },
        "get": {"summary": "No server-initiated SSE stream", "responses": {"405": {"description": "not offered"},
                                                                            "401": {"description": "missing or invalid credentials"}}},
        "delete": {"summary": "End the MCP session named by Mcp-Session-Id",
                   "responses": {"204": {"description": "ended"}, "400": {"description": "no Mcp-Session-Id"},
                                 "401": {"description": "missing or invalid credentials"}, "404": {"description": "unknown session"}}},
    },
}

default_handlers = [(r"/mcp", McpHandler)]
