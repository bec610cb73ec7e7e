"""Produced files: the files that tasks made (their `file` events), and the mark that hides a task's.

A task's media are hidden by a key in its state (`HIDDEN`, when) rather than by deleting
anything: the event log is append-only and the thread's messages keep their file parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from store import tasks as tasks_sql
from store.db import WriteTx, dialect, now_ms
from store.tasks import TaskRow

HIDDEN = "media_hidden_at"  # the task state key: epoch ms of the DELETE …/upload/:taskId that hid its media


@dataclass(frozen=True, slots=True)
class ProducedFile:
    task_id: str
    message_id: str  # the task's assistant message (the one whose parts show the file)
    url: str
    media_type: str
    created_at: int


def hidden(task: TaskRow) -> bool:
    return bool((task.state or {}).get(HIDDEN))


_FILES = (
    "SELECT e.task_id, t.assistant_message_id, e.data, e.created_at FROM events e JOIN tasks t ON t.id = e.task_id "
    "WHERE e.type = 'file' AND "  # the literal lets SQLite use the partial indexes of migration 0008
)


def _rows(rows: Any) -> list[ProducedFile]:
    out = []
    for task_id, message_id, data, created_at in rows:
        file = orjson.loads(data)
        out.append(ProducedFile(task_id, message_id, str(file.get("url", "")), str(file.get("mediaType", "")), created_at))
    return out


async def files_of_tasks(conn: aiosqlite.Connection, task_ids: list[str]) -> dict[str, list[ProducedFile]]:
    """The files each task produced, oldest first (hidden or not: the caller has the task rows)."""
    if not task_ids:
        return {}
    marks = ", ".join("?" for _ in task_ids)
    rows = await conn.execute_fetchall(_FILES + f"e.task_id IN ({marks}) ORDER BY e.id", task_ids)
    out: dict[str, list[ProducedFile]] = {}
    for row in _rows(rows):
        out.setdefault(row.task_id, []).append(row)
    return out


async def files_of_thread(conn: aiosqlite.Connection, thread_id: str) -> list[ProducedFile]:
    """The files that the thread's tasks produced, oldest first, leaving out those of tasks whose media are hidden."""
    shown = f"(t.state::jsonb -> '{HIDDEN}') IS NULL" if dialect(conn) == "postgresql" else f"json_extract(t.state, '$.{HIDDEN}') IS NULL"
    rows = await conn.execute_fetchall(_FILES + f"e.thread_id = ? AND {shown} ORDER BY e.id", (thread_id,))
    return _rows(rows)


def hide(tx: WriteTx, task_id: str) -> bool:
    """Mark the task's media hidden (idempotent: the first time is kept); False when there is no such task."""
    task = tasks_sql.get_tx(tx, task_id)
    if task is None:
        return False
    if not hidden(task):
        tasks_sql.update(tx, task_id, state={**(task.state or {}), HIDDEN: now_ms()})
    return True
