"""The event log: one row per event, one id sequence for the whole server."""
from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import orjson

from store.event_types import RUN_STARTED, TERMINAL_TYPES

_INSERT = "INSERT INTO events (id, task_id, thread_id, type, data, created_at) VALUES (?, ?, ?, ?, ?, ?)"
_COLUMNS = "id, task_id, thread_id, type, data, created_at"


def encode(value: Any) -> bytes:
    """orjson.dumps, trimmed: orjson's result keeps a buffer of a few KiB even
    for a 20-byte document, which multiplied by every cached event is real memory."""
    out = orjson.dumps(value)
    return bytes(memoryview(out)) if len(out) < 4096 else out


class Event:
    """One committed (or about to be committed) event of a task.

    `data_text` is the payload encoded once, as stored.  `ui` caches the
    encoded AI SDK chunk of the event (handlers/sse.py), so that a hundred
    readers of one live event share one encoding.
    """

    __slots__ = ("created_at", "data", "data_text", "id", "task_id", "thread_id", "type", "ui")

    def __init__(
        self,
        id: int,
        task_id: str,
        thread_id: str,
        type: str,
        data: dict[str, Any],
        created_at: int,
        data_text: str | None = None,
    ) -> None:
        self.id = id
        self.task_id = task_id
        self.thread_id = thread_id
        self.type = type
        self.data = data
        self.created_at = created_at
        self.data_text = data_text if data_text is not None else orjson.dumps(data).decode()
        self.ui: bytes | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def row(self) -> tuple[int, str, str, str, str, int]:
        return (self.id, self.task_id, self.thread_id, self.type, self.data_text, self.created_at)

    @classmethod
    def from_row(cls, row: Any) -> Event:
        return cls(row[0], row[1], row[2], row[3], orjson.loads(row[4]), row[5], row[4])

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.type}, task={self.task_id})"


# Rows per INSERT statement: a batch is inserted in statements of these sizes (largest first), so
# that its rows take a few statements, not one each (`executemany` steps once per row, and each
# step gives up the GIL and waits to take it back from the event loop), with few distinct SQL
# texts (each is prepared once and cached).  128 rows are 768 parameters: under SQLite's oldest
# limit of 999.
_CHUNKS = (128, 16, 4, 1)
_INSERT_ROWS = {n: _INSERT + ", (?, ?, ?, ?, ?, ?)" * (n - 1) for n in _CHUNKS}


def insert_batch(conn: sqlite3.Connection, events: list[Event]) -> None:
    """Insert `events` (SQLite)."""
    at = 0
    for size in _CHUNKS:
        sql = _INSERT_ROWS[size]
        while len(events) - at >= size:
            conn.execute(sql, [v for e in events[at:at + size] for v in e.row()])
            at += size


async def max_id(conn: aiosqlite.Connection) -> int:
    """The highest id ever handed out (sqlite_sequence survives deletions)."""
    rows = list(await conn.execute_fetchall("SELECT seq FROM sqlite_sequence WHERE name = 'events'"))
    seq = int(rows[0][0]) if rows else 0
    rows = list(await conn.execute_fetchall("SELECT COALESCE(MAX(id), 0) FROM events"))
    return max(seq, int(rows[0][0]) if rows else 0)


async def for_task(conn: aiosqlite.Connection, task_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM events WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?", (task_id, after, limit)
    )
    return [Event.from_row(r) for r in rows]


async def for_thread(conn: aiosqlite.Connection, thread_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
    """The events of every task of the thread after `after`, in id order."""
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM events WHERE thread_id = ? AND id > ? ORDER BY id LIMIT ?", (thread_id, after, limit)
    )
    return [Event.from_row(r) for r in rows]


async def last_run_start(conn: aiosqlite.Connection, thread_id: str) -> int | None:
    """The id of the thread's latest `run.started` event (where its latest task's log begins)."""
    rows = list(await conn.execute_fetchall(
        "SELECT id FROM events WHERE thread_id = ? AND type = ? ORDER BY id DESC LIMIT 1", (thread_id, RUN_STARTED)
    ))
    return int(rows[0][0]) if rows else None


async def last_for_task(conn: aiosqlite.Connection, task_id: str) -> Event | None:
    rows = list(await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM events WHERE task_id = ? ORDER BY id DESC LIMIT 1", (task_id,)))
    return Event.from_row(rows[0]) if rows else None


async def highest_id(conn: aiosqlite.Connection) -> int:
    """The highest id handed out, on a store that numbers events with `event_counter` (PostgreSQL)."""
    rows = list(await conn.execute_fetchall("SELECT last_id FROM event_counter"))
    return int(rows[0][0]) if rows else 0

