"""The page across a server crash: its stream reconnects after the last id it saw."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Pages, create_account, log_in
from tests.e2e.test_page import STREAMING, numbers, send, thread_id
from tests.process.proc import Server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers on one fixed port and data dir (the page's origin must not change across the restart)."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.close()


def test_the_stream_survives_a_crash_and_restart(browser, tmp_path: Path, own_server: list[Server]) -> None:
    port = free_port()

    def start() -> Server:
        server = Server(tmp_path / "data", tmp_path / f"server-{len(own_server)}.log", demo_delay_ms=15,
                        extra=["--port", str(port)])
        own_server.append(server)
        return server

    server = start()
    pages = Pages(browser, server)
    try:
        _, email = create_account(server)
        page = pages.new()
        log_in(page, email)
        reply = send(page, "/count 100000")
        expect(reply.locator(".text")).to_contain_text(" 30 ")
        resumed: list[dict[str, str]] = []
        page.on("request", lambda r: resumed.append(r.headers) if "/stream/" in r.url else None)

        server.kill()  # kill -9 mid-stream
        expect(page.locator("#run-status")).to_contain_text("reconnecting")
        start()  # recovery ends the interrupted run; the page's retry finds it
        expect(reply).not_to_have_class(STREAMING, timeout=30_000)
        expect(reply.locator(".msg-error")).to_contain_text("server stopped")
        shown = numbers(reply)
        assert shown == [str(k) for k in range(1, len(shown) + 1)] and len(shown) >= 30
        assert resumed and all("last-event-id" in h for h in resumed), resumed
        # the history after the crash holds what was committed, no more and no less
        page.reload()
        expect(page.locator("article.msg.assistant .text")).to_have_text(" ".join(shown))
        assert thread_id(page)
    finally:
        pages.close()
    # the browser logs the cut response and the refused reconnects: expected here, nothing else is
    assert [e for e in pages.errors if "net::ERR_" not in e] == [], pages.errors
