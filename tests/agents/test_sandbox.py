"""agents/sandbox.py: warm worker processes, a time limit that kills, capped memory, JSON answers."""
import asyncio
import os
import time

import pytest

from agents.sandbox import JobError, Sandbox, SandboxFailed, SandboxTimeout

JOBS = "tests.agents.sandbox_jobs"


@pytest.fixture
def sandboxes():
    made = []

    def make(name, **kw):
        box = Sandbox(f"{JOBS}:{name}", **kw)
        made.append(box)
        return box

    yield make
    for box in made:
        box.close()
        assert box.pids == []


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_arguments_and_bytes_cross_and_the_answer_comes_back(sandboxes):
    box = sandboxes("echo")
    out = await box.call(5, b"\x00" * 70_000, text="héllo", n=[1, 2.5, None])
    assert out["kwargs"] == {"text": "héllo", "n": [1, 2.5, None]} and out["data"] == 70_000
    assert out["pid"] != os.getpid() and box.pids == [out["pid"]]
    again = await box.call(5)
    assert again["data"] is None and again["pid"] == out["pid"]  # warm: the same worker


async def test_a_warm_call_costs_well_under_50_ms(sandboxes):
    box = sandboxes("pid")
    await box.call(5)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        await box.call(5)
        times.append(time.perf_counter() - start)
    assert sorted(times)[10] < 0.05, times


async def test_a_job_error_crosses_with_its_details(sandboxes):
    box = sandboxes("refuse")
    with pytest.raises(JobError) as err:
        await box.call(5, message="not this one")
    assert err.value.message == "not this one" and err.value.details == {"status": 422, "code": "NOPE"}
    assert len(box.pids) == 1  # an error is an answer: the worker stays


async def test_an_overrun_kills_the_worker_and_a_fresh_one_takes_over(sandboxes, io_loop):
    box = sandboxes("spin")
    first = await box.call(5, seconds=0.01)
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    start = time.monotonic()
    with pytest.raises(SandboxTimeout):
        await box.call(0.5, seconds=30)
    elapsed = time.monotonic() - start
    ticker.cancel()
    assert 0.45 < elapsed < 2.0
    assert ticks > 20  # the event loop went on meanwhile
    assert gone(first)  # killed and reaped: it burns no CPU after its limit
    second = await box.call(5, seconds=0.01)
    assert second != first and box.pids == [second]


async def test_memory_is_capped(sandboxes):
    box = sandboxes("hog", memory_mb=200)
    assert await box.call(5, mb=20) == 20 * 1024 * 1024
    with pytest.raises(SandboxFailed, match="out of memory"):
        await box.call(5, mb=400)


async def test_a_worker_that_dies_fails_the_call_not_the_next(sandboxes):
    die, pid = sandboxes("die"), sandboxes("pid")
    with pytest.raises(SandboxFailed):
        await die.call(5)
    assert die.pids == []
    assert await pid.call(5) > 0


async def test_a_result_that_is_not_json_is_a_failure(sandboxes):
    box = sandboxes("unencodable")
    with pytest.raises(SandboxFailed, match="cannot be encoded"):
        await box.call(5)


async def test_calls_beyond_the_workers_wait_their_turn(sandboxes):
    box = sandboxes("spin", workers=2)
    start = time.monotonic()
    pids = await asyncio.gather(*(box.call(5, seconds=0.3) for _ in range(4)))
    assert time.monotonic() - start >= 0.55
    assert len(set(pids)) == 2 and len(box.pids) == 2


async def test_too_many_waiting_calls_are_refused(sandboxes):
    box = sandboxes("spin", workers=1, max_waiting=2)
    calls = [asyncio.ensure_future(box.call(5, seconds=0.2)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(SandboxFailed, match="too many"):
        await box.call(5, seconds=0.01)
    await asyncio.gather(*calls)


async def test_close_kills_every_worker(sandboxes):
    box = sandboxes("pid", workers=2)
    pids = set(await asyncio.gather(box.call(5), box.call(5)))
    assert pids and all(not gone(p) for p in pids)
    box.close()
    assert box.pids == [] and all(gone(p) for p in pids)
    assert await box.call(5) not in pids  # a closed sandbox starts afresh


async def test_an_answer_larger_than_the_cap_is_a_failure_and_its_worker_goes(sandboxes):
    # One worker: with two, the second call may start one of its own in a second thread (the
    # first thread may not have counted itself idle yet), and the first worker rightly stays.
    box = sandboxes("big", memory_mb=2048, workers=1)
    assert len(await box.call(5, mb=1)) == 1024 * 1024
    pid = box.pids[0]
    with pytest.raises(SandboxFailed, match="larger than"):
        await box.call(5, mb=65)
    assert gone(pid) and box.pids == []
