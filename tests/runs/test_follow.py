"""Following the log (runs/follow.py): the log first, then live commits, each event once."""
import asyncio

from runs.follow import follow_task, follow_thread
from runs.hub import EventHub
from store import Event


class Log:
    """The store's side of following: the committed events, and how often they were read."""

    def __init__(self, hub):
        self.hub = hub
        self.events = []
        self.reads = 0

    def commit(self, *types, task="t", publish=True):
        evs = [Event(len(self.events) + n + 1, task, "th", t, {}, 0) for n, t in enumerate(types)]
        self.events += evs
        if publish:
            self.hub.publish(evs)
        return evs

    async def events_after(self, task_id, cursor, limit):
        self.reads += 1
        await asyncio.sleep(0)
        return [e for e in self.events if e.task_id == task_id and e.id > cursor][:limit]

    async def thread_events_after(self, thread_id, cursor, limit):
        self.reads += 1
        await asyncio.sleep(0)
        return [e for e in self.events if e.thread_id == thread_id and e.id > cursor][:limit]

    async def last_event(self, task_id):
        await asyncio.sleep(0)
        return next((e for e in reversed(self.events) if e.task_id == task_id), None)


async def waiting(stream):
    """The stream's next item, asked for now: the stream catches up with the log and waits for commits."""
    item = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.01)
    assert not item.done()
    return item


async def take(stream, n):
    """The ids of the next `n` items (None for a keep-alive); "end" when the stream ends."""
    out = []
    for _ in range(n):
        try:
            batch = await stream.__anext__()
        except StopAsyncIteration:
            out.append("end")
            break
        out.append(None if batch is None else [e.id for e in batch.events])
    return out


async def test_the_log_then_live_commits_each_event_once_ending_after_the_terminal_one():
    hub = EventHub()
    log = Log(hub)
    log.commit("run.started", "text.delta", publish=False)  # before this process: only the store has them
    stream = follow_task(log, hub, "t", 0, 5)
    assert await take(stream, 1) == [[1, 2]]
    live = await waiting(stream)
    log.commit("text.delta", "text.delta")
    log.commit("run.finished")
    assert [e.id for e in (await live).events] == [3, 4]
    assert await take(stream, 2) == [[5], "end"]
    assert hub.subscriber_count == 0


async def test_an_event_both_in_the_log_and_queued_is_handed_out_once():
    hub = EventHub()
    log = Log(hub)
    seen = []
    stream = follow_task(log, hub, "t", 0, 5, on_subscribed=seen.append)
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # subscribed, reading the log
    log.commit("text.delta", "text.delta")  # committed while the log is read: in both
    assert [e.id for e in (await first).events] == [1, 2]
    log.commit("run.finished")
    assert seen and await take(stream, 2) == [[3], "end"]


async def test_a_task_of_this_process_is_replayed_from_memory():
    hub = EventHub()
    log = Log(hub)
    log.commit("run.started", "text.delta", "run.finished")
    assert await take(follow_task(log, hub, "t", 1, 5), 2) == [[2, 3], "end"]
    assert log.reads == 0


async def test_a_cursor_at_the_end_of_a_run_that_is_over_ends_at_once():
    hub = EventHub()
    log = Log(hub)
    log.commit("run.started", "run.finished", publish=False)
    assert await take(follow_task(log, hub, "t", 2, 5), 1) == ["end"]
    assert hub.subscriber_count == 0


async def test_a_reader_that_fell_behind_catches_up_from_the_log():
    hub = EventHub(limit=3)
    log = Log(hub)
    log.commit("run.started")
    stream = follow_task(log, hub, "t", 0, 5)
    assert await take(stream, 1) == [[1]]
    live = await waiting(stream)
    log.commit("text.delta")
    assert [e.id for e in (await live).events] == [2]
    log.commit("text.delta", "text.delta")
    log.commit("text.delta", "text.delta")  # past the limit: the queue is dropped
    log.commit("text.delta")  # queued after the drop
    assert await take(stream, 1) == [[3, 4, 5, 6, 7]]  # all from the log, 7 only once
    live = await waiting(stream)
    log.commit("run.finished")
    assert [e.id for e in (await live).events] == [8]
    assert await take(stream, 1) == ["end"]


async def test_keep_alives_while_nothing_happens_and_the_end_of_a_closed_subscription_after_its_queue():
    hub = EventHub()
    log = Log(hub)
    subs = []
    stream = follow_task(log, hub, "t", 0, 0.01, on_subscribed=subs.append)
    log.commit("run.started", publish=False)
    assert await take(stream, 2) == [[1], None]
    log.commit("text.delta")
    subs[0].close()
    assert await take(stream, 2) == [[2], "end"]
    assert hub.subscriber_count == 0


async def test_a_thread_stream_follows_every_task_and_ends_once_idle_long_enough():
    hub = EventHub()
    log = Log(hub)
    log.commit("run.started", "run.finished", task="a", publish=False)
    stream = follow_thread(log, hub, "th", 0, active=True, idle_limit_s=0.05, keepalive_s=0.02)
    assert await take(stream, 1) == [[1, 2]]  # its run ended: idle from here
    log.commit("run.started", task="b")  # busy again: no idle end while it runs
    assert await take(stream, 1) == [[3]]
    await asyncio.sleep(0.08)
    log.commit("job.parked", task="b")  # a parked task waits for a person: idle
    items = await take(stream, 10)
    assert items[0] == [4] and items[-1] == "end" and set(items[1:-1]) <= {None}
    assert hub.subscriber_count == 0
