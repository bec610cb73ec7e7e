"""kira-be's thread routes (seed 001, SPEC section 10): create, list, timelines, delete.  Errors: {message}."""
from __future__ import annotations

from typing import Any

from agents.titles import shorten
from handlers.base import APIHandler
from handlers.errors import ApiError
from handlers.validation import ID, check_id
from runs.manager import Forbidden
from store import Conflict, NotFound
from store.ids import uuid7
from store.threads import ThreadRow

MAX_TITLE = 200
TIMELINE_PAGE = 5
TIMELINE_MESSAGES = 2
SUMMARY_CHARS = 200


def thread_json(thread: ThreadRow) -> dict[str, Any]:
    return {"id": thread.id, "title": thread.title, "titleSource": thread.title_source,
            "createdAt": thread.created_at, "updatedAt": thread.updated_at}


class AppThreadsHandler(APIHandler):
    surface = "app"

    async def post(self) -> None:
        """Create a thread: 201 {thread}; `title` given (never replaced), or made from `message`
        (the first message's text; with `[titles]` configured, the model names it after the first run)."""
        body = self.json_body() if self._body else {}
        try:
            thread_id = check_id(body.get("threadId", body.get("id")), "threadId", required=False) or uuid7()
        except ApiError as exc:
            raise ApiError(422, exc.message) from None
        title = body.get("title")
        source = "given"
        if title is None and isinstance(body.get("message"), str):
            title, source = shorten(body["message"]), "message"
        if title is not None and (not isinstance(title, str) or len(title) > MAX_TITLE):
            raise ApiError(422, f"title must be a string of at most {MAX_TITLE} characters")
        title = (title or "").strip() or None  # a blank title is none: the first message names the thread
        try:
            thread = await self.runs.create_thread(self.user_id, thread_id, title, source if title else "message")
        except Conflict:
            raise ApiError(409, "a thread with this id already exists") from None
        self.write_json({"thread": thread_json(thread)}, 201)


class ThreadDeletion(APIHandler):
    """DELETE of a thread; the fixed routes below (/thread/threads, /thread/timelines) take it too,
    so that a thread whose id happens to be `threads` or `timelines` can still be deleted."""

    surface = "app"

    async def delete_thread(self, thread_id: str) -> None:
        """Delete the thread (its live run is stopped first): 200 {success: true}."""
        try:
            await self.runs.delete_thread(thread_id, self.user_id)
        except NotFound:
            raise ApiError(404, "thread not found") from None
        except Forbidden:
            raise ApiError(403, "this thread belongs to another user") from None
        self.write_json({"success": True})


class AppThreadListHandler(ThreadDeletion):
    async def delete(self) -> None:
        await self.delete_thread("threads")

    async def get(self) -> None:
        """The user's threads, most recently active first."""
        threads = await self.runs.list_threads(self.user_id)
        self.write_json({"threads": [thread_json(t) for t in threads]})


class AppThreadHandler(ThreadDeletion):
    async def delete(self, thread_id: str) -> None:
        await self.delete_thread(thread_id)


class AppTimelinesHandler(ThreadDeletion):
    async def delete(self) -> None:
        await self.delete_thread("timelines")

    async def get(self) -> None:
        """`?page=N` (from 1) of the user's threads, TIMELINE_PAGE a page, most recently active first,
        each with its last TIMELINE_MESSAGES messages summarised: {threads, page, hasMore}."""
        raw = self.get_query_argument("page", "1")
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 100_000:
            raise ApiError(400, "page must be an integer from 1")
        page = int(raw)
        rows = await self.runs.threads_page(self.user_id, (page - 1) * TIMELINE_PAGE, TIMELINE_PAGE + 1)
        shown = rows[:TIMELINE_PAGE]
        last = await self.runs.last_messages([t.id for t in shown], TIMELINE_MESSAGES)
        threads = [{**thread_json(t), "lastMessages": [_summary(m) for m in last.get(t.id, [])]} for t in shown]
        self.write_json({"threads": threads, "page": page, "hasMore": len(rows) > TIMELINE_PAGE})


def _summary(message: dict[str, Any]) -> dict[str, Any]:
    """A message as a timeline shows it: its text (cut at SUMMARY_CHARS) and its files (the mixed media)."""
    parts = message["parts"]
    text = " ".join(" ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text").split())
    if len(text) > SUMMARY_CHARS:
        text = text[: SUMMARY_CHARS - 1] + "…"
    files = [{"url": p.get("url"), "mediaType": p.get("mediaType")} for p in parts if p.get("type") == "file"]
    return {"id": message["id"], "role": message["role"], "text": text, "files": files,
            "createdAt": message["metadata"].get("createdAt")}


OPENAPI: dict[str, dict[str, dict[str, Any]]] = {
    "/thread/": {"post": {
        "summary": "Create a thread (title given, or made from the first message)",
        "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {
            "threadId": {"type": "string", "maxLength": 128}, "title": {"type": "string"}, "message": {"type": "string"}}}}}},
        "responses": {"201": {"description": "created"}, "401": {"description": "no credentials"},
                      "409": {"description": "the id is taken"}, "422": {"description": "invalid body"}}}},
    "/thread/threads": {"get": {
        "summary": "The user's threads, most recently active first",
        "responses": {"200": {"description": "threads"}, "401": {"description": "no credentials"}}}},
    "/thread/timelines": {"get": {
        "summary": "A page (5 threads, most recently active first) of the user's threads with their last messages summarised",
        "parameters": [{"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 1}}],
        "responses": {"200": {"description": "a page of threads", "content": {"application/json": {"schema": {"type": "object", "properties": {
            "threads": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "title": {"type": ["string", "null"]}, "createdAt": {"type": "integer"},
                "updatedAt": {"type": "integer"}, "lastMessages": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "role": {"type": "string"}, "text": {"type": "string"},
                    "files": {"type": "array", "items": {"type": "object"}}, "createdAt": {"type": "integer"}}}}}}},
            "page": {"type": "integer"}, "hasMore": {"type": "boolean"}}}}}},
                      "400": {"description": "page is not an integer from 1"}, "401": {"description": "no credentials"}}}},
    "/thread/{threadId}": {"delete": {
        "summary": "Delete a thread (its live run is stopped)",
        "responses": {"200": {"description": "deleted"}, "401": {"description": "no credentials"},
                      "403": {"description": "another user's thread"}, "404": {"description": "not found"}}}},
}

default_handlers = [
    (r"/thread/", AppThreadsHandler),
    (r"/thread/threads", AppThreadListHandler),
    (r"/thread/timelines", AppTimelinesHandler),
    (rf"/thread/{ID}", AppThreadHandler),
]
