"""The Agent API (seed 002, SPEC sections 5 and 8) at /api/v1/agent: runs started from an
AG-UI `RunAgentInput`, a per-thread event stream, day snapshots of history, and the AG-UI
endpoint that answers a `RunAgentInput` with the run's events.  Errors: `{detail}`.

The client sends its whole history each turn: messages are merged by id, and the new
user message is the last user message of `messages` (the others are the thread's
already, or the client's own view of it: the server's history wins).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.sse import AgUiRun, agent_event_frames
from handlers.streaming import CURSOR_PARAMETERS, EventStreamHandler
from handlers.times import iso_ms
from handlers.validation import ID, MAX_CONTENT, check_id
from runs.hub import Batch
from runs.manager import Forbidden, StartRequest
from store import NotFound
from store.ids import uuid7
from store.tasks import TaskRow

ROLES = frozenset({"developer", "system", "assistant", "user", "tool", "activity", "reasoning"})
MEDIA_PARTS = frozenset({"image", "audio", "video", "document", "binary"})
MAX_MESSAGES = 10_000
IDLE_LIMIT_DEFAULT = 300
IDLE_LIMIT_MAX = 3600
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class RunInput:
    """What Parley takes from an AG-UI `RunAgentInput`."""

    thread_id: str
    run_id: str
    message: dict[str, Any]  # the new user message as a UIMessage
    agent_id: str


def _ids(value: Any, field: str, required: bool) -> str | None:
    try:
        return check_id(value, field, required)
    except ApiError as exc:
        raise ApiError(422, exc.message) from None


def _media_part(item: dict[str, Any], at: str) -> dict[str, Any]:
    """A UIMessage file part from an AG-UI media part (a URL, or inline base64 as a data URL)."""
    source: dict[str, Any]
    if item["type"] == "binary":  # the pre-1.0 shape: {mimeType, url | data}
        mime = item.get("mimeType")
        url = item.get("url")
        source = {"type": "url", "value": url} if isinstance(url, str) else {"type": "data", "value": item.get("data")}
    else:
        source = item["source"] if isinstance(item.get("source"), dict) else {}
        mime = source.get("mimeType")
    value = source.get("value")
    if source.get("type") not in ("url", "data") or not isinstance(value, str) or not value:
        raise ApiError(422, f"{at}: a media part needs a source of type 'url' or 'data' with a string value")
    if mime is not None and not isinstance(mime, str):
        raise ApiError(422, f"{at}: mimeType must be a string")
    if source["type"] == "data":
        if not mime:
            raise ApiError(422, f"{at}: inline data needs a mimeType")
        return {"type": "file", "mediaType": mime, "url": f"data:{mime};base64,{value}"}
    kind = item["type"]
    return {"type": "file", "mediaType": mime or (f"{kind}/*" if kind in ("image", "audio", "video") else "application/octet-stream"),
            "url": value}


def _user_parts(content: Any, at: str) -> list[dict[str, Any]]:
    """UIMessage parts from an AG-UI user message's `content` (a string or a list of parts)."""
    if isinstance(content, str):
        parts: list[dict[str, Any]] = [{"type": "text", "text": content}]
    elif isinstance(content, list) and content:
        parts = []
        for n, item in enumerate(content):
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                raise ApiError(422, f"{at}.content[{n}] must be an object with a string 'type'")
            if item["type"] == "text":
                if not isinstance(item.get("text"), str):
                    raise ApiError(422, f"{at}.content[{n}]: a text part needs a string 'text'")
                parts.append({"type": "text", "text": item["text"]})
            elif item["type"] in MEDIA_PARTS:
                parts.append(_media_part(item, f"{at}.content[{n}]"))
            else:
                raise ApiError(422, f"{at}.content[{n}]: unknown part type {item['type']!r}")
    else:
        raise ApiError(422, f"{at}.content must be a string or a non-empty list of parts")
    text = "".join(p.get("text", "") for p in parts)
    if len(text) > MAX_CONTENT:
        raise ApiError(422, f"{at}: text longer than {MAX_CONTENT} characters")
    if not text.strip() and not any(p["type"] == "file" for p in parts):
        raise ApiError(422, f"{at}: the message is empty")
    return parts


