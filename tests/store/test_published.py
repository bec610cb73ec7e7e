"""`Store.published()`: a drain ends the streams only once this instance's last events reached its hub.

On PostgreSQL the instance's own commits come back from the event bus (LISTEN/NOTIFY) a little
after the commit; SQLite publishes at commit."""
from __future__ import annotations

from store import Database
from store.postgres import NOTIFY_LIMIT, PostgresDatabase


async def test_published_waits_for_the_bus_to_bring_back_own_commits(pg_url):
    db = PostgresDatabase(pg_url)
    await db.open()
    try:
        seen: list = []
        db.on_commit = seen.extend
        for n in range(5):
            db.append("task", "th", "text.delta", {"delta": str(n)})
        db.append("task", "th", "text.delta", {"delta": "x" * (NOTIFY_LIMIT + 100)})  # read back by id range
        await db.committed()
        await db.published()
        assert [e.data["delta"] for e in seen][:5] == ["0", "1", "2", "3", "4"] and len(seen) == 6
        assert seen[-1].id == db.last_event_id
        await db.published()  # nothing new: at once
    finally:
        await db.close()


async def test_published_is_at_once_on_sqlite(tmp_path):
    db = Database(tmp_path / "parley.db")
    await db.open()
    try:
        seen: list = []
        db.on_commit = seen.extend
        db.append("task", "th", "text.delta", {"delta": "0"})
        await db.committed()
        await db.published()
        assert len(seen) == 1
    finally:
        await db.close()
