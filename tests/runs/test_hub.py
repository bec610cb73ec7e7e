"""The event hub: batches shared by subscribers, lagging readers, the in-memory recent logs."""
from runs.hub import EventHub, RecentLogs
from store import Event


def ev(i, task="t", type="text.delta"):
    return Event(i, task, "th", type, {"partId": "p", "delta": str(i)}, 0)


def test_subscribers_share_one_batch_per_commit():
    hub = EventHub()
    a, b = hub.subscribe_task("t"), hub.subscribe_task("t")
    hub.publish([ev(1, type="run.started"), ev(2), ev(3, task="other")])
    (ba,), (bb,) = a.take(), b.take()
    assert ba is bb and [e.id for e in ba.events] == [1, 2]


def test_slow_reader_is_marked_lagged_not_buffered():
    hub = EventHub(limit=5)
    sub = hub.subscribe_task("t")
    hub.publish([ev(i) for i in range(1, 4)])
    hub.publish([ev(i) for i in range(4, 8)])
    assert sub.lagged and sub.queued == 0 and not sub.batches


def test_recent_logs_keep_whole_logs_only():
    logs = RecentLogs(per_task=5, total=6)
    logs.add("a", [ev(2)])  # started before this process: not kept
    assert logs.after("a", 0) is None
    logs.add("b", [ev(3, "b", "run.started"), ev(4, "b")])
    assert [e.id for e in logs.after("b", 0)] == [3, 4]
    assert [e.id for e in logs.after("b", 3)] == [4]
    logs.add("b", [ev(i, "b") for i in range(5, 9)])  # past per_task: dropped
    assert logs.after("b", 0) is None
    logs.add("b", [ev(9, "b")])
    assert logs.after("b", 0) is None
    logs.add("c", [ev(10, "c", "run.started"), ev(11, "c", "run.finished")])
    logs.add("d", [ev(12, "d", "run.started"), ev(13, "d", "run.finished")])
    logs.add("e", [ev(14, "e", "run.started"), ev(15, "e")])
    assert logs.size == 6 and logs.after("c", 0) is not None
    logs.add("e", [ev(16, "e")])  # past the total: the oldest ended task goes, live ones stay
    assert logs.after("c", 0) is None and [e.id for e in logs.after("d", 12)] == [13]
    assert [e.id for e in logs.after("e", 0)] == [14, 15, 16] and logs.size == 5


def test_recent_logs_let_live_tasks_go_too_once_no_ended_one_is_left():
    """`total` bounds what is kept (and what the garbage collector walks), live tasks or not."""
    logs = RecentLogs(per_task=5, total=6)
    for task in "abc":
        logs.add(task, [ev(ord(task) * 10, task, "run.started"), ev(ord(task) * 10 + 1, task)])
    assert logs.size == 6
    logs.add("c", [ev(ord("c") * 10 + 2, "c")])  # past the total with no ended task: the oldest live one goes
    assert logs.after("a", 0) is None and logs.after("b", 0) is not None and logs.size == 5
    logs.add("a", [ev(ord("a") * 10 + 2, "a")])  # and stays gone (its readers read the store)
    assert logs.after("a", 0) is None


def test_thread_subscribers_get_every_task_of_their_thread():
    hub = EventHub()
    thread = hub.subscribe_thread("th")
    task = hub.subscribe_task("a")
    hub.publish([Event(1, "a", "th", "run.finished", {}, 0), Event(2, "b", "th", "run.started", {}, 0),
                 Event(3, "c", "other", "run.started", {}, 0)])
    (batch,) = thread.take()
    assert [(e.id, e.task_id) for e in batch.events] == [(1, "a"), (2, "b")]
    assert [e.id for b in task.take() for e in b.events] == [1]
    hub.close_all()
    assert thread.closed
    hub.unsubscribe(thread)
    hub.unsubscribe(task)
    assert hub.subscriber_count == 0
