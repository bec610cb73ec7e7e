"""The PostgreSQL store against a real server: group commit, savepoints, conflicts, event ids in
commit order across instances, and LISTEN/NOTIFY as the event bus."""
from __future__ import annotations

import asyncio

import pytest

from store import Conflict
from store.postgres import NOTIFY_LIMIT, PostgresDatabase, to_pyformat


def test_placeholders_are_rewritten_outside_quotes():
    assert to_pyformat("SELECT * FROM t WHERE a = ? AND b LIKE 'x%?' AND c = ?") == \
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%?' AND c = %s"
    assert to_pyformat("SELECT 5 % 2") == "SELECT 5 %% 2"


@pytest.fixture
def two(io_loop, pg_url):
    """Two instances' stores on one database."""
    pair = []

    async def open_both():
        pair.extend([PostgresDatabase(pg_url), PostgresDatabase(pg_url)])
        for db in pair:
            await db.open()

    async def close_both():
        for db in pair:
            await db.close()

    io_loop.run_sync(open_both)
    yield pair
    io_loop.run_sync(close_both)


def _thread(tx, thread_id):
    tx.execute("INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
               (thread_id, "u", None, 1, 1))
    tx.event("task-" + thread_id, thread_id, "run.started", {})
    return tx.fetchone("SELECT COUNT(*) FROM threads WHERE id = ?", (thread_id,))[0]


async def test_a_failed_job_rolls_back_alone_and_a_unique_violation_is_a_conflict(two):
    a, _ = two
    assert await a.write(lambda tx: _thread(tx, "t1")) == 1
    first = a.submit(lambda tx: _thread(tx, "t1"))  # same id: refused by the primary key
    second = a.submit(lambda tx: _thread(tx, "t2"))  # shares the batch, commits
    with pytest.raises(Conflict):
        await first
    assert await second == 1
    rows = await a.read(lambda c: c.execute_fetchall("SELECT id FROM threads ORDER BY id"))
    assert [r[0] for r in rows] == ["t1", "t2"]
    events = await a.read(lambda c: c.execute_fetchall("SELECT id, thread_id FROM events ORDER BY id"))
    assert [r[1] for r in events] == ["t1", "t2"]  # the refused job's event is gone with it


async def test_events_reach_the_other_instance_in_commit_order(two):
    a, b = two
    seen_on_b: list = []
    b.on_commit = seen_on_b.extend
    big = "x" * (NOTIFY_LIMIT + 100)  # too big for a notification: read back by id range
    for n in range(20):
        a.append("task", "th", "text.delta", {"delta": big if n == 7 else str(n)})
        if n % 5 == 0:
            await a.committed()
    await a.committed()
    for _ in range(200):
        if len(seen_on_b) == 20:
            break
        await asyncio.sleep(0.01)
    assert [e.data["delta"] for e in seen_on_b] == [big if n == 7 else str(n) for n in range(20)]
    ids = [e.id for e in seen_on_b]
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert b.last_event_id == ids[-1]


async def test_ids_rise_in_commit_order_with_two_writers(two):
    """Both instances write at once; the log's id order is the order the events were committed in,
    and each instance's own events keep the order it queued them in."""
    a, b = two

    async def writer(db, name):
        for n in range(200):
            db.append("task-" + name, "th", "text.delta", {"delta": f"{name}{n}"})
            if n % 7 == 0:
                await asyncio.sleep(0)
        await db.committed()

    await asyncio.gather(writer(a, "a"), writer(b, "b"))
    rows = await a.read(lambda c: c.execute_fetchall("SELECT id, data FROM events ORDER BY id"))
    assert [r[0] for r in rows] == list(range(1, 401))
    for name in "ab":
        mine = [r[1] for r in rows if f'"{name}' in r[1]]
        assert mine == [f'{{"delta":"{name}{n}"}}' for n in range(200)]
