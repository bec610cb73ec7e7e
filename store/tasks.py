"""Tasks (= runs = jobs): one row per run, the status machine's memory."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import aiosqlite

from store.db import WriteTx, dialect, dumps, loads

LIVE = ("pending", "running", "parked")
TERMINAL = ("completed", "failed", "cancelled")
_JSON = frozenset({"error", "parked", "state"})


@dataclass(slots=True)
class TaskRow:
    id: str
    thread_id: str
    user_id: str
    agent_id: str
    status: str
    created_at: int
    started_at: int | None
    finished_at: int | None
    current_node: str | None
    error: dict[str, Any] | None
    parked: dict[str, Any] | None
    state: dict[str, Any] | None
    user_message_id: str | None
    assistant_message_id: str
    assistant_seq: int
    client_run_id: str | None

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_row(cls, row: Any) -> TaskRow:
        return cls(*[loads(v) if json else v for json, v in zip(_IS_JSON, row, strict=True)])


_NAMES = tuple(f.name for f in fields(TaskRow))
_IS_JSON = tuple(name in _JSON for name in _NAMES)
_COLUMNS = ", ".join(_NAMES)
_INSERT = f"INSERT INTO tasks ({_COLUMNS}) VALUES ({', '.join('?' for _ in _NAMES)})"


def _encode(name: str, value: Any) -> Any:
    return dumps(value) if name in _JSON and value is not None else value


def insert(tx: WriteTx, task: TaskRow) -> None:
    tx.execute(_INSERT, [_encode(n, getattr(task, n)) for n in _NAMES])


_GET = f"SELECT {_COLUMNS} FROM tasks WHERE id = ?"
_LIVE = f"SELECT {_COLUMNS} FROM tasks WHERE thread_id = ? AND status IN ('pending', 'running', 'parked')"


def _one(rows: Any) -> TaskRow | None:
    rows = list(rows)
    return TaskRow.from_row(rows[0]) if rows else None


async def get(conn: aiosqlite.Connection, task_id: str) -> TaskRow | None:
    return _one(await conn.execute_fetchall(_GET, (task_id,)))


def get_tx(tx: WriteTx, task_id: str) -> TaskRow | None:
    return _one(tx.fetchall(_GET, (task_id,)))


async def get_many(conn: aiosqlite.Connection, task_ids: list[str]) -> list[TaskRow]:
    """The tasks of these ids that exist, in no particular order."""
    if not task_ids:
        return []
    marks = ", ".join("?" for _ in task_ids)
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({marks})", task_ids)
    return [TaskRow.from_row(r) for r in rows]


async def live_for_thread(conn: aiosqlite.Connection, thread_id: str) -> TaskRow | None:
    return _one(await conn.execute_fetchall(_LIVE, (thread_id,)))


def live_for_thread_tx(tx: WriteTx, thread_id: str) -> TaskRow | None:
    return _one(tx.fetchall(_LIVE, (thread_id,)))


def running_for_user_tx(tx: WriteTx, user_id: str, cap: int) -> int:
    """How many of the user's tasks are pending or running (parked ones are not), counted up to `cap`."""
    row = tx.fetchone(
        "SELECT COUNT(*) FROM (SELECT 1 FROM tasks"
        " WHERE user_id = ? AND status IN ('pending', 'running') LIMIT ?) AS going", (user_id, cap))
    return int(row[0])


async def with_status(conn: aiosqlite.Connection, statuses: tuple[str, ...]) -> list[TaskRow]:
    marks = ", ".join("?" for _ in statuses)
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM tasks WHERE status IN ({marks}) ORDER BY created_at", statuses)
    return [TaskRow.from_row(r) for r in rows]


async def count_with_status(conn: aiosqlite.Connection, status: str) -> int:
    rows = await conn.execute_fetchall("SELECT COUNT(*) FROM tasks WHERE status = ?", (status,))
    return int(next(iter(rows))[0])


