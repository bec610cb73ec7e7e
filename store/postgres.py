"""The PostgreSQL store: the same interface as the SQLite one (store/db.py), for many instances on one database.

- One writer per instance with group commit (store/writer.py): its own connection, in its own
  thread, runs the queued write functions of a batch in one transaction, a savepoint per job.
- Event ids come from the one-row `event_counter`, taken at the end of the committing transaction:
  its row lock is held until COMMIT, so no other instance can commit events in between, and ids
  rise in commit order within every task and thread, on every instance.
- The event bus is LISTEN/NOTIFY: the committing transaction sends `NOTIFY parley_events` with the
  range of ids (and the events themselves when they fit in a notification); PostgreSQL delivers it
  only if the transaction commits, in commit order.  Each instance listens, and hands other
  instances' events to `on_commit` as if it had written them: nothing polls the events table.
- Reads run on a pool of connections in autocommit; the SQL of the store modules is shared with
  SQLite (`?` placeholders are rewritten to psycopg's `%s` once per statement text).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from store.errors import Conflict
from store.events import Event
from store.writer import BatchResults, GroupCommitStore, Job, now_ms

log = logging.getLogger("parley.store")
T = TypeVar("T")

CHANNEL = "parley_events"
CONTROL = "parley_control"  # requests between instances, e.g. "stop the run you are running"
NOTIFY_LIMIT = 7000  # bytes of a notification's payload (PostgreSQL's limit is 8000)
MIGRATION_LOCK = 0x7061726C6579  # pg_advisory_lock key: "parley"
_COLUMNS = "id, task_id, thread_id, type, data, created_at"
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)"


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> str:
    """The statement with `?` placeholders as psycopg's `%s` (and a literal `%` as `%%`), outside quotes."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


class _JobFailed(Exception):
    """A job of a batch run without savepoints failed: the batch runs again with them."""


