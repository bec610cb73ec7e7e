from __future__ import annotations

import asyncio
import logging

from tests.accounts.conftest import Anon, code_for, outbox, sign_up, wire
from tests.helpers import Client, body

V = "/api/v1/auth/verifications"


async def test_whole_path(parley, anon, http_server_client, caplog):
    caplog.set_level(logging.INFO, logger="parley.accounts")
    r = await anon.request("POST", V, {"username": "ann_1", "email": "Ann@Example.com", "password": "correct horse"})
    assert r.code == 202 and body(r) == {"email": "ann@example.com"}
    mails = outbox(parley.data_dir)
    assert len(mails) == 1 and "To: ann@example.com" in mails[0]
    code = code_for(parley.data_dir, "ann@example.com")
    assert code in caplog.text
    r = await anon.request("POST", V + "/verify", {"email": "ann@example.com", "token": code})
    assert r.code == 200, r.body
    tokens = body(r)
    assert tokens["expires_in"] == 3600 and tokens["token_type"] == "bearer"
    assert tokens["user"]["email"] == "ann@example.com"
    uid = tokens["user"]["id"]

    # the access token works on the native surface
    me = Client(http_server_client, token=tokens["access_token"])
    await me.start_ok("t-accounts")
    r = await me.request("GET", "/api/v1/users/me")
    assert r.code == 200 and body(r) == {"id": uid, "username": "ann_1", "avatar_url": None, "bio": None}

    # the code is single-use
    r = await anon.request("POST", V + "/verify", {"email": "ann@example.com", "token": code})
    assert r.code == 401

    # rotation
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": tokens["refresh_token"]})
    assert r.code == 200
    second = body(r)
    assert second["refresh_token"] != tokens["refresh_token"]
    # reuse of the rotated token: 401, and the live one is dead too
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": tokens["refresh_token"]})
    assert r.code == 401
    assert r.headers["Content-Type"] == "application/problem+json"
    problem = body(r)
    assert problem["status"] == 401 and problem["instance"] == "/api/v1/auth/sessions/refresh"
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": second["refresh_token"]})
    assert r.code == 401

    # login, then logout revokes the family
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "ann@example.com", "password": "correct horse"})
    assert r.code == 200
    login = body(r)
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": login["refresh_token"]})
    assert r.code == 200
    third = body(r)
    r = await anon.request("DELETE", "/api/v1/auth/sessions", {"refresh_token": third["refresh_token"]})
    assert r.code == 204
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": third["refresh_token"]})
    assert r.code == 401
    r = await anon.request("DELETE", "/api/v1/auth/sessions", {"refresh_token": "unknown"})
    assert r.code == 204


async def test_jwks(parley, anon):
    for path in ("/.well-known/jwks.json", "/api/v1/.well-known/jwks.json"):
        r = await anon.request("GET", path)
        assert r.code == 200
        assert "max-age=300" in r.headers["Cache-Control"]
        assert body(r) == parley.auth.jwks()


async def test_auth_config_names_the_mail_delivery(parley, anon):
    r = await anon.request("GET", "/api/v1/auth/config")
    assert r.code == 200 and body(r) == {"mail": "outbox"}
    wire(parley, smtp={"host": "127.0.0.1", "port": 1, "from": "noreply@parley.test"})
    r = await anon.request("GET", "/api/v1/auth/config")
    assert body(r) == {"mail": "smtp"}


async def test_an_existing_email_gets_one_notice_a_cooldown(parley, anon):
    """The "already has an account" mail is sent once a minute at most, counted where the rate
    limits are counted (in the database when instances share it), so repeated sign-ups cannot mail-bomb."""
    await sign_up(anon, parley.data_dir)
    before = len(outbox(parley.data_dir))
    for name in ("other", "third", "fourth"):
        r = await anon.request("POST", V, {"username": name, "email": "ann@example.com", "password": "another pass"})
        assert r.code == 202 and body(r) == {"email": "ann@example.com"}
    assert len(outbox(parley.data_dir)) == before + 1


