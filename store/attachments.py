"""Attachments (SPEC section 8): the owner, verified type, size and digest of each stored file."""
from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

import aiosqlite

from store.db import WriteTx, now_ms
from store.errors import Conflict


@dataclass(frozen=True, slots=True)
class Attachment:
    bucket: str
    path: str
    user_id: str
    name: str  # the client's file name, cleaned: for display only
    media_type: str
    size: int
    sha256: str
    thread_id: str | None
    created_at: int


_COLUMNS = ", ".join(f.name for f in fields(Attachment))


def insert(tx: WriteTx, bucket: str, path: str, user_id: str, name: str, media_type: str, size: int,
           sha256: str, thread_id: str | None = None) -> Attachment:
    """Record a stored file; Conflict if (bucket, path) is taken."""
    row = Attachment(bucket, path, user_id, name, media_type, size, sha256, thread_id, now_ms())
    if tx.fetchone("SELECT 1 FROM attachments WHERE bucket = ? AND path = ?", (bucket, path)) is not None:
        raise Conflict("an attachment with this bucket and path exists", bucket=bucket, path=path)
    tx.execute(f"INSERT INTO attachments ({_COLUMNS}) VALUES ({', '.join('?' * len(fields(Attachment)))})", astuple(row))
    return row


async def get(conn: aiosqlite.Connection, bucket: str, path: str) -> Attachment | None:
    rows: Any = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM attachments WHERE bucket = ? AND path = ?",
                                            (bucket, path))
    return Attachment(*rows[0]) if rows else None
