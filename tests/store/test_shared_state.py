"""The store modules of state that instances share (SPEC section 14): secrets, blobs and rate limits,
on both stores; and on PostgreSQL, two instances' stores on one database agreeing."""
from __future__ import annotations

import asyncio
import os

import pytest

from store import Conflict, blobs, limits
from store import secrets as secrets_sql
from store.postgres import PostgresDatabase

MINUTE = 60_000



@pytest.fixture
def two(io_loop, pg_url):
    """Two instances' stores on one PostgreSQL database."""
    pair = [PostgresDatabase(pg_url), PostgresDatabase(pg_url)]

    async def open_both():
        await asyncio.gather(*(d.open() for d in pair))

    async def close_both():
        await asyncio.gather(*(d.close() for d in pair))

    io_loop.run_sync(open_both)
    yield pair
    io_loop.run_sync(close_both)


# -- secrets ------------------------------------------------------------------------

async def test_a_secret_is_made_once_and_then_read_back(open_store):
    assert await secrets_sql.get(open_store, "k") is None
    assert await secrets_sql.keep_first(open_store, "k", b"first") == b"first"
    assert await secrets_sql.keep_first(open_store, "k", b"second") == b"first"
    assert await secrets_sql.get(open_store, "k") == b"first"
    assert await secrets_sql.keep_first(open_store, "other", b"\x00\xff" * 16) == b"\x00\xff" * 16


async def test_instances_offering_a_secret_together_agree_on_one(two):
    a, b = two
    got = await asyncio.gather(*(secrets_sql.keep_first(d, f"s{n % 3}", os.urandom(32))
                                 for n, d in enumerate([a, b] * 15)))
    for n in range(3):
        assert len({v for i, v in enumerate(got) if i % 3 == n}) == 1
    assert await secrets_sql.get(b, "s0") == got[0]


# -- blobs --------------------------------------------------------------------------

async def test_a_blob_is_kept_read_and_deleted(open_store):
    data = os.urandom(blobs.SLICE * 2 + 5)  # read in three slices on PostgreSQL
    await blobs.put(open_store, "attachments/b/x.png", data)
    assert await blobs.get(open_store, "attachments/b/x.png") == data
    with pytest.raises(Conflict):
        await blobs.put(open_store, "attachments/b/x.png", b"other")
    assert await blobs.get(open_store, "attachments/b/x.png") == data
    await blobs.delete(open_store, "attachments/b/x.png")
    assert await blobs.get(open_store, "attachments/b/x.png") is None
    await blobs.delete(open_store, "attachments/b/x.png")  # gone already: nothing to do


@pytest.mark.parametrize("size", [0, 1, blobs.SLICE - 1, blobs.SLICE, blobs.SLICE + 1])
async def test_blobs_of_every_size_around_a_slice(open_store, size):
    data = os.urandom(size)
    await blobs.put(open_store, f"documents/{size}", data)
    assert await blobs.get(open_store, f"documents/{size}") == data


async def test_a_blob_written_by_one_instance_is_read_by_the_other(two):
    a, b = two
    await blobs.put(a, "documents/d1", b"%PDF-1.4 bytes\x00\xff")
    assert await blobs.get(b, "documents/d1") == b"%PDF-1.4 bytes\x00\xff"


# -- rate limits ----------------------------------------------------------------------

async def test_hits_are_counted_in_a_sliding_window(open_store):
    t = 1_000_000
    assert [await limits.hit(open_store, "u", 2, MINUTE, t + n) for n in (0, 1)] == [0, 0]
    assert await limits.hit(open_store, "u", 2, MINUTE, t + 10_000) == 50_000  # the first hit leaves in 50 s
    assert await limits.hit(open_store, "v", 2, MINUTE, t + 10_000) == 0  # keys are counted apart
    assert await limits.hit(open_store, "u", 2, MINUTE, t + 60_000) == 0  # the first has left: room for one
    assert await limits.hit(open_store, "u", 2, MINUTE, t + 60_000) == 1  # the second leaves in 1 ms
    assert await limits.hit(open_store, "u", 2, MINUTE, t + 60_001) == 0  # refused hits were not counted
    assert await limits.hit(open_store, "u", 2, MINUTE, t + 60_002) == 59_998


async def test_blocked_for_only_asks_and_record_always_counts(open_store):
    t = 1_000_000
    assert await limits.blocked_for(open_store, "ann", 2, MINUTE, t) == 0
    await limits.record(open_store, "ann", 2, MINUTE, t)
    assert await limits.blocked_for(open_store, "ann", 2, MINUTE, t) == 0
    await limits.record(open_store, "ann", 2, MINUTE, t + 10_000)
    assert await limits.blocked_for(open_store, "ann", 2, MINUTE, t + 10_000) == 50_000
    await limits.record(open_store, "ann", 2, MINUTE, t + 20_000)  # counted although blocked
    assert await limits.blocked_for(open_store, "ann", 2, MINUTE, t + 60_000) == 10_000  # two are in the window
    assert await limits.blocked_for(open_store, "ann", 2, MINUTE, t + 70_000) == 0


async def test_sweep_forgets_the_keys_without_hits_in_their_window(open_store):
    t = 1_000_000
    await limits.hit(open_store, "old", 5, MINUTE, t)
    await limits.hit(open_store, "new", 5, MINUTE, t + 30_000)
    await limits.sweep(open_store, t + MINUTE)
    rows = await open_store.read(lambda c: c.execute_fetchall("SELECT key FROM rate_limits ORDER BY key"))
    assert [r[0] for r in rows] == ["new"]


async def test_two_instances_hitting_one_key_together_allow_no_more_than_the_limit(two):
    a, b = two
    t = 1_000_000
    waits = await asyncio.gather(*(limits.hit(d, "u", 30, MINUTE, t + n) for n, d in enumerate([a, b] * 50)))
    assert sum(1 for w in waits if w == 0) == 30
    assert all(0 < w <= MINUTE for w in waits if w)
