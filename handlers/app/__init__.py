"""The kira-be conversation surface (seed 001, SPEC section 10): threads, /agent/*, media tasks, the profile; errors `{message}`."""
from __future__ import annotations

from typing import Any

from handlers.app import agent, media, threads, user

default_handlers: list[Any] = [*threads.default_handlers, *media.default_handlers, *user.default_handlers, *agent.default_handlers]
OPENAPI: dict[str, dict[str, dict[str, Any]]] = {**threads.OPENAPI, **media.OPENAPI, **user.OPENAPI, **agent.OPENAPI}
