"""Threads: owner, title (and where it came from), timestamps, soft delete."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite

from store.db import WriteTx, dialect, now_ms
from store.errors import Conflict

_COLUMNS = "id, user_id, title, created_at, updated_at, deleted_at, title_source"
_GET = f"SELECT {_COLUMNS} FROM threads WHERE id = ?"


@dataclass(slots=True)
class ThreadRow:
    id: str
    user_id: str
    title: str | None
    created_at: int
    updated_at: int
    deleted_at: int | None
    title_source: str = "message"  # given | message | llm

    @classmethod
    def from_row(cls, row: Any) -> ThreadRow:
        return cls(*row)


async def get(conn: aiosqlite.Connection, thread_id: str) -> ThreadRow | None:
    rows = list(await conn.execute_fetchall(_GET, (thread_id,)))
    return ThreadRow.from_row(rows[0]) if rows else None


def ensure(tx: WriteTx, thread_id: str, user_id: str, title: str | None) -> tuple[ThreadRow, bool]:
    """The thread, created for `user_id` if it does not exist yet (owner = first writer), and
    whether this call created it (then it has no message and no task yet)."""
    row = tx.fetchone(_GET, (thread_id,))
    now = now_ms()
    if row is None:
        tx.execute(
            "INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (thread_id, user_id, title, now, now),
        )
        return ThreadRow(thread_id, user_id, title, now, now, None, "message"), True
    thread = ThreadRow.from_row(row)
    if thread.user_id != user_id:
        return thread, False
    if thread.deleted_at is not None:  # a deleted thread's id used again: a new conversation, a new title
        tx.execute(
            "UPDATE threads SET updated_at = ?, deleted_at = NULL, title = ?, title_source = 'message' WHERE id = ?",
            (now, title, thread_id),
        )
    else:
        tx.execute("UPDATE threads SET updated_at = ?, title = COALESCE(title, ?) WHERE id = ?", (now, title, thread_id))
    return thread, False


def create(tx: WriteTx, thread_id: str, user_id: str, title: str | None, title_source: str = "message") -> ThreadRow:
    """A new thread (Conflict when the id is taken, by anyone); `title_source` is `given` or `message`."""
    if tx.fetchone(_GET, (thread_id,)) is not None:
        raise Conflict(f"thread {thread_id} already exists")
    now = now_ms()
    tx.execute(
        "INSERT INTO threads (id, user_id, title, created_at, updated_at, title_source) VALUES (?, ?, ?, ?, ?, ?)",
        (thread_id, user_id, title, now, now, title_source),
    )
    return ThreadRow(thread_id, user_id, title, now, now, None, title_source)


def set_llm_title(tx: WriteTx, thread_id: str, title: str) -> bool:
    """Replace a title made from the first message by one the model gave; False when the
    thread's title was given, or already named by the model, or the thread is deleted.
    Activity order is kept: `updated_at` does not change."""
    cur = tx.execute(
        "UPDATE threads SET title = ?, title_source = 'llm' WHERE id = ? AND title_source = 'message' AND deleted_at IS NULL",
        (title, thread_id),
    )
    return cur.rowcount == 1


async def for_user(conn: aiosqlite.Connection, user_id: str, limit: int = 200) -> list[ThreadRow]:
    """The user's threads that are not deleted, most recently active first."""
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM threads WHERE user_id = ? AND deleted_at IS NULL ORDER BY updated_at DESC LIMIT ?",
        (user_id, limit),
    )
    return [ThreadRow.from_row(r) for r in rows]


def soft_delete(tx: WriteTx, thread_id: str) -> None:
    """Hide the thread and its messages (a later run on the same id starts an empty history);
    its tasks and events stay, so traces and replays of its jobs still work."""
    tx.execute("UPDATE threads SET deleted_at = ? WHERE id = ?", (now_ms(), thread_id))
    tx.execute("UPDATE messages SET superseded = 1 WHERE thread_id = ?", (thread_id,))


async def page_for_user(conn: aiosqlite.Connection, user_id: str, offset: int, limit: int) -> list[ThreadRow]:
    """One page of the user's threads that are not deleted, most recently active first (ties: newest row first)."""
    newest = "rowid DESC" if dialect(conn) == "sqlite" else "created_at DESC, id DESC"
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM threads WHERE user_id = ? AND deleted_at IS NULL"
        f" ORDER BY updated_at DESC, {newest} LIMIT ? OFFSET ?",
        (user_id, limit, offset),
    )
    return [ThreadRow.from_row(r) for r in rows]
