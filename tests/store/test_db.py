"""The store: migrations, group commit, event ids that only grow."""
import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from store import Database
from store import events as events_sql
from store.db import migrate, split_sql


async def test_wal_and_synchronous_full(db):
    async def pragma(name):
        return await db.write(lambda tx: tx.fetchone(f"PRAGMA {name}")[0])

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


async def test_a_write_given_first_commits_ahead_of_the_backlog(db):
    """A new run's start (`first=True`) waits for the transaction under way, never for the
    backlog of events queued behind it: it commits alone, with lower ids than that backlog,
    and a `committed()` waiter still waits for the whole backlog."""
    gate = threading.Event()
    published = []
    db.on_commit = lambda events: published.append([e.type for e in events])
    entered = threading.Event()

    def hold(tx):  # the transaction under way, until the gate opens
        entered.set()
        gate.wait(10)

    busy = db.submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    backlog = [db.append("task-b", "thread-b", "text.delta", {"partId": "p", "delta": str(i)}) for i in range(300)]
    everything = asyncio.ensure_future(db.committed())
    start = db.submit(lambda tx: tx.event("task-s", "thread-s", "run.started", {}).id, first=True)
    await asyncio.sleep(0.01)
    assert not start.done() and not everything.done()
    gate.set()
    await busy
    start_id = await start
    await everything
    assert published[0] == ["run.started"] and published[1] == ["text.delta"] * 300
    assert start_id < min(e.id for e in backlog)


async def test_writes_given_first_take_turns_with_the_backlog(db):
    """Starts that keep coming never starve the backlog: after a transaction of `first` writes,
    the backlog's transaction comes before the next one of them."""
    gate, entered = threading.Event(), threading.Event()
    published = []
    later = []

    def start(tx):
        tx.event("task-s", "thread-s", "run.started", {})

    def on_commit(events):
        published.append([e.type for e in events])
        if len(published) == 1:  # another start arrives while the first one commits
            later.append(db.submit(start, first=True))

    def hold(tx):
        entered.set()
        gate.wait(10)

    db.on_commit = on_commit
    busy = db.submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    for i in range(50):
        db.append("task-b", "thread-b", "text.delta", {"partId": "p", "delta": str(i)})
    first = db.submit(start, first=True)
    gate.set()
    await busy
    await first
    await later[0]
    await db.committed()
    assert published == [["run.started"], ["text.delta"] * 50, ["run.started"]]


async def test_the_writer_takes_the_next_batch_without_waiting_for_the_loop(db):
    """The writer's thread commits batch after batch while anything is queued: a busy event loop
    delays when a commit is published, never when the next one starts."""
    gate, entered = threading.Event(), threading.Event()

    def hold(tx):
        entered.set()
        gate.wait(10)

    busy = db.submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    committed_next = threading.Event()
    queued = db.submit(lambda tx: committed_next.set())  # the next batch
    gate.set()
    # The event loop is blocked meanwhile: it neither publishes nor takes anything.
    assert committed_next.wait(10)
    await busy
    await queued