def test_is_loopback():
    from handlers.accounts.auth import is_loopback
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert not any(is_loopback(ip) for ip in ("10.0.0.2", "192.168.1.5", "::ffff:8.8.8.8", "", None, "junk"))


async def test_existing_email_no_enumeration(parley, anon):
    await sign_up(anon, parley.data_dir)
    before = len(outbox(parley.data_dir))
    r = await anon.request("POST", V, {"username": "other", "email": "ann@example.com", "password": "another pass"})
    assert r.code == 202 and body(r) == {"email": "ann@example.com"}
    mails = outbox(parley.data_dir)[before:]
    assert len(mails) == 1 and "already has an account" in mails[0]
    assert "verification code" not in mails[0]
    # resend for an account's email: 204, nothing
    r = await anon.request("POST", V + "/resend", {"email": "ann@example.com"})
    assert r.code == 204
    assert len(outbox(parley.data_dir)) == before + 1


async def test_validation_errors(anon):
    r = await anon.request("POST", V, {"username": "a!", "email": "nope", "password": "short"})
    assert r.code == 422
    assert r.headers["Content-Type"] == "application/problem+json"
    fields = {e["field"] for e in body(r)["errors"]}
    assert fields == {"username", "email", "password"}
    r = await anon.request("POST", V, {"username": "abc", "email": "a@b.co", "password": "12345678",
                                       "redirect_to": "https://evil.example/x"})
    assert r.code == 422 and body(r)["errors"][0]["field"] == "redirect_to"
    r = await anon.request("POST", V, {"username": "abc", "email": "a@b.co", "password": "12345678",
                                       "redirect_to": "http://localhost:3000/welcome"})
    assert r.code == 202
    r = await anon.request("POST", V, raw=b"not json")
    assert r.code == 400
    r = await anon.request("POST", V, [1])
    assert r.code == 422
    r = await anon.request("POST", V + "/resend", {"email": 3})
    assert r.code == 422
    r = await anon.request("POST", V + "/verify", {"email": "a@b.co", "token": "12ab"})
    assert r.code == 422
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "a@b.co"})
    assert r.code == 422
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {})
    assert r.code == 422
    r = await anon.request("DELETE", "/api/v1/auth/sessions", {})
    assert r.code == 422


async def test_username_taken_on_signup(parley, anon):
    await sign_up(anon, parley.data_dir)
    r = await anon.request("POST", V, {"username": "ANN", "email": "new@example.com", "password": "12345678"})
    assert r.code == 409 and body(r)["code"] == "USERNAME_TAKEN"