def parse_run_input(body: dict[str, Any], default_agent: str) -> RunInput:
    """Validate a `RunAgentInput` (422 with the first problem) and take the new user message."""
    thread_id = _ids(body.get("threadId"), "threadId", required=False) or uuid7()
    run_id = _ids(body.get("runId"), "runId", required=False) or uuid7()
    for name in ("tools", "context"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise ApiError(422, f"{name} must be a list")
    props = body.get("forwardedProps")
    if props is not None and not isinstance(props, dict):
        raise ApiError(422, "forwardedProps must be an object")
    agent_id = _ids((props or {}).get("agentId"), "forwardedProps.agentId", required=False) or default_agent
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise ApiError(422, f"messages must be a list of 1 to {MAX_MESSAGES} messages")
    last_user = None
    for n, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ApiError(422, f"messages[{n}] must be an object")
        _ids(msg.get("id"), f"messages[{n}].id", required=True)
        if msg.get("role") not in ROLES:
            raise ApiError(422, f"messages[{n}].role must be one of {', '.join(sorted(ROLES))}")
        if msg["role"] == "user":
            last_user = n
    if last_user is None:
        raise ApiError(422, "messages holds no user message")
    msg = messages[last_user]
    parts = _user_parts(msg.get("content"), f"messages[{last_user}]")
    return RunInput(thread_id, run_id, {"id": msg["id"], "role": "user", "parts": parts}, agent_id)


def history_message(m: dict[str, Any]) -> dict[str, Any]:
    """A HistoryMessage: the seed's flat fields (`content` the text, `url` the first file's,
    `uiSchema` when the message carries one), plus the message's full `parts`."""
    parts = m["parts"]
    file = next((p for p in parts if p.get("type") == "file"), None)
    out: dict[str, Any] = {
        "id": m["id"],
        "seq": m["seq"],
        "role": m["role"],
        "content": "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text"),
        "url": file.get("url") if file else None,
        "timestamp": iso_ms(m["createdAt"]),
    }
    ui = next((p["data"] for p in parts if p.get("type") == "data-ui" and isinstance(p.get("data"), dict)), None)
    if ui is not None and "uiSchema" in ui:
        out["uiSchema"] = ui["uiSchema"]
    out["parts"] = parts
    return out


class AgentApiHandler(APIHandler):
    surface = "agent_api"

    def json_body(self) -> dict[str, Any]:
        """As APIHandler's, but a body that is not JSON is a validation error (422) here too."""
        try:
            return super().json_body()
        except ApiError as exc:
            if exc.status == 400:
                raise ApiError(422, exc.message) from None
            raise

    busy_message = "the thread already has a live run"

    async def start(self, run: RunInput) -> TaskRow:
        """Start the run.  The client's messages are the conversation: when its new user message
        is one the thread already holds (a run again from there), the thread is rewound to it and
        the message is stored again under its own id."""
        history = await self.runs.history(run.thread_id)
        rewind_from = run.message["id"] if any(m["id"] == run.message["id"] for m in history) else None
        return await self.start_run(StartRequest(self.user_id, run.thread_id, run.message, run.agent_id,
                                                 rewind_from=rewind_from, client_run_id=run.run_id))


class AgentApiRunsHandler(AgentApiHandler):
    starts_runs = True

    async def post(self) -> None:
        """Start a run: 201 {taskId, threadId, runId, created}."""
        run = parse_run_input(self.json_body(), self.settings["default_agent"])
        task = await self.start(run)
        self.write_json({"taskId": task.id, "threadId": task.thread_id, "runId": run.run_id,
                         "created": iso_ms(task.created_at)}, 201)


