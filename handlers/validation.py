"""Validation of what clients send, shared by every surface: ids and the new user message."""
from __future__ import annotations

import re
from typing import Any

from handlers.errors import ApiError
from runs.manager import StartRequest, text_message
from store.ids import uuid7, uuid7_hex

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
        return _from_content(content)
    return _from_ui_message(message)


def _from_content(content: Any) -> dict[str, Any]:
    """A text message of `content`: a non-empty string of at most MAX_CONTENT characters (422 otherwise)."""
    if not isinstance(content, str) or not content.strip():
        raise ApiError(422, "content must be a non-empty string")
    if len(content) > MAX_CONTENT:
        raise ApiError(422, f"content longer than {MAX_CONTENT} characters")
    return text_message(content)


def _from_ui_message(message: Any) -> dict[str, Any]:
    """The user's UIMessage as it is kept: its id (one is made when it has none), parts and metadata (422 when invalid)."""
    if not isinstance(message, dict):
        raise ApiError(422, "message must be a UIMessage object")
    if message.get("role", "user") != "user":
        raise ApiError(422, "message.role must be 'user'")
    msg_id = check_id(message.get("id"), "message.id", required=False) or f"msg_{uuid7_hex()}"
    parts = _checked_parts(message.get("parts"))
    out: dict[str, Any] = {"id": msg_id, "role": "user", "parts": parts}
    if isinstance(message.get("metadata"), dict):
        out["metadata"] = message["metadata"]
    return out


def _checked_parts(parts: Any) -> list[Any]:
    """`parts` when it is a list of 1 to MAX_PARTS typed parts whose text is at most MAX_CONTENT characters (422 otherwise)."""
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
    return parts


def start_request_from(body: dict[str, Any], user_id: str, default_agent: str) -> StartRequest:
    """A run start as `POST /task` (and kira-be's `POST /agent/task`) take it: `threadId` (a new
    UUID when absent), `content` or `message`, `agentId`, `rewindFrom` (422 on the first bad one)."""
    thread_id = check_id(body.get("threadId"), "threadId", required=False) or uuid7()
    message = user_message_from(body)
    agent_id = check_id(body.get("agentId"), "agentId", required=False) or default_agent
    rewind_from = check_id(body.get("rewindFrom"), "rewindFrom", required=False)
    return StartRequest(user_id, thread_id, message, agent_id, rewind_from)

