"""Agent definitions created through the API."""
from __future__ import annotations

from typing import Any

import aiosqlite

from store.db import WriteTx, dumps, loads, now_ms
from store.errors import Conflict

_COLUMNS = "id, user_id, name, description, type, llm, tools, instructions, created_at"


def _row(row: Any) -> dict[str, Any]:
    return {
        "id": row[0], "user_id": row[1], "name": row[2], "description": row[3], "type": row[4],
        "llm": row[5], "tools": loads(row[6]), "instructions": row[7], "created_at": row[8],
    }


def insert(tx: WriteTx, agent: dict[str, Any]) -> None:
    if tx.fetchone("SELECT 1 FROM agents WHERE id = ?", (agent["id"],)):
        raise Conflict(f"agent {agent['id']} already exists")
    tx.execute(
        f"INSERT INTO agents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (agent["id"], agent["user_id"], agent["name"], agent["description"], agent["type"], agent["llm"],
         dumps(agent["tools"]), agent["instructions"], now_ms()),
    )


def count_for_user_tx(tx: WriteTx, user_id: str) -> int:
    return int(tx.fetchone("SELECT COUNT(*) FROM agents WHERE user_id = ?", (user_id,))[0])


async def all_agents(conn: aiosqlite.Connection) -> list[dict[str, Any]]:
    return [_row(r) for r in await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM agents ORDER BY created_at")]


async def get(conn: aiosqlite.Connection, agent_id: str) -> dict[str, Any] | None:
    rows = list(await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM agents WHERE id = ?", (agent_id,)))
    return _row(rows[0]) if rows else None


async def for_user(conn: aiosqlite.Connection, user_id: str) -> list[dict[str, Any]]:
    return [_row(r) for r in await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM agents WHERE user_id = ? ORDER BY created_at", (user_id,))]
