"""Trust boundaries on every surface (SPEC 13, issue 9): CORS without credentials and without
trusting the Host header, and the default cap of 100 open streams per user."""
from __future__ import annotations

import asyncio

import pytest

from server import Config
from tests.helpers import INTERNAL_KEY


@pytest.fixture
def config_overrides(request):
    """Per-test Config changes: `@pytest.mark.parametrize("config_overrides", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, config_overrides):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, **config_overrides)


def overrides(**values):
    return pytest.mark.parametrize("config_overrides", [values], indirect=True)


async def preflight(http, origin: str, headers: dict[str, str] | None = None):
    return await http.fetch("/task", method="OPTIONS", raise_error=False, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type", **(headers or {})})


# -- CORS ---------------------------------------------------------------------------------

async def test_cors_never_allows_credentials(alice, http_server_client):
    origin = "http://localhost:3000"
    resp = await preflight(http_server_client, origin)
    assert resp.code == 204 and resp.headers.get("Access-Control-Allow-Origin") == origin
    assert "Access-Control-Allow-Credentials" not in resp.headers
    for method, path in (("GET", "/health"), ("POST", "/task"), ("GET", "/task/unknown")):
        resp = await alice.request(method, path, {"threadId": "t-cors", "content": "hi"} if method == "POST" else None,
                                   headers={"Origin": origin})
        assert resp.code in (200, 201, 404), (path, resp.code)
        assert resp.headers.get("Access-Control-Allow-Origin") == origin
        assert "Access-Control-Allow-Credentials" not in resp.headers, path
    resp = await http_server_client.fetch("/task/x", raise_error=False, headers={"Origin": origin})
    assert resp.code == 401 and "Access-Control-Allow-Credentials" not in resp.headers


async def test_own_origin_is_not_taken_from_a_foreign_host(http_server_client):
    # without --public-url the page's own origin counts only when its Host names this server
    resp = await preflight(http_server_client, "http://evil.example", {"Host": "evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await preflight(http_server_client, "http://localhost:1234", {"Host": "localhost:1234"})
    assert resp.headers.get("Access-Control-Allow-Origin") == "http://localhost:1234"


@overrides(public_url="https://chat.example.com", allowed_host=["chat.example.com"])
async def test_with_a_public_url_the_own_origin_is_the_public_one(parley, http_server_client):
    resp = await preflight(http_server_client, "https://chat.example.com")
    assert resp.headers.get("Access-Control-Allow-Origin") == "https://chat.example.com"
    # the Host header no longer makes an origin "own", even an allowed one
    port = http_server_client.get_http_port()
    resp = await preflight(http_server_client, f"http://127.0.0.1:{port}")
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await preflight(http_server_client, "http://chat.example.com", {"Host": "chat.example.com"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await preflight(http_server_client, "http://localhost:3000")  # the configured origins still count
    assert resp.headers.get("Access-Control-Allow-Origin") == "http://localhost:3000"


# -- open streams per user: 100 by default ----------------------------------------------------

async def open_stream(port: int, task_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /stream/{task_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Internal-Key: {INTERNAL_KEY}\r\n"
                 f"X-User-Id: alice\r\n\r\n".encode())
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    return reader, writer, status


async def test_the_101st_open_stream_of_a_user_gets_429(parley, alice, bob, http_server_client):
    assert parley.config.max_streams_per_user == 100  # the default
    port = http_server_client.get_http_port()
    task_id = await alice.start_ok("cap-default", "/sleep 30")
    streams = await asyncio.gather(*(open_stream(port, task_id) for _ in range(100)))
    try:
        assert all(status.startswith(b"HTTP/1.1 200") for _, _, status in streams)
        for _ in range(500):
            if parley.streams.total == 100:
                break
            await asyncio.sleep(0.01)
        assert parley.streams.total == 100
        resp = await alice.request("GET", f"/stream/{task_id}")
        assert resp.code == 429 and resp.headers["Retry-After"]
        other = await bob.start_ok("cap-default-bob", "hi")
        assert (await bob.request("GET", f"/stream/{other}")).code == 200  # the cap is per user
    finally:
        await alice.request("DELETE", f"/task/{task_id}")
        for _, writer, _ in streams:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer, _ in streams), return_exceptions=True)
    for _ in range(500):
        if parley.streams.total == 0:
            break
        await asyncio.sleep(0.01)
    assert parley.streams.total == 0