class PgCursor:
    """What a write function gets back from `tx.execute`: the rows and the row count."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur
        self.rowcount = cur.rowcount

    def fetchone(self) -> Any:
        return self._cur.fetchone() if self._cur.description else None

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall() if self._cur.description else []


class PgWriteTx:
    """The open write transaction as one queued write function sees it (as store.db.WriteTx)."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.events: list[Event] = []

    def event(self, task_id: str, thread_id: str, type: str, data: dict[str, Any]) -> Event:
        """Add an event to this write; its id is given when the batch commits."""
        ev = Event(0, task_id, thread_id, type, data, now_ms())
        self.events.append(ev)
        return ev

    def execute(self, sql: str, params: Any = ()) -> PgCursor:
        return PgCursor(self.conn.execute(to_pyformat(sql), params))

    def fetchone(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(to_pyformat(sql), params).fetchone()

    def fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        return self.conn.execute(to_pyformat(sql), params).fetchall()


class PgReader:
    """A pooled connection as the store's read functions use it (aiosqlite's `execute_fetchall`)."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def execute_fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        cur = await self.conn.execute(to_pyformat(sql), params)
        return await cur.fetchall() if cur.description else []


class PostgresDatabase(GroupCommitStore):
    """The store on a PostgreSQL server.  `open()` it, `write()`/`append()` to it, `read()` from it.

    Committed events reach `on_commit` from the event bus only, this instance's own too: every
    instance sees every commit in the one commit order, so a stream never gets a later event
    before an earlier one that another instance committed first.
    """

    dialect = "postgresql"
    shared = True
    publishes_at_commit = False

    def __init__(self, url: str, readers: int = 8) -> None:
        super().__init__()
        self.url = url
        self.instance = uuid.uuid4().hex
        self._readers = readers
        self._conn: psycopg.Connection[Any] | None = None
        self._pool: AsyncConnectionPool[Any] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        # The writer's connection lives in this one thread, as SQLite's writer connection lives in its own.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-pg-writer")
        self._last_id = 0
        self._seen = 0  # the last event id the bus delivered
        self._published = 0  # the last event id handed to on_commit (or to the log, after a gap)
        self._heard = asyncio.Event()  # set when _published moves

    # -- life cycle -------------------------------------------------------

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, self._connect_writer)
        self._pool = AsyncConnectionPool(self.url, min_size=1, max_size=self._readers, open=False,
                                         kwargs={"autocommit": True})
        await self._pool.open(wait=True)
        self._listener = asyncio.ensure_future(self._listen())
        await self._listening.wait()
        self._start_writer()

    def _connect_writer(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True)
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            migrate(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        conn.autocommit = False
        return conn

    async def close(self) -> None:
        """Commit everything queued, then close every connection."""
        stopped = await self._stop_writer()
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except asyncio.CancelledError:
                pass
            self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
            self._conn = None
        if stopped or self._thread is not None:
            self._thread.shutdown(wait=True)

    # -- writing ----------------------------------------------------------

    @property
    def last_event_id(self) -> int:
        return self._last_id

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _commit_sync(self, batch: list[Event | Job]) -> BatchResults:
        """Runs in the writer's thread: one transaction for the whole batch.

        Every statement is a round trip to the server, so the batch first runs without a
        savepoint per job (two round trips each); only when a job fails is the transaction
        rolled back and the batch run again with savepoints, so that the failed job is
        undone alone.  Write functions are pure functions of the transaction: running one
        again is safe (the SQLite store retries a failed batch as a whole too)."""
        try:
            return self._run_jobs(batch, savepoints=False)
        except _JobFailed:
            return self._run_jobs(batch, savepoints=True)

    def _run_jobs(self, batch: list[Event | Job], savepoints: bool) -> BatchResults:
        conn = self._conn
        assert conn is not None
        events: list[Event] = []
        results: list[tuple[Any, Any, Exception | None]] = []
        with conn.transaction():
            for item in batch:
                if isinstance(item, Event):
                    events.append(item)
                    continue
                tx = PgWriteTx(conn)
                if not savepoints:
                    try:
                        value = item.fn(tx)
                    except Exception as job_error:
                        raise _JobFailed from job_error
                    events.extend(tx.events)
                    results.append((item.future, value, None))
                    continue
                try:
                    with conn.transaction(savepoint_name="job"):
                        value = item.fn(tx)
                except psycopg.IntegrityError as job_error:
                    results.append((item.future, None, Conflict(str(job_error))))
                except Exception as job_error:  # one failed job must not sink the batch
                    results.append((item.future, None, job_error))
                else:
                    events.extend(tx.events)
                    results.append((item.future, value, None))
            if events:
                self._insert_events(conn, events)
        if events:
            self._last_id = max(self._last_id, events[-1].id)
        return events, results

    def _insert_events(self, conn: psycopg.Connection[Any], events: list[Event]) -> None:
        """Number the batch's events (the counter's row lock orders the committing instances),
        insert them and announce them; all inside the committing transaction."""
        row = conn.execute("UPDATE event_counter SET last_id = last_id + %s RETURNING last_id", (len(events),)).fetchone()
        assert row is not None
        first = int(row[0]) - len(events) + 1
        for n, ev in enumerate(events):
            ev.id = first + n
        with conn.cursor() as cur:
            cur.executemany(_INSERT, [e.row() for e in events])
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._announcement(events)))

    def _announcement(self, events: list[Event]) -> str:
        rows = [e.row() for e in events]
        full = orjson.dumps({"o": self.instance, "f": events[0].id, "l": events[-1].id, "e": rows})
        if len(full) <= NOTIFY_LIMIT:
            return full.decode()
        return orjson.dumps({"o": self.instance, "f": events[0].id, "l": events[-1].id}).decode()

    # -- the event bus ------------------------------------------------------

    async def published(self) -> None:
        """Returns once the event bus has brought back every event this instance has committed so far."""
        committed = self._last_id  # above what the bus brought back only by this instance's own commits
        while self._published < committed:
            self._heard.clear()
            await self._heard.wait()

    async def _listen(self) -> None:
        """Hand every committed event to `on_commit`, in commit order; control messages to `on_control`.

        Commits notify in commit order and their ids follow on from each other, so a notification
        that does not start right after the last one seen means some were lost (the connection
        dropped): `on_gap` tells the readers to catch up from the log."""
        reconnecting = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await conn.execute(f"LISTEN {CONTROL}")
                    # Read after LISTEN: a commit is either counted here or notified (or both: skipped then).
                    self._seen = await self._counter(conn)
                    self._last_id = max(self._last_id, self._seen)
                    if reconnecting:
                        self.on_gap()
                    self._published_up_to(self._seen)
                    self._listening.set()
                    async for note in conn.notifies():
                        if note.channel == CONTROL:
                            self._control(note.payload)
                        else:
                            await self._received(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                reconnecting = True
                await asyncio.sleep(0.5)

    @staticmethod
    async def _counter(conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute("SELECT last_id FROM event_counter")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _received(self, payload: str) -> None:
        msg = orjson.loads(payload)
        first, last = int(msg["f"]), int(msg["l"])
        if last <= self._seen:
            return  # committed before this instance started listening
        if first != self._seen + 1:
            log.warning("event bus: events %d-%d arrived after %d; readers catch up from the log", first, last, self._seen)
            self.on_gap()
        self._seen = last
        if "e" in msg:
            events = [Event.from_row(r) for r in msg["e"]]
        else:
            events = await self.read(lambda c: events_in_range(c, first, last))
        self._last_id = max(self._last_id, last)
        try:
            self.on_commit(events)
        except Exception:
            log.exception("on_commit hook failed for events %d-%d", first, last)
        self._published_up_to(last)

    def _published_up_to(self, last: int) -> None:
        self._published = last
        self._heard.set()

    def _control(self, payload: str) -> None:
        try:
            self.on_control(orjson.loads(payload))
        except Exception:
            log.exception("control message %r failed", payload[:200])

    async def send_control(self, message: dict[str, Any]) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, %s)", (CONTROL, orjson.dumps(message).decode()))

    # -- reading ----------------------------------------------------------

    async def read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run a read on a pooled connection (autocommit: every statement sees the latest commits)."""
        assert self._pool is not None
        async with self._pool.connection() as conn:
            return await fn(PgReader(conn))


async def events_in_range(conn: PgReader, first: int, last: int) -> list[Event]:
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM events WHERE id BETWEEN ? AND ? ORDER BY id", (first, last))
    return [Event.from_row(r) for r in rows]


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Apply the numbered migrations of store/migrations_pg/ not yet applied (caller holds the advisory lock)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at BIGINT NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    files = sorted((f for f in resources.files("store").joinpath("migrations_pg").iterdir() if f.name.endswith(".sql")),
                   key=lambda f: f.name)
    for f in files:
        version = int(f.name.split("_", 1)[0])
        if version in done:
            continue
        log.info("applying migration %s", f.name)
        with conn.transaction():
            conn.execute(f.read_text().encode())  # the simple protocol runs a whole script
            conn.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                         (version, f.name, now_ms()))
