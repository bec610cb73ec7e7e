"""Stream keep-alives, the per-user cap, and clean-up on disconnect."""
import asyncio

import pytest

from server import Config
from tests.helpers import INTERNAL_KEY, parse_frames


@pytest.fixture
def parley_config(tmp_path):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0,
                  keepalive_s=0.05, max_streams_per_user=3)


async def test_idle_stream_gets_keepalive_comments(alice, parley):
    task_id = await alice.start_ok("idle", "/sleep 0.4")
    resp = await alice.request("GET", f"/stream/{task_id}")
    frames = parse_frames(resp.body)
    assert sum(1 for f in frames if f.comment) >= 2
    assert b": keepalive\n\n" in resp.body
    assert frames[-1].event == "done"


async def test_open_streams_per_user_are_capped(alice, bob, parley):
    task_id = await alice.start_ok("cap", "/sleep 30")
    readers = [asyncio.ensure_future(alice.stream(task_id)) for _ in range(3)]
    for _ in range(200):
        if parley.streams.total == 3:
            break
        await asyncio.sleep(0.01)
    assert parley.streams.total == 3
    resp = await alice.request("GET", f"/stream/{task_id}")
    assert resp.code == 429 and resp.headers["Retry-After"]
    other = await bob.start_ok("cap-bob", "hi")
    code, _ = await bob.stream(other)
    assert code == 200  # the cap is per user
    await alice.request("DELETE", f"/task/{task_id}")
    for code, frames in await asyncio.gather(*readers):
        assert code == 200 and frames[-1].event == "error"
    assert parley.streams.total == 0


async def test_disconnect_frees_the_stream_at_once(alice, parley):
    task_id = await alice.start_ok("drop", "/sleep 30")
    await alice.stream(task_id, cut_after=1)
    for _ in range(200):
        if parley.streams.total == 0 and parley.hub.subscriber_count == 0:
            break
        await asyncio.sleep(0.01)
    assert parley.streams.total == 0 and parley.hub.subscriber_count == 0
    assert (await alice.task(task_id))["status"] == "running"
    await alice.request("DELETE", f"/task/{task_id}")
