"""The demo agent's bounds on a free sign-up (SPEC 13): `/count` ≤ 100,000 and `/sleep` ≤ 600 by
default, `[demo] max_count / max_sleep_s` in the config; beyond them the run fails `bad_command`
at once, saying the bound (it never counts to 10**12)."""
from __future__ import annotations

import asyncio
import copy

import pytest

from agents.demo import Limits
from config import check_file
from server import Config
from tests.helpers import ENDED, INTERNAL_KEY


@pytest.fixture
def config_extra(request):
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, config_extra):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0,
                  extra=copy.deepcopy(config_extra))


async def refused(client, thread_id, content, message):
    info = await client.wait_status(await client.start_ok(thread_id, content), *ENDED, timeout=5.0)
    assert info["status"] == "failed" and info["error"] == {"reason": "bad_command", "message": message}, info


async def accepted(client, thread_id, content):
    """The run started its work (no bad_command); it is stopped at once."""
    task_id = await client.start_ok(thread_id, content)
    for _ in range(500):
        info = await client.task(task_id)
        if info["currentNode"] is not None or info["status"] in ENDED:
            break
        await asyncio.sleep(0.01)
    await client.request("DELETE", f"/task/{task_id}")
    info = await client.wait_status(task_id, *ENDED, timeout=5.0)
    assert info["status"] in ("completed", "cancelled") and info["currentNode"] in ("count", "sleep"), info


async def test_count_is_bounded(alice):
    for n, content in enumerate(("/count 100001", "/count 1000000000000", "/count -1")):
        await refused(alice, f"t-count-{n}", content, "/count takes 0 to 100000")
    await accepted(alice, "t-count-ok", "/count 100000")


async def test_sleep_is_bounded(alice):
    for n, content in enumerate(("/sleep 601", "/sleep 1e12", "/sleep inf", "/sleep nan")):
        await refused(alice, f"t-sleep-{n}", content, "/sleep takes 0 to 600 seconds")
    await accepted(alice, "t-sleep-ok", "/sleep 600")


@pytest.mark.parametrize("config_extra", [{"demo": {"max_count": 5, "max_sleep_s": 0.5}}], indirect=True)
async def test_the_bounds_are_configurable(config_extra, alice):
    await refused(alice, "t-c6", "/count 6", "/count takes 0 to 5")
    assert (await alice.wait_status(await alice.start_ok("t-c5", "/count 5"), *ENDED, timeout=5.0))["status"] == "completed"
    await refused(alice, "t-s1", "/sleep 1", "/sleep takes 0 to 0.5 seconds")
    assert (await alice.wait_status(await alice.start_ok("t-s05", "/sleep 0.01"), *ENDED, timeout=5.0))["status"] == "completed"


@pytest.mark.parametrize("table, error", [
    ({"max_count": -1}, "[demo] max_count: expected an integer, at least 0, got -1"),
    ({"max_count": 1.5}, "[demo] max_count: expected an integer, at least 0, got 1.5"),
    ({"max_sleep_s": "600"}, '[demo] max_sleep_s: expected a number of seconds, at least 0, got "600"'),
    ({"max_sleep_s": float("inf")}, "[demo] max_sleep_s: expected a number of seconds, at least 0, got Infinity"),
    ({"max_slep_s": 1}, "[demo] max_slep_s: unknown key; did you mean max_sleep_s?"),
    ("600", 'demo: expected a table, got "600"'),
])
def test_a_bad_demo_table_fails_at_start(table, error):
    assert check_file({"demo": table})[1] == [error]


def test_defaults():
    assert Limits() == Limits(100_000, 600.0)
