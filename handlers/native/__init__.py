"""The native run API (seed 000, SPEC section 4): tasks, their streams, a thread's messages; errors `{error}`."""
from __future__ import annotations

from typing import Any

from handlers.native import tasks

default_handlers: list[Any] = [*tasks.default_handlers]
OPENAPI: dict[str, dict[str, dict[str, Any]]] = {**tasks.OPENAPI}
