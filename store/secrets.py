"""The server's secrets kept in the store, by name: made once, then the same for every instance.

A shared store (PostgreSQL) holds them so that what one instance signs every other accepts
(SPEC section 14); the SQLite store's server keeps them as files under data_dir/keys instead
(auth/keys.py chooses).  Values are bytes and never leave this module but to their caller.
"""
from __future__ import annotations

from typing import Any

from store.db import WriteTx, now_ms
from store.writer import GroupCommitStore as Store


async def get(db: Store, name: str) -> bytes | None:
    """The secret called `name`, or None before it is made."""
    rows = await db.read(lambda c: c.execute_fetchall(_SELECT, (name,)))
    return bytes(rows[0][0]) if rows else None


async def keep_first(db: Store, name: str, value: bytes) -> bytes:
    """The secret called `name`: `value` if there was none, else the one kept before.

    Instances that start together each offer their own value; the first to commit wins and
    the others read it back: the insert that finds the name taken waits for the one that took
    it to commit, and the SELECT after it, a statement of its own, sees that row.  On PostgreSQL
    both run on a pooled connection in autocommit, never in a batch of the writer, whose
    transaction could hold other rows that another instance's batch waits for.
    """
    if db.dialect == "postgresql":
        return await db.read(lambda c: _keep_first_pg(c, name, value))
    return await db.write(lambda tx: _keep_first_tx(tx, name, value))


_INSERT = "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"
_SELECT = "SELECT value FROM secrets WHERE name = ?"


async def _keep_first_pg(conn: Any, name: str, value: bytes) -> bytes:
    await conn.execute_fetchall(_INSERT, (name, value, now_ms()))
    rows = await conn.execute_fetchall(_SELECT, (name,))
    return bytes(rows[0][0])


def _keep_first_tx(tx: WriteTx, name: str, value: bytes) -> bytes:
    tx.execute(_INSERT, (name, value, now_ms()))
    return bytes(tx.fetchone(_SELECT, (name,))[0])
