"""kira-be's media routes (SPEC section 10): /video/*, /music/*, /version/versions, the demo agent's
/video and /music, and what they cost."""
from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from agents import demo, media_gen
from store import events as events_sql
from tests.handlers.test_plans import (  # noqa: F401  (fixtures)
    jwt_client,
    ledger,
    parley_config,
    plans_extra,
    profile,
    with_config,
)
from tests.helpers import ENDED, Client, body

TASK_KEYS = {"taskId", "threadId", "status", "error", "createdAt", "finishedAt", "media"}
APNG_URL = "data:image/apng;base64,"
WAV_URL = "data:audio/wav;base64,"


async def run_ok(client, thread_id, content):
    """Start a run and wait until it ends: its task id (asserting it completed)."""
    task_id = await client.start_ok(thread_id, content)
    task = await client.wait_status(task_id, *ENDED)
    assert task["status"] == "completed", task
    return task_id


async def media_task(client, kind, task_id, code=200):
    resp = await client.request("GET", f"/{kind}/task/{task_id}")
    assert resp.code == code, (resp.code, resp.body)
    return body(resp)


async def initialize(client, kind, payload, code=201):
    resp = await client.request("POST", f"/{kind}/initialize", payload)
    assert resp.code == code, (resp.code, resp.body)
    return body(resp)


def assert_message_error(resp, status, *secrets):
    assert resp.code == status, (resp.code, resp.body)
    assert set(body(resp)) <= {"message", "taskId"} and isinstance(body(resp)["message"], str), body(resp)
    for secret in secrets:
        assert secret not in resp.body.decode()


async def assistant_parts(client, thread_id):
    messages = body(await client.request("GET", f"/messages/{thread_id}"))["messages"]
    return [m for m in messages if m["role"] == "assistant"][-1]["parts"]


# -- the demo agent --------------------------------------------------------------------------


@pytest.mark.parametrize("content, tool, prompt, media_type, sentence", [
    ("/video waves on a beach", "generate_video", "waves on a beach", "image/apng", "Here is a short video of waves on a beach."),
    ("/music a calm morning", "generate_music", "a calm morning", "audio/wav", "Here is a short piece of music: a calm morning."),
    ("make a video of a red fox", "generate_video", "a red fox", "image/apng", None),
    ("Please create an animation of falling snow!", "generate_video", "falling snow", "image/apng", None),
    ("compose a lullaby for the moon", "generate_music", "a lullaby for the moon", "audio/wav", None),
    ("Compose a song about the rain.", "generate_music", "the rain", "audio/wav", None),
    ("make a song about summer", "generate_music", "summer", "audio/wav", None),
    ("can you write me a tune for a rainy day?", "generate_music", "a rainy day", "audio/wav", None),
])
async def test_demo_commands_and_phrasings(alice, content, tool, prompt, media_type, sentence):
    task_id = await run_ok(alice, "t-demo", content)
    parts = await assistant_parts(alice, "t-demo")
    assert [p["type"] for p in parts] == ["step-start", f"tool-{tool}", "file", "step-start", "text"]
    assert parts[1]["input"] == {"prompt": prompt}
    assert parts[2] == {"type": "file", "url": parts[1]["output"]["url"], "mediaType": media_type}
    if sentence is not None:
        assert parts[4]["text"] == sentence
    assert parts[4]["text"].count(".") == 1  # one short sentence
    assert (await alice.task(task_id))["threadId"] == "t-demo"


@pytest.mark.parametrize("command, usage", [("/video", demo.VIDEO_USAGE), ("/music", demo.MUSIC_USAGE)])
async def test_demo_commands_without_a_prompt_explain(parley, alice, command, usage):
    await run_ok(alice, "t-usage", command)
    parts = await assistant_parts(alice, "t-usage")
    assert [p["type"] for p in parts] == ["step-start", "text"] and parts[1]["text"] == usage
    assert (await profile(alice))["credits"] == 100


