"""Messages in the AI SDK v5 UIMessage shape, ordered by `seq` per thread."""
from __future__ import annotations

from typing import Any

import aiosqlite

from store.db import WriteTx, dumps, loads, now_ms
from store.errors import NotFound

DAY_MS = 86_400_000


def next_seq(tx: WriteTx, thread_id: str) -> int:
    row = tx.fetchone("SELECT COALESCE(MAX(seq), 0) FROM messages WHERE thread_id = ?", (thread_id,))
    return int(row[0]) + 1


def exists(tx: WriteTx, thread_id: str, message_id: str) -> bool:
    """Whether a live message of the thread has this id (a superseded one leaves its id free)."""
    row = tx.fetchone("SELECT 1 FROM messages WHERE thread_id = ? AND id = ? AND superseded = 0", (thread_id, message_id))
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
    """Insert the message, or replace its parts when a live one has its id (an assistant message grows)."""
    tx.execute(
        "INSERT INTO messages (thread_id, id, seq, role, parts, metadata, task_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (thread_id, id) WHERE superseded = 0 DO UPDATE SET parts = excluded.parts, metadata = excluded.metadata",
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


async def get(conn: aiosqlite.Connection, thread_id: str, message_id: str,
              task_id: str | None = None) -> dict[str, Any] | None:
    """The message with this id (edits keep a message's id, so several rows may have it): the one
    that `task_id` stored when given, else the live one, else the latest one superseded."""
    rows = list(await conn.execute_fetchall(
        "SELECT id, role, parts, metadata, created_at, task_id FROM messages WHERE thread_id = ? AND id = ?"
        " ORDER BY CASE WHEN task_id = ? THEN 0 ELSE 1 END, superseded, seq DESC LIMIT 1",
        (thread_id, message_id, task_id),
    ))
    return _ui(rows[0]) if rows else None


async def last_for_threads(conn: aiosqlite.Connection, thread_ids: list[str], per_thread: int) -> dict[str, list[dict[str, Any]]]:
    """The last `per_thread` live messages of each thread as UIMessages, ascending (threads without any are absent)."""
    if not thread_ids:
        return {}
    marks = ", ".join("?" for _ in thread_ids)
    rows = await conn.execute_fetchall(
        "SELECT id, role, parts, metadata, created_at, task_id, thread_id FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY thread_id ORDER BY seq DESC) AS n FROM messages"
        f"  WHERE thread_id IN ({marks}) AND superseded = 0"
        ") AS recent WHERE n <= ? ORDER BY thread_id, seq",
        (*thread_ids, per_thread),
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row[6], []).append(_ui(row))
    return out


async def day_before(
    conn: aiosqlite.Connection, thread_id: str, before_ms: int | None
) -> tuple[int | None, list[dict[str, Any]], bool]:
    """One day of the thread's live messages: the last UTC day with messages before `before_ms`
    (the latest day when None).  Returns the day's start (epoch ms, None when there is no such
    day), its messages ascending as `{id, seq, role, parts, createdAt}`, and whether older
    days have messages."""
    bound = before_ms if before_ms is not None else 2**62
    rows = list(await conn.execute_fetchall(
        "SELECT MAX(created_at) FROM messages WHERE thread_id = ? AND superseded = 0 AND created_at < ?",
        (thread_id, bound),
    ))
    last = rows[0][0] if rows else None
    if last is None:
        return None, [], False
    start = int(last) - int(last) % DAY_MS
    day_rows = await conn.execute_fetchall(
        "SELECT id, seq, role, parts, created_at FROM messages"
        " WHERE thread_id = ? AND superseded = 0 AND created_at >= ? AND created_at < ? ORDER BY seq",
        (thread_id, start, min(start + DAY_MS, bound)),
    )
    messages = [{"id": r[0], "seq": r[1], "role": r[2], "parts": loads(r[3]), "createdAt": r[4]} for r in day_rows]
    older = list(await conn.execute_fetchall(
        "SELECT 1 FROM messages WHERE thread_id = ? AND superseded = 0 AND created_at < ? LIMIT 1", (thread_id, start)
    ))
    return start, messages, bool(older)
