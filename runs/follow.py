"""Following the event log: a stream's events after a cursor, the log first, then live commits.

One loop (`Follower.batches`) serves every stream.  What differs between following
one task and following every task of a thread is in two small subclasses: where
the log is read from, and when the stream ends.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

from runs.hub import Batch, EventHub, Subscription
from store import Event
from store.event_types import JOB_PARKED, JOB_SIGNAL, RUN_STARTED

if TYPE_CHECKING:
    from runs.manager import RunManager

REPLAY_PAGE = 2000


def unseen(batch: Batch, cursor: int) -> Batch | None:
    """The part of a live batch after `cursor` (the log replay may already have yielded the rest)."""
    if batch.first_id > cursor:
        return batch
    fresh = [e for e in batch.events if e.id > cursor]
    return Batch(fresh) if fresh else None


class Follower:
    """Hands out one stream's events after `cursor`, in batches (`batches()`).

    Subscribes before reading the log and drops ids already handed out, so an
    event committed between the two is neither missed nor repeated.  A reader
    that fell behind (its queue was dropped) catches up from the log.  Once the
    stream's last event is out (`finished`), nothing is new and nothing is waited for.
    """

    __slots__ = ("cursor", "finished", "hub", "keepalive_s", "runs")

    def __init__(self, runs: RunManager, hub: EventHub, cursor: int, keepalive_s: float) -> None:
        self.runs = runs
        self.hub = hub
        self.cursor = cursor
        self.keepalive_s = keepalive_s
        self.finished = False  # the stream's last event is handed out

    # -- what a task's stream and a thread's stream do differently ------------------

    def _subscribe(self) -> Subscription:
        raise NotImplementedError

    def _in_memory(self) -> list[Event] | None:
        """The next page of the log (at most REPLAY_PAGE events after the cursor), read without an
        await when memory holds the log; None when it does not."""
        return None

    async def _read(self) -> list[Event]:
        """The next page of the log, from memory or the store; [] once caught up or once the stream's last event is out."""
        raise NotImplementedError

    async def _caught_up(self) -> None:
        """Called when a replay of the log found nothing more."""

    def _hand_out(self, events: list[Event]) -> None:
        """Advance the cursor past events about to be handed out, and learn from them."""
        self.cursor = events[-1].id

    def _wait_s(self, sub: Subscription) -> float | None:
        """How long to wait for a commit before a keep-alive; None: the stream ends now (its last
        event is out, or its subscription was closed and everything queued is out)."""
        return None if self.finished or sub.closed else self.keepalive_s

    def _idle_over(self) -> bool:
        """After a wait that saw no commit: whether the stream ends instead of keeping alive."""
        return False

    # -- the one loop ---------------------------------------------------------------

    def _open(self, on_subscribed: Callable[[Subscription], None] | None) -> Subscription:
        sub = self._subscribe()
        if on_subscribed is not None:
            on_subscribed(sub)
        return sub

    def _unseen(self, queued: Batch) -> Batch | None:
        """The part of a live batch not handed out yet (the replay of the log may have handed out the rest)."""
        return None if self.finished else unseen(queued, self.cursor)

    async def batches(self, on_subscribed: Callable[[Subscription], None] | None = None) -> AsyncGenerator[Batch | None, None]:
        """Yield the events after the cursor in batches, None when `keepalive_s` passes without any.

        Ends when the stream's last event is out, or when the subscription is
        closed and everything queued is out.  `on_subscribed(sub)` lets the
        caller close the subscription (a client that went away).
        """
        sub = self._open(on_subscribed)
        try:
            while True:  # a turn: replay the log from the cursor, then follow live commits until the reader lags
                # The first page is read right after subscribing, without an await when memory
                # holds it: the log and the subscription together hold every committed event.
                while page := self._in_memory() or await self._read():
                    self._hand_out(page)
                    yield Batch(page)
                await self._caught_up()
                while not sub.lagged:
                    batches = sub.take()
                    for queued in batches:
                        if (batch := self._unseen(queued)) is None:
                            continue
                        self._hand_out(batch.events)
                        yield batch
                    if batches:
                        del batch, queued, batches  # an idle stream keeps no events alive
                        continue
                    wait = self._wait_s(sub)
                    if wait is None:
                        return
                    if not await sub.wait(wait):
                        if self._idle_over():
                            return
                        yield None
                sub.lagged = False  # it fell behind: its queue was dropped, catch up from the log
                sub.take()
        finally:
            self.hub.unsubscribe(sub)