@pytest.mark.parametrize("text", ["I like videos", "the song was good", "composer biographies",
                                  "compose an email to my landlord", "compose a reply to Bob"])
async def test_other_text_makes_no_media(alice, text):
    await run_ok(alice, "t-plain", text)
    parts = await assistant_parts(alice, "t-plain")
    assert [p["type"] for p in parts] == ["step-start", "text"]


async def test_the_demo_agent_has_the_media_tools(alice):
    agents = body(await alice.request("GET", "/api/agents"))["agents"]
    (demo_agent,) = [a for a in agents if a["id"] == "demo"]
    assert {"generate_image", "generate_video", "generate_music"} <= set(demo_agent["tools"])
    assert "/video PROMPT" in demo_agent["description"] and "/music PROMPT" in demo_agent["description"]


# -- credits -----------------------------------------------------------------------------------


async def test_each_tool_is_debited_its_price(parley, alice):
    video = await run_ok(alice, "t-pay", "/video a cat")
    assert (await profile(alice))["credits"] == 95
    music = await run_ok(alice, "t-pay", "/music a cat")
    assert (await profile(alice))["credits"] == 92
    rows = await ledger(parley, "alice")
    assert [(r["reason"], r["delta"], r["task_id"]) for r in rows[:2]] == [
        ("tool:generate_music", -3, music), ("tool:generate_video", -5, video)]


@with_config({"credits": {"generate_video": 7, "generate_music": 0}})
async def test_prices_come_from_the_config(parley, alice):
    await run_ok(alice, "t-price", "/video a cat")
    await run_ok(alice, "t-price", "/music a cat")
    assert (await profile(alice))["credits"] == 93
    assert [r["reason"] for r in await ledger(parley, "alice")] == ["tool:generate_video", "initial"]


@with_config({"plans": {"free": {"credits": 2}}})
async def test_music_without_credits_fails_then_submit_retries_after_a_grant(parley, alice, bob, http_server_client):
    jwt_alice = jwt_client(parley, http_server_client, "alice")
    started = await initialize(alice, "music", {"threadId": "t-broke", "prompt": "a waltz"})
    failed = await alice.wait_status(started["taskId"], *ENDED)
    assert failed["status"] == "failed" and failed["error"]["reason"] == "insufficient_credits"
    assert "generate_music costs 3 credits and the balance is 2" in failed["error"]["message"]
    shown = await media_task(alice, "music", started["taskId"])
    assert shown["status"] == "failed" and shown["error"] == failed["error"] and shown["media"] == []

    low = await jwt_alice.request("POST", f"/music/submit/{started['taskId']}", {})
    assert_message_error(low, 400)
    assert "balance is 2" in body(low)["message"]
    assert_message_error(await jwt_client(parley, http_server_client, "bob").request(
        "POST", f"/music/submit/{started['taskId']}", {}), 403, "a waltz")
    assert_message_error(await jwt_alice.request("POST", "/music/submit/no-such-task", {}), 404)
    assert (await alice.request("POST", f"/music/submit/{started['taskId']}", {})).code == 401  # JWT only

    await parley.runs.plans.grant("alice", 1, "test")  # as `server.py admin grant-credits alice 1` does
    ok = await jwt_alice.request("POST", f"/music/submit/{started['taskId']}", {})
    assert ok.code == 200 and body(ok)["success"] is True, ok.body
    retried = await alice.wait_status(body(ok)["taskId"], *ENDED)
    assert retried["status"] == "completed" and retried["threadId"] == "t-broke"
    shown = await media_task(alice, "music", retried["taskId"])
    (file,) = shown["media"]
    assert file["mediaType"] == "audio/wav"
    assert base64.b64decode(file["url"][len(WAV_URL):]) == media_gen.render_wav("a waltz")
    assert (await profile(alice))["credits"] == 0
    again = await jwt_alice.request("POST", f"/music/submit/{started['taskId']}", {})
    assert_message_error(again, 400)
    assert "already retried" in body(again)["message"]


