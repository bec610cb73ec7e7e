"""One error shape per surface, rendered in one place (SPEC sections 4, 8-11)."""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success: the status, a message, and surface-specific extras."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra


class ExactError(ApiError):
    """An error whose whole body the SPEC fixes (the native 409 `{taskId, reason}`), sent as it is."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status, "")
        self.body = body


_CODES = {
    400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
    429: "RATE_LIMITED", 500: "INTERNAL_ERROR", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE",
}


def error_body(surface: str, status: int, message: str, code: str | None, extra: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The body and content type of an error on `surface`."""
    code = code or _CODES.get(status, "ERROR")
    if surface == "jobs":
        return {"error": {"code": code, "message": message, "details": extra}}, "application/json"
    if surface == "accounts":
        body = {"type": "about:blank", "title": _CODES.get(status, "Error").replace("_", " ").title(),
                "status": status, "detail": message, "code": code, **extra}
        return body, "application/problem+json"
    if surface == "app":
        return {"message": message, **extra}, "application/json"
    if surface == "agent_api":
        return {"detail": message, **extra}, "application/json"
    # "native", and "mcp" (whose HTTP-level errors take the native shape; JSON-RPC errors are its own)
    return {"error": message, **extra}, "application/json"


def native_busy(task_id: str) -> ExactError:
    """SPEC 4's 409 for a thread that has a live task: exactly {taskId, reason: "running"}."""
    return ExactError(409, {"taskId": task_id, "reason": "running"})
