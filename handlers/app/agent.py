"""kira-be's conversation routes (seed 001, SPEC section 10): `/agent/*`.  Errors: {message}.

`POST /agent/streaming` takes the body that the AI SDK's `DefaultChatTransport`
sends and answers with the run's stream in the AI SDK's own framing, so that
`useChat` works against Parley unchanged; `GET /agent/stream/:threadId` and
`GET /agent/streaming/:threadId/stream` (the transport's default reconnect URL)
replay the thread's live run from its `start`, or answer 204 when nothing runs.
"""
from __future__ import annotations

from typing import Any

from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.sse import AI_SDK_HEADER, ai_sdk_frames
from handlers.streaming import EventStreamHandler
from handlers.validation import ID, check_id, start_request_from, user_message_from
from runs.manager import Forbidden, StartRequest
from store.tasks import TaskRow

TRIGGERS = ("submit-message", "regenerate-message")


class AppAgentHandler(APIHandler):
    surface = "app"

    async def live_task(self, thread_id: str) -> TaskRow | None:
        """The thread's pending, running or parked task (403 for another user's thread)."""
        try:
            return await self.runs.current_task(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None

    async def history(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's messages, ascending; [] for an unknown thread (403 for another user's)."""
        try:
            return await self.runs.thread_messages(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None


class AppAgentStreamHandler(EventStreamHandler, AppAgentHandler):
    """Writes a task's whole run in the AI SDK framing, from `start` to `data: [DONE]`."""

    async def stream_run(self, task_id: str) -> None:
        self.stream_headers()
        self.set_header(*AI_SDK_HEADER)
        # A client that goes away ends the stream, not the run: only POST /agent/task/:threadId/stop ends it.
        await self.pump(self.task_batches(task_id), ai_sdk_frames)


def _find(history: list[dict[str, Any]], client_id: str) -> int | None:
    """The index of the live message that the client knows as `client_id`."""
    for i, m in enumerate(history):
        if m["id"] == client_id or (m.get("metadata") or {}).get("clientMessageId") == client_id:
            return i
    return None


class AppStreamingHandler(AppAgentStreamHandler):
    starts_runs = True

    async def post(self) -> None:
        """Start a run from a `DefaultChatTransport` body and stream it (AI SDK framing)."""
        body = self.json_body()
        thread_id = check_id(body.get("id", body.get("threadId")), "id")
        assert thread_id is not None
        trigger = body.get("trigger", "submit-message")
        if trigger not in TRIGGERS:
            raise ApiError(422, f"trigger must be one of {', '.join(TRIGGERS)}")
        message_id = check_id(body.get("messageId"), "messageId", required=False)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(422, "messages must be a non-empty list of UIMessages")
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user":
            raise ApiError(422, "the last message must be the new user message (role 'user')")
        message = user_message_from({"message": last})
        agent_id = check_id(body.get("agentId"), "agentId", required=False) or self.settings["default_agent"]
        rewind_from = await self.rewind_point(thread_id, trigger, message_id, message["id"])
        self.take_slot()
        task = await self.start_run(StartRequest(self.user_id, thread_id, message, agent_id, rewind_from))
        await self.stream_run(task.id)

    async def rewind_point(self, thread_id: str, trigger: str, message_id: str | None, client_id: str) -> str | None:
        """The stored id of the message to rewind from (None: no rewind).

        A regeneration (`regenerate-message`) or an edit (`submit-message` with
        `messageId`, as `sendMessage({messageId})` sends) rewinds from the
        earliest of `messageId` and the request's user message, as far as the
        thread holds them.  The user message keeps the client's id: the rewind
        supersedes the message that had it.  (Messages stored by earlier versions
        under a server-made id are still found by `metadata.clientMessageId`.)
        """
        history = await self.history(thread_id)
        points: list[int] = []
        if message_id is not None:
            at = _find(history, message_id)
            if at is not None:
                points.append(at)
        own = _find(history, client_id)
        if own is not None and (trigger == "regenerate-message" or message_id is not None):
            points.append(own)
        return history[min(points)]["id"] if points else None


class AppResumeHandler(AppAgentStreamHandler):
    async def get(self, thread_id: str) -> None:
        """The thread's live run from its `start` (AI SDK framing), then live; 204 when nothing runs."""
        task = await self.live_task(thread_id)
        if task is None:
            self.set_status(204)
            self.clear_header("Content-Type")
            self.finish()
            return
        self.take_slot()
        await self.stream_run(task.id)


class AppChatMessagesHandler(AppAgentHandler):
    async def get(self, thread_id: str) -> None:
        """{messages: [UIMessage…]} ascending; unknown thread → []."""
        self.write_json({"messages": await self.history(thread_id)})


class AppRewindHandler(AppAgentHandler):
    async def get(self, thread_id: str, message_id: str) -> None:
        """{messages}: the thread's messages before `message_id` (404 when the thread holds no such live message)."""
        history = await self.history(thread_id)
        at = _find(history, message_id)
        if at is None:
            raise ApiError(404, "no such message in this thread")
        self.write_json({"messages": history[:at]})


class AppTaskRootHandler(AppAgentHandler):
    starts_runs = True

    async def post(self) -> None:
        """Start a run like POST /task: 201 {taskId, threadId}; 409 {message, taskId} while the thread runs."""
        req = start_request_from(self.json_body(), self.user_id, self.settings["default_agent"])
        task = await self.start_run(req)
        self.write_json({"taskId": task.id, "threadId": task.thread_id}, 201)


class AppTaskStatusHandler(AppAgentHandler):
    async def get(self, thread_id: str) -> None:
        """The thread's live task `{status, taskId, …}`, or `{status: "idle", taskId: null}`."""
        task = await self.live_task(thread_id)
        if task is None:
            self.write_json({"status": "idle", "taskId": None, "threadId": thread_id})
            return
        self.write_json({
            "status": task.status, "taskId": task.id, "threadId": task.thread_id, "agentId": task.agent_id,
            "createdAt": task.created_at, "startedAt": task.started_at, "currentNode": task.current_node,
            "parked": task.parked,
        })


class AppTaskStopHandler(AppAgentHandler):
    async def post(self, thread_id: str) -> None:
        """Stop the thread's live run (idempotent): {success: true, taskId: the stopped task or null}."""
        task = await self.live_task(thread_id)
        if task is not None:
            await self.runs.abort(task.id)
        self.write_json({"success": True, "taskId": task.id if task is not None else None})


# -- OpenAPI ---------------------------------------------------------------------------

_JSON = "application/json"
_SSE = "text/event-stream"
_S = {"type": "string"}
_MESSAGES = {"type": "object", "properties": {"messages": {"type": "array", "items": {"$ref": "#/components/schemas/UIMessage"}}}}
_TEXT = {400: "not JSON", 401: "missing or invalid credentials", 403: "another user's thread",
         404: "no such message", 409: "the thread has a running task", 413: "body too large",
         422: "invalid body", 429: "too many open streams", 503: "draining"}
_BUSY = {"type": "object", "properties": {"message": _S, "taskId": _S}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _TEXT[c], "content": {_JSON: {"schema": _BUSY if c == 409 else
                                                                   {"type": "object", "properties": {"message": _S}}}}}
            for c in codes}


