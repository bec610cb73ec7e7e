"""Seed 004's Agent Chat and Infra routes (SPEC section 9), under /api/v1, with RFC 7807 errors.

`POST /api/v1/agent-chats` starts a run of the default agent on the thread
`session_id` (a new server UUID when absent) and answers once the run has
ended, or parked, or the server-side bound (`agent_chat_timeout_s`, 300 s
by default) has passed:

    200 {session_id, run_id, status, output, events}

- `status` is the run's state when the answer was written: "completed",
  "failed", "cancelled", "parked" (waits for a signal; the events end with a
  `parked` event carrying `correlation_key` and `prompt`, and the run is
  woken through the other surfaces, e.g. POST /api/jobs/:run_id/signal) or
  "running" (the bound passed; the run goes on, visible on every surface).
- A failed run is a 200 with `status: "failed"` and an `error` event: the
  request itself was fine, the agent's failure is the run's result.
- `events` carry only the fields that apply (null fields are omitted; the
  seed lists them all as optional strings):
    text.delta     -> {type: "text_delta", run_id, message_id, delta}
    tool.call.end  -> {type: "tool_call", run_id, message_id, tool_name, input (JSON text)}
    tool.result    -> {type: "tool_result", run_id, message_id, tool_name, result}
    tool.error     -> {type: "tool_error", run_id, message_id, tool_name, error}
    job.parked     -> {type: "parked", run_id, message_id, correlation_key, prompt}
    run.finished   -> {type: "done", run_id, message_id, output}
    run.error      -> {type: "error", run_id, message_id, error}
  `result` is the tool's output as text: a string output as is, anything
  else as JSON text.  `run_id` is the task id (GET /task/:run_id), and
  `message_id` the assistant message's id (GET /messages/:session_id).
- `output` is the assistant's text of this run: its text parts joined by "\n".
- `session_id` is any id of 1-128 printable characters (the seed says UUID;
  any valid thread id is accepted, so an existing thread can be continued).
- A client that disconnects aborts nothing: the run goes on.

`GET /api/v1/infra/health` (no auth) times a `SELECT 1` on a reader and a
round trip through the writer: 200 {status: "healthy", services: {database:
{status, latency_ms, read_latency_ms, write_latency_ms}}}, `latency_ms` being
the larger of the two; 503 with "unhealthy" when either fails or takes
longer than 5 s.  LLM providers are not listed: checking them would cost a
call to each.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import orjson

from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.validation import check_id
from runs.follow import follow_task
from runs.hub import Batch, EventHub
from runs.manager import Forbidden, PlanRefused, RunError, StartRequest, text_message
from store.event_types import (
    JOB_PARKED,
    JOB_SIGNAL,
    RUN_ERROR,
    RUN_FINISHED,
    TEXT_DELTA,
    TOOL_CALL_END,
    TOOL_CALL_START,
    TOOL_ERROR,
    TOOL_RESULT,
)
from store.ids import uuid7

MAX_MESSAGE = 8000
DEFAULT_TIMEOUT_S = 300.0
HEALTH_TIMEOUT_S = 5.0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class ChatEvents:
    """Canonical events of one run mapped into seed 004's event list, and the run's text."""

    def __init__(self, run_id: str, message_id: str | None) -> None:
        self.run_id = run_id
        self.message_id = message_id
        self.events: list[dict[str, Any]] = []
        self.status = "running"
        self._tools: dict[str, str] = {}
        self._parts: dict[str, list[str]] = {}

    @property
    def output(self) -> str:
        return "\n".join("".join(chunks) for chunks in self._parts.values())

    def _add(self, type: str, **fields: Any) -> None:
        ev = {"type": type, "run_id": self.run_id, "message_id": self.message_id, **fields}
        self.events.append({k: v for k, v in ev.items() if v is not None})

    def apply(self, type: str, data: dict[str, Any]) -> None:
        if type in (TOOL_CALL_START, TOOL_CALL_END) and data.get("toolCallId"):
            self._tools[data["toolCallId"]] = data.get("toolName", "")
        if type == TEXT_DELTA:
            delta = data.get("delta", "")
            self._parts.setdefault(str(data.get("partId", "")), []).append(delta)
            self._add("text_delta", delta=delta)
        elif type == TOOL_CALL_END:
            self._add("tool_call", tool_name=data.get("toolName"), input=_text(data.get("input")))
        elif type == TOOL_RESULT:
            self._add("tool_result", tool_name=self._tools.get(data.get("toolCallId", "")), result=_text(data.get("output")))
        elif type == TOOL_ERROR:
            self._add("tool_error", tool_name=self._tools.get(data.get("toolCallId", "")), error=_text(data.get("error")))
        elif type == JOB_PARKED:
            self._add("parked", correlation_key=data.get("correlationKey"), prompt=data.get("prompt"))
        elif type == JOB_SIGNAL:
            self.status = "running"
        elif type == RUN_FINISHED:
            self.status = "completed"
            self._add("done", output=self.output)
        elif type == RUN_ERROR:
            self.status = str(data.get("status") or "failed")
            self._add("error", error=data.get("message") or data.get("reason") or "the run failed")


class AccountsAgentChatsHandler(APIHandler):
    surface = "accounts"
    starts_runs = True
    # ThreadBusy comes only after the owner check: the live run named is this user's own.
    busy_message, busy_code, busy_id_key = "this session already has a run in progress", "SESSION_BUSY", "run_id"

    def run_refusal(self, exc: RunError) -> ApiError:
        if isinstance(exc, Forbidden) and not isinstance(exc, PlanRefused):
            return ApiError(403, "this session belongs to another user", "FORBIDDEN")
        return super().run_refusal(exc)

    @property
    def hub(self) -> EventHub:
        return cast(EventHub, self.settings["hub"])

    async def post(self) -> None:
        body = self.json_body()
        message = body.get("message")
        if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
            raise ApiError(422, f"message must be a non-empty string of at most {MAX_MESSAGE} characters", "VALIDATION_ERROR")
        try:
            session_id = check_id(body.get("session_id"), "session_id", required=False) or uuid7()
        except ApiError as exc:
            raise ApiError(422, exc.message, "VALIDATION_ERROR") from None
        user_message = text_message(message)
        task = await self.start_run(StartRequest(self.user_id, session_id, user_message, self.settings["default_agent"]))

        chat = ChatEvents(task.id, task.assistant_message_id)
        timeout = float(self.settings.get("agent_chat_timeout_s", DEFAULT_TIMEOUT_S))
        stream = cast(AsyncGenerator["Batch | None", None], follow_task(self.runs, self.hub, task.id, 0, self.settings.get("keepalive_s", 15.0)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), contextlib.aclosing(stream):
                async for batch in stream:
                    if batch is None:
                        continue
                    for ev in batch.events:
                        chat.apply(ev.type, ev.data)
                    if chat.status == "running" and batch.events[-1].type in (JOB_PARKED, JOB_SIGNAL):
                        current = await self.runs.get_task(task.id)
                        if current.status == "parked":
                            chat.status = "parked"
                            break
        self.write_json({"session_id": session_id, "run_id": task.id, "status": chat.status,
                         "output": chat.output, "events": chat.events})


class AccountsInfraHealthHandler(APIHandler):
    surface = "accounts"
    auth = "none"

    async def get(self) -> None:
        async def timed(op: Any) -> float:
            t0 = time.perf_counter()
            await asyncio.wait_for(op, HEALTH_TIMEOUT_S)
            return round((time.perf_counter() - t0) * 1000, 3)

        healthy = True
        read_ms = write_ms = None
        try:
            read_ms = await timed(self.runs.probe_read())
            write_ms = await timed(self.runs.probe_write())
        except Exception:
            healthy = False
        status = "healthy" if healthy else "unhealthy"
        measured = [m for m in (read_ms, write_ms) if m is not None]
        database = {"status": status, "latency_ms": max(measured) if measured else None,
                    "read_latency_ms": read_ms, "write_latency_ms": write_ms}
        # `database` (SPEC section 9) and, under its engine's name, `sqlite` (issue 4): the same check.
        self.write_json({"status": status, "services": {"database": database, "sqlite": database}}, 200 if healthy else 503)


_JSON = "application/json"
_PROBLEM = "application/problem+json"
_ERR = {"$ref": "#/components/schemas/Error"}


def _problems(*codes: int) -> dict[str, Any]:
    text = {400: "not JSON", 401: "missing or invalid credentials", 403: "the session is another user's",
            409: "the session has a live run", 413: "body too large", 422: "invalid body", 503: "draining"}
    return {str(c): {"description": text[c], "content": {_PROBLEM: {"schema": _ERR}}} for c in codes}


_S = {"type": "string"}
CHAT_EVENT = {"type": "object", "required": ["type", "run_id"], "properties": {
    "type": {"enum": ["text_delta", "tool_call", "tool_result", "tool_error", "parked", "done", "error"]},
    "run_id": _S, "message_id": _S, "delta": _S, "tool_name": _S, "input": _S, "result": _S, "output": _S,
    "error": _S, "correlation_key": _S, "prompt": _S}}
SERVICE = {"type": "object", "properties": {"status": {"enum": ["healthy", "unhealthy"]},
                                            "latency_ms": {"type": ["number", "null"]}}}
INFRA_HEALTH = {"type": "object", "properties": {"status": {"enum": ["healthy", "unhealthy"]},
                                                 "services": {"type": "object", "additionalProperties": SERVICE}}}

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/api/v1/agent-chats": {"post": {
        "summary": "Run the default agent on a session (thread) to its end, park or the server's bound; "
                   "a failed run is a 200 with status failed and an error event",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object", "required": ["message"], "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": MAX_MESSAGE},
            "session_id": {"type": "string", "minLength": 1, "maxLength": 128,
                           "description": "a thread id (a UUID or any printable id); a new UUID when absent"}}}}}},
        "responses": {"200": {"description": "the run's result", "content": {_JSON: {"schema": {"type": "object", "properties": {
            "session_id": _S, "run_id": _S,
            "status": {"enum": ["completed", "failed", "cancelled", "parked", "running"]},
            "output": _S, "events": {"type": "array", "items": CHAT_EVENT}}}}}},
            **_problems(400, 401, 403, 409, 413, 422, 503)}}},
    "/api/v1/infra/health": {"get": {
        "summary": "Infrastructure health: a timed read and write round trip on the database", "security": [],
        "responses": {"200": {"description": "healthy", "content": {_JSON: {"schema": INFRA_HEALTH}}},
                      "503": {"description": "unhealthy", "content": {_JSON: {"schema": INFRA_HEALTH}}}}}},
}

default_handlers = [
    (r"/api/v1/agent-chats", AccountsAgentChatsHandler),
    (r"/api/v1/infra/health", AccountsInfraHealthHandler),
]