async def test_room_lets_waiting_writers_go_a_few_at_a_time(db):
    """Backpressure: a commit lets go only as many waiters as can each queue `turn` writes under
    the mark (at least one); once nothing is queued, all of them."""
    gate, entered = threading.Event(), threading.Event()

    def hold(tx):
        entered.set()
        gate.wait(10)

    busy = db.submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    backlog = [db.append("task-r", "thread-r", "text.delta", {"partId": "p", "delta": str(i)}) for i in range(10)]
    waiting = [asyncio.ensure_future(db.room(40, 16)) for _ in range(10)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    still_waiting = []  # right after the commit of `hold` (its future's callbacks run next)
    busy.add_done_callback(lambda _: still_waiting.append(len(db._room_waiters)))
    gate.set()
    await busy
    assert 7 <= still_waiting[0] <= 9  # 40 - (0 or 10 queued) leaves room for 2 or 3 turns of 16
    await asyncio.wait_for(asyncio.gather(*waiting), 5)  # the writer found nothing queued: every one went
    assert backlog[-1].id > 0


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


async def test_a_failed_job_costs_the_rest_of_its_batch_nothing(db):
    """A batch runs without savepoints until a job fails; then it runs again with them. The
    writes around the failed job are stored once each, their ids follow on without a gap, and
    a job that ran before the failure in the first attempt is not stored twice."""
    published = []
    db.on_commit = lambda events: published.extend(events)
    gate, entered = threading.Event(), threading.Event()

    def hold(tx):  # queue the whole batch behind this one
        entered.set()
        gate.wait(10)

    def row(tx):
        tx.execute("INSERT INTO rate_limits (key, hits, expires_at) VALUES ('once', '[]', 0)")
        tx.event("task-4", "thread-4", "step.started", {"node": "row"})
        return "row"

    def bad(tx):
        tx.event("task-4", "thread-4", "step.started", {"node": "bad"})
        raise ValueError("refused")

    statements = []
    await db._in_writer_thread(db._writer_conn.set_trace_callback, statements.append)
    busy = db.submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    assert not any(s.startswith("SAVEPOINT") for s in statements)  # a batch whose jobs all succeed
    db.append("task-4", "thread-4", "text.delta", {"partId": "p", "delta": "a"})
    row_fut, bad_fut = db.submit(row), db.submit(bad)
    db.append("task-4", "thread-4", "text.delta", {"partId": "p", "delta": "b"})
    gate.set()
    await busy
    assert await row_fut == "row"
    with pytest.raises(ValueError, match="refused"):
        await bad_fut
    await db.committed()
    assert [e.data.get("node", e.data.get("delta")) for e in published] == ["a", "row", "b"]
    ids = [e.id for e in published]
    assert ids == list(range(ids[0], ids[0] + 3))
    stored = await db.read(lambda c: events_sql.for_task(c, "task-4"))
    assert [e.id for e in stored] == ids
    assert await db.write(lambda tx: tx.fetchone("SELECT COUNT(*) FROM rate_limits WHERE key = 'once'")[0]) == 1
    assert statements.count("SAVEPOINT job") == 2  # run again: a savepoint for each of its two jobs
    await db._in_writer_thread(db._writer_conn.set_trace_callback, None)


@pytest.mark.parametrize("n", [1, 3, 4, 21, 128, 300])
async def test_a_batch_of_events_is_stored_whole_and_in_order(db, n):
    """A batch's events go in with a few multi-row statements (128, 16, 4 and 1 rows)."""
    statements = []
    await db._in_writer_thread(db._writer_conn.set_trace_callback, statements.append)
    for i in range(n):
        db.append(f"task-n{n}", "thread-n", "text.delta", {"partId": "p", "delta": str(i)})
    await db.committed()
    await db._in_writer_thread(db._writer_conn.set_trace_callback, None)
    stored = await db.read(lambda c: events_sql.for_task(c, f"task-n{n}", 0, 1000))
    assert [e.data["delta"] for e in stored] == [str(i) for i in range(n)]
    assert [e.id for e in stored] == list(range(stored[0].id, stored[0].id + n))
    inserts = [s for s in statements if s.startswith("INSERT INTO events")]
    q, r = divmod(n, 128)
    assert len(inserts) == q + r // 16 + r % 16 // 4 + r % 4


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
    for i in range(200):
        db.append("task-4", "thread-4", "text.delta", {"partId": "p", "delta": str(i)})
        if i % 20 == 19:
            await db.committed()
            counts = await asyncio.gather(*(db.read(lambda c: events_sql.for_task(c, "task-4", 0, 10_000)) for _ in range(12)))
            assert {len(c) for c in counts} == {i + 1}


def test_a_migration_with_a_trigger_runs_whole(tmp_path):
    """A `;` inside a trigger body, a string or a comment does not end a statement (sqlite3.complete_statement)."""
    (tmp_path / "0001_counts.sql").write_text("""
-- a table; its trigger counts the inserts
CREATE TABLE items (name TEXT NOT NULL);
CREATE TABLE counts (n INTEGER NOT NULL);
INSERT INTO counts VALUES (0);
CREATE TRIGGER items_counted AFTER INSERT ON items
BEGIN
    UPDATE counts SET n = n + 1;
    UPDATE counts SET n = n + 0;  -- two statements in one body
END;
/* a block comment; with a semicolon */
INSERT INTO items VALUES ('semi;colon'), ('-- not a comment')
""")
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    migrate(conn, tmp_path)
    migrate(conn, tmp_path)  # applied once
    assert conn.execute("SELECT n FROM counts").fetchone() == (2,)
    assert [r[0] for r in conn.execute("SELECT name FROM items ORDER BY rowid")] == ["semi;colon", "-- not a comment"]
    assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == [("items_counted",)]
    conn.execute("INSERT INTO items VALUES ('x')")
    assert conn.execute("SELECT n FROM counts").fetchone() == (3,)


def test_split_sql_keeps_statements_whole():
    script = "CREATE TABLE a (x);\n-- only a comment;\nCREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END;\n-- end\n"
    assert split_sql(script) == [
        "CREATE TABLE a (x)",
        "-- only a comment;\nCREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; SELECT 2; END",  # its `;` is the comment's
    ]