class AgentApiRunEventsHandler(EventStreamHandler, AgentApiHandler):
    """GET /runs/:threadId/events — every task of the thread, resumable, open while the thread is busy."""

    async def explicit_cursor(self) -> int | None:
        return None if self.raw_cursor() is None else await self.cursor(malformed_status=422)

    def idle_limit(self) -> int:
        raw = self.get_query_argument("idle_limit", None)
        if raw is None:
            return IDLE_LIMIT_DEFAULT
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if not 1 <= value <= IDLE_LIMIT_MAX:
            raise ApiError(422, f"idle_limit must be a whole number of seconds from 1 to {IDLE_LIMIT_MAX}")
        return value

    async def get(self, thread_id: str) -> None:
        idle_limit = self.idle_limit()
        cursor = await self.explicit_cursor()
        try:
            if not await self.runs.check_thread(thread_id, self.user_id):
                raise ApiError(404, "thread not found")
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        if cursor is None:  # no cursor: from the start of the thread's latest run
            start = await self.runs.thread_run_start(thread_id)
            cursor = start - 1 if start is not None else 0
        live = await self.runs.current_task(thread_id, self.user_id)
        run_ids: dict[str, str] = {}
        self.open_stream()
        follow = self.thread_batches(thread_id, cursor, active=live is not None and live.status in ("pending", "running"),
                                     idle_limit_s=idle_limit)
        await self.pump(follow, lambda batch: agent_event_frames(batch, run_ids), retry=True,
                        admits=lambda batch: self.learn_runs(batch, run_ids))

    async def learn_runs(self, batch: Batch, run_ids: dict[str, str]) -> bool:
        """Note the runId of each new task in the batch; False if one is not this user's."""
        for ev in batch.events:
            if ev.task_id not in run_ids:
                try:
                    task = await self.runs.owned_task(ev.task_id, self.user_id, fresh=False)
                except (Forbidden, NotFound):
                    return False
                run_ids[ev.task_id] = task.client_run_id or task.id
        return True


class AgentApiHistoryHandler(AgentApiHandler):
    async def get(self) -> None:
        """One day's snapshot of a thread's messages (the user's latest thread without threadId)."""
        thread_id = _ids(self.get_query_argument("threadId", None), "threadId", required=False)
        raw = self.get_query_argument("before", None)
        before_ms = None
        if raw is not None:
            try:
                if not _DAY.match(raw):
                    raise ValueError(raw)
                day = date.fromisoformat(raw)
            except ValueError:
                raise ApiError(422, "before must be a date YYYY-MM-DD") from None
            before_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        if thread_id is None:
            threads = await self.runs.list_threads(self.user_id)
            thread_id = threads[0].id if threads else None
        else:
            try:
                await self.runs.check_thread(thread_id, self.user_id)
            except Forbidden:
                raise ApiError(403, "this thread belongs to another user") from None
        start, messages, more = (None, [], False) if thread_id is None else await self.runs.history_day(thread_id, before_ms)
        self.write_json({
            "scope": "history_day",
            "threadId": thread_id,
            "day": datetime.fromtimestamp(start / 1000, tz=UTC).date().isoformat() if start is not None else None,
            "hasMore": more,
            "messages": [history_message(m) for m in messages],
        })


class AgentApiAgUiHandler(EventStreamHandler, AgentApiHandler):
    """POST /ag-ui — a `RunAgentInput` in, the run's AG-UI events out (`data:` frames, LF only).

    Refusals (409, 503, 422, …) are JSON `{detail}` answers before any event.  The
    stream ends after RUN_FINISHED or RUN_ERROR; a client that goes away never
    stops the run.
    """

    starts_runs = True

    async def post(self) -> None:
        run = parse_run_input(self.json_body(), self.settings["default_agent"])
        self.open_stream()  # the slot first: a 429 must not leave a run behind
        task = await self.start(run)
        await self.pump(self.task_batches(task.id), AgUiRun(task.thread_id, run.run_id).frames)


_S = {"type": "string"}
_JSON = "application/json"
_DETAIL = {"type": "object", "required": ["detail"], "properties": {"detail": _S}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Last-Event-ID beyond the log", 401: "missing or invalid credentials", 403: "the thread is another user's", 404: "thread not found",
            409: "the thread has a live run (`taskId` names it)", 413: "body too large",
            422: "invalid input", 429: "too many open streams", 503: "draining"}
    return {str(c): {"description": text[c], "content": {_JSON: {"schema": _DETAIL}}} for c in codes}