@with_config({"plans": {"free": {"credits": 0}}})
async def test_submit_while_the_thread_runs_is_409_with_the_live_task(parley, alice, http_server_client):
    jwt_alice = jwt_client(parley, http_server_client, "alice")
    failed = await initialize(alice, "video", {"threadId": "t-busy", "prompt": "a boat"})
    await alice.wait_status(failed["taskId"], *ENDED)
    await parley.runs.plans.grant("alice", 5, "test")
    live = await alice.start_ok("t-busy", "/sleep 5")
    busy = await jwt_alice.request("POST", f"/video/submit/{failed['taskId']}", {})
    assert busy.code == 409 and body(busy) == {"taskId": live, "reason": "running"}  # native, like POST /task
    await alice.request("DELETE", f"/task/{live}")
    await alice.wait_status(live, *ENDED)
    live = await alice.start_ok("t-busy", "/sleep 5")
    busy = await jwt_alice.request("POST", f"/music/submit/{failed['taskId']}", {})
    assert busy.code == 409 and body(busy) == {"message": "the thread already has a running task", "taskId": live}
    await alice.request("DELETE", f"/task/{live}")


# -- GET …/task/:taskId ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["video", "music"])
async def test_task_shape_ownership_and_errors(alice, bob, http_server_client, kind):
    video = await run_ok(alice, "t-task", "/video a lighthouse")
    shown = await media_task(alice, kind, video)
    assert set(shown) == TASK_KEYS
    assert (shown["taskId"], shown["threadId"], shown["status"], shown["error"]) == (video, "t-task", "completed", None)
    assert isinstance(shown["createdAt"], int) and shown["finishedAt"] >= shown["createdAt"]
    (file,) = shown["media"]
    assert set(file) == {"url", "mediaType", "createdAt"} and file["mediaType"] == "image/apng"
    assert file["url"] == APNG_URL + base64.b64encode(media_gen.render_apng("a lighthouse")).decode()  # as is
    assert shown["createdAt"] <= file["createdAt"] <= shown["finishedAt"]

    plain = await run_ok(alice, "t-task", "just words")
    assert (await media_task(alice, kind, plain))["media"] == []

    intruder = await bob.request("GET", f"/{kind}/task/{video}")
    assert_message_error(intruder, 403, "lighthouse", "data:")
    assert_message_error(await alice.request("GET", f"/{kind}/task/no-such-task"), 404)
    assert_message_error(await Client(http_server_client, token="garbage").request("GET", f"/{kind}/task/{video}"), 401)


async def test_jwt_works_too(parley, alice, http_server_client):
    video = await run_ok(alice, "t-jwt", "/video a cat")
    shown = await media_task(jwt_client(parley, http_server_client, "alice"), "video", video)
    assert shown["taskId"] == video and len(shown["media"]) == 1


# -- GET …/info/:ids -----------------------------------------------------------------------------


async def test_info_lists_own_tasks_in_order_and_the_rest_as_missing(alice, bob):
    music = await run_ok(alice, "t-info", "/music a march")
    plain = await run_ok(alice, "t-info", "words only")
    secret = await run_ok(bob, "t-info-bob", "/music bob's secret song")
    ids = f"{plain}, {secret},no-such-task,{music},{plain},,"
    resp = await alice.request("GET", f"/music/info/{quote(ids)}")
    assert resp.code == 200, resp.body
    out = body(resp)
    assert set(out) == {"tasks", "missing"}
    assert [t["taskId"] for t in out["tasks"]] == [plain, music]
    assert all(set(t) == TASK_KEYS for t in out["tasks"])
    assert out["tasks"][0]["media"] == [] and out["tasks"][1]["media"][0]["mediaType"] == "audio/wav"
    assert out["missing"] == [secret, "no-such-task"]
    assert "secret song" not in resp.body.decode() and "t-info-bob" not in resp.body.decode()
    # The same object as …/task/:taskId.
    assert out["tasks"][1] == await media_task(alice, "video", music)


