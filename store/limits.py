"""Rate limits counted in the store: a sliding log of hits per key, so that every instance sharing the
store counts against one limit (SPEC section 14).  auth/ratelimit.py's `StoredWindow` is its user.

A key's row holds the epoch ms of its hits still in the window (at most `limit` of them), oldest
first.  On PostgreSQL a hit is one statement on a pooled connection, outside the group commit: the
upsert locks the key's row, so concurrent hits of one key from any instance take turns, and each
sees the hits of the one before.  On SQLite the one writer takes the hits in turn.

Times come from the caller (epoch ms), so that a test can hold the clock.
"""
from __future__ import annotations

from typing import Any

import orjson

from store.db import WriteTx
from store.writer import GroupCommitStore as Store

# One statement: keep the hits still in the window, add this one if there is room (or always, to
# record), keep the newest `limit`, and say whether there was room.  `r` is the key's row, locked.
_HIT_PG = """
INSERT INTO rate_limits AS r (key, hits, allowed, expires_at)
VALUES (%(key)s, ARRAY[%(now)s::bigint], true, %(now)s::bigint + %(window)s)
ON CONFLICT (key) DO UPDATE SET (hits, allowed, expires_at) = (
    SELECT n.hits, n.room, COALESCE(n.hits[cardinality(n.hits)], 0) + %(window)s
    FROM (
        SELECT CASE WHEN k.room OR %(always)s
                    THEN (k.kept || %(now)s::bigint)[greatest(1, cardinality(k.kept) + 2 - %(limit)s):]
                    ELSE k.kept END AS hits,
               k.room
        FROM (
            SELECT kept, cardinality(kept) < %(limit)s AS room
            FROM (SELECT ARRAY(SELECT h FROM unnest(r.hits) AS h WHERE h > %(now)s::bigint - %(window)s ORDER BY h)
                  AS kept) AS s
        ) AS k
    ) AS n
)
RETURNING allowed, hits
"""


def wait_ms(hits: list[int], limit: int, window_ms: int, now: int) -> int:
    """The ms until a key with these hits has room for one more in the window (0: it has room now)."""
    kept = [h for h in hits if h > now - window_ms]
    return max(1, kept[-limit] + window_ms - now) if len(kept) >= limit else 0


async def hit(db: Store, key: str, limit: int, window_ms: int, now: int) -> int:
    """Count a hit of `key` if it has room: 0; else the ms until it has room (and nothing is counted)."""
    allowed, hits = await _add(db, key, limit, window_ms, now, always=False)
    return 0 if allowed else wait_ms(hits, limit, window_ms, now)


async def record(db: Store, key: str, limit: int, window_ms: int, now: int) -> None:
    """Count a hit of `key` whether or not it has room."""
    await _add(db, key, limit, window_ms, now, always=True)


async def blocked_for(db: Store, key: str, limit: int, window_ms: int, now: int) -> int:
    """The ms until `key` has room for one more hit (0: now); counts nothing."""
    rows = await db.read(lambda c: c.execute_fetchall("SELECT hits FROM rate_limits WHERE key = ?", (key,)))
    return wait_ms(_hits(rows[0][0]), limit, window_ms, now) if rows else 0


async def sweep(db: Store, now: int) -> None:
    """Forget the keys whose newest hit has left its window."""
    if db.dialect == "postgresql":
        await db.read(lambda c: c.execute_fetchall("DELETE FROM rate_limits WHERE expires_at <= ?", (now,)))
    else:
        await db.write(lambda tx: tx.execute("DELETE FROM rate_limits WHERE expires_at <= ?", (now,)))


async def _add(db: Store, key: str, limit: int, window_ms: int, now: int, always: bool) -> tuple[bool, list[int]]:
    if db.dialect == "postgresql":
        params = {"key": key, "limit": limit, "window": window_ms, "now": now, "always": always}
        return await db.read(lambda c: _add_pg(c, params))
    return await db.write(lambda tx: _add_tx(tx, key, limit, window_ms, now, always))


async def _add_pg(conn: Any, params: dict[str, Any]) -> tuple[bool, list[int]]:
    # A statement of its own on a pooled connection in autocommit (PostgresDatabase.read): it
    # commits at once and holds the key's row lock only while it runs.
    cur = await conn.conn.execute(_HIT_PG, params)
    allowed, hits = await cur.fetchone()
    return bool(allowed), list(hits)


def _add_tx(tx: WriteTx, key: str, limit: int, window_ms: int, now: int, always: bool) -> tuple[bool, list[int]]:
    """The same as _HIT_PG, in the SQLite writer's transaction (which no other writer shares)."""
    row = tx.fetchone("SELECT hits FROM rate_limits WHERE key = ?", (key,))
    kept = [h for h in (_hits(row[0]) if row else []) if h > now - window_ms]
    room = len(kept) < limit
    if room or always:
        kept = [*kept, now][-limit:]
    tx.execute("INSERT INTO rate_limits (key, hits, expires_at) VALUES (?, ?, ?) "
               "ON CONFLICT (key) DO UPDATE SET hits = excluded.hits, expires_at = excluded.expires_at",
               (key, orjson.dumps(kept).decode(), (kept[-1] if kept else 0) + window_ms))
    return room, kept


def _hits(value: Any) -> list[int]:
    return list(value) if isinstance(value, list) else list(orjson.loads(value))

