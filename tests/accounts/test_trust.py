"""Trust boundaries of the account routes (SPEC 13, issue 9): sign-up takeover, mail links,
the Host allowlist (421), the dev-code route, and whose address the rate limits count."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from tornado.httputil import HTTPHeaders

from handlers.base import client_address, proxy_networks
from server import Config
from tests.accounts.conftest import Anon, code_for, outbox, wire
from tests.helpers import INTERNAL_KEY, body

V = "/api/v1/auth/verifications"
LOGIN = "/api/v1/auth/sessions"
VICTIM = {"username": "victim", "email": "vic@example.com", "password": "victim's own pass"}
ATTACKER = {"username": "mallory", "email": "vic@example.com", "password": "attacker's pass"}


@pytest.fixture
def config_overrides(request):
    """Per-test Config changes: `@pytest.mark.parametrize("config_overrides", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, config_overrides):
    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, **config_overrides)


def overrides(**values):
    return pytest.mark.parametrize("config_overrides", [values], indirect=True)


async def login(anon: Anon, password: str, email: str = "vic@example.com") -> int:
    return (await anon.request("POST", LOGIN, {"email": email, "password": password})).code


async def expire_cooldown(parley) -> None:
    await parley.db.write(lambda tx: tx.execute("UPDATE pending_signups SET last_sent_at = 0"))


# -- 1. a code verifies exactly the request it was mailed for ---------------------------------

async def test_second_signup_within_the_cooldown_changes_nothing(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    victims_code = code_for(parley.data_dir, VICTIM["email"])
    r = await anon.request("POST", V, ATTACKER)
    assert r.code == 202 and body(r) == {"email": "vic@example.com"}  # the same answer as any sign-up
    assert len(outbox(parley.data_dir)) == 1  # within the cooldown nothing is mailed
    r = await anon.request("POST", V + "/verify", {"email": VICTIM["email"], "token": victims_code})
    assert r.code == 200, r.body
    assert await login(anon, ATTACKER["password"]) == 401
    assert await login(anon, VICTIM["password"]) == 200
    me = Anon(anon.http, token=body(r)["access_token"])
    assert body(await me.request("GET", "/api/v1/users/me"))["username"] == "victim"


async def test_second_signup_after_the_cooldown_resends_the_first_request(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    first = code_for(parley.data_dir, VICTIM["email"])
    await expire_cooldown(parley)
    assert (await anon.request("POST", V, ATTACKER)).code == 202
    mails = outbox(parley.data_dir)
    assert len(mails) == 2 and "username victim" in mails[-1] and "mallory" not in mails[-1]
    second = code_for(parley.data_dir, VICTIM["email"])
    assert second != first
    r = await anon.request("POST", V + "/verify", {"email": VICTIM["email"], "token": first})
    assert r.code == 401  # the old code is dead
    r = await anon.request("POST", V + "/verify", {"email": VICTIM["email"], "token": second})
    assert r.code == 200
    assert await login(anon, ATTACKER["password"]) == 401
    assert await login(anon, VICTIM["password"]) == 200


async def test_resend_does_not_reopen_the_hole(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    assert (await anon.request("POST", V, ATTACKER)).code == 202
    await expire_cooldown(parley)
    assert (await anon.request("POST", V + "/resend", {"email": VICTIM["email"]})).code == 204
    assert "username victim" in outbox(parley.data_dir)[-1]
    r = await anon.request("POST", V + "/verify", {"email": VICTIM["email"],
                                                   "token": code_for(parley.data_dir, VICTIM["email"])})
    assert r.code == 200
    assert await login(anon, ATTACKER["password"]) == 401
    assert await login(anon, VICTIM["password"]) == 200


async def test_killing_the_code_does_not_let_a_stranger_replace_the_request(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    code = code_for(parley.data_dir, VICTIM["email"])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await anon.request("POST", V + "/verify", {"email": VICTIM["email"], "token": wrong})).code == 401
    await expire_cooldown(parley)
    assert (await anon.request("POST", V, ATTACKER)).code == 202
    assert "username victim" in outbox(parley.data_dir)[-1]
    r = await anon.request("POST", V + "/verify", {"email": VICTIM["email"],
                                                   "token": code_for(parley.data_dir, VICTIM["email"])})
    assert r.code == 200
    assert await login(anon, ATTACKER["password"]) == 401


async def test_an_expired_request_is_replaced_as_a_whole(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    old = code_for(parley.data_dir, VICTIM["email"])
    await parley.db.write(lambda tx: tx.execute("UPDATE pending_signups SET expires_at = 1, last_sent_at = 0"))
    assert (await anon.request("POST", V, {**VICTIM, "password": "a new password"})).code == 202
    new = code_for(parley.data_dir, VICTIM["email"])
    assert new != old
    assert (await anon.request("POST", V + "/verify", {"email": VICTIM["email"], "token": old})).code == 401
    assert (await anon.request("POST", V + "/verify", {"email": VICTIM["email"], "token": new})).code == 200
    assert await login(anon, "a new password") == 200
    assert await login(anon, VICTIM["password"]) == 401


# -- 2. links in mail come from the public URL, never from the request's Host -----------------

async def test_foreign_host_cannot_plant_a_link(parley, anon):
    r = await anon.request("POST", V, {**VICTIM, "redirect_to": "http://evil.example/enter-code"},
                           headers={"Host": "evil.example"})
    assert r.code in (421, 422)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert not any("evil.example" in m for m in outbox(parley.data_dir))


@overrides(public_url="https://chat.example.com", allowed_host=["evil.example"])
async def test_redirect_must_be_on_the_public_origin_whatever_the_host(parley, anon):
    # evil.example is an allowed Host here, so only the redirect check stands in the way
    r = await anon.request("POST", V, {**VICTIM, "redirect_to": "http://evil.example/enter-code"},
                           headers={"Host": "evil.example"})
    assert r.code == 422 and body(r)["errors"][0]["field"] == "redirect_to"
    assert outbox(parley.data_dir) == []
    r = await anon.request("POST", V, VICTIM, headers={"Host": "evil.example"})
    assert r.code == 202
    mail = outbox(parley.data_dir)[-1]
    assert "https://chat.example.com/ui/" in mail and "evil.example" not in mail
    r = await anon.request("POST", V, {"username": "ann", "email": "ann@example.com", "password": "12345678",
                                       "redirect_to": "https://chat.example.com/enter-code"})
    assert r.code == 202
    assert "Enter it at https://chat.example.com/enter-code" in outbox(parley.data_dir)[-1]


async def test_without_public_url_links_name_the_listener(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    assert f"{parley.url}/ui/" in outbox(parley.data_dir)[-1]
    r = await anon.request("POST", V, {"username": "ann", "email": "ann@example.com", "password": "12345678",
                                       "redirect_to": f"{parley.url}/somewhere"})
    assert r.code == 202


# -- 3. the Host allowlist (DNS rebinding) ----------------------------------------------------

PUBLIC_ROUTES = [
    ("POST", V, VICTIM),
    ("POST", V + "/resend", {"email": "vic@example.com"}),
    ("POST", V + "/verify", {"email": "vic@example.com", "token": "123456"}),
    ("POST", LOGIN, {"email": "vic@example.com", "password": "12345678"}),
    ("DELETE", LOGIN, {"refresh_token": "x"}),
    ("POST", LOGIN + "/refresh", {"refresh_token": "x"}),
    ("GET", "/api/v1/auth/config", None),
    ("GET", "/api/v1/auth/dev-code?email=vic@example.com", None),
]


@overrides(dev=True)
@pytest.mark.parametrize("method,path,payload", PUBLIC_ROUTES)
async def test_foreign_host_gets_421(anon, method, path, payload):
    for host in ("evil.example", "evil.example:8090", "rebind.attacker.test:80", "10.11.12.13"):
        r = await anon.request(method, path, payload, headers={"Host": host})
        assert r.code == 421, (host, r.code, r.body)
        assert r.headers["Content-Type"] == "application/problem+json"
        problem = body(r)
        assert problem["status"] == 421 and problem["title"] == "Misdirected Request"
        assert problem["code"] == "MISDIRECTED_REQUEST" and problem["instance"] == path.split("?")[0]


@overrides(public_url="https://chat.example.com:8443/parley", allowed_host=["parley.internal"])
async def test_allowed_hosts(anon, http_server_client):
    port = http_server_client.get_http_port()
    names = ["localhost", "LOCALHOST:9999", "127.0.0.1", "[::1]:8090", "chat.example.com", "chat.example.com:443",
             "parley.internal", "parley.internal.", f"127.0.0.1:{port}"]
    for host in names:
        r = await anon.request("GET", "/api/v1/auth/config", headers={"Host": host})
        assert r.code == 200, (host, r.code, r.body)
    for host in ("example.com", "chat.example.com.evil.test", "internal", "[::2]"):
        r = await anon.request("GET", "/api/v1/auth/config", headers={"Host": host})
        assert r.code == 421, host


async def test_other_routes_ignore_the_host(anon, alice):
    assert (await anon.request("GET", "/.well-known/jwks.json", headers={"Host": "evil.example"})).code == 200
    r = await alice.request("GET", "/api/v1/users/me", headers={"Host": "evil.example"})
    assert r.code == 404  # authenticated: no Host check (this identity has no local account)


# -- 3. the dev-code route --------------------------------------------------------------------

async def test_no_dev_code_route_without_dev(parley, anon):
    assert (await anon.request("POST", V, VICTIM)).code == 202
    r = await anon.request("GET", "/api/v1/auth/dev-code?email=vic@example.com")
    assert r.code == 404
    assert code_for(parley.data_dir, VICTIM["email"]).encode() not in r.body


@overrides(dev=True)
async def test_dev_code_for_a_browser_on_this_machine(parley, anon, monkeypatch):
    r = await anon.request("POST", V, {"username": "devy", "email": "Devy@Example.com", "password": "12345678"})
    assert r.code == 202
    r = await anon.request("GET", "/api/v1/auth/dev-code?email=devy@example.com")
    assert r.code == 200
    assert body(r) == {"email": "devy@example.com", "code": code_for(parley.data_dir, "devy@example.com")}
    assert r.headers["Content-Type"].startswith("application/json")
    assert (await anon.request("GET", "/api/v1/auth/dev-code?email=nobody@example.com")).code == 404
    bad = await anon.request("GET", "/api/v1/auth/dev-code?email=not-an-email")
    assert bad.code == 422 and bad.headers["Content-Type"].startswith("application/problem+json")
    # not through a proxy: behind one on this machine every client looks local
    for header, value in (("X-Forwarded-For", "203.0.113.7"), ("X-Real-IP", "203.0.113.7"),
                          ("Forwarded", "for=203.0.113.7"), ("X-Forwarded-For", "127.0.0.1")):
        r = await anon.request("GET", "/api/v1/auth/dev-code?email=devy@example.com", headers={header: value})
        assert r.code == 403, (header, r.code)
        assert code_for(parley.data_dir, "devy@example.com").encode() not in r.body
    # not from another machine
    import handlers.accounts.auth as accounts_handlers
    monkeypatch.setattr(accounts_handlers, "is_loopback", lambda ip: False)
    far = await anon.request("GET", "/api/v1/auth/dev-code?email=devy@example.com")
    assert far.code == 403 and b"dev mode" in far.body
    assert code_for(parley.data_dir, "devy@example.com").encode() not in far.body


@overrides(dev=True)
async def test_no_dev_code_with_smtp(parley, anon):
    wire(parley, smtp={"host": "127.0.0.1", "port": 1, "from": "noreply@parley.test"})
    r = await anon.request("GET", "/api/v1/auth/dev-code?email=devy@example.com")
    assert r.code == 403


# -- 3. whose address the rate limits count ---------------------------------------------------

async def exhaust_signup_limit(anon: Anon, headers: dict[str, str]) -> None:
    for i in range(60):  # resends share the sign-up window and hash nothing: fast
        r = await anon.request("POST", V + "/resend", {"email": f"r{i}@example.com"}, headers=headers)
        assert r.code == 204, (i, r.code)
    r = await anon.request("POST", V + "/resend", {"email": "one-more@example.com"}, headers=headers)
    assert r.code == 429


@overrides(trusted_proxy=["127.0.0.0/8"])
async def test_behind_a_trusted_proxy_each_client_has_its_own_limit(anon, caplog):
    caplog.set_level(logging.INFO, logger="parley.access")
    await exhaust_signup_limit(anon, {"X-Forwarded-For": "203.0.113.1"})
    r = await anon.request("POST", V + "/resend", {"email": "b@example.com"}, headers={"X-Forwarded-For": "203.0.113.2"})
    assert r.code == 204
    # a client cannot pick its address: the proxy appends the real one, which is what counts
    r = await anon.request("POST", V + "/resend", {"email": "c@example.com"},
                           headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.1"})
    assert r.code == 429
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "parley.access"]
    assert any("ip=203.0.113.2" in line for line in lines), lines


async def test_without_a_trusted_proxy_forwarding_headers_do_not_escape_the_limit(anon, caplog):
    caplog.set_level(logging.INFO, logger="parley.access")
    await exhaust_signup_limit(anon, {"X-Forwarded-For": "203.0.113.1"})
    for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
        r = await anon.request("POST", V + "/resend", {"email": "b@example.com"}, headers={header: "203.0.113.2"})
        assert r.code == 429, header
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "parley.access"]
    assert lines and not any("203.0.113" in line for line in lines)


def fake_request(peer: str, *forwarded: str) -> SimpleNamespace:
    headers = HTTPHeaders()
    for value in forwarded:
        headers.add("X-Forwarded-For", value)
    return SimpleNamespace(remote_ip=peer, headers=headers)


@pytest.mark.parametrize("peer,forwarded,proxies,expected", [
    ("127.0.0.1", ["203.0.113.5"], [], "127.0.0.1"),                     # no trusted proxy: headers ignored
    ("198.51.100.1", ["203.0.113.5"], ["127.0.0.0/8"], "198.51.100.1"),  # the peer is no trusted proxy
    ("127.0.0.1", ["203.0.113.5"], ["127.0.0.0/8"], "203.0.113.5"),
    ("127.0.0.1", ["1.1.1.1, 203.0.113.5"], ["127.0.0.0/8"], "203.0.113.5"),  # the client wrote 1.1.1.1
    ("127.0.0.1", ["1.1.1.1", "203.0.113.5, 10.0.0.2"], ["127.0.0.1", "10.0.0.0/8"], "203.0.113.5"),
    ("127.0.0.1", ["10.0.0.3, 10.0.0.2"], ["127.0.0.1", "10.0.0.0/8"], "10.0.0.3"),  # every hop is a proxy
    ("127.0.0.1", ["junk, 203.0.113.5"], ["127.0.0.0/8"], "203.0.113.5"),
    ("127.0.0.1", ["203.0.113.5, junk"], ["127.0.0.0/8"], "127.0.0.1"),  # not from the proxy: not trusted
    ("127.0.0.1", [], ["127.0.0.0/8"], "127.0.0.1"),
    ("::ffff:127.0.0.1", ["2001:db8::7"], ["127.0.0.0/8"], "2001:db8::7"),
])
def test_client_address(peer, forwarded, proxies, expected):
    assert client_address(fake_request(peer, *forwarded), proxy_networks(proxies)) == expected
