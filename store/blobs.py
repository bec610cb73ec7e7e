"""File contents kept in the store by server-made name ("attachments/<bucket>/<path>", "documents/<id>").

On a shared store (PostgreSQL) every instance serves every file from here (SPEC section 14);
the SQLite store's server keeps them as files under data_dir instead (runs/files.py chooses).
The caller records a file after `put` and deletes it again when the record fails, as with a file
on disk.

On PostgreSQL a blob moves on a pooled connection, outside the group commit (megabytes in the
writer's transaction would hold up every run's events), in binary, and is read in slices of
`SLICE` bytes, so that the event loop never decodes a whole file at once.
"""
from __future__ import annotations

from typing import Any

from store.db import WriteTx, now_ms
from store.errors import Conflict
from store.writer import GroupCommitStore as Store

SLICE = 1024 * 1024


async def put(db: Store, name: str, data: bytes) -> None:
    """Keep `data` as `name`, committed on return; Conflict if the name is taken (names are never reused)."""
    if db.dialect == "postgresql":
        added = await db.read(lambda c: _put_pg(c, name, data))
    else:
        added = await db.write(lambda tx: _put_tx(tx, name, data))
    if not added:
        raise Conflict("a blob with this name exists", name=name)


async def get(db: Store, name: str) -> bytes | None:
    """The content kept as `name`, or None."""
    if db.dialect == "postgresql":
        return await db.read(lambda c: _get_pg(c, name))
    rows = await db.read(lambda c: c.execute_fetchall("SELECT data FROM blobs WHERE name = ?", (name,)))
    return bytes(rows[0][0]) if rows else None


async def delete(db: Store, name: str) -> None:
    """`name` is gone (whether or not it was there)."""
    if db.dialect == "postgresql":
        await db.read(lambda c: c.execute_fetchall("DELETE FROM blobs WHERE name = ?", (name,)))
    else:
        await db.write(lambda tx: tx.execute("DELETE FROM blobs WHERE name = ?", (name,)))


def _put_tx(tx: WriteTx, name: str, data: bytes) -> bool:
    cur = tx.execute("INSERT INTO blobs (name, data, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
                     (name, data, now_ms()))
    return bool(cur.rowcount)


async def _put_pg(conn: Any, name: str, data: bytes) -> bool:
    # A statement of its own on a pooled connection in autocommit (PostgresDatabase.read); %b sends
    # the bytes as they are, not as hex text.
    cur = await conn.conn.execute("INSERT INTO blobs (name, data, created_at) VALUES (%s, %b, %s) "
                                  "ON CONFLICT (name) DO NOTHING", (name, data, now_ms()))
    return bool(cur.rowcount)


async def _get_pg(conn: Any, name: str) -> bytes | None:
    parts: list[bytes] = []
    async with conn.conn.cursor(binary=True) as cur:
        while True:
            await cur.execute("SELECT substring(data FROM %s FOR %s) FROM blobs WHERE name = %s",
                              (len(parts) * SLICE + 1, SLICE, name))
            row = await cur.fetchone()
            if row is None:  # not there, or deleted while it was read
                return None
            parts.append(bytes(row[0]))
            if len(row[0]) < SLICE:
                return b"".join(parts)
