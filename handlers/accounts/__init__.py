"""The accounts surface (seed 004, SPEC section 9) at /api/v1: sign-up, sessions, users, agent chats; RFC 7807 errors."""
from __future__ import annotations

from typing import Any

from handlers.accounts import agent_chats, auth

default_handlers: list[Any] = [*agent_chats.default_handlers, *auth.default_handlers]
# `--dev` only (server.py adds them): the outbox codes for the sign-in page
dev_handlers: list[Any] = auth.dev_handlers
OPENAPI: dict[str, dict[str, dict[str, Any]]] = {**agent_chats.OPENAPI, **auth.OPENAPI}