RUN_AGENT_INPUT = {"type": "object", "required": ["messages"], "properties": {
    "threadId": {"type": "string", "maxLength": 128, "description": "a new UUID when absent"},
    "runId": {"type": "string", "maxLength": 128, "description": "the client's run id, echoed as runId"},
    "state": {}, "tools": {"type": "array"}, "context": {"type": "array"},
    "forwardedProps": {"type": "object", "properties": {"agentId": {"type": "string"}}},
    "messages": {"type": "array", "minItems": 1, "description": "the whole history; the last user message is the new one",
                 "items": {"type": "object", "required": ["id", "role"], "properties": {
                     "id": _S, "role": {"enum": sorted(ROLES)}, "content": {}}}}}}
_BODY = {"required": True, "content": {_JSON: {"schema": RUN_AGENT_INPUT}}}
_SSE = {"content": {"text/event-stream": {"schema": _S}}}

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/api/v1/agent/runs": {"post": {
        "summary": "Start a run from an AG-UI RunAgentInput",
        "requestBody": _BODY,
        "responses": {"201": {"description": "started", "content": {_JSON: {"schema": {"type": "object", "properties": {
            "taskId": _S, "threadId": _S, "runId": _S, "created": {"type": "string", "format": "date-time"}}}}}},
            **_errors(401, 403, 409, 413, 422, 503)}}},
    "/api/v1/agent/runs/{threadId}/events": {"get": {
        "summary": "The thread's events across its runs as SSE (`event:` the canonical type, `data: {type, taskId, threadId, "
                   "runId, data}`), resumable with Last-Event-ID (header or query; 400 beyond the log's last id); without it, from the start of the latest run; closes "
                   "after idle_limit seconds without a pending or running task",
        "parameters": [
            *CURSOR_PARAMETERS,
            {"name": "idle_limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": IDLE_LIMIT_MAX,
                                                              "default": IDLE_LIMIT_DEFAULT}},
        ],
        "responses": {"200": {"description": "event stream", **_SSE}, **_errors(400, 401, 403, 404, 422, 429)}}},
    "/api/v1/agent/history": {"get": {
        "summary": "One UTC day of a thread's messages: the last day with messages before `before`, or the latest day",
        "parameters": [{"name": "threadId", "in": "query", "schema": _S, "description": "the user's latest thread when absent"},
                       {"name": "before", "in": "query", "schema": {"type": "string", "format": "date"}}],
        "responses": {"200": {"description": "snapshot", "content": {_JSON: {"schema": {"type": "object", "properties": {
            "scope": {"const": "history_day"}, "threadId": {"type": ["string", "null"]},
            "day": {"type": ["string", "null"], "format": "date"}, "hasMore": {"type": "boolean"},
            "messages": {"type": "array", "items": {"type": "object", "properties": {
                "id": _S, "seq": {"type": "integer"}, "role": _S, "content": _S, "url": {"type": ["string", "null"]},
                "uiSchema": {"type": "object"}, "timestamp": {"type": "string", "format": "date-time"},
                "parts": {"type": "array", "items": {"type": "object"}}}}}}}}}},
            **_errors(401, 403, 422)}}},
    "/api/v1/agent/ag-ui": {"post": {
        "summary": "AG-UI: run the agent on a RunAgentInput and stream the run's AG-UI events (`data:` frames)",
        "requestBody": _BODY,
        "responses": {"200": {"description": "AG-UI event stream", **_SSE}, **_errors(401, 403, 409, 413, 422, 429, 503)}}},
}

default_handlers = [
    (r"/api/v1/agent/runs", AgentApiRunsHandler),
    (rf"/api/v1/agent/runs/{ID}/events", AgentApiRunEventsHandler),
    (r"/api/v1/agent/history", AgentApiHistoryHandler),
    (r"/api/v1/agent/ag-ui", AgentApiAgUiHandler),
]