@pytest.mark.parametrize("ids", [",", " , ,", ",".join(f"t{n}" for n in range(51)), "ok," + "x" * 129])
async def test_info_refuses_bad_id_lists(alice, ids):
    assert_message_error(await alice.request("GET", f"/video/info/{quote(ids)}"), 400)


async def test_info_takes_fifty(alice):
    resp = await alice.request("GET", "/video/info/" + ",".join(f"t{n}" for n in range(50)))
    assert resp.code == 200 and len(body(resp)["missing"]) == 50


# -- POST …/initialize -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind, media_type", [("video", "image/apng"), ("music", "audio/wav")])
async def test_initialize_starts_the_command(alice, kind, media_type):
    started = await initialize(alice, kind, {"prompt": "  northern lights "})
    assert set(started) == {"taskId", "threadId"}
    task = await alice.wait_status(started["taskId"], *ENDED)
    assert task["status"] == "completed" and task["agentId"] == "demo" and task["threadId"] == started["threadId"]
    assert task["userMessage"]["parts"] == [{"type": "text", "text": f"/{kind} northern lights"}]
    (file,) = (await media_task(alice, kind, started["taskId"]))["media"]
    assert file["mediaType"] == media_type
    again = await initialize(alice, kind, {"threadId": started["threadId"], "prompt": "more"})
    assert again["threadId"] == started["threadId"] and again["taskId"] != started["taskId"]
    await alice.wait_status(again["taskId"], *ENDED)


async def test_initialize_refusals(parley, alice, bob):
    await run_ok(alice, "t-init", "hello")
    for payload in ({}, {"prompt": ""}, {"prompt": "   "}, {"prompt": 3}, {"prompt": "x" * 501},
                    {"prompt": "ok", "threadId": ""}, {"prompt": "ok", "threadId": 5}):
        assert_message_error(await alice.request("POST", "/video/initialize", payload), 422)
    assert_message_error(await alice.request("POST", "/music/initialize", raw=b"{not json"), 400)
    assert_message_error(await bob.request("POST", "/video/initialize", {"threadId": "t-init", "prompt": "x"}), 403)
    live = await alice.start_ok("t-init", "/sleep 5")
    busy = await alice.request("POST", "/music/initialize", {"threadId": "t-init", "prompt": "x"})
    assert busy.code == 409 and body(busy) == {"message": "the thread already has a running task", "taskId": live}
    await alice.request("DELETE", f"/task/{live}")
    parley.runs.draining = True
    try:
        assert_message_error(await alice.request("POST", "/video/initialize", {"prompt": "x"}), 503)
    finally:
        parley.runs.draining = False


@with_config({"plans": {"default": "basic", "basic": {"runs_per_day": 1}}})
async def test_initialize_counts_against_the_plan(alice):
    await initialize(alice, "music", {"prompt": "one"})
    refused = await alice.request("POST", "/video/initialize", {"prompt": "two"})
    assert_message_error(refused, 403)
    assert "1 run(s) a day" in body(refused)["message"]


# -- DELETE …/upload/:taskId ---------------------------------------------------------------------


