"""The SQLite store: connections, PRAGMAs, migrations, and how a batch of the single writer commits.

The queue and the writer task with group commit are store/writer.py's; here
every write goes through one plain `sqlite3` connection that lives in a thread
of its own (as store/postgres.py's writer does), and the whole batch is one
call into that thread.  Readers are aiosqlite connections of their own (WAL).
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from importlib.resources.abc import Traversable
from itertools import cycle
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from store import events as events_sql
from store.errors import Conflict
from store.events import Event
from store.writer import BatchResults, GroupCommitStore, Job, now_ms

log = logging.getLogger("parley.store")
T = TypeVar("T")

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)


def dialect(conn_or_tx: Any) -> str:
    """The SQL dialect a read connection or a write transaction speaks: "sqlite" or "postgresql".

    The store modules' SQL is shared by both stores; the few statements that differ ask this."""
    return str(getattr(conn_or_tx, "dialect", "sqlite"))


class _JobFailed(Exception):
    """A job of a batch run without savepoints failed: the batch runs again with them."""


class WriteTx:
    """The open write transaction, as seen by one queued write function.

    Write functions run in the writer connection's own thread, inside the
    batch's transaction: plain `sqlite3`, no awaiting, one trip per batch.
    """

    dialect = "sqlite"

    def __init__(self, db: Database, conn: sqlite3.Connection) -> None:
        self.db = db
        self.conn = conn
        self.events: list[Event] = []

    def event(self, task_id: str, thread_id: str, type: str, data: dict[str, Any]) -> Event:
        """Add an event to this write; it is inserted and published with it."""
        ev = Event(self.db.next_event_id(), task_id, thread_id, type, data, now_ms())
        self.events.append(ev)
        return ev

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def fetchone(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()


class Database(GroupCommitStore):
    """The embedded store.  `open()` it, `write()`/`append()` to it, `read()` from it."""

    dialect = "sqlite"

    def __init__(self, path: Path, readers: int = 3) -> None:
        super().__init__()
        self.path = path
        self._reader_count = readers
        self._writer_conn: sqlite3.Connection | None = None  # used only in _thread
        # The writer's connection lives in this one thread: a batch is one hop into it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parley-sqlite-writer")
        self._readers: list[aiosqlite.Connection] = []
        self._reader_cycle: Any = None
        self._next_id = 0

    # -- life cycle -------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = await self._in_writer_thread(self._connect_writer)
        for _ in range(self._reader_count):
            r = await aiosqlite.connect(str(self.path), isolation_level=None)
            await r.execute("PRAGMA busy_timeout = 5000")
            await r.execute("PRAGMA query_only = ON")
            self._readers.append(r)
        self._reader_cycle = cycle(self._readers)
        self._next_id = await events_sql.max_id(self._readers[0])
        self._start_writer()

    def _connect_writer(self) -> sqlite3.Connection:
        """Runs in the writer's thread: the writer connection, its PRAGMAs, the migrations."""
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma)
            # FULL: the WAL is synced at every commit, so a published event
            # survives power loss; group commit keeps that to one sync per batch.
            conn.execute("PRAGMA synchronous = FULL")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Commit everything queued, then close every connection."""
        if not await self._stop_writer():
            return
        for r in self._readers:
            await r.close()
        self._readers.clear()
        if self._writer_conn is not None:
            await self._in_writer_thread(self._writer_conn.close)
            self._writer_conn = None
        self._thread.shutdown(wait=True)

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # -- writing ----------------------------------------------------------

    @property
    def last_event_id(self) -> int:
        """The highest event id handed out so far: no event with a smaller id can still appear."""
        return self._next_id

    def next_event_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _commit_sync(self, batch: list[Event | Job]) -> BatchResults:
        """Runs in the writer's thread: one transaction for the whole batch.

        The batch first runs without a savepoint per job (two statements each, a third of a short
        run's); only when a job fails is the transaction rolled back and the batch run again with
        savepoints, so that the failed job is undone alone.  Write functions are pure functions
        of the transaction, so running one again is safe (store/postgres.py does the same)."""
        first_id = self._next_id
        try:
            return self._run_jobs(batch, savepoints=False)
        except _JobFailed:
            self._next_id = first_id  # the rolled-back ids were never seen: hand them out again
            return self._run_jobs(batch, savepoints=True)
        except BaseException:
            self._next_id = first_id
            raise

    def _run_jobs(self, batch: list[Event | Job], savepoints: bool) -> BatchResults:
        """One transaction: the batch's jobs in order, then all its events in one statement (ids
        given in queue order, so they rise in commit order; no write function reads events)."""
        conn = self._writer_conn
        assert conn is not None
        events: list[Event] = []
        results: list[tuple[Any, Any, Exception | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if isinstance(item, Event):
                    item.id = self.next_event_id()
                    events.append(item)
                elif savepoints:
                    results.append(self._run_job_in_savepoint(conn, item, events))
                else:
                    tx = WriteTx(self, conn)
                    try:
                        value = item.fn(tx)
                    except Exception as job_error:
                        raise _JobFailed from job_error
                    events.extend(tx.events)
                    results.append((item.future, value, None))
            if events:
                events_sql.insert_batch(conn, events)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return events, results

    def _run_job_in_savepoint(self, conn: sqlite3.Connection, job: Job,
                              events: list[Event]) -> tuple[Any, Any, Exception | None]:
        """Run `job` so that its failure undoes it alone; its events join `events` when it succeeds."""
        tx = WriteTx(self, conn)
        first_id = self._next_id
        conn.execute("SAVEPOINT job")
        try:
            value = job.fn(tx)
        except Exception as job_error:  # one failed job must not sink the batch
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            self._next_id = first_id  # its events were never stored: the next ones take their ids
            if isinstance(job_error, sqlite3.IntegrityError):
                job_error = Conflict(str(job_error))
            return job.future, None, job_error
        conn.execute("RELEASE job")
        events.extend(tx.events)
        return job.future, value, None

    # -- reading ----------------------------------------------------------

    async def read(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run a read on one of the reader connections (WAL: never blocked by the writer).

        Reads must take one trip (`execute_fetchall`): a cursor left open
        between two trips would hold an old snapshot for the next reader.
        """
        conn = next(self._reader_cycle)
        return await fn(conn)


def migrate(conn: sqlite3.Connection, directory: Traversable | None = None) -> None:
    """Apply the numbered migrations of `directory` (store/migrations/) not applied yet, each in
    its own transaction; in the writer's thread."""
    directory = directory or resources.files("store").joinpath("migrations")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    files = sorted(
        (f for f in directory.iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    for f in files:
        version = int(f.name.split("_", 1)[0])
        if version in done:
            continue
        log.info("applying migration %s", f.name)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in split_sql(f.read_text()):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, f.name, now_ms()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def split_sql(script: str) -> list[str]:
    """A migration's statements, each whole.

    A `;` ends a statement only where SQLite calls the statement complete, so one inside a
    string, a comment or a CREATE TRIGGER's BEGIN ... END body does not split it.  (The file
    runs inside a transaction of ours, which `executescript` would commit first.)"""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece
        if sqlite3.complete_statement(pending + ";"):
            statements.append(pending.strip())
            pending = ""
        else:
            pending += ";"
    statements.append(pending.strip())  # a last statement without its `;`
    return [s for s in statements if not all(not ln.strip() or ln.strip().startswith("--") for ln in s.splitlines())]


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(text)