_STREAM = {"description": "the run as an AI SDK v5 UI message stream: `data: {chunk}` frames, then `data: [DONE]`;"
                          " header `x-vercel-ai-ui-message-stream: v1`",
           "content": {_SSE: {"schema": _S}}}
_RESUME = {"get": {"summary": "Resume the thread's live run in the AI SDK framing, replayed from its `start`",
                   "responses": {"200": _STREAM, "204": {"description": "nothing runs on the thread"},
                                 **_errors(401, 403, 429)}}}
_STATUS = {"type": "object", "required": ["status", "taskId"], "properties": {
    "status": {"enum": ["idle", "pending", "running", "parked"]}, "taskId": {"type": ["string", "null"]},
    "threadId": _S, "agentId": _S, "createdAt": {"type": "integer"}, "startedAt": {"type": ["integer", "null"]},
    "currentNode": {"type": ["string", "null"]},
    "parked": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"correlationKey": _S, "prompt": _S}}]}}}

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/agent/streaming": {"post": {
        "summary": "Start a run from the body that the AI SDK's DefaultChatTransport sends and stream it",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object", "required": ["id", "messages"], "properties": {
            "id": {"type": "string", "maxLength": 128, "description": "the thread (`threadId` is read when `id` is absent)"},
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/UIMessage"},
                         "description": "the last one is the new user message; the thread's history is the server's"},
            "trigger": {"enum": list(TRIGGERS)},
            "messageId": {"type": "string", "description": "the message to regenerate or edit: the thread is rewound from it"},
            "agentId": _S}}}}},
        "responses": {"200": _STREAM, **_errors(400, 401, 403, 409, 413, 422, 429, 503)}}},
    "/agent/stream/{threadId}": _RESUME,
    "/agent/streaming/{threadId}/stream": _RESUME,
    "/agent/chatMessages/{threadId}": {"get": {
        "summary": "The thread's messages (AI SDK v5 UIMessages), ascending; unknown thread → []",
        "responses": {"200": {"description": "messages", "content": {_JSON: {"schema": _MESSAGES}}}, **_errors(401, 403)}}},
    "/agent/rewind/{threadId}/{messageId}": {"get": {
        "summary": "The thread's messages before the message (the history a rewind from it keeps)",
        "responses": {"200": {"description": "messages", "content": {_JSON: {"schema": _MESSAGES}}}, **_errors(401, 403, 404)}}},
    "/agent/task": {"post": {
        "summary": "Start a run on a thread, like POST /task",
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/StartTask"}}}},
        "responses": {"201": {"description": "started", "content": {_JSON: {"schema": {"type": "object", "properties": {
            "taskId": _S, "threadId": _S}}}}}, **_errors(400, 401, 403, 409, 413, 422, 503)}}},
    "/agent/task/{threadId}/status": {"get": {
        "summary": "The thread's live task, or status idle",
        "responses": {"200": {"description": "status", "content": {_JSON: {"schema": _STATUS}}}, **_errors(401, 403)}}},
    "/agent/task/{threadId}/stop": {"post": {
        "summary": "Stop the thread's live run (idempotent: also 200 when nothing runs)",
        "responses": {"200": {"description": "stopped", "content": {_JSON: {"schema": {"type": "object", "properties": {
            "success": {"const": True}, "taskId": {"type": ["string", "null"]}}}}}}, **_errors(401, 403)}}},
}

default_handlers = [
    (r"/agent/streaming", AppStreamingHandler),
    (rf"/agent/streaming/{ID}/stream", AppResumeHandler),
    (rf"/agent/stream/{ID}", AppResumeHandler),
    (rf"/agent/chatMessages/{ID}", AppChatMessagesHandler),
    (rf"/agent/rewind/{ID}/{ID}", AppRewindHandler),
    (r"/agent/task", AppTaskRootHandler),
    (rf"/agent/task/{ID}/status", AppTaskStatusHandler),
    (rf"/agent/task/{ID}/stop", AppTaskStopHandler),
]
