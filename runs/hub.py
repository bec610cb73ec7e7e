"""In-process event hub: wakes live streams when their events are committed.

The store calls `publish` after each commit; a subscription gets the
events of one commit together (one frame on the wire).  Nothing polls.
A reader that falls too far behind is marked `lagged` and its queue is
dropped: it catches up from the log, so a slow reader never holds more
than `limit` events in memory and never delays anyone else.
"""
from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import defaultdict, deque
from typing import Any

from store import Event
from store.event_types import RUN_STARTED


class Batch:
    """The events of one task (or one thread) from one commit: what one live frame carries.

    Every subscriber of the task (or thread) gets the same Batch, so a dialect
    renders it once (`rendered`) however many readers there are.
    """

    __slots__ = ("events", "rendered")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.rendered: dict[str, Any] = {}

    @property
    def first_id(self) -> int:
        return self.events[0].id

    @property
    def last(self) -> Event:
        return self.events[-1]


class Subscription:
    __slots__ = ("_limit", "_waiter", "batches", "closed", "key", "lagged", "queued")

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.batches: deque[Batch] = deque()
        self.queued = 0
        self.lagged = False
        self.closed = False
        self._waiter: asyncio.Future[bool] | None = None
        self._limit = limit

    def push(self, batch: Batch) -> None:
        if self.closed:
            return
        if self.queued + len(batch.events) > self._limit:
            self.fall_behind()
            return
        self.batches.append(batch)
        self.queued += len(batch.events)
        self._wake()

    def fall_behind(self) -> None:
        """Drop what is queued: the reader catches up from the log (`lagged`)."""
        self.batches.clear()
        self.queued = 0
        self.lagged = True
        self._wake()

    def close(self) -> None:
        """Ends the subscription: the reader's wait returns at once."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(True)

    def take(self) -> list[Batch]:
        out = list(self.batches)
        self.batches.clear()
        self.queued = 0
        return out

    async def wait(self, timeout: float) -> bool:
        """Wait for events (True) or until `timeout` passes (False)."""
        if self.batches or self.lagged or self.closed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # One future and one timer (asyncio.wait_for would add a task-like wrapper of its own).
        timer = loop.call_later(timeout, _time_out, waiter)
        try:
            return bool(await waiter)
        finally:
            timer.cancel()
            self._waiter = None


def _time_out(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class RecentLogs:
    """The whole log of recent tasks, in memory, so that opening a stream
    on a task that started in this process needs no read from the store.

    A task is kept from its `run.started` on while its log stays under
    `per_task` events; once all logs together pass `total` events, tasks are
    let go oldest first, the ended ones before the live ones.  Filled by
    `EventHub.publish`, i.e. only with committed events.

    Every event kept is an object the garbage collector walks at each full
    collection (which finds nothing to free here: logs hold no cycles), so
    `total` bounds that walk too: 10,000 events cost a few milliseconds, and
    hold about a second of short runs at full load, minutes at a normal one.
    """

    def __init__(self, per_task: int = 1000, total: int = 10_000) -> None:
        self.per_task = per_task
        self.total = total
        self.size = 0
        self._logs: dict[str, list[Event]] = {}
        self._ended: deque[str] = deque()

    def add(self, task_id: str, events: list[Event]) -> None:
        log = self._logs.get(task_id)
        if log is None:
            if events[0].type != RUN_STARTED:
                return  # began before this process, or was let go: the store has it
            log = self._logs[task_id] = []
        if len(log) + len(events) > self.per_task:
            self._drop(task_id)
            return
        log.extend(events)
        self.size += len(events)
        if events[-1].terminal:
            self._ended.append(task_id)
        while self.size > self.total and self._ended:
            self._drop(self._ended.popleft())
        while self.size > self.total:  # live tasks only: the oldest goes (its readers read the store)
            self._drop(next(iter(self._logs)))

    def _drop(self, task_id: str) -> None:
        log = self._logs.pop(task_id, None)
        if log is not None:
            self.size -= len(log)

    def last(self, task_id: str) -> Event | None:
        """The task's last committed event, or None when only the store has its log."""
        log = self._logs.get(task_id)
        return log[-1] if log else None

    def after(self, task_id: str, cursor: int) -> list[Event] | None:
        """The task's events after `cursor`, or None when only the store has them."""
        log = self._logs.get(task_id)
        if log is None:
            return None
        return log[bisect_right(log, cursor, key=lambda e: e.id):]


class EventHub:
    def __init__(self, limit: int = 20000) -> None:
        self._by_task: dict[str, set[Subscription]] = defaultdict(set)
        self._by_thread: dict[str, set[Subscription]] = defaultdict(set)
        self._limit = limit
        self.recent = RecentLogs()

    def subscribe_task(self, task_id: str) -> Subscription:
        sub = Subscription(task_id, self._limit)
        self._by_task[task_id].add(sub)
        return sub

    def subscribe_thread(self, thread_id: str) -> Subscription:
        """The events of every task of the thread, one batch per commit."""
        sub = Subscription(thread_id, self._limit)
        self._by_thread[thread_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        for index in (self._by_task, self._by_thread):
            subs = index.get(sub.key)
            if subs is not None and sub in subs:
                subs.discard(sub)
                if not subs:
                    del index[sub.key]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._by_task.values()) + sum(len(s) for s in self._by_thread.values())

    def publish(self, events: list[Event]) -> None:
        """Hand one commit's events to their subscribers, one batch per task and one per thread."""
        per_task: dict[str, list[Event]] = {}
        per_thread: dict[str, list[Event]] = {}
        for ev in events:
            per_task.setdefault(ev.task_id, []).append(ev)
            if ev.thread_id in self._by_thread:
                per_thread.setdefault(ev.thread_id, []).append(ev)
        for key, evs in per_task.items():
            self.recent.add(key, evs)
            subs = self._by_task.get(key)
            if not subs:
                continue
            batch = Batch(evs)
            for sub in tuple(subs):
                sub.push(batch)
        for key, evs in per_thread.items():
            batch = Batch(evs)
            for sub in tuple(self._by_thread.get(key, ())):
                sub.push(batch)

    def resync(self) -> None:
        """Some committed events may never have been published here (the event bus lost them):
        forget the in-memory logs and send every reader back to the store's log."""
        self.recent = RecentLogs(self.recent.per_task, self.recent.total)
        for index in (self._by_task, self._by_thread):
            for subs in index.values():
                for sub in tuple(subs):
                    sub.fall_behind()

    def close_all(self) -> None:
        """Ends every subscription (used at the end of a drain)."""
        for index in (self._by_task, self._by_thread):
            for subs in index.values():
                for sub in subs:
                    sub.close()