async def test_delete_hides_the_media_but_keeps_the_log(parley, alice, bob):
    video = await run_ok(alice, "t-del", "/video a storm")
    music = await run_ok(alice, "t-del", "/music a storm")
    assert_message_error(await bob.request("DELETE", f"/video/upload/{video}"), 403, "storm")
    assert_message_error(await alice.request("DELETE", "/video/upload/no-such-task"), 404)
    assert len((await media_task(alice, "video", video))["media"]) == 1  # bob changed nothing

    for _ in range(2):  # idempotent
        resp = await alice.request("DELETE", f"/video/upload/{video}")
        assert resp.code == 200 and body(resp) == {"success": True}
    shown = await media_task(alice, "video", video)
    assert shown["media"] == [] and shown["status"] == "completed"
    info = body(await alice.request("GET", f"/video/info/{video},{music}"))
    assert [len(t["media"]) for t in info["tasks"]] == [0, 1]
    versions = body(await alice.request("GET", "/version/versions/t-del"))["versions"]
    assert [v["taskId"] for v in versions] == [music]

    events = await parley.db.read(lambda c: events_sql.for_task(c, video))
    assert [e.data["mediaType"] for e in events if e.type == "file"] == ["image/apng"]  # the log is untouched
    parts = body(await alice.request("GET", "/messages/t-del"))["messages"][1]["parts"]
    assert any(p["type"] == "file" for p in parts)


# -- GET /version/versions/:threadId -------------------------------------------------------------


async def test_versions_are_every_file_of_the_thread_oldest_first(alice, bob, http_server_client):
    image = await run_ok(alice, "t-ver", "/image a tree")
    await run_ok(alice, "t-ver", "no file here")
    video = await run_ok(alice, "t-ver", "/video a tree")
    music = await run_ok(alice, "t-ver", "/music a tree")
    other = await run_ok(alice, "t-ver-other", "/image elsewhere")
    resp = await alice.request("GET", "/version/versions/t-ver")
    assert resp.code == 200, resp.body
    out = body(resp)
    assert set(out) == {"threadId", "versions"} and out["threadId"] == "t-ver"
    assert [(v["taskId"], v["mediaType"]) for v in out["versions"]] == [
        (image, "image/png"), (video, "image/apng"), (music, "audio/wav")]
    assert other not in resp.body.decode()
    messages = body(await alice.request("GET", "/messages/t-ver"))["messages"]
    by_task = {m["metadata"]["taskId"]: m["id"] for m in messages if m["role"] == "assistant"}
    for v in out["versions"]:
        assert set(v) == {"taskId", "messageId", "url", "mediaType", "createdAt"}
        assert v["messageId"] == by_task[v["taskId"]]
        assert v["url"].startswith(f"data:{v['mediaType']};base64,")
    assert [v["createdAt"] for v in out["versions"]] == sorted(v["createdAt"] for v in out["versions"])

    assert_message_error(await bob.request("GET", "/version/versions/t-ver"), 403, "tree", "data:")
    assert body(await alice.request("GET", "/version/versions/no-such-thread")) == {"threadId": "no-such-thread", "versions": []}
    empty = await run_ok(alice, "t-ver-empty", "hello")
    assert empty and body(await alice.request("GET", "/version/versions/t-ver-empty"))["versions"] == []
    resp = await Client(http_server_client, token="garbage").request("GET", "/version/versions/t-ver")
    assert_message_error(resp, 401)


async def test_versions_keep_the_files_of_rewound_runs(alice):
    first = await run_ok(alice, "t-rw", "/image a boat")
    messages = body(await alice.request("GET", "/messages/t-rw"))["messages"]
    second = await alice.start_ok("t-rw", "/image a ship", rewindFrom=messages[0]["id"])
    assert (await alice.wait_status(second, *ENDED))["status"] == "completed"
    live = body(await alice.request("GET", "/messages/t-rw"))["messages"]
    assert len(live) == 2  # the first exchange is superseded
    versions = body(await alice.request("GET", "/version/versions/t-rw"))["versions"]
    assert [v["taskId"] for v in versions] == [first, second]


async def test_routes_are_in_the_openapi_document(http_server_client):
    doc = json.loads((await http_server_client.fetch("/openapi.json")).body)
    for kind in ("video", "music"):
        for path in ("task/{taskId}", "info/{ids}", "submit/{taskId}", "initialize", "upload/{taskId}"):
            assert f"/{kind}/{path}" in doc["paths"]
    assert "/version/versions/{threadId}" in doc["paths"]
