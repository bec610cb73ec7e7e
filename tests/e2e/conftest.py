"""The browser tests: a real server process and Debian's headless Chromium driven by Playwright.

One server for the module's tests (each test signs up its own users, so they
share nothing); a fresh browser context per user.  Screenshots of every screen
go to tests/e2e/screenshots/ (git-ignored) for a person to look at.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.agents.fake_openai import FakeOpenAI, Reply
from tests.process.proc import Server

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent / "screenshots"
PASSWORD = "correct horse battery"
_users = count(1)
EXPECTED_REFUSAL = re.compile(r"Failed to load resource: the server responded with a status of (401|403|409) ")


class ThreadedFakeLLM:
    """The scripted OpenAI-compatible server of tests/agents, on its own event loop in a thread
    (the browser tests are synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.fake = FakeOpenAI()
            self.fake.start()
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    @property
    def base_url(self) -> str:
        return self.fake.base_url

    def script(self, *replies: Reply) -> None:
        self.loop.call_soon_threadsafe(self.fake.script, *replies)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def llm() -> Iterator[ThreadedFakeLLM]:
    fake = ThreadedFakeLLM()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, llm: ThreadedFakeLLM) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("e2e")
    config = base / "parley.toml"
    config.write_text(f"""
[llm.fake]
base_url = "{llm.base_url}"
model = "fake-model"

[[agents]]
id = "assistant"
name = "Assistant"
description = "A react agent on a scripted OpenAI-compatible server"
type = "react"
llm = "fake"
tools = ["calculator", "clock"]
instructions = "You are a helpful assistant."
""")
    # a small delay, so that a person (and a test) can see the words arrive and act mid-stream
    srv = Server(base / "data", base / "server.log", demo_delay_ms=15, extra=["--config", str(config)])
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
    yield browser
    browser.close()


class Pages:
    """Opens pages in fresh contexts (one per user) and closes them after the test."""

    def __init__(self, browser: Browser, server: Server) -> None:
        self.browser = browser
        self.server = server
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def new(self, **context_options: Any) -> Page:
        context_options.setdefault("viewport", {"width": 1280, "height": 800})
        context = self.browser.new_context(base_url=self.server.base, **context_options)
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)
        return page

    def _console(self, msg: Any) -> None:
        # The browser logs every refused request; the tests provoke 401/403/409 on purpose.
        if msg.type == "error" and not EXPECTED_REFUSAL.match(msg.text):
            self.errors.append(f"console {msg.type}: {msg.text}")

    def _dialog(self, dialog: Any) -> None:
        """Accept the page's own "Delete …?" confirmation; any other dialog (an alert) is a failure."""
        if dialog.type == "confirm" and dialog.message.startswith("Delete"):
            dialog.accept()
        else:
            self.errors.append(f"unexpected {dialog.type} dialog: {dialog.message}")
            dialog.dismiss()

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser, server: Server) -> Iterator[Pages]:
    p = Pages(browser, server)
    yield p
    p.close()
    assert not p.errors, p.errors


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def new_identity() -> tuple[str, str]:
    n = next(_users)
    stamp = int(time.time() * 1000) % 10_000_000
    return f"user{stamp}_{n}", f"user{stamp}.{n}@example.com"


def code_from_outbox(server: Server, email: str, timeout: float = 10) -> str:
    """The newest verification code mailed to `email` (dev mode writes mail to data-dir/outbox)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mails = sorted((server.data_dir / "outbox").glob("*.txt"))
        for mail in reversed(mails):
            text = mail.read_text()
            if email in text and (m := re.search(r"\b(\d{6})\b", text)):
                return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no code for {email} in the outbox")


def post_json(server: Server, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        conn.close()


def create_account(server: Server) -> tuple[str, str]:
    """An account made through the API (the sign-up test does it through the page)."""
    username, email = new_identity()
    status, _ = post_json(server, "/api/v1/auth/verifications", {"username": username, "email": email, "password": PASSWORD})
    assert status == 202
    status, body = post_json(server, "/api/v1/auth/verifications/verify",
                             {"email": email, "token": code_from_outbox(server, email)})
    assert status == 200, body
    return username, email


def log_in(page: Page, email: str) -> None:
    page.goto("/ui/")
    page.fill("#login-form [name=email]", email)
    page.fill("#login-form [name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text(email)


@pytest.fixture
def user_page(pages: Pages, server: Server) -> Callable[..., Page]:
    """A page signed in as a new user (logged in through the page's form)."""

    def make(**context_options: Any) -> Page:
        _, email = create_account(server)
        page = pages.new(**context_options)
        log_in(page, email)
        return page

    return make
