"""The native run API (seed 000, SPEC section 4): tasks, streams, messages."""
from __future__ import annotations

from typing import Any

from auth import AuthError
from handlers.base import APIHandler
from handlers.errors import ApiError, native_busy
from handlers.schema import JSON, TASK_INFO, error_responses, response
from handlers.sse import native_frames, native_terminal_frame
from handlers.streaming import CURSOR_PARAMETERS, EventStreamHandler
from handlers.validation import ID, start_request_from
from runs.follow import last_heard
from runs.manager import Forbidden, RunError, ThreadBusy
from store import NotFound
from store.tasks import TaskRow


class NativeHandler(APIHandler):
    surface = "native"

    def run_refusal(self, exc: RunError) -> ApiError:
        if isinstance(exc, ThreadBusy):
            return native_busy(exc.task_id)
        return super().run_refusal(exc)

    async def own_task(self, task_id: str, fresh: bool = True) -> TaskRow:
        try:
            return await self.runs.owned_task(task_id, self.user_id, fresh)
        except NotFound:
            raise ApiError(404, "task not found") from None
        except Forbidden:
            raise ApiError(403, "this task belongs to another user") from None

    async def task_info(self, task: TaskRow) -> dict[str, Any]:
        user_msg = await self.runs.message(task.thread_id, task.user_message_id, task.id)
        return {
            "taskId": task.id,
            "threadId": task.thread_id,
            "status": task.status,
            "agentId": task.agent_id,
            "createdAt": task.created_at,
            "startedAt": task.started_at,
            "finishedAt": task.finished_at,
            "currentNode": task.current_node,
            "error": task.error,
            "parked": task.parked,
            "userMessage": {k: user_msg[k] for k in ("id", "role", "parts")} if user_msg else None,
            "streamToken": self.authenticator.stream_token(task.user_id, task.id),
        }


class NativeTaskRootHandler(NativeHandler):
    starts_runs = True

    async def post(self) -> None:
        """Start a run: 201 {taskId}; 409 {taskId, reason: "running"} while the thread has one."""
        req = start_request_from(self.json_body(), self.user_id, self.settings["default_agent"])
        task = await self.start_run(req)
        self.write_json({"taskId": task.id, "threadId": task.thread_id}, 201)


class NativeTaskHandler(NativeHandler):
    async def get(self, task_id: str) -> None:
        """TaskInfo, times in epoch ms."""
        self.write_json(await self.task_info(await self.own_task(task_id)))

    async def delete(self, task_id: str) -> None:
        """Abort the task (idempotent): 204."""
        task = await self.own_task(task_id)
        if task.live:
            await self.runs.abort(task.id)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class NativeStreamHandler(EventStreamHandler, NativeHandler):
    """GET /stream/:taskId — kira's SSE framing, resumable with Last-Event-ID."""

    async def authenticate(self) -> None:
        token = self.get_query_argument("token", None)
        h = self.request.headers
        if token is not None and not h.get("Authorization") and h.get("X-Internal-Key") is None:
            try:
                self.identity = self.authenticator.verify_stream_token(token, self.path_args[0])
            except AuthError as exc:
                raise ApiError(401, str(exc)) from None
            return
        await super().authenticate()

    async def get(self, task_id: str) -> None:
        task = await self.own_task(task_id, fresh=False)  # a live task's row is in memory
        cursor = await self.cursor(beyond_ok=task.terminal)  # an ended run answers any later cursor with its last frame
        if task.terminal:
            last = await last_heard(self.runs, self.hub, task.id)  # not the end yet: the stream below brings it
            if last is not None and last.terminal and cursor >= last.id:
                if self.identity is not None and self.identity.via == "stream-token":
                    self.set_status(204)  # stops a browser EventSource for good
                    self.clear_header("Content-Type")
                    self.finish()
                    return
                self.stream_headers()
                self.finish(native_terminal_frame(last))
                return
        self.open_stream()
        await self.pump(self.task_batches(task.id, cursor), native_frames, retry=True)