async def test_five_wrong_codes_kill_the_code(parley, anon):
    r = await anon.request("POST", V, {"username": "bea", "email": "bea@example.com", "password": "12345678"})
    assert r.code == 202
    code = code_for(parley.data_dir, "bea@example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = await anon.request("POST", V + "/verify", {"email": "bea@example.com", "token": wrong})
        assert r.code == 401
    r = await anon.request("POST", V + "/verify", {"email": "bea@example.com", "token": code})
    assert r.code == 401
    # a resend after the cooldown brings a fresh code
    await parley.db.write(lambda tx: tx.execute("UPDATE pending_signups SET last_sent_at = 0"))
    r = await anon.request("POST", V + "/resend", {"email": "bea@example.com"})
    assert r.code == 204
    fresh = code_for(parley.data_dir, "bea@example.com")
    r = await anon.request("POST", V + "/verify", {"email": "bea@example.com", "token": fresh})
    assert r.code == 200


async def test_expired_code(parley, anon):
    await anon.request("POST", V, {"username": "cid", "email": "cid@example.com", "password": "12345678"})
    code = code_for(parley.data_dir, "cid@example.com")
    await parley.db.write(lambda tx: tx.execute("UPDATE pending_signups SET expires_at = 1"))
    r = await anon.request("POST", V + "/verify", {"email": "cid@example.com", "token": code})
    assert r.code == 401 and body(r)["code"] == "INVALID_CODE"


async def test_resend_cooldown(parley, anon):
    await anon.request("POST", V, {"username": "dee", "email": "dee@example.com", "password": "12345678"})
    assert len(outbox(parley.data_dir)) == 1
    r = await anon.request("POST", V + "/resend", {"email": "dee@example.com"})
    assert r.code == 204
    assert len(outbox(parley.data_dir)) == 1  # within the cooldown: nothing sent
    r = await anon.request("POST", V + "/resend", {"email": "nobody@example.com"})
    assert r.code == 204
    await parley.db.write(lambda tx: tx.execute("UPDATE pending_signups SET last_sent_at = 0"))
    r = await anon.request("POST", V + "/resend", {"email": "dee@example.com"})
    assert r.code == 204
    assert len(outbox(parley.data_dir)) == 2


async def test_login_failures(parley, anon):
    await sign_up(anon, parley.data_dir)
    r1 = await anon.request("POST", "/api/v1/auth/sessions", {"email": "ann@example.com", "password": "wrong pass"})
    r2 = await anon.request("POST", "/api/v1/auth/sessions", {"email": "zed@example.com", "password": "wrong pass"})
    assert r1.code == r2.code == 401
    assert body(r1)["detail"] == body(r2)["detail"] and body(r1)["code"] == body(r2)["code"]


async def test_rate_limit_failures_per_email(parley, anon):
    await sign_up(anon, parley.data_dir)
    for _ in range(10):
        r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "ann@example.com", "password": "bad pass"})
        assert r.code == 401
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "ann@example.com", "password": "correct horse"})
    assert r.code == 429
    assert int(r.headers["Retry-After"]) >= 1
    # code checks for the same email share the window
    r = await anon.request("POST", V + "/verify", {"email": "ann@example.com", "token": "000000"})
    assert r.code == 429
    # another email is not affected
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "other@example.com", "password": "bad pass"})
    assert r.code == 401


async def test_rate_limit_per_ip(parley, anon, accounts):
    # at least 30 sign-ups a minute from one IP are allowed; the 61st is refused
    for i in range(60):
        r = await anon.request("POST", V, {"username": f"u{i:03d}", "email": f"u{i}@example.com", "password": "12345678"})
        assert r.code == 202, (i, r.code)
    r = await anon.request("POST", V, {"username": "u999", "email": "u999@example.com", "password": "12345678"})
    assert r.code == 429 and "Retry-After" in r.headers


async def test_concurrent_logins_do_not_block_the_loop(parley, anon, accounts):
    from argon2 import PasswordHasher
    await sign_up(anon, parley.data_dir)
    accounts.passwords.hasher = PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1)
    gaps: list[float] = []
    loop = asyncio.get_running_loop()
    done = False

    async def ticker() -> None:
        last = loop.time()
        while not done:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    t = asyncio.ensure_future(ticker())
    rs = await asyncio.gather(*(anon.request("POST", "/api/v1/auth/sessions",
                                             {"email": "ann@example.com", "password": "correct horse"})
                                for _ in range(20)))
    done = True
    await t
    assert all(r.code == 200 for r in rs)
    assert max(gaps) < 0.5, max(gaps)


async def test_rehash_on_login(parley, anon, accounts):
    from argon2 import PasswordHasher
    await sign_up(anon, parley.data_dir)
    old = (await accounts.user("email", "ann@example.com"))["password_hash"]
    accounts.passwords.hasher = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "ann@example.com", "password": "correct horse"})
    assert r.code == 200
    new = (await accounts.user("email", "ann@example.com"))["password_hash"]
    assert new != old and "m=2048" in new


async def test_anon_is_refused_on_protected_routes(anon):
    for path in ("/api/v1/users/me", "/api/v1/auth/users?email=a@b.co", "/api/v1/users/ann"):
        r = await anon.request("GET", path)
        assert r.code == 401 and r.headers["Content-Type"] == "application/problem+json"


def test_anon_class():
    assert Anon(None).headers()["Content-Type"] == "application/json"
