"""The job surface (seed 003, SPEC section 11): jobs, agents, documents; errors `{error: {code, message, details}}`."""
from __future__ import annotations

from typing import Any

from handlers.jobs import documents, jobs

default_handlers: list[Any] = [*jobs.default_handlers, *documents.default_handlers]
OPENAPI: dict[str, dict[str, dict[str, Any]]] = {**jobs.OPENAPI, **documents.OPENAPI}
