"""The Agent API (seed 002, SPEC section 8) at /api/v1/agent: runs, the thread's event stream, history, AG-UI, attachments, speech to text; errors `{detail}`."""
from __future__ import annotations

from typing import Any

from handlers.agent_api import attachments, runs

default_handlers: list[Any] = [*runs.default_handlers, *attachments.default_handlers]
OPENAPI: dict[str, dict[str, dict[str, Any]]] = {**runs.OPENAPI, **attachments.OPENAPI}
