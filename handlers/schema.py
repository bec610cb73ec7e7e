"""OpenAPI building blocks shared by the surfaces' descriptions (each package's OPENAPI part)."""
from __future__ import annotations

from typing import Any

ERR = {"$ref": "#/components/schemas/Error"}
JSON = "application/json"
TASK_INFO = {"$ref": "#/components/schemas/TaskInfo"}
JOB = {"$ref": "#/components/schemas/Job"}
AGENT = {"$ref": "#/components/schemas/Agent"}


def response(description: str, schema: dict[str, Any] | None = None, ctype: str = JSON) -> dict[str, Any]:
    """One documented answer: its description and, when given, its body's schema."""
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {ctype: {"schema": schema}}
    return out


GENERIC_ERRORS = {400: "bad request", 401: "missing or invalid credentials", 403: "another user's resource",
                  404: "not found", 409: "conflict", 413: "body too large", 422: "invalid body",
                  429: "too many requests", 503: "draining"}


def error_responses(*codes: int, texts: dict[int, str] | None = None, schema: dict[str, Any] = ERR,
                    ctype: str = JSON) -> dict[str, Any]:
    """The documented error answers of an operation, in its surface's shape (`schema`)."""
    words = {**GENERIC_ERRORS, **(texts or {})}
    return {str(c): response(words[c], schema, ctype) for c in codes}
