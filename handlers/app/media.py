"""kira-be's media routes (seed 001, SPEC section 10): `/video/*`, `/music/*` and
`/version/versions/:threadId`.  Errors: {message}.

A media task is a run of an agent whose tool made a file (`generate_video`,
`generate_music`, or any tool marked `emits_file`); its media are the task's `file`
events, read from the event log (a `data:` URL is answered as it is).  The `/video` and
`/music` routes read any task of the caller's: they differ only in the command that
`…/initialize` sends.  `DELETE …/upload/:taskId` hides a task's media from these routes by
marking the task's state (store/produced_files.py); the event log and the thread's messages keep them.
"""
from __future__ import annotations

from typing import Any

from agents.tools import MAX_IMAGE_PROMPT
from handlers.app.agent import AppAgentHandler
from handlers.errors import ApiError, native_busy
from handlers.validation import ID, check_id
from runs.manager import Forbidden, Invalid, RunError, StartRequest, ThreadBusy, text_message
from store import NotFound
from store.ids import uuid7
from store.produced_files import ProducedFile, hidden
from store.tasks import TaskRow

MAX_INFO_IDS = 50
IDS = r"([^/]+)"  # comma-separated task ids (each checked like ID)
KINDS = ("video", "music")


def media_json(file: ProducedFile) -> dict[str, Any]:
    return {"url": file.url, "mediaType": file.media_type, "createdAt": file.created_at}


def media_task_json(task: TaskRow, files: list[ProducedFile]) -> dict[str, Any]:
    """A task as the media routes show it: its status and the files it produced (none once hidden)."""
    return {
        "taskId": task.id, "threadId": task.thread_id, "status": task.status, "error": task.error,
        "createdAt": task.created_at, "finishedAt": task.finished_at,
        "media": [] if hidden(task) else [media_json(f) for f in files],
    }


class AppMediaHandler(AppAgentHandler):
    """Base of the media routes: `kind` ("video" or "music", from the route) names the command."""

    def initialize(self, kind: str = "video") -> None:
        super().initialize()
        self.kind = kind

    async def own_task(self, task_id: str) -> TaskRow:
        try:
            return await self.runs.owned_task(task_id, self.user_id)
        except NotFound:
            raise ApiError(404, "task not found") from None
        except Forbidden:
            raise ApiError(403, "this task belongs to another user") from None


class AppMediaTaskHandler(AppMediaHandler):
    async def get(self, task_id: str) -> None:
        """{taskId, threadId, status, error, createdAt, finishedAt, media: [{url, mediaType, createdAt}]}."""
        task = await self.own_task(task_id)
        files = await self.files.produced_files([task.id])
        self.write_json(media_task_json(task, files.get(task.id, [])))


def parse_ids(text: str) -> list[str]:
    """Comma-separated task ids, blanks and repeats dropped, in order (400 when none, too many or malformed)."""
    ids = list(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))
    if not ids:
        raise ApiError(400, "give one or more task ids, comma-separated")
    if len(ids) > MAX_INFO_IDS:
        raise ApiError(400, f"at most {MAX_INFO_IDS} task ids at a time")
    for task_id in ids:
        try:
            check_id(task_id, "every task id")
        except ApiError as exc:
            raise ApiError(400, exc.message) from None
    return ids


class AppMediaInfoHandler(AppMediaHandler):
    async def get(self, ids_text: str) -> None:
        """{tasks: [the media task of each id, in the order asked], missing: [ids unknown or not the caller's]}."""
        ids = parse_ids(ids_text)
        own = await self.files.media_tasks(ids, self.user_id)
        self.write_json({
            "tasks": [media_task_json(*own[i]) for i in ids if i in own],
            "missing": [i for i in ids if i not in own],
        })


