"""The native run API (seed 000, SPEC section 4): tasks, streams, messages."""
from __future__ import annotations

import re
import uuid
from typing import Any

from tornado import iostream

from auth import AuthError
from handlers.base import APIHandler
from handlers.errors import ApiError, ExactError
from handlers.sse import KEEPALIVE, RETRY_MS, follow_task, native_frames, native_terminal_frame
from handlers.streaming import EventStreamHandler
from runs.manager import Forbidden, RunError, StartRequest, ThreadBusy, text_message
from store import NotFound
from store.tasks import TaskRow

MAX_ID = 128
MAX_CONTENT = 100_000
MAX_PARTS = 100
_ID_OK = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
ID = r"([^/]{1,128})"


def check_id(value: Any, field: str, required: bool = True) -> str | None:
    """A client-chosen id: a string of 1-128 printable characters (422 otherwise)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ID_OK.match(value):
        raise ApiError(422, f"{field} must be a string of 1 to {MAX_ID} printable characters")
    return value


def user_message_from(body: dict[str, Any]) -> dict[str, Any]:
    """The new user UIMessage from `content` (a string) or `message` (a v5 UIMessage)."""
    content, message = body.get("content"), body.get("message")
    if (content is None) == (message is None):
        raise ApiError(422, "give exactly one of 'content' (a string) or 'message' (a UIMessage)")
    if content is not None:
        if not isinstance(content, str) or not content.strip():
            raise ApiError(422, "content must be a non-empty string")
        if len(content) > MAX_CONTENT:
            raise ApiError(422, f"content longer than {MAX_CONTENT} characters")
        return text_message(content)
    if not isinstance(message, dict):
        raise ApiError(422, "message must be a UIMessage object")
    if message.get("role", "user") != "user":
        raise ApiError(422, "message.role must be 'user'")
    msg_id = check_id(message.get("id"), "message.id", required=False) or f"msg_{uuid.uuid4().hex}"
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts or len(parts) > MAX_PARTS:
        raise ApiError(422, f"message.parts must be a list of 1 to {MAX_PARTS} parts")
    size = 0
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ApiError(422, "every part must be an object with a string 'type'")
        if part["type"] == "text":
            if not isinstance(part.get("text"), str):
                raise ApiError(422, "a text part needs a string 'text'")
            size += len(part["text"])
    if size > MAX_CONTENT:
        raise ApiError(422, f"message text longer than {MAX_CONTENT} characters")
    out: dict[str, Any] = {"id": msg_id, "role": "user", "parts": parts}
    if isinstance(message.get("metadata"), dict):
        out["metadata"] = message["metadata"]
    return out


def native_busy(task_id: str) -> ExactError:
    """SPEC 4's 409 for a thread that has a live task: exactly {taskId, reason: "running"}."""
    return ExactError(409, {"taskId": task_id, "reason": "running"})


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


class TaskRootHandler(NativeHandler):
    starts_runs = True

    async def post(self) -> None:
        """Start a run: 201 {taskId}; 409 {taskId, reason: "running"} while the thread has one."""
        body = self.json_body()
        thread_id = check_id(body.get("threadId"), "threadId", required=False) or str(uuid.uuid4())
        message = user_message_from(body)
        agent_id = check_id(body.get("agentId"), "agentId", required=False) or self.settings["default_agent"]
        rewind_from = check_id(body.get("rewindFrom"), "rewindFrom", required=False)
        task = await self.start_run(StartRequest(self.user_id, thread_id, message, agent_id, rewind_from))
        self.write_json({"taskId": task.id, "threadId": task.thread_id}, 201)


class TaskHandler(NativeHandler):
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


class StreamHandler(EventStreamHandler, NativeHandler):
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
        cursor = self.cursor(beyond_ok=task.terminal)  # an ended run answers any later cursor with its last frame
        if task.terminal:
            last = await self.runs.last_event(task.id)
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
        try:
            await self.send([b"retry: %d\n\n" % RETRY_MS])
            async for batch in follow_task(self.runs, self.hub, task.id, cursor, self.settings["keepalive_s"], self.keep):
                frames = [KEEPALIVE] if batch is None else native_frames(batch)
                del batch  # an idle stream keeps no events alive
                await self.send(frames)
                del frames
        except iostream.StreamClosedError:
            return
        self.end()


class CurrentTaskHandler(NativeHandler):
    async def get(self, thread_id: str) -> None:
        """{task: null | TaskInfo}: 200 even when nothing runs."""
        try:
            task = await self.runs.current_task(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        self.write_json({"task": await self.task_info(task) if task else None})


class MessagesHandler(NativeHandler):
    async def get(self, thread_id: str) -> None:
        """The thread's messages as v5 UIMessages, ascending; unknown thread → []."""
        try:
            messages = await self.runs.thread_messages(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        self.write_json({"messages": messages})


class RootHandler(APIHandler):
    auth = "none"

    def get(self) -> None:
        """Service info; a browser is sent to the web page."""
        accept = self.request.headers.get("Accept", "")
        if "text/html" in accept and ("application/json" not in accept or accept.index("text/html") < accept.index("application/json")):
            self.redirect("/ui/")
            return
        self.write_json({"service": "parley", "version": self.settings["version"]})


class HealthHandler(APIHandler):
    auth = "none"

    def get(self) -> None:
        if self.runs.draining:
            self.write_json({"status": "draining"}, 503)
        else:
            self.write_json({"status": "ok"})


default_handlers = [
    (r"/", RootHandler),
    (r"/health", HealthHandler),
    (r"/task", TaskRootHandler),
    (rf"/task/{ID}", TaskHandler),
    (rf"/stream/{ID}", StreamHandler),
    (rf"/thread/{ID}/current-task", CurrentTaskHandler),
    (rf"/messages/{ID}", MessagesHandler),
]
