"""The single writer with group commit, whatever the database behind it.

Every write is queued; the store's writer thread takes everything queued while
the last transaction was committing and commits it as the next transaction:
many runs' events, one fsync.  It goes on with the next batch at once, and
hands each commit to the event loop, in commit order, which publishes its
events (`on_commit`) and settles its futures: no reader can ever see an event
that a crash could lose.  A store (SQLite, PostgreSQL) says how one batch is
committed (`_commit_sync`, in its writer thread) and how reads are made.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from store.events import Event
from telemetry.counters import COMMIT_BATCH_WRITES, COMMIT_SECONDS, Histogram

log = logging.getLogger("parley.store")
T = TypeVar("T")
WriteFn = Callable[[Any], Any]
BatchResults = tuple[list[Event], list[tuple[Any, Any, Exception | None]]]


def now_ms() -> int:
    return int(time.time() * 1000)


class Job:
    """A queued write function and the future that gets its result once committed."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: WriteFn, future: asyncio.Future[Any] | None) -> None:
        self.fn = fn
        self.future = future


class GroupCommitStore:
    """The queue, the writer task and the commit waiters; a subclass commits a batch and reads."""

    def __init__(self) -> None:
        self._queue: list[Event | Job] = []
        self._first: list[Event | Job] = []  # writes that depend on nothing queued (`submit(first=True)`)
        self._took_first = False  # the last batch was such writes: the backlog's turn comes next
        self.queue_takes = 0  # times the writer took the queue: what is queued now goes with take + 1
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._commit_waiters: list[asyncio.Future[None]] = []
        self._room_waiters: deque[tuple[asyncio.Future[None], int, int]] = deque()
        self.on_commit: Callable[[list[Event]], None] = lambda events: None
        self.on_control: Callable[[dict[str, Any]], None] = lambda message: None
        self.on_gap: Callable[[], None] = lambda: None  # events may have been missed: catch up from the log
        self.commits = 0
        self.events_written = 0
        self.commit_sizes = Histogram(COMMIT_BATCH_WRITES)  # writes (events and jobs) per commit
        self.commit_seconds = Histogram(COMMIT_SECONDS)  # in the writer thread, from the batch's first statement to COMMIT's return

    # -- what a store provides ----------------------------------------------

    dialect = "sqlite"  # the SQL dialect its connections speak (store.db.dialect)
    shared = False  # whether other instances use the same store (leases, the control channel)
    instance = "local"  # this instance's name among those that share the store
    publishes_at_commit = True  # False: committed events reach on_commit from the event bus, in commit order

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _commit_sync(self, batch: list[Event | Job]) -> BatchResults:
        """In the store's writer thread: commit `batch` as one transaction; its events and each
        job's outcome."""
        raise NotImplementedError

    async def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the store's writer thread."""
        raise NotImplementedError

    async def read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        raise NotImplementedError

    @property
    def last_event_id(self) -> int:
        """The highest event id handed out so far: no event with a smaller id can still appear."""
        raise NotImplementedError

    async def send_control(self, message: dict[str, Any]) -> None:
        """Tell every instance sharing the store (`on_control`); a store of one process has none."""

    async def published(self) -> None:
        """Returns once `on_commit` has been given every event this store has committed so far
        (at once where commits publish themselves)."""

    # -- writing --------------------------------------------------------------

    def _start_writer(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer_task = asyncio.ensure_future(self._writer())

    async def _stop_writer(self) -> bool:
        """Commit everything queued and stop the writer; False when it was not running."""
        if self._writer_task is None:
            return False
        self._closing = True
        self._wake.set()
        await self._writer_task
        self._writer_task = None
        return True

    def append(self, task_id: str, thread_id: str, type: str, data: dict[str, Any], data_text: str | None = None) -> Event:
        """Queue one event for the next group commit and return it (not yet visible).

        Its id is given when its transaction runs, so ids always rise in
        commit order, whatever mix of events and jobs is queued.  The data is
        encoded here (or given encoded, as `data_text`): data that cannot be
        encoded raises to the caller and never enters a batch.
        """
        ev = Event(0, task_id, thread_id, type, data, now_ms(), data_text)
        self._queue.append(ev)
        self._wake.set()
        return ev

    @property
    def backlog(self) -> int:
        """Number of queued writes not yet taken by a transaction."""
        return len(self._queue) + len(self._first)

    def submit(self, fn: WriteFn, *, first: bool = False) -> asyncio.Future[Any]:
        """Queue `fn(tx)` for the next transaction; the future gets its result once committed.

        Writes (and events) queued while `queue_takes` keeps one value commit in one transaction,
        in the order they were queued.

        `first`: the write depends on no queued write (a new run's start), so it need not wait
        behind them: writes given `first` are committed in a transaction of their own as soon as
        the one under way has committed, however long a backlog of events the other runs queued
        (taking turns with that backlog, so a stream of starts never starves it).
        """
        if self._closing and self._writer_task is None:
            raise RuntimeError("database is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        (self._first if first else self._queue).append(Job(fn, fut))
        self._wake.set()
        return fut

    async def write(self, fn: Callable[[Any], T], *, first: bool = False) -> T:
        """Run `fn(tx)` inside the next group transaction (see `submit` for `first`); return once
        it is committed."""
        result: T = await self.submit(fn, first=first)
        return result

    async def committed(self) -> None:
        """Wait until everything queued before this call is committed."""
        if not self._queue and not self._first and self._idle.is_set():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commit_waiters.append(fut)
        self._wake.set()
        await fut

    async def room(self, high_water: int, turn: int) -> None:
        """Wait, in turn with the other writes that wait here, until the queue has room under
        `high_water` (backpressure for an agent that runs ahead of the writer).

        After each commit, only as many waiters go as can each queue `turn` writes before the
        queue is back at `high_water` (at least one): a commit never wakes every waiting run at
        once, to find most of them over the mark again in the same turn of the loop.  When
        nothing is queued, every waiter goes."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room_waiters.append((fut, high_water, turn))
        self._wake.set()
        await fut

    def _grant_room(self, everyone: bool = False) -> None:
        granted = 0
        while self._room_waiters:
            fut, high_water, turn = self._room_waiters[0]
            if not everyone and granted and self.backlog + granted * turn >= high_water:
                return
            self._room_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                granted += 1

    async def _writer(self) -> None:
        while True:
            if not self._queue and not self._first:
                # Nothing queued: whatever a waiter waited for is committed.
                _release(self._commit_waiters)
                self._commit_waiters = []
                self._grant_room(everyone=True)  # nothing queued: room for every waiter, and none may stall
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            self._idle.clear()
            try:
                await self._in_writer_thread(self._commit_queued)
            except Exception:
                log.exception("the writer stopped committing")
            finally:
                self._idle.set()

    def _take(self) -> tuple[list[Event | Job], list[asyncio.Future[None]]]:
        """In the writer thread: the next batch (see `submit` for writes given first) and the
        `committed()` waiters it answers.  Appends on the loop's thread need no lock: a list's
        append and this swap are each atomic, so an item lands in the batch or in the next one."""
        self._took_first = (bool(self._first) and not (self._queue and self._took_first))
        if self._took_first:  # ahead of the backlog; the waiters wait for the backlog too
            batch, self._first = self._first, []
            return batch, []
        # Counted before the swap: a write queued with the old count is in this batch or a later
        # one, never in an earlier one (Runner.end_queued relies on it).
        self.queue_takes += 1
        batch, self._queue = self._queue, []
        waiters, self._commit_waiters = self._commit_waiters, []
        return batch, waiters

    def _commit_queued(self) -> None:
        """In the writer thread: commit batch after batch until nothing is queued, handing each
        commit's outcome to the event loop as it commits (`_committed`): the thread never waits
        for the loop between two commits."""
        loop = self._loop
        assert loop is not None
        while True:
            batch, waiters = self._take()
            if not batch:
                if waiters:
                    loop.call_soon_threadsafe(_release, waiters)
                return
            started = time.perf_counter()
            try:
                try:
                    outcome: BatchResults | BaseException = self._commit_sync(batch)
                except Exception:
                    # The batch failed as a whole (not one job: a failed job is undone alone), e.g. an I/O
                    # error or a lock held too long.  It rolled back and nothing of it was published,
                    # so it runs once more before every write in it fails: one fault must not fail
                    # the writes of every run that happened to share the batch.
                    log.warning("group commit of %d writes failed; trying it once more", len(batch), exc_info=True)
                    outcome = self._commit_sync(batch)
            except BaseException as exc:
                log.exception("group commit failed; %d writes dropped", len(batch))
                outcome = exc
            loop.call_soon_threadsafe(self._committed, batch, outcome, waiters, time.perf_counter() - started)

    def _committed(self, batch: list[Event | Job], outcome: BatchResults | BaseException,
                   waiters: list[asyncio.Future[None]], seconds: float) -> None:
        """On the event loop, in commit order: publish a batch's events and settle its futures."""
        try:
            if isinstance(outcome, BaseException):
                error = outcome if isinstance(outcome, Exception) else RuntimeError(str(outcome))
                for item in batch:
                    if isinstance(item, Job) and item.future is not None and not item.future.done():
                        item.future.set_exception(error)
                return
            published, results = outcome
            self.commits += 1
            self.events_written += len(published)
            self.commit_sizes.observe(len(batch))
            self.commit_seconds.observe(seconds)
            if published and self.publishes_at_commit:
                try:
                    self.on_commit(published)
                except Exception:
                    log.exception("on_commit hook failed")
            for fut, value, job_error in results:
                if fut is None or fut.done():
                    continue
                if job_error is not None:
                    fut.set_exception(job_error)
                else:
                    fut.set_result(value)
        finally:
            _release(waiters)
            self._grant_room()


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for w in waiters:
        if not w.done():
            w.set_result(None)