def update(tx: WriteTx, task_id: str, **values: Any) -> None:
    sets = ", ".join(f"{k} = ?" for k in values)
    tx.execute(f"UPDATE tasks SET {sets} WHERE id = ?", [*(_encode(k, v) for k, v in values.items()), task_id])


def update_if(tx: WriteTx, task_id: str, statuses: tuple[str, ...], **values: Any) -> bool:
    """Update only while the task is in one of `statuses`; True when it was."""
    sets = ", ".join(f"{k} = ?" for k in values)
    marks = ", ".join("?" for _ in statuses)
    cur = tx.execute(
        f"UPDATE tasks SET {sets} WHERE id = ? AND status IN ({marks})",
        [*(_encode(k, v) for k, v in values.items()), task_id, *statuses],
    )
    return cur.rowcount == 1


async def for_agent(conn: aiosqlite.Connection, agent_id: str, user_id: str, status: str | None,
                    limit: int = 100) -> list[TaskRow]:
    """The user's tasks of an agent, newest first."""
    sql = f"SELECT {_COLUMNS} FROM tasks WHERE agent_id = ? AND user_id = ?"
    params: list[Any] = [agent_id, user_id]
    if status is not None:
        sql += " AND status = ?"
        params.append(status)
    rows = await conn.execute_fetchall(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])
    return [TaskRow.from_row(r) for r in rows]


async def counts_for_agent(conn: aiosqlite.Connection, agent_id: str, user_id: str) -> dict[str, int]:
    rows = await conn.execute_fetchall(
        "SELECT status, COUNT(*) FROM tasks WHERE agent_id = ? AND user_id = ? GROUP BY status", (agent_id, user_id)
    )
    return {r[0]: r[1] for r in rows}


# -- leases (many instances on one store, SPEC section 14) ---------------------------------------

def claim(tx: WriteTx, task_id: str, owner: str, until_ms: int) -> None:
    """`owner` runs the task now, with a lease until `until_ms`."""
    tx.execute("UPDATE tasks SET owner = ?, lease_until = ? WHERE id = ?", (owner, until_ms, task_id))


def renew(tx: WriteTx, owner: str, until_ms: int) -> int:
    """Extend the leases of the live tasks `owner` runs; how many there are."""
    cur = tx.execute("UPDATE tasks SET lease_until = ? WHERE owner = ? AND status IN ('pending', 'running')",
                     (until_ms, owner))
    return int(cur.rowcount)


async def expired(conn: aiosqlite.Connection, now: int) -> list[TaskRow]:
    """Live (not parked) tasks whose lease ran out: their instance is gone."""
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM tasks WHERE status IN ('pending', 'running') AND lease_until < ?", (now,))
    return [TaskRow.from_row(r) for r in rows]


def lease_expired_tx(tx: WriteTx, task_id: str, now: int) -> bool:
    row = tx.fetchone("SELECT lease_until FROM tasks WHERE id = ?", (task_id,))
    return row is not None and row[0] is not None and int(row[0]) < now


async def owner_of(conn: aiosqlite.Connection, task_id: str) -> tuple[str | None, int | None]:
    """The instance running the task and the end of its lease (None, None when nobody holds it)."""
    rows = list(await conn.execute_fetchall("SELECT owner, lease_until FROM tasks WHERE id = ?", (task_id,)))
    return (rows[0][0], rows[0][1]) if rows else (None, None)


def serialize_user(tx: WriteTx, user_id: str) -> None:
    """Make the transactions that count this user's runs (plan, runs per day, running) take turns.

    SQLite has one writer: they do already.  On PostgreSQL, instances write at once, and under
    READ COMMITTED two starts could each count nine running runs and both insert a tenth: a lock
    on the user, held until COMMIT, makes the second count after the first has committed."""
    if dialect(tx) == "postgresql":
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"parley-user:{user_id}",))