class AppMediaSubmitHandler(AppMediaHandler):
    """POST /video/submit/:taskId, /music/submit/:taskId (JWT only): retry a media run that failed
    for lack of credits."""

    auth = "jwt"
    starts_runs = True

    def initialize(self, kind: str = "video") -> None:
        super().initialize(kind)
        if kind == "video":  # SPEC section 4 lists /video/submit with the native API: its error shape
            self.surface = "native"

    def run_refusal(self, exc: RunError) -> ApiError:
        if isinstance(exc, Invalid):  # not retryable, or the balance is still too low
            return ApiError(400, str(exc))
        if isinstance(exc, ThreadBusy) and self.surface == "native":  # as POST /task answers
            return native_busy(exc.task_id)
        return super().run_refusal(exc)

    async def post(self, task_id: str) -> None:
        """Run it again (a new task on the same thread, the same user message): 200 {success, taskId};
        400 when the task did not fail `insufficient_credits`, was retried already, or the balance
        is still too low; 403 (another user's, or the plan), 404, 409 while the thread runs ({taskId,
        reason: "running"} for video, on the native surface; {message, taskId} for music)."""
        await self.own_task(task_id)
        try:
            task = await self.runs.retry(task_id, self.user_id)
        except RunError as exc:
            raise self.run_refusal(exc) from None
        except NotFound:
            raise ApiError(404, "task not found") from None
        self.write_json({"success": True, "taskId": task.id})


class AppMediaInitializeHandler(AppMediaHandler):
    starts_runs = True

    async def post(self) -> None:
        """{threadId?, prompt} → 201 {taskId, threadId}: a run of the default agent whose user message is
        `/video PROMPT` or `/music PROMPT`.  403 (another user's thread, the plan), 409 {message, taskId}, 422, 503."""
        body = self.json_body()
        thread_id = check_id(body.get("threadId"), "threadId", required=False) or uuid7()
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(422, f"prompt must be a non-empty string describing the {self.kind}")
        if len(prompt.strip()) > MAX_IMAGE_PROMPT:
            raise ApiError(422, f"prompt longer than {MAX_IMAGE_PROMPT} characters")
        message = text_message(f"/{self.kind} {prompt.strip()}")
        task = await self.start_run(StartRequest(self.user_id, thread_id, message, self.settings["default_agent"]))
        self.write_json({"taskId": task.id, "threadId": task.thread_id}, 201)


class AppMediaUploadHandler(AppMediaHandler):
    async def delete(self, task_id: str) -> None:
        """Hide the task's media from these routes (idempotent): 200 {success: true}."""
        task = await self.own_task(task_id)
        await self.files.hide_produced_files(task.id)
        self.write_json({"success": True})


class AppVersionsHandler(AppMediaHandler):
    async def get(self, thread_id: str) -> None:
        """{threadId, versions: [{taskId, messageId, url, mediaType, createdAt}]}: every file the thread's
        runs produced (rewound ones too) but those of tasks whose media were hidden, oldest first; an unknown
        thread has none; 403 for another user's."""
        try:
            known = await self.runs.check_thread(thread_id, self.user_id)
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        files = await self.files.produced_files_of_thread(thread_id) if known else []
        versions = [{"taskId": f.task_id, "messageId": f.message_id, **media_json(f)} for f in files]
        self.write_json({"threadId": thread_id, "versions": versions})


# -- OpenAPI ---------------------------------------------------------------------------

_JSON = "application/json"
_S = {"type": "string"}
_MEDIA_FIELDS: dict[str, Any] = {
    "url": {"type": "string", "description": "a data: URL (the offline generators) or a link a tool returned"},
    "mediaType": _S, "createdAt": {"type": "integer"}}
_MEDIA = {"type": "object", "required": ["url", "mediaType", "createdAt"], "properties": _MEDIA_FIELDS}
_TASK = {"type": "object", "required": ["taskId", "threadId", "status", "error", "createdAt", "finishedAt", "media"],
         "properties": {
             "taskId": _S, "threadId": _S,
             "status": {"enum": ["pending", "running", "parked", "completed", "failed", "cancelled"]},
             "error": {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"reason": _S, "message": _S}}]},
             "createdAt": {"type": "integer"}, "finishedAt": {"type": ["integer", "null"]},
             "media": {"type": "array", "items": _MEDIA, "description": "empty once hidden by DELETE …/upload"}}}
_TEXT = {400: "bad request", 401: "missing or invalid credentials", 403: "another user's task or thread, or the plan",
         404: "no such task", 409: "the thread has a running task", 413: "body too large", 422: "invalid body",
         503: "draining"}
