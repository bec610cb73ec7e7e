"""Where the server keeps its secrets and counts its rate limits: files and memory for the store of one
process, the store itself when instances share it (SPEC section 14)."""
from __future__ import annotations

import asyncio
import stat

import pytest

from auth import Authenticator
from auth.keys import (
    ATTACHMENT_URL,
    SIGNING_KEY,
    STREAM_TOKEN,
    SecretFiles,
    StoredSecrets,
    secret,
    secrets_for,
    signing_key,
)
from auth.ratelimit import SlidingWindow, StoredWindow, Windows
from store.postgres import PostgresDatabase


@pytest.fixture
def two(io_loop, pg_url):
    """Two instances' stores on one PostgreSQL database, not yet opened."""
    pair = [PostgresDatabase(pg_url), PostgresDatabase(pg_url)]
    yield pair
    io_loop.run_sync(lambda: asyncio.gather(*(d.close() for d in pair)))


# -- secrets ------------------------------------------------------------------------

async def test_the_store_of_one_process_keeps_the_secrets_as_private_files(open_store, tmp_path):
    keys = secrets_for(open_store, tmp_path / "keys")
    if open_store.shared:
        assert isinstance(keys, StoredSecrets)
        return
    assert isinstance(keys, SecretFiles)
    key = await signing_key(keys)
    assert (await signing_key(keys)).kid == key.kid
    assert await secret(keys, STREAM_TOKEN) == await secret(keys, STREAM_TOKEN) != await secret(keys, ATTACHMENT_URL)
    for name in (SIGNING_KEY, STREAM_TOKEN, ATTACHMENT_URL):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    rows = await open_store.read(lambda c: c.execute_fetchall("SELECT name FROM secrets"))
    assert rows == []  # nothing of them in the database


async def test_instances_starting_together_get_one_signing_key_and_one_of_each_secret(two, tmp_path):
    async def start(database, n):
        await database.open()
        keys = secrets_for(database, tmp_path / f"keys-{n}")
        return await signing_key(keys), await secret(keys, STREAM_TOKEN), await secret(keys, ATTACHMENT_URL)

    (key_a, stream_a, url_a), (key_b, stream_b, url_b) = await asyncio.gather(*(start(d, n) for n, d in enumerate(two)))
    assert key_a.kid == key_b.kid and stream_a == stream_b and url_a == url_b != stream_a
    assert not list(tmp_path.glob("keys-*"))  # no files: the store holds them
    # what one signs, the other accepts
    auth_a = Authenticator(key_a, stream_a, issuer=f"parley:{key_a.kid}")
    auth_b = Authenticator(key_b, stream_b, issuer=f"parley:{key_b.kid}")
    assert (await auth_b.verify_jwt(auth_a.issue_jwt("ann"))).user_id == "ann"
    assert auth_b.verify_stream_token(auth_a.stream_token("ann", "task-1"), "task-1").user_id == "ann"


async def test_a_secret_is_never_remade_once_kept(open_store):
    keys = StoredSecrets(open_store)
    first = await keys.get_or_make("x.secret", lambda: b"one")
    assert first == b"one"
    assert await keys.get_or_make("x.secret", lambda: pytest.fail("made again")) == b"one"


# -- rate limits ----------------------------------------------------------------------

async def test_windows_count_in_memory_unless_instances_share_the_store(open_store):
    window = Windows(open_store).window("jobs.reads", 300)
    assert isinstance(window, StoredWindow if open_store.shared else SlidingWindow)
    assert (window.limit, window.window_s) == (300, 60.0)
    assert isinstance(Windows().window("x", 1), SlidingWindow)


async def test_a_stored_window_answers_as_the_one_in_memory(open_store):
    now = [1000.0]
    stored = StoredWindow(open_store, "t", 2, 60, clock=lambda: now[0])
    memory = SlidingWindow(2, 60, clock=lambda: now[0])
    for w in (stored, memory):
        assert await w.hit("a") == 0 and await w.hit("a") == 0
    now[0] += 10
    assert await stored.hit("a") == await memory.hit("a") == 50
    assert await stored.hit("b") == 0  # keys are counted apart
    assert await StoredWindow(open_store, "other", 2, 60, clock=lambda: now[0]).hit("a") == 0  # and limits too
    await stored.record("ann")
    await stored.record("ann")
    assert await stored.blocked_for("ann") == 60
    now[0] += 60
    assert await stored.hit("a") == 0 and await stored.blocked_for("ann") == 0


async def test_a_stored_window_forgets_keys_without_hits_once_a_window(open_store):
    now = [1000.0]
    window = StoredWindow(open_store, "t", 5, 60, clock=lambda: now[0])
    for n in range(3):
        await window.hit(f"ip-{n}")
    now[0] += 61
    await window.hit("late")
    rows = await open_store.read(lambda c: c.execute_fetchall("SELECT key FROM rate_limits"))
    assert [r[0] for r in rows] == ["t:late"]
