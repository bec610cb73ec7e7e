"""The store: migrations, group commit, event ids that only grow."""
import asyncio
from pathlib import Path

import pytest

from store import Database
from store import events as events_sql


async def test_wal_and_synchronous_full(db):
    async def pragma(name):
        async with db._writer_conn.execute(f"PRAGMA {name}") as cur:
            return (await cur.fetchone())[0]

    assert (await pragma("journal_mode")).lower() == "wal"
    assert await pragma("synchronous") == 2  # FULL


async def test_many_events_share_one_commit(db):
    published = []
    db.on_commit = lambda events: published.append(list(events))
    commits_before = db.commits
    for i in range(500):
        db.append("task-1", "thread-1", "text.delta", {"partId": "p", "delta": str(i)})
    await db.committed()
    assert db.commits - commits_before <= 2
    ids = [e.id for batch in published for e in batch]
    assert ids == sorted(ids) and len(set(ids)) == 500
    stored = await db.read(lambda c: events_sql.for_task(c, "task-1", 0, 1000))
    assert [e.data["delta"] for e in stored] == [str(i) for i in range(500)]


async def test_ids_rise_in_commit_order_across_jobs_and_events(db):
    published = []
    db.on_commit = lambda events: published.extend(events)

    def job(tx):
        tx.event("task-2", "thread-2", "step.started", {"node": "n"})

    db.append("task-2", "thread-2", "text.delta", {"partId": "p", "delta": "a"})
    fut = db.submit(job)
    db.append("task-2", "thread-2", "text.delta", {"partId": "p", "delta": "b"})
    await fut
    await db.committed()
    assert [e.type for e in published] == ["text.delta", "step.started", "text.delta"]
    assert [e.id for e in published] == sorted(e.id for e in published)


async def test_failed_job_rolls_back_alone(db):
    def bad(tx):
        tx.event("task-3", "thread-3", "step.started", {"node": "x"})
        tx.execute("INSERT INTO no_such_table VALUES (1)")

    def good(tx):
        tx.event("task-3", "thread-3", "step.started", {"node": "y"})
        return "ok"

    bad_fut, good_fut = db.submit(bad), db.submit(good)
    with pytest.raises(Exception, match="no_such_table"):
        await bad_fut
    assert await good_fut == "ok"
    stored = await db.read(lambda c: events_sql.for_task(c, "task-3"))
    assert [e.data["node"] for e in stored] == ["y"]


async def test_event_ids_are_never_reused_after_delete_and_reopen(tmp_path):
    db = Database(tmp_path / "ids.db")
    await db.open()
    for _ in range(10):
        db.append("t", "th", "text.delta", {"partId": "p", "delta": "x"})
    await db.committed()
    top = db._next_id

    def wipe(tx):
        tx.execute("DELETE FROM events")

    await db.write(wipe)
    await db.close()
    db2 = Database(tmp_path / "ids.db")
    await db2.open()
    ev = db2.append("t", "th", "text.delta", {"partId": "p", "delta": "y"})
    await db2.committed()
    assert ev.id > top
    await db2.close()


async def test_migrations_apply_once(tmp_path):
    for _ in range(2):
        db = Database(tmp_path / "m.db")
        await db.open()
        rows = await db.read(lambda c: _all(c, "SELECT version FROM schema_migrations ORDER BY version"))
        await db.close()
        files = sorted(p.name for p in (Path(__file__).parents[2] / "store" / "migrations").glob("*.sql"))
        assert rows == [(int(name.split("_")[0]),) for name in files]


async def _all(conn, sql):
    return [tuple(r) for r in await conn.execute_fetchall(sql)]


async def test_concurrent_writers_are_serialised(db):
    def bump(tx):
        tx.execute("CREATE TABLE IF NOT EXISTS counter (n INTEGER)")
        row = tx.fetchone("SELECT COUNT(*) FROM counter")
        tx.execute("INSERT INTO counter VALUES (?)", (row[0],))
        return row[0]

    results = await asyncio.gather(*(db.write(bump) for _ in range(50)))
    assert sorted(results) == list(range(50))


async def test_reads_see_every_commit_under_interleaving(db):
    """Reads take one trip each: a reader never answers from an old snapshot."""
    from store.db import in_connection_thread

    assert callable(in_connection_thread)
    for i in range(200):
        db.append("task-4", "thread-4", "text.delta", {"partId": "p", "delta": str(i)})
        if i % 20 == 19:
            await db.committed()
            counts = await asyncio.gather(*(db.read(lambda c: events_sql.for_task(c, "task-4", 0, 10_000)) for _ in range(12)))
            assert {len(c) for c in counts} == {i + 1}


def test_aiosqlite_still_offers_its_thread_entry_point():
    import aiosqlite

    assert hasattr(aiosqlite.Connection, "_execute"), "store.db.in_connection_thread relies on it"
