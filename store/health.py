"""The database's own health: the smallest round trips through a reader and through the writer."""
from __future__ import annotations

from typing import Any

from store.db import WriteTx


async def read_probe(conn: Any) -> None:
    """A query on a reader connection (`Database.read`)."""
    await conn.execute_fetchall("SELECT 1")


def write_probe(tx: WriteTx) -> None:
    """A statement in the writer's transaction (`Database.write`): it waits its turn like any write."""
    tx.fetchone("SELECT 1")