class TaskFollower(Follower):
    """One task: read from the in-memory log of recent tasks when it holds the task; the stream
    ends after the terminal event, or at once when the run was over at the cursor."""

    __slots__ = ("_checked_end", "task_id")

    def __init__(self, runs: RunManager, hub: EventHub, task_id: str, cursor: int, keepalive_s: float) -> None:
        super().__init__(runs, hub, cursor, keepalive_s)
        self.task_id = task_id
        self._checked_end = False

    def _subscribe(self) -> Subscription:
        return self.hub.subscribe_task(self.task_id)

    def _in_memory(self) -> list[Event] | None:
        if self.finished:
            return None
        recent = self.hub.recent.after(self.task_id, self.cursor)
        return recent[:REPLAY_PAGE] if recent is not None else None

    async def _read(self) -> list[Event]:
        if self.finished:
            return []
        page = self._in_memory()
        return page if page is not None else await self.runs.events_after(self.task_id, self.cursor, REPLAY_PAGE)

    async def _caught_up(self) -> None:
        # Resumed at or after the end of a run that is over: nothing will follow.
        if not self.finished and not self._checked_end:
            self._checked_end = True
            last = await last_heard(self.runs, self.hub, self.task_id)  # subscribed already: a later end still comes
            self.finished = last is not None and last.terminal and last.id <= self.cursor

    def _hand_out(self, events: list[Event]) -> None:
        last = events[-1]
        self.cursor = last.id
        self.finished = last.terminal


class ThreadFollower(Follower):
    """Every task of a thread: ends once the thread has been idle for `idle_limit_s` seconds.

    `active` says whether a task of the thread is pending or running now (read
    before following starts; events handed out after it correct it).  A parked
    task waits for a person and counts as idle.
    """

    __slots__ = ("_loop", "active", "idle_limit_s", "idle_since", "thread_id")

    def __init__(self, runs: RunManager, hub: EventHub, thread_id: str, cursor: int, keepalive_s: float,
                 *, active: bool, idle_limit_s: float) -> None:
        super().__init__(runs, hub, cursor, keepalive_s)
        self.thread_id = thread_id
        self.active = active
        self.idle_limit_s = idle_limit_s
        self.idle_since: float | None = None
        self._loop = asyncio.get_running_loop()

    def _subscribe(self) -> Subscription:
        self.idle_since = None if self.active else self._loop.time()
        return self.hub.subscribe_thread(self.thread_id)

    async def _read(self) -> list[Event]:
        return await self.runs.thread_events_after(self.thread_id, self.cursor, REPLAY_PAGE)

    def _hand_out(self, events: list[Event]) -> None:
        self.cursor = events[-1].id
        for ev in events:
            if ev.type in (RUN_STARTED, JOB_SIGNAL):
                self.idle_since = None
            elif ev.terminal or ev.type == JOB_PARKED:
                self.idle_since = self._loop.time()

    def _wait_s(self, sub: Subscription) -> float | None:
        """Also None once the thread has been idle too long; never a wait past that moment."""
        wait = super()._wait_s(sub)
        if wait is None or self.idle_since is None:
            return wait
        left = self.idle_since + self.idle_limit_s - self._loop.time()
        return min(wait, left) if left > 0 else None

    def _idle_over(self) -> bool:
        return self.idle_since is not None and self._loop.time() >= self.idle_since + self.idle_limit_s


async def last_heard(runs: RunManager, hub: EventHub, task_id: str) -> Event | None:
    """The task's last event as far as this instance's streams know: from the in-memory log of
    recent tasks when it holds the task, else from the store.  It may lag the store (a commit is
    read a moment before it is published; on PostgreSQL, until the bus brings it): for a stream,
    whose subscription gets any later event, never for a read of the log."""
    return hub.recent.last(task_id) or await runs.last_event(task_id)


def follow_task(
    runs: RunManager,
    hub: EventHub,
    task_id: str,
    cursor: int,
    keepalive_s: float,
    on_subscribed: Callable[[Subscription], None] | None = None,
) -> AsyncGenerator[Batch | None, None]:
    """The task's events after `cursor`, in batches: the log first, then live commits.

    Ends after the terminal event, at once when the run was over at or before
    `cursor`, or when the subscription is closed and everything queued is out.
    """
    return TaskFollower(runs, hub, task_id, cursor, keepalive_s).batches(on_subscribed)


def follow_thread(
    runs: RunManager,
    hub: EventHub,
    thread_id: str,
    cursor: int,
    *,
    active: bool,
    idle_limit_s: float,
    keepalive_s: float,
    on_subscribed: Callable[[Subscription], None] | None = None,
) -> AsyncGenerator[Batch | None, None]:
    """The events of every task of the thread after `cursor`: the log first, then live commits.

    Ends once the thread has been idle for `idle_limit_s` seconds (see
    ThreadFollower), or when the subscription is closed and everything queued is out.
    """
    follower = ThreadFollower(runs, hub, thread_id, cursor, keepalive_s, active=active, idle_limit_s=idle_limit_s)
    return follower.batches(on_subscribed)
