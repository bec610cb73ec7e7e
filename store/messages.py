"""Messages in the AI SDK v5 UIMessage shape, ordered by `seq` per thread."""
from __future__ import annotations

from typing import Any

import aiosqlite

from store.db import WriteTx, dumps, loads, now_ms
from store.errors import NotFound


def next_seq(tx: WriteTx, thread_id: str) -> int:
    row = tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE thread_id = ?", (thread_id,))
    return int(row[0]) + 1


def exists(tx: WriteTx, thread_id: str, message_id: str) -> bool:
    row = tx.fetchone("SELECT 1 FROM messages WHERE thread_id = ? AND id = ?", (thread_id, message_id))
    return row is not None


def put(
    tx: WriteTx,
    thread_id: str,
    message_id: str,
    seq: int,
    role: str,
    parts: list[dict[str, Any]],
    task_id: str | None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Insert the message, or replace its parts when it exists (an assistant message grows)."""
    tx.execute(
        "INSERT INTO messages (thread_id, id, seq, role, parts, metadata, task_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (thread_id, id) DO UPDATE SET parts = excluded.parts, metadata = excluded.metadata",
        (thread_id, message_id, seq, role, dumps(parts), dumps(metadata) if metadata else None, task_id, now_ms()),
    )


def supersede_from(tx: WriteTx, thread_id: str, message_id: str) -> int:
    """Mark `message_id` and every later message of the thread superseded; return how many."""
    row = tx.fetchone(
        "SELECT seq FROM messages WHERE thread_id = ? AND id = ? AND superseded = 0", (thread_id, message_id)
    )
    if row is None:
        raise NotFound(f"message {message_id} not found in thread")
    cur = tx.execute(
        "UPDATE messages SET superseded = 1 WHERE thread_id = ? AND seq >= ? AND superseded = 0",
        (thread_id, row[0]),
    )
    return cur.rowcount


def _ui(row: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"id": row[0], "role": row[1], "parts": loads(row[2])}
    meta = loads(row[3]) or {}
    meta.setdefault("createdAt", row[4])
    if row[5]:
        meta.setdefault("taskId", row[5])
    msg["metadata"] = meta
    return msg


async def list_for_thread(conn: aiosqlite.Connection, thread_id: str) -> list[dict[str, Any]]:
    """The thread's live (non-superseded) messages as UIMessages, ascending."""
    rows = await conn.execute_fetchall(
        "SELECT id, role, parts, metadata, created_at, task_id FROM messages"
        " WHERE thread_id = ? AND superseded = 0 ORDER BY seq",
        (thread_id,),
    )
    return [_ui(r) for r in rows]


async def get(conn: aiosqlite.Connection, thread_id: str, message_id: str) -> dict[str, Any] | None:
    rows = list(await conn.execute_fetchall(
        "SELECT id, role, parts, metadata, created_at, task_id FROM messages WHERE thread_id = ? AND id = ?",
        (thread_id, message_id),
    ))
    return _ui(rows[0]) if rows else None