class NativeCurrentTaskHandler(NativeHandler):
    async def get(self, thread_id: str) -> None:
        """{task: null | TaskInfo}: 200 even when nothing runs."""
        try:
            task = await self.runs.current_task(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        self.write_json({"task": await self.task_info(task) if task else None})


class NativeMessagesHandler(NativeHandler):
    async def get(self, thread_id: str) -> None:
        """The thread's messages as v5 UIMessages, ascending; unknown thread → []."""
        try:
            messages = await self.runs.thread_messages(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        self.write_json({"messages": messages})


class NativeRootHandler(APIHandler):
    auth = "none"

    def get(self) -> None:
        """Service info; a browser is sent to the web page."""
        accept = self.request.headers.get("Accept", "")
        if "text/html" in accept and ("application/json" not in accept or accept.index("text/html") < accept.index("application/json")):
            self.redirect("/ui/")
            return
        self.write_json({"service": "parley", "version": self.settings["version"]})


class NativeHealthHandler(APIHandler):
    auth = "none"

    def get(self) -> None:
        if self.runs.draining:
            self.write_json({"status": "draining"}, 503)
        else:
            self.write_json({"status": "ok"})


default_handlers = [
    (r"/", NativeRootHandler),
    (r"/health", NativeHealthHandler),
    (r"/task", NativeTaskRootHandler),
    (rf"/task/{ID}", NativeTaskHandler),
    (rf"/stream/{ID}", NativeStreamHandler),
    (rf"/thread/{ID}/current-task", NativeCurrentTaskHandler),
    (rf"/messages/{ID}", NativeMessagesHandler),
]

OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/": {"get": {"summary": "Service info (a browser is redirected to /ui/)", "security": [],
                  "responses": {"200": response("service", {"type": "object", "properties": {"service": {"type": "string"}, "version": {"type": "string"}}}),
                                "302": response("redirect to the web page")}}},
    "/health": {"get": {"summary": "Health; 503 while draining", "security": [],
                        "responses": {"200": response("ok", {"$ref": "#/components/schemas/Health"}),
                                      "503": response("draining", {"$ref": "#/components/schemas/Health"})}}},
    "/task": {"post": {"summary": "Start a run on a thread",
                       "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/StartTask"}}}},
                       "responses": {"201": response("started", {"type": "object", "properties": {"taskId": {"type": "string"}, "threadId": {"type": "string"}}}),
                                     "409": response("the thread has a live run", {"type": "object", "properties": {"taskId": {"type": "string"}, "reason": {"const": "running"}}}),
                                     **error_responses(400, 401, 403, 413, 422, 503)}}},
    "/task/{taskId}": {
        "get": {"summary": "TaskInfo", "responses": {"200": response("the task", TASK_INFO), **error_responses(401, 403, 404)}},
        "delete": {"summary": "Abort the task (idempotent)", "responses": {"204": response("aborted or already ended"), **error_responses(401, 403, 404)}},
    },
    "/stream/{taskId}": {"get": {
        "summary": "The run's events as SSE (kira framing), resumable with Last-Event-ID (header, or ?Last-Event-ID= / ?lastEventId=; "
                   "400 beyond the log's last id); ?token= for EventSource",
        "parameters": [*CURSOR_PARAMETERS,
            {"name": "token", "in": "query", "schema": {"type": "string"}, "description": "TaskInfo.streamToken"},
        ],
        "responses": {"200": response("event stream", {"type": "string"}, "text/event-stream"),
                      "204": response("with ?token=: the run already ended before the cursor"), **error_responses(400, 401, 403, 404, 429)}}},
    "/thread/{threadId}/current-task": {"get": {"summary": "The thread's live task, or null",
        "responses": {"200": response("current task", {"type": "object", "properties": {"task": {"oneOf": [TASK_INFO, {"type": "null"}]}}}), **error_responses(401, 403)}}},
    "/messages/{threadId}": {"get": {"summary": "The thread's messages (AI SDK v5 UIMessages), ascending",
        "responses": {"200": response("messages", {"type": "object", "properties": {"messages": {"type": "array", "items": {"$ref": "#/components/schemas/UIMessage"}}}}), **error_responses(401, 403)}}},
}
