"""Bad requests on the native API (SPEC sections 2, 3, 4): 400 / 413 / 422 / 404, CORS.

After every refusal the server keeps serving (GET /health is 200).
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from server import Config
from tests.helpers import ENDED, INTERNAL_KEY, Client, raw_exchange, request_head

MIB = 1024 * 1024
CORS_HEADERS = ["Authorization", "X-Internal-Key", "X-User-Id", "Content-Type", "Last-Event-ID",
                "traceparent", "tracestate", "baggage"]


@pytest.fixture
def config_overrides(request):
    """Per-test Config changes: `@pytest.mark.parametrize("config_overrides", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, config_overrides):
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "internal_key": INTERNAL_KEY, "demo_delay_ms": 0}
    values.update(config_overrides)
    return Config(**values)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def assert_error(resp, status: int) -> dict[str, Any]:
    assert resp.code == status, (resp.code, resp.body)
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers.get("Content-Type")
    body = json.loads(resp.body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return body


async def healthy(http) -> None:
    resp = await http.fetch("/health", raise_error=False)
    assert resp.code == 200 and json.loads(resp.body) == {"status": "ok"}, (resp.code, resp.body)


async def post_raw(alice: Client, raw: bytes, path: str = "/task", **headers: str):
    return await alice.request("POST", path, raw=raw, headers={"Content-Type": "application/json", **headers})


def chunked(total: int, size: int = 64 * 1024, end: bool = True) -> list[bytes]:
    parts = []
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        parts.append(b"%x\r\n" % n + b" " * n + b"\r\n")
        sent += n
    if end:
        parts.append(b"0\r\n\r\n")
    return parts


# ---------------------------------------------------------------------------
# 400: not JSON
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"{not json", b"hello", b"threadId=t&content=hi", b'{"threadId": "t", "content": "hi"', b"{'a': 1}",
    b"\xff\xfe\x00garbage", b'{"content": "\xff"}', b"[" * 5000 + b"]" * 5000, b"NaN",
    b'{"threadId": "t", "content": "hi"} trailing',
])
async def test_not_json_is_400(alice, http_server_client, raw):
    assert_error(await post_raw(alice, raw), 400)
    await healthy(http_server_client)


async def test_empty_body_is_400(alice, http_server_client):
    assert_error(await post_raw(alice, b""), 400)
    await healthy(http_server_client)


# ---------------------------------------------------------------------------
# 422: JSON of the wrong shape
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [[], [{"threadId": "t", "content": "hi"}], "hello", 42, None, True])
async def test_json_that_is_not_an_object_is_422(alice, http_server_client, value):
    assert_error(await alice.request("POST", "/task", value if value is not None else None,
                                     raw=b"null" if value is None else None), 422)
    await healthy(http_server_client)


def _msg(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    m.update(over)
    return m


BAD_BODIES: dict[str, dict[str, Any]] = {
    "content-number": {"threadId": "t-bad", "content": 42},
    "content-list": {"threadId": "t-bad", "content": ["hi"]},
    "content-object": {"threadId": "t-bad", "content": {"text": "hi"}},
    "content-bool": {"threadId": "t-bad", "content": True},
    "content-empty": {"threadId": "t-bad", "content": ""},
    "content-blank": {"threadId": "t-bad", "content": "   \n\t"},
    "content-too-long": {"threadId": "t-bad", "content": "x" * 100_001},
    "neither-content-nor-message": {"threadId": "t-bad"},
    "content-null-message-null": {"threadId": "t-bad", "content": None, "message": None},
    "both-content-and-message": {"threadId": "t-bad", "content": "hi", "message": _msg()},
    "message-string": {"threadId": "t-bad", "message": "hi"},
    "message-list": {"threadId": "t-bad", "message": [_msg()]},
    "message-role-assistant": {"threadId": "t-bad", "message": _msg(role="assistant")},
    "message-role-system": {"threadId": "t-bad", "message": _msg(role="system")},
    "message-role-tool": {"threadId": "t-bad", "message": _msg(role="tool")},
    "message-role-number": {"threadId": "t-bad", "message": _msg(role=1)},
    "parts-missing": {"threadId": "t-bad", "message": {"role": "user"}},
    "parts-string": {"threadId": "t-bad", "message": _msg(parts="hi")},
    "parts-object": {"threadId": "t-bad", "message": _msg(parts={"type": "text", "text": "hi"})},
    "parts-null": {"threadId": "t-bad", "message": _msg(parts=None)},
    "parts-empty": {"threadId": "t-bad", "message": _msg(parts=[])},
    "parts-too-many": {"threadId": "t-bad", "message": _msg(parts=[{"type": "text", "text": "a"}] * 101)},
    "part-not-object": {"threadId": "t-bad", "message": _msg(parts=["hi"])},
    "part-without-type": {"threadId": "t-bad", "message": _msg(parts=[{"text": "hi"}])},
    "part-type-number": {"threadId": "t-bad", "message": _msg(parts=[{"type": 1, "text": "hi"}])},
    "text-part-without-text": {"threadId": "t-bad", "message": _msg(parts=[{"type": "text"}])},
    "text-part-text-number": {"threadId": "t-bad", "message": _msg(parts=[{"type": "text", "text": 5}])},
    "message-text-too-long": {"threadId": "t-bad", "message": _msg(parts=[{"type": "text", "text": "x" * 60_000}] * 2)},
    "message-id-129": {"threadId": "t-bad", "message": _msg(id="m" * 129)},
    "message-id-number": {"threadId": "t-bad", "message": _msg(id=7)},
    "message-id-empty": {"threadId": "t-bad", "message": _msg(id="")},
    "thread-id-129": {"threadId": "t" * 129, "content": "hi"},
    "thread-id-number": {"threadId": 123, "content": "hi"},
    "thread-id-list": {"threadId": ["t"], "content": "hi"},
    "thread-id-empty": {"threadId": "", "content": "hi"},
    "thread-id-newline": {"threadId": "a\nb", "content": "hi"},
    "thread-id-nul": {"threadId": "a\x00b", "content": "hi"},
    "agent-id-unknown": {"threadId": "t-bad", "content": "hi", "agentId": "no-such-agent"},
    "agent-id-number": {"threadId": "t-bad", "content": "hi", "agentId": 1},
    "agent-id-129": {"threadId": "t-bad", "content": "hi", "agentId": "a" * 129},
    "rewind-from-unknown": {"threadId": "t-bad", "content": "hi", "rewindFrom": "msg_nope"},
    "rewind-from-number": {"threadId": "t-bad", "content": "hi", "rewindFrom": 3},
    "rewind-from-129": {"threadId": "t-bad", "content": "hi", "rewindFrom": "r" * 129},
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_body_is_422(alice, http_server_client, case):
    resp = await alice.request("POST", "/task", BAD_BODIES[case])
    assert_error(resp, 422)
    # nothing was started or stored
    assert json.loads((await alice.request("GET", "/thread/t-bad/current-task")).body) == {"task": None}
    assert json.loads((await alice.request("GET", "/messages/t-bad")).body) == {"messages": []}
    await healthy(http_server_client)


async def test_rewind_from_a_message_of_another_thread_is_422(alice, http_server_client):
    task_id = await alice.start_ok("t-rw-a", "first")
    await alice.wait_status(task_id, *ENDED)
    msgs = json.loads((await alice.request("GET", "/messages/t-rw-a")).body)["messages"]
    assert msgs
    task_b = await alice.start_ok("t-rw-b", "other")
    await alice.wait_status(task_b, *ENDED)
    resp = await alice.start("t-rw-b", "again", rewindFrom=msgs[0]["id"])
    assert_error(resp, 422)
    # on its own thread the same id works
    resp = await alice.start("t-rw-a", "again", rewindFrom=msgs[0]["id"])
    assert resp.code == 201, resp.body


async def test_rewind_from_unknown_on_an_existing_thread_is_422_and_changes_nothing(alice, http_server_client):
    task_id = await alice.start_ok("t-rw-x", "first")
    await alice.wait_status(task_id, *ENDED)
    before = json.loads((await alice.request("GET", "/messages/t-rw-x")).body)["messages"]
    assert_error(await alice.start("t-rw-x", "again", rewindFrom="msg_unknown"), 422)
    after = json.loads((await alice.request("GET", "/messages/t-rw-x")).body)["messages"]
    assert after == before
    await healthy(http_server_client)


async def test_limits_are_inclusive(alice):
    """128-character ids and 100 000 characters of content are fine."""
    resp = await alice.request("POST", "/task", {"threadId": "t" * 128, "content": "x" * 100_000,
                                                  "agentId": "demo"})
    assert resp.code == 201, resp.body
    resp = await alice.request("POST", "/task", {"threadId": "u" * 128, "message": _msg(id="m" * 128)})
    assert resp.code == 201, resp.body


async def test_unauthenticated_bad_body_is_401_first(http_server_client):
    resp = await http_server_client.fetch("/task", method="POST", body=b"{not json", raise_error=False)
    assert_error(resp, 401)


# ---------------------------------------------------------------------------
# 413: bodies over 1 MiB
# ---------------------------------------------------------------------------

async def test_body_of_exactly_1_mib_is_accepted(alice, http_server_client):
    body = json.dumps({"threadId": "t-1mib", "content": "hi"}).encode()
    raw = body + b" " * (MIB - len(body))
    assert len(raw) == MIB
    resp = await post_raw(alice, raw)
    assert resp.code == 201, resp.body


async def test_body_of_1_mib_plus_one_is_413(alice, http_server_client):
    body = json.dumps({"threadId": "t-1mib1", "content": "hi"}).encode()
    raw = body + b" " * (MIB + 1 - len(body))
    assert_error(await post_raw(alice, raw), 413)
    assert json.loads((await alice.request("GET", "/messages/t-1mib1")).body) == {"messages": []}
    await healthy(http_server_client)


async def test_2_mib_body_with_content_length_is_413(alice, http_server_client):
    raw = b'{"threadId": "t-big", "content": "' + b"x" * (2 * MIB) + b'"}'
    assert_error(await post_raw(alice, raw), 413)
    await healthy(http_server_client)
    assert json.loads((await alice.request("GET", "/messages/t-big")).body) == {"messages": []}


async def test_2_mib_body_with_content_length_raw_socket(http_server_client):
    port = http_server_client.get_http_port()
    size = 2 * MIB
    head = request_head("POST", "/task", port, "application/json", f"Content-Length: {size}\r\n")
    parts = [b" " * (64 * 1024)] * (size // (64 * 1024))
    status, headers, body = await raw_exchange(port, head, parts)
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert isinstance(json.loads(body)["error"], str)
    await healthy(http_server_client)


async def test_2_mib_chunked_body_without_content_length_is_413(http_server_client):
    port = http_server_client.get_http_port()
    head = request_head("POST", "/task", port, "application/json", "Transfer-Encoding: chunked\r\n")
    status, headers, body = await raw_exchange(port, head, chunked(2 * MIB))
    assert status == 413
    assert headers["content-type"].startswith("application/json")
    assert isinstance(json.loads(body)["error"], str)
    await healthy(http_server_client)


async def test_chunked_body_that_never_ends_still_gets_its_413(http_server_client):
    """The client keeps the body open after 1 MiB: the 413 comes anyway, within seconds."""
    port = http_server_client.get_http_port()
    head = request_head("POST", "/task", port, "application/json", "Transfer-Encoding: chunked\r\n")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, _, body = await raw_exchange(port, head, chunked(MIB + 64 * 1024, end=False), timeout=15)
    assert status == 413 and json.loads(body)["error"]
    assert loop.time() - t0 < 10
    await healthy(http_server_client)


async def test_huge_declared_content_length_is_413_at_once(http_server_client):
    port = http_server_client.get_http_port()
    head = request_head("POST", "/task", port, "application/json", f"Content-Length: {80 * MIB}\r\n")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, _, body = await raw_exchange(port, head, [], timeout=5)
    assert status == 413 and json.loads(body)["error"]
    assert loop.time() - t0 < 1.5
    await healthy(http_server_client)


async def test_server_keeps_serving_after_many_refusals(alice, http_server_client):
    big = b"x" * (MIB + 10)
    results = await asyncio.gather(
        post_raw(alice, big), post_raw(alice, b"{bad"), alice.request("POST", "/task", [1]),
        post_raw(alice, big), alice.request("POST", "/task", {"threadId": "t" * 200, "content": "x"}),
    )
    assert [r.code for r in results] == [413, 400, 422, 413, 422]
    await healthy(http_server_client)
    task_id = await alice.start_ok("t-after", "hello")
    assert task_id


# ---------------------------------------------------------------------------
# 404 / 405 / other malformed requests
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("POST", "/nope"), ("GET", "/task/a/b"), ("GET", "/tasks"), ("DELETE", "/thread/x/y"),
    ("GET", "/task/" + "x" * 129), ("GET", "/stream/" + "x" * 129), ("GET", "/messages/" + "m" * 129),
])
async def test_unknown_route_is_404_json(alice, http_server_client, method, path):
    resp = await alice.request(method, path, raw=b"{}" if method == "POST" else None)
    assert_error(resp, 404)
    # also without credentials
    resp = await http_server_client.fetch(path, method=method, body=b"{}" if method == "POST" else None,
                                          raise_error=False, allow_nonstandard_methods=True)
    assert_error(resp, 404)
    await healthy(http_server_client)


async def test_wrong_method_is_a_json_error(alice, http_server_client):
    resp = await alice.request("GET", "/task")
    assert_error(resp, 405)
    resp = await alice.request("PUT", "/task/x", {})
    assert_error(resp, 405)


async def test_bad_last_event_id_is_400(alice, http_server_client):
    task_id = await alice.start_ok("t-lei")
    await alice.wait_status(task_id, *ENDED)
    resp = await alice.request("GET", f"/stream/{task_id}", headers={"Last-Event-ID": "abc"})
    assert_error(resp, 400)
    resp = await alice.request("GET", f"/stream/{task_id}?lastEventId=1.5")
    assert_error(resp, 400)
    await healthy(http_server_client)


# ---------------------------------------------------------------------------
# CORS
# ---------------------------------------------------------------------------

async def preflight(http, origin: str, path: str = "/task", method: str = "POST"):
    return await http.fetch(path, method="OPTIONS", raise_error=False, headers={
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, x-internal-key, x-user-id, last-event-id, "
                                          "traceparent, tracestate, baggage",
    })


def listed(header_value: str | None) -> set[str]:
    return {h.strip().lower() for h in (header_value or "").split(",") if h.strip()}


@pytest.mark.parametrize("path,method", [("/task", "POST"), ("/task/abc", "DELETE"), ("/stream/abc", "GET"),
                                         ("/messages/t", "GET")])
async def test_preflight_from_the_default_dev_origin(http_server_client, path, method):
    resp = await preflight(http_server_client, "http://localhost:3000", path, method)
    assert resp.code == 204, resp.body
    assert resp.headers.get("Access-Control-Allow-Origin") == "http://localhost:3000"
    allowed = listed(resp.headers.get("Access-Control-Allow-Headers"))
    assert {h.lower() for h in CORS_HEADERS} <= allowed, allowed
    assert method in {m.upper() for m in listed(resp.headers.get("Access-Control-Allow-Methods"))}
    assert "origin" in listed(",".join(resp.headers.get_list("Vary")))


async def test_preflight_needs_no_credentials_even_while_a_body_route(http_server_client):
    resp = await http_server_client.fetch("/task", method="OPTIONS", raise_error=False,
                                          headers={"Origin": "http://localhost:3000"})
    assert resp.code == 204


async def test_own_origin_is_allowed(http_server_client):
    origin = f"http://127.0.0.1:{http_server_client.get_http_port()}"
    resp = await preflight(http_server_client, origin)
    assert resp.code == 204
    assert resp.headers.get("Access-Control-Allow-Origin") == origin


@pytest.mark.parametrize("origin", [
    "http://evil.example", "http://localhost:3001", "http://localhost:30000", "https://localhost:3000",
    "http://localhost:3000.evil.example", "http://evil.localhost:3000", "null",
])
async def test_disallowed_origin_gets_no_allow_origin(alice, http_server_client, origin):
    resp = await preflight(http_server_client, origin)
    assert "Access-Control-Allow-Origin" not in resp.headers, resp.headers.get("Access-Control-Allow-Origin")
    resp = await alice.request("GET", "/health", headers={"Origin": origin})
    assert resp.code == 200
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_actual_requests_and_errors_carry_cors_headers(alice, http_server_client):
    origin = "http://localhost:3000"
    resp = await alice.request("GET", "/health", headers={"Origin": origin})
    assert resp.headers.get("Access-Control-Allow-Origin") == origin
    resp = await alice.request("POST", "/task", raw=b"{bad", headers={"Origin": origin})
    assert resp.code == 400 and resp.headers.get("Access-Control-Allow-Origin") == origin
    resp = await alice.request("POST", "/task", raw=b" " * (MIB + 1), headers={"Origin": origin})
    assert resp.code == 413 and resp.headers.get("Access-Control-Allow-Origin") == origin
    resp = await http_server_client.fetch("/task/x", raise_error=False, headers={"Origin": origin})
    assert resp.code == 401 and resp.headers.get("Access-Control-Allow-Origin") == origin


@pytest.mark.parametrize("config_overrides", [{"cors_origin": ["https://*.example.com"]}], indirect=True)
@pytest.mark.parametrize("origin,allowed", [
    ("https://app.example.com", True),
    ("https://staging.example.com", True),
    ("https://example.com.evil", False),
    ("https://example.com", False),
    ("https://evilexample.com", False),
    ("http://app.example.com", False),
    ("https://app.example.com.evil", False),
    ("https://app.example.community", False),
    ("http://localhost:3000", False),
])
async def test_wildcard_origin_pattern(http_server_client, config_overrides, origin, allowed):
    resp = await preflight(http_server_client, origin)
    if allowed:
        assert resp.code == 204
        assert resp.headers.get("Access-Control-Allow-Origin") == origin
        assert {h.lower() for h in CORS_HEADERS} <= listed(resp.headers.get("Access-Control-Allow-Headers"))
    else:
        assert "Access-Control-Allow-Origin" not in resp.headers, (origin, resp.headers.get("Access-Control-Allow-Origin"))