_BUSY = {"type": "object", "properties": {"message": _S, "taskId": _S}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _TEXT[c], "content": {_JSON: {"schema": _BUSY if c == 409 else
                                                                   {"type": "object", "properties": {"message": _S}}}}}
            for c in codes}


def _native_errors(*codes: int) -> dict[str, Any]:
    """/video/submit answers in the native API's shapes (SPEC section 4)."""
    busy = {"type": "object", "properties": {"taskId": _S, "reason": {"const": "running"}}}
    return {str(c): {"description": _TEXT[c], "content": {_JSON: {"schema": busy if c == 409 else
                                                                   {"type": "object", "properties": {"error": _S}}}}}
            for c in codes}


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": {_JSON: {"schema": schema}}}}


def _operations(kind: str, tool: str) -> dict[str, dict[str, dict[str, Any]]]:
    return {
        f"/{kind}/task/{{taskId}}": {"get": {
            "summary": f"A {kind} task: its status and the files it produced",
            "responses": {**_ok("the task", _TASK), **_errors(401, 403, 404)}}},
        f"/{kind}/info/{{ids}}": {"get": {
            "summary": f"Several {kind} tasks at once: comma-separated ids, at most {MAX_INFO_IDS}; "
                       "unknown ids and other users' are listed under `missing`",
            "responses": {**_ok("the tasks", {"type": "object", "properties": {
                "tasks": {"type": "array", "items": _TASK}, "missing": {"type": "array", "items": _S}}}),
                **_errors(400, 401)}}},
        f"/{kind}/submit/{{taskId}}": {"post": {
            "summary": "Retry a run that failed for insufficient credits once the balance allows (JWT only): "
                       "a new task on the same thread re-running the same user message",
            "security": [{"bearer": []}],
            "responses": {**_ok("resubmitted", {"type": "object", "properties": {"success": {"const": True}, "taskId": _S}}),
                          **(_native_errors(400, 401, 403, 404, 409, 503) if kind == "video"
                             else _errors(400, 401, 403, 404, 409, 503))}}},
        f"/{kind}/initialize": {"post": {
            "summary": f"Start a run of the default agent with `/{kind} PROMPT` (the demo agent calls {tool})",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": "object", "required": ["prompt"], "properties": {
                "threadId": {"type": "string", "maxLength": 128},
                "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_IMAGE_PROMPT}}}}}},
            "responses": {**_ok("started", {"type": "object", "properties": {"taskId": _S, "threadId": _S}}, "201"),
                          **_errors(400, 401, 403, 409, 413, 422, 503)}}},
        f"/{kind}/upload/{{taskId}}": {"delete": {
            "summary": "Hide the task's media from the media routes (idempotent; the event log keeps them)",
            "responses": {**_ok("hidden", {"type": "object", "properties": {"success": {"const": True}}}),
                          **_errors(401, 403, 404)}}},
    }


OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    **_operations("video", "generate_video"),
    **_operations("music", "generate_music"),
    "/version/versions/{threadId}": {"get": {
        "summary": "Every file the thread's runs produced (rewound ones too), oldest first; unknown thread → []",
        "responses": {**_ok("versions", {"type": "object", "properties": {"threadId": _S, "versions": {"type": "array", "items": {
            "type": "object", "properties": {"taskId": _S, "messageId": _S, **_MEDIA_FIELDS}}}}}),
            **_errors(401, 403)}}},
}

default_handlers: list[Any] = [
    route
    for kind in KINDS
    for route in (
        (rf"/{kind}/task/{ID}", AppMediaTaskHandler, {"kind": kind}),
        (rf"/{kind}/info/{IDS}", AppMediaInfoHandler, {"kind": kind}),
        (rf"/{kind}/submit/{ID}", AppMediaSubmitHandler, {"kind": kind}),
        (rf"/{kind}/initialize", AppMediaInitializeHandler, {"kind": kind}),
        (rf"/{kind}/upload/{ID}", AppMediaUploadHandler, {"kind": kind}),
    )
] + [(rf"/version/versions/{ID}", AppVersionsHandler)]
