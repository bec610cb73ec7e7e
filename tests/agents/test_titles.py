"""Thread titles named by a model (`[titles] llm = "…"`), against the scripted OpenAI-compatible server."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from agents import AgentRegistry
from agents import titles as titles_module
from agents.titles import SYSTEM_PROMPT, clean_title
from config import check_file
from server import Config, serve
from store import Conflict, Database
from store import threads as threads_sql
from tests.agents import fake_openai as fo
from tests.agents.test_react import fake  # noqa: F401  (fixture)
from tests.helpers import INTERNAL_KEY, body

SECRET = "sk-titles-secret-0123456789"


@pytest.fixture
def titles_table():
    return {"llm": "fake"}


@pytest.fixture
def parley_config(tmp_path, fake, titles_table, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PARLEY_TEST_TITLES_KEY", SECRET)
    extra = {"llm": {"fake": {"base_url": fake.base_url, "model": "m", "timeout_s": 10,
                              "api_key_env": "PARLEY_TEST_TITLES_KEY"}}}
    if titles_table is not None:
        extra["titles"] = titles_table
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, extra=extra)


async def run_on(client, parley, thread, content):
    """Run the demo agent on `thread` to its end, then wait for the title request it started."""
    task_id = await client.start_ok(thread, content)
    _, frames = await client.stream(task_id)
    await parley.runs.wait_titles()
    return task_id, frames


async def thread_of(client, thread_id):
    threads = body(await client.request("GET", "/thread/threads"))["threads"]
    return next(t for t in threads if t["id"] == thread_id)


async def test_the_first_completed_run_names_the_thread(alice, parley, fake):  # noqa: F811
    fake.script(fo.text('"Counting to three."'))
    await run_on(alice, parley, "t-count", "/count 3")
    thread = await thread_of(alice, "t-count")
    assert (thread["title"], thread["titleSource"]) == ("Counting to three", "llm")
    [request] = fake.requests
    assert request["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "The conversation:\n\nUser: /count 3\n\nAssistant: 1 2 3"},
    ]
    assert "tools" not in request and request["stream"] is True and request["model"] == "m"
    assert fake.headers[0]["Authorization"] == f"Bearer {SECRET}"
    # A second run on the thread asks nothing: it is named already.
    _, frames = await run_on(alice, parley, "t-count", "and now to four")
    assert frames[-1].event == "done"
    assert len(fake.requests) == 1
    assert (await thread_of(alice, "t-count"))["title"] == "Counting to three"


async def test_a_given_title_is_never_replaced(alice, parley, fake):  # noqa: F811
    fake.script(fo.text("Should not be used"), fo.text("Trip to Kyoto"))
    created = body(await alice.request("POST", "/thread/", {"threadId": "named", "title": "  My trip  "}))["thread"]
    assert (created["title"], created["titleSource"]) == ("My trip", "given")
    await run_on(alice, parley, "named", "hello")
    await run_on(alice, parley, "named", "hello again")
    assert fake.requests == []
    assert (await thread_of(alice, "named"))["title"] == "My trip"
    # A thread created with its first message (no title) is named after its first run.
    made = body(await alice.request("POST", "/thread/", {"threadId": "from-msg", "message": "plan a trip"}))["thread"]
    assert (made["title"], made["titleSource"]) == ("plan a trip", "message")
    await run_on(alice, parley, "from-msg", "plan a trip")
    assert (await thread_of(alice, "from-msg"))["title"] == "Should not be used"
    # A blank title counts as none.
    blank = body(await alice.request("POST", "/thread/", {"threadId": "blank", "title": "   "}))["thread"]
    assert (blank["title"], blank["titleSource"]) == (None, "message")


async def test_a_failing_provider_keeps_the_title_and_the_run(alice, parley, fake, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="parley.runs")
    fake.script(fo.http_error(500, "boom"))
    task_id, frames = await run_on(alice, parley, "t-err", "hello there")
    assert frames[-1].event == "done"
    assert (await alice.task(task_id))["status"] == "completed"
    thread = await thread_of(alice, "t-err")
    assert (thread["title"], thread["titleSource"]) == ("hello there", "message")
    [record] = [r for r in caplog.records if "keeps its title" in r.getMessage()]
    assert record.levelno == logging.INFO and "llm_http_error" in record.getMessage()
    assert SECRET not in caplog.text
    # The next completed run tries once more.
    fake.script(fo.text("Greetings"))
    await run_on(alice, parley, "t-err", "again")
    assert len(fake.requests) == 2
    assert (await thread_of(alice, "t-err"))["title"] == "Greetings"


async def test_a_slow_provider_times_out(alice, parley, fake, monkeypatch, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="parley.runs")
    monkeypatch.setattr(titles_module, "TIMEOUT_S", 0.3)
    fake.script(fo.slow(30))
    _, frames = await run_on(alice, parley, "t-slow", "take your time")
    assert frames[-1].event == "done"
    assert (await thread_of(alice, "t-slow"))["title"] == "take your time"
    assert "llm_timeout" in caplog.text


async def test_unusable_answers_keep_the_title(alice, parley, fake):  # noqa: F811
    fake.script(fo.text('""'), fo.malformed())
    await run_on(alice, parley, "t-empty", "first")
    await run_on(alice, parley, "t-empty", "second")
    assert len(fake.requests) == 2
    thread = await thread_of(alice, "t-empty")
    assert (thread["title"], thread["titleSource"]) == ("first", "message")


async def test_one_request_at_a_time_per_thread(alice, parley, fake):  # noqa: F811
    reply = fo.text("Slow title")
    reply.delay_s = 0.5
    fake.script(reply)
    await alice.stream(await alice.start_ok("t-two", "one"))
    await alice.stream(await alice.start_ok("t-two", "two"))  # completes while the first request waits
    await parley.runs.wait_titles()
    assert len(fake.requests) == 1
    assert (await thread_of(alice, "t-two"))["title"] == "Slow title"


async def test_drain_cancels_a_title_request(alice, parley, fake):  # noqa: F811
    fake.script(fo.slow(30))
    await alice.stream(await alice.start_ok("t-drain", "hello"))
    for _ in range(500):
        if fake.requests:
            break
        await asyncio.sleep(0.01)
    assert parley.runs.titles_in_flight == 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    await parley.runs.drain(0)
    assert loop.time() - started < 2
    assert parley.runs.titles_in_flight == 0
    assert (await thread_of(alice, "t-drain"))["titleSource"] == "message"


async def test_a_replayed_job_asks_no_model(alice, parley, fake):  # noqa: F811
    fake.script(fo.text("Clock check"))
    job_id = body(await alice.request("POST", "/api/runs", {"workflow_id": "w", "input": {"agent_id": "demo", "message": "/tool clock"}}))["job_id"]
    await parley.runs.wait_titles()
    assert (await alice.task(job_id))["status"] == "completed"
    assert len(fake.requests) == 1
    resp = await alice.request("POST", f"/api/jobs/{job_id}/replay", {})
    assert resp.code == 201, resp.body
    replay_id = body(resp)["job_id"]
    await parley.runs.wait_titles()
    replayed = await alice.task(replay_id)
    assert replayed["status"] == "completed"
    assert len(fake.requests) == 1
    assert (await thread_of(alice, replayed["threadId"]))["titleSource"] == "message"


@pytest.mark.parametrize("titles_table", [None])
async def test_without_titles_no_model_is_asked(alice, parley, fake):  # noqa: F811
    assert parley.agents.title_model() is None
    await run_on(alice, parley, "t-none", "/count 2")
    assert fake.requests == []
    assert (await thread_of(alice, "t-none"))["title"] == "/count 2"


# -- configuration (no server) ---------------------------------------------------------------


async def test_an_unknown_titles_provider_fails_at_start(tmp_path, capsys):
    cfg = Config(data_dir=tmp_path / "data", extra={
        "llm": {"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "titles": {"llm": "nope"},
    })
    assert await serve(cfg) == 2
    err = capsys.readouterr().err
    assert "config: [titles]: llm 'nope' names no configured provider" in err and "configured: local" in err
    assert not (tmp_path / "data").exists()


def test_configure_checks_the_titles_table():
    registry = AgentRegistry()
    local = {"local": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    assert check_file({"llm": local, "titles": "local"})[1] == ['titles: expected a table, got "local"']
    assert check_file({"llm": local, "titles": {"llm": "local", "model": "m"}})[1] == [
        "[titles] model: unknown key (known: llm)"]
    assert check_file({"llm": local, "titles": {}})[1] == ["[titles] llm: missing (expected a non-empty string)"]
    with pytest.raises(ValueError, match=r"configured: none"):
        registry.configure({"titles": {"llm": "local"}})
    assert registry.providers == {} and registry.title_model() is None  # nothing half-configured
    registry.configure({"llm": local, "titles": {"llm": "local"}})
    assert registry.title_model() is registry.providers["local"]


@pytest.mark.parametrize(("raw", "title"), [
    ('"Counting to three."', "Counting to three"),
    ("  **Trip   to Kyoto**  \nBecause you asked.", "Trip to Kyoto"),
    ("# `Refund request`", "Refund request"),
    ("Title: “Weekend plans”.", "Weekend plans"),
    ("\n\n'Alice's garden'\n", "Alice's garden"),
    ("```\nDebugging Python\n```", "Debugging Python"),
    ("word " * 30, ("word " * 12).strip()[:57].rstrip() + "…"),
    ("", None),
    ('"."', None),
])
def test_clean_title(raw, title):
    assert clean_title(raw) == title


# -- the store -------------------------------------------------------------------------------


async def test_set_llm_title_replaces_only_a_message_title(tmp_path):
    db = Database(tmp_path / "t.db")
    await db.open()
    try:
        await db.write(lambda tx: threads_sql.create(tx, "given", "u", "Mine", "given"))
        await db.write(lambda tx: threads_sql.ensure(tx, "made", "u", "from the message")[0])
        assert not await db.write(lambda tx: threads_sql.set_llm_title(tx, "given", "X"))
        assert await db.write(lambda tx: threads_sql.set_llm_title(tx, "made", "Named"))
        assert not await db.write(lambda tx: threads_sql.set_llm_title(tx, "made", "Again"))
        assert not await db.write(lambda tx: threads_sql.set_llm_title(tx, "missing", "X"))
        rows = {t.id: (t.title, t.title_source) for t in await db.read(lambda c: threads_sql.for_user(c, "u"))}
        assert rows == {"given": ("Mine", "given"), "made": ("Named", "llm")}
    finally:
        await db.close()


async def test_the_migration_keeps_existing_threads_as_message_titles(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
    for f in sorted((Path(__file__).parents[2] / "store" / "migrations").glob("000[1-4]_*.sql")):
        conn.executescript(f.read_text())
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (int(f.name[:4]), f.name))
    conn.execute("INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES ('old', 'u', 'Old', 1, 1)")
    conn.commit()
    conn.close()
    db = Database(path)
    await db.open()
    try:
        thread = await db.read(lambda c: threads_sql.get(c, "old"))
        assert thread is not None and (thread.title, thread.title_source) == ("Old", "message")
        with pytest.raises(Conflict):  # the CHECK constraint refuses an unknown source
            await db.write(lambda tx: threads_sql.create(tx, "bad", "u", "x", "guessed"))
    finally:
        await db.close()
