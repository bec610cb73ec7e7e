"""Following the event log: a stream's events after a cursor, the log first, then live commits.

One loop (`Follower.batches`) serves every stream.  What differs between following
one task and following every task of a thread is in two small subclasses: where
the log is read from, and when the stream ends.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING

from runs.hub import Batch, EventHub, Subscription
from store import Event

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
    that fell behind (its queue was dropped) catches up from the log.
    """

    def __init__(self, runs: RunManager, hub: EventHub, cursor: int, keepalive_s: float) -> None:
        self.runs = runs
        self.hub = hub
        self.cursor = cursor
        self.keepalive_s = keepalive_s
        self.finished = False  # the stream's last event is handed out

    # -- what a task's stream and a thread's stream do differently ------------------

    def _subscribe(self) -> Subscription:
        raise NotImplementedError

    async def _read(self) -> list[Event]:
        """At most REPLAY_PAGE events of the log after the cursor."""
        raise NotImplementedError

    def _note(self, events: list[Event]) -> None:
        """Learn from events about to be handed out (whether the stream ends with them, when it went idle)."""

    async def _ended(self) -> bool:
        """Whether the stream ends once the log is replayed: its last event is out."""
        return self.finished

    def _wait_s(self, sub: Subscription) -> float | None:
        """How long to wait for a commit before a keep-alive; None: the stream ends now
        (its subscription was closed, and everything queued is out)."""
        return None if sub.closed else self.keepalive_s

    def _idle_over(self) -> bool:
        """After a wait that saw no commit: whether the stream ends instead of keeping alive."""
        return False

    # -- the one loop ---------------------------------------------------------------

    def _open(self, on_subscribed: Callable[[Subscription], None] | None) -> Subscription:
        sub = self._subscribe()
        if on_subscribed is not None:
            on_subscribed(sub)
        return sub

    async def _page(self) -> list[Event]:
        """The next page of the log: [] once caught up, or once the stream's last event is out."""
        if self.finished:
            return []
        page = await self._read()
        if page:
            self._hand_out(page)
        return page

    def _fresh(self, batches: list[Batch]) -> Iterator[Batch]:
        """The live batches' events not handed out yet, up to the stream's last one."""
        for queued in batches:
            batch = unseen(queued, self.cursor)
            if batch is None:
                continue
            self._hand_out(batch.events)
            yield batch
            if self.finished:
                return

    def _hand_out(self, events: list[Event]) -> None:
        self.cursor = events[-1].id
        self._note(events)

    async def batches(self, on_subscribed: Callable[[Subscription], None] | None = None) -> AsyncGenerator[Batch | None, None]:
        """Yield the events after the cursor in batches, None when `keepalive_s` passes without any.

        Ends when the stream's last event is out, or when the subscription is
        closed and everything queued is out.  `on_subscribed(sub)` lets the
        caller close the subscription (a client that went away).
        """
        sub = self._open(on_subscribed)
        try:
            while True:  # a turn: replay the log from the cursor, then follow live commits until the reader lags
                # The first page is read right after subscribing: the log and the subscription
                # together hold every committed event.
                while page := await self._page():
                    yield Batch(page)
                if await self._ended():
                    return
                while not sub.lagged:
                    batches = sub.take()
                    for batch in self._fresh(batches):
                        yield batch
                        del batch  # an idle stream keeps no events alive
                    if self.finished:
                        return
                    if batches:
                        del batches
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
    """One task: read from the in-memory log of recent tasks when it holds the task, ends after the terminal event."""

    def __init__(self, runs: RunManager, hub: EventHub, task_id: str, cursor: int, keepalive_s: float) -> None:
        super().__init__(runs, hub, cursor, keepalive_s)
        self.task_id = task_id
        self._checked_end = False

    def _subscribe(self) -> Subscription:
        return self.hub.subscribe_task(self.task_id)

    async def _read(self) -> list[Event]:
        # No await before the in-memory log is read: with the subscription it holds every committed event.
        recent = self.hub.recent.after(self.task_id, self.cursor)
        if recent is not None:
            return recent[:REPLAY_PAGE]
        return await self.runs.events_after(self.task_id, self.cursor, REPLAY_PAGE)

    def _note(self, events: list[Event]) -> None:
        self.finished = events[-1].terminal

    async def _ended(self) -> bool:
        """Also when the stream resumed at or after the end of a run that is over: nothing will follow."""
        if self.finished:
            return True
        if self._checked_end:
            return False
        self._checked_end = True
        last = await self.runs.last_event(self.task_id)
        return last is not None and last.terminal and last.id <= self.cursor


class ThreadFollower(Follower):
    """Every task of a thread: ends once the thread has been idle for `idle_limit_s` seconds.

    `active` says whether a task of the thread is pending or running now (read
    before following starts; events handed out after it correct it).  A parked
    task waits for a person and counts as idle.
    """

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

    def _note(self, events: list[Event]) -> None:
        for ev in events:
            if ev.type in ("run.started", "job.signal"):
                self.idle_since = None
            elif ev.terminal or ev.type == "job.parked":
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
