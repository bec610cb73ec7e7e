"""The web page at /ui/ in real headless Chromium, against a real server process."""
from __future__ import annotations

import http.client
import json
import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

from tests.agents import fake_openai as fo
from tests.e2e.conftest import PASSWORD, Pages, ThreadedFakeLLM, code_from_outbox, log_in, new_identity, shot
from tests.process.proc import Server

STREAMING = re.compile(r"\bstreaming\b")


def send(page: Page, text: str) -> Locator:
    """Type `text`, press Enter; the assistant message that answers it."""
    replies = page.locator("article.msg.assistant")
    n = replies.count()
    page.fill("#input", text)
    page.press("#input", "Enter")
    expect(replies).to_have_count(n + 1)
    return replies.nth(n)


def wait_done(message: Locator, timeout: float = 30_000) -> None:
    expect(message).not_to_have_class(STREAMING, timeout=timeout)


def numbers(message: Locator) -> list[str]:
    return message.locator(".text").inner_text().split()


def thread_id(page: Page) -> str:
    m = re.search(r"#t=(.+)$", page.url)
    assert m, page.url
    return m.group(1)


def token(page: Page) -> str:
    return str(page.evaluate("JSON.parse(localStorage.getItem('parley.session')).access_token"))


def call(server: Server, page: Page, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The API as the page's user (its Bearer token), from outside the browser."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Authorization": f"Bearer {token(page)}"}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=payload, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        conn.close()


# -- accounts ------------------------------------------------------------------------

def test_sign_up_with_the_code_from_the_outbox(pages: Pages, server: Server) -> None:
    page = pages.new()
    page.goto("/")  # a browser at / is sent to the page
    expect(page).to_have_url(re.compile(r"/ui/$"))
    shot(page, "01-log-in")
    username, email = new_identity()
    page.click("#tab-signup")
    page.fill("#signup-form [name=username]", username)
    page.fill("#signup-form [name=email]", email)
    page.fill("#signup-form [name=password]", PASSWORD)
    page.click("#signup-form button[type=submit]")
    expect(page.locator("#code-form")).to_be_visible()
    expect(page.locator("#code-email")).to_have_text(email)
    # dev mode, on the server's own machine: the page shows the code from the outbox and fills it in
    # (from elsewhere it says where the code is: #code-hint, the server's log and data-dir/outbox/)
    expect(page.locator("#dev-code")).to_contain_text("outbox")
    expect(page.locator("#dev-code-value")).to_have_text(code_from_outbox(server, email))
    expect(page.locator("#code-form [name=code]")).to_have_value(code_from_outbox(server, email))
    shot(page, "02-sign-up-code")

    page.fill("#code-form [name=code]", "000000" if code_from_outbox(server, email) != "000000" else "111111")
    page.click("#code-form button[type=submit]")
    expect(page.locator("#auth-error")).to_be_visible()  # a wrong code is refused, plainly

    page.fill("#code-form [name=code]", code_from_outbox(server, email))
    page.click("#code-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text(email)
    expect(page.locator("#agent option")).not_to_have_count(0)
    shot(page, "03-signed-in-empty")

    # log out, and back in with the password
    page.fill("#input", "/count 3")
    page.press("#input", "Enter")
    expect(page).to_have_url(re.compile(r"#t="))
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#auth-info")).to_be_hidden()
    expect(page).to_have_url(re.compile(r"/ui/$"))  # the next user does not land in this thread
    page.fill("#login-form [name=email]", email)
    page.fill("#login-form [name=password]", "not the password")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#auth-error")).to_be_visible()
    log_in(page, email)


def test_token_view_and_renewal(user_page: Any, server: Server) -> None:
    page = user_page()
    page.click("#token-button")
    expect(page.locator("#token-dialog")).to_be_visible()
    first = token(page)
    expect(page.locator("#token-text")).to_have_value(first)
    curl = page.locator("#token-curl").inner_text()
    assert f"{server.base}/thread/threads" in curl and first in curl
    shot(page, "04-api-token")
    assert call(server, page, "GET", "/thread/threads")[0] == 200  # the shown token works on the API
    page.keyboard.press("Escape")

    # an access token about to expire is renewed (the refresh token rotates)
    old_refresh = page.evaluate("JSON.parse(localStorage.getItem('parley.session')).refresh_token")
    page.evaluate("""() => { const s = JSON.parse(localStorage.getItem('parley.session'));
                             s.expires_at = Date.now() + 30000; localStorage.setItem('parley.session', JSON.stringify(s)); }""")
    page.reload()
    page.wait_for_function("(old) => JSON.parse(localStorage.getItem('parley.session')).refresh_token !== old", arg=old_refresh)
    assert token(page) != first
    assert call(server, page, "GET", "/thread/threads")[0] == 200
    expect(page.locator("#app")).to_be_visible()

    # signed out elsewhere (the refresh token's family revoked): the next renewal fails, the page says so
    refresh = page.evaluate("JSON.parse(localStorage.getItem('parley.session')).refresh_token")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("DELETE", "/api/v1/auth/sessions", body=json.dumps({"refresh_token": refresh}),
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 204
    conn.close()
    page.evaluate("""() => { const s = JSON.parse(localStorage.getItem('parley.session'));
                             s.expires_at = Date.now() + 30000; localStorage.setItem('parley.session', JSON.stringify(s)); }""")
    page.reload()
    expect(page.locator("#auth-info")).to_have_text("Your session ended: please log in again.")
    expect(page.locator("#login-form")).to_be_visible()


# -- chat ------------------------------------------------------------------------------

def test_streaming_reply_threads_and_history(user_page: Any, server: Server) -> None:
    page = user_page()
    reply = send(page, "Hello there, **Parley**")
    expect(reply).to_have_class(STREAMING)  # the words arrive one by one
    wait_done(reply)
    expect(reply.locator(".text")).to_have_text('You said: "Hello there, Parley"')
    expect(reply.locator("strong")).to_have_text("Parley")  # Markdown, rendered
    first = thread_id(page)
    expect(page.locator("#threads .thread")).to_have_count(1)
    expect(page.locator("#threads .thread-title")).to_have_text("Hello there, **Parley**")
    expect(page).to_have_title("Hello there, **Parley** · Parley")
    expect(reply).to_have_attribute("aria-busy", "false")
    shot(page, "05-chat-reply")

    # Shift+Enter is a new line, Enter sends
    page.click("#new-thread")
    expect(page.locator("#empty")).to_be_visible()
    page.fill("#input", "line one")
    page.press("#input", "Shift+Enter")
    page.type("#input", "line two")
    page.press("#input", "Enter")
    expect(page.locator("article.msg.user")).to_have_text("line one\nline two")
    wait_done(page.locator("article.msg.assistant").last)
    second = thread_id(page)
    assert second != first
    expect(page.locator("#threads .thread")).to_have_count(2)
    expect(page.locator("#threads .thread").first).to_have_attribute("data-id", second)  # newest first

    # history: the first thread's messages come back from /messages
    page.locator(f'#threads .thread[data-id="{first}"] .thread-open').click()
    expect(page.locator("article.msg.user")).to_have_text(["Hello there, **Parley**"])
    expect(page.locator("article.msg.assistant .text")).to_have_text(['You said: "Hello there, Parley"'])
    shot(page, "06-history")

    # delete the second thread (the page asks first)
    page.locator(f'#threads .thread[data-id="{second}"] .thread-delete').click()
    expect(page.locator("#threads .thread")).to_have_count(1)
    assert call(server, page, "GET", f"/messages/{second}") == (200, {"messages": []})


def test_count_200_with_a_reload_in_the_middle(user_page: Any) -> None:
    page = user_page()
    reply = send(page, "/count 200")
    expect(reply.locator(".text")).to_contain_text(" 40 ")
    resumed: list[dict[str, str]] = []
    page.on("request", lambda r: resumed.append(r.headers) if "/stream/" in r.url else None)
    page.reload()
    reply = page.locator("article.msg.assistant").last
    expect(reply).to_have_class(STREAMING)  # reconnected while the run goes on
    wait_done(reply)
    assert numbers(reply) == [str(k) for k in range(1, 201)]
    assert resumed and "last-event-id" in resumed[0], resumed  # resumed after the last frame it saw
    assert int(resumed[0]["last-event-id"]) > 0
    shot(page, "07-count-200-after-reload")


def test_stop(user_page: Any, server: Server) -> None:
    page = user_page()
    reply = send(page, "/count 100000")
    expect(reply.locator(".text")).to_contain_text(" 5 ")
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator("#send")).to_be_hidden()
    shot(page, "08-running")
    page.click("#stop")
    expect(reply.locator(".msg-stopped")).to_have_text("Stopped.")
    expect(page.locator("#send")).to_be_visible()
    status, body = call(server, page, "GET", f"/thread/{thread_id(page)}/current-task")
    assert status == 200 and body == {"task": None}
    shown = numbers(reply)
    assert shown == [str(k) for k in range(1, len(shown) + 1)] and len(shown) < 100000
    shot(page, "09-stopped")


def test_escape_stops_the_run(user_page: Any) -> None:
    page = user_page()
    reply = send(page, "/sleep 30")
    page.press("#input", "Escape")
    expect(reply.locator(".msg-stopped")).to_have_text("Stopped.")


def test_a_busy_thread_reconnects_instead_of_failing(user_page: Any, server: Server) -> None:
    page = user_page()
    wait_done(send(page, "hi"))
    # a run started elsewhere (another tab, curl) on the same thread
    status, body = call(server, page, "POST", "/task", {"threadId": thread_id(page), "content": "/count 300"})
    assert status == 201, body
    page.fill("#input", "are you there?")
    page.press("#input", "Enter")
    expect(page.locator("#banner")).to_contain_text("already has a run")
    reply = page.locator("article.msg.assistant").last
    wait_done(reply)
    assert numbers(reply) == [str(k) for k in range(1, 301)]
    expect(page.locator("#input")).to_have_value("are you there?")  # not sent: still there to send


def test_approve_a_parked_run(user_page: Any) -> None:
    page = user_page()
    reply = send(page, "/approve refund order 42")
    card = reply.locator(".approval")
    expect(card.locator(".prompt")).to_have_text("refund order 42")
    expect(page.locator("#run-status")).to_have_text("Waiting for your approval.")
    card.locator(".reason").fill("customer is right")
    shot(page, "10-approval")
    card.get_by_role("button", name="Approve").click()
    expect(card.locator(".decision")).to_have_text("Approved: customer is right")
    wait_done(reply)
    expect(reply.locator(".text").last).to_have_text("Approved: refund order 42 (reason: customer is right)")
    shot(page, "11-approved")
    page.reload()  # the decision is part of the history
    expect(page.locator("article.msg.assistant .approval .decision")).to_have_text("Approved: customer is right")


def test_reject_a_parked_run_after_a_reload(user_page: Any) -> None:
    page = user_page()
    reply = send(page, "/approve delete the database")
    expect(reply.locator(".approval .prompt")).to_have_text("delete the database")
    page.reload()  # a parked run is found again, with its card
    card = page.locator("article.msg.assistant .approval")
    expect(card.get_by_role("button", name="Reject")).to_be_visible()
    card.get_by_role("button", name="Reject").click()
    expect(card.locator(".decision")).to_have_text("Rejected")
    reply = page.locator("article.msg.assistant").last
    wait_done(reply)
    expect(reply.locator(".text").last).to_have_text("Rejected: delete the database")
    shot(page, "12-rejected")


def test_tool_cards_and_images(user_page: Any) -> None:
    page = user_page()
    reply = send(page, "/tool calculator 6*7")
    wait_done(reply)
    card = reply.locator(".tool-card")
    expect(card.locator(".tool-name")).to_have_text("calculator")
    expect(card.locator(".tool-state")).to_have_text("done")
    card.locator("summary").click()
    expect(card.locator(".tool-input")).to_contain_text("6*7")
    expect(card.locator(".tool-output")).to_contain_text("42")

    reply = send(page, "/image a lighthouse at dusk")
    wait_done(reply)
    image = reply.locator("img.inline-image")
    expect(image).to_have_count(1)
    assert image.get_attribute("src", timeout=5_000).startswith("data:image/png;base64,")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    expect(reply.locator(".text")).to_be_in_viewport()  # the end stays in view as the image arrives
    shot(page, "13-tools-and-image")

    # music plays in an audio player, the (animated PNG) video shows as an image
    reply = send(page, "/music a calm morning by the sea")
    wait_done(reply)
    audio = reply.locator("audio.inline-audio")
    assert (audio.get_attribute("src") or "").startswith("data:audio/wav;base64,")
    page.wait_for_function("(a) => a.readyState >= 1 && Math.abs(a.duration - 5) < 0.1", arg=audio.element_handle())
    reply = send(page, "/video waves on a beach")
    wait_done(reply)
    video = reply.locator("img.inline-image")
    assert (video.get_attribute("src") or "").startswith("data:image/apng;base64,")
    page.wait_for_function("(img) => img.complete && img.naturalWidth === 160", arg=video.element_handle())
    shot(page, "19-music-and-video")


def test_an_error_is_shown_plainly(user_page: Any) -> None:
    page = user_page()
    reply = send(page, "/fail")
    expect(reply.locator(".msg-error")).to_be_visible()
    expect(page.locator("#send")).to_be_visible()


def test_html_in_a_message_is_shown_as_text(user_page: Any, pages: Pages) -> None:
    page = user_page()
    payload = ('<img src=x onerror="window.__pwned=1;alert(1)"> <script>window.__pwned=2</script> '
               '[click me](javascript:window.__pwned=3)')
    reply = send(page, payload)
    wait_done(reply)
    expect(page.locator("article.msg.user")).to_have_text(payload)
    expect(reply).to_contain_text('<img src=x onerror="window.__pwned=1;alert(1)">')
    expect(page.locator("#messages img")).to_have_count(0)
    expect(page.locator("#messages script")).to_have_count(0)
    expect(page.locator("#messages a")).to_have_count(0)  # a javascript: link stays text
    page.reload()  # and from the history, too
    expect(page.locator("article.msg.user")).to_have_text(payload)
    expect(page.locator("#messages img")).to_have_count(0)
    assert page.evaluate("window.__pwned") is None
    shot(page, "14-xss-as-text")


def test_another_user_cannot_see_the_thread(user_page: Any, server: Server) -> None:
    alice = user_page()
    wait_done(send(alice, "my secret plans"))
    secret_thread = thread_id(alice)

    bob = user_page()
    expect(bob.locator("#no-threads")).to_be_visible()
    expect(bob.locator("#threads .thread")).to_have_count(0)
    bob.goto(f"/ui/#t={secret_thread}")
    expect(bob.locator("#banner")).to_have_text("This thread belongs to another user.")
    expect(bob.locator("#messages")).not_to_contain_text("secret")
    assert call(server, bob, "GET", f"/messages/{secret_thread}")[0] == 403
    shot(bob, "15-other-user")
    # and Bob cannot write into it either
    bob.fill("#input", "hello?")
    bob.press("#input", "Enter")
    expect(bob.locator("#banner")).to_contain_text("another user")
    expect(alice.locator("#threads .thread")).to_have_count(1)


def test_phone_width_and_dark_mode(user_page: Any) -> None:
    page = user_page(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True, has_touch=True)
    wait_done(send(page, "/tool clock"))
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    shot(page, "16-phone-dark")
    page.click("#menu")
    page.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().left === 0")  # slid in
    expect(page.locator("#threads .thread")).to_have_count(1)
    shot(page, "17-phone-threads")
    page.locator("#threads .thread-open").first.click()
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 21, 23)", background  # the dark palette


def test_the_agent_picker_runs_an_llm_agent(user_page: Any, llm: ThreadedFakeLLM) -> None:
    page = user_page()
    expect(page.locator("#agent option")).to_have_text(["Demo", "Assistant"])
    page.select_option("#agent", "assistant")
    llm.script(
        fo.tool_calls(("call_1", "calculator", ['{"expr', 'ession": "6*7"}'])),
        fo.text("Six times seven is **42**.", pieces=4),
    )
    reply = send(page, "What is six times seven?")
    wait_done(reply)
    card = reply.locator(".tool-card")
    expect(card.locator(".tool-name")).to_have_text("calculator")
    expect(card.locator(".tool-state")).to_have_text("done")
    expect(reply.locator(".text")).to_have_text("Six times seven is 42.")
    expect(reply.locator("strong")).to_have_text("42")
    shot(page, "18-llm-agent")
    page.reload()  # the choice is remembered
    expect(page.locator("#agent")).to_have_value("assistant")


def test_without_secure_context_apis(user_page: Any) -> None:
    # Served on a plain-http LAN address, a browser offers no randomUUID, Web Locks or clipboard.
    page = user_page()
    page.add_init_script("delete Crypto.prototype.randomUUID; delete Navigator.prototype.locks;"
                         "delete Navigator.prototype.clipboard;")
    page.reload()
    assert page.evaluate("() => [typeof crypto.randomUUID, typeof navigator.locks]") == ["undefined", "undefined"]
    reply = send(page, "still works")
    wait_done(reply)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", thread_id(page))
    page.click("#token-button")
    page.click("#copy-token")
    expect(page.locator("#copy-token")).to_have_text("Selected: press Ctrl+C")
    assert page.evaluate("() => window.getSelection().toString() || document.activeElement.value") == token(page)
