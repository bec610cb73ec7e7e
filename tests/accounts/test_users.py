from __future__ import annotations

import io
import socket

from aiosmtpd.controller import Controller

from runs.plans import PlanConfig
from tests.accounts.conftest import code_for, sign_up, wire
from tests.helpers import Client, body


async def test_profiles(parley, anon, http_server_client):
    ann = await sign_up(anon, parley.data_dir)
    bob = await sign_up(anon, parley.data_dir, "bob@example.com", "bob")
    a = Client(http_server_client, token=ann["access_token"])
    b = Client(http_server_client, token=bob["access_token"])
    r = await a.request("PATCH", "/api/v1/users/me", {"bio": "hi ✓", "avatar_url": "https://img.example/a.png"})
    assert r.code == 200 and body(r)["bio"] == "hi ✓"
    r = await b.request("GET", "/api/v1/users/ann")
    assert r.code == 200 and body(r) == {"id": ann["user"]["id"], "username": "ann",
                                         "avatar_url": "https://img.example/a.png", "bio": "hi ✓"}
    r = await b.request("GET", "/api/v1/users/nobody")
    assert r.code == 404 and r.headers["Content-Type"] == "application/problem+json"
    r = await b.request("GET", "/api/v1/users/a-b")
    assert r.code == 422
    r = await a.request("PATCH", "/api/v1/users/me", {"username": "BOB"})
    assert r.code == 409
    for bad in ({"avatar_url": "javascript:alert(1)"}, {"bio": "x" * 201}, {"username": "ab"}, {"color": 1}):
        r = await a.request("PATCH", "/api/v1/users/me", bad)
        assert r.code == 422, bad
        assert body(r)["errors"]
    r = await a.request("PATCH", "/api/v1/users/me", {"username": "ann_2", "bio": None})
    assert r.code == 200 and body(r)["username"] == "ann_2" and body(r)["bio"] is None
    r = await b.request("GET", "/api/v1/users/ann_2")
    assert r.code == 200


async def test_external_identity_has_no_profile(anon, alice):
    r = await alice.request("GET", "/api/v1/users/me")
    assert r.code == 404
    r = await alice.request("PATCH", "/api/v1/users/me", {"bio": "x"})
    assert r.code == 404
    r = await alice.request("GET", "/api/v1/auth/users?email=alice@example.com")
    assert r.code == 403


async def test_lookup_by_email(parley, anon, http_server_client, accounts):
    ann = await sign_up(anon, parley.data_dir)
    await sign_up(anon, parley.data_dir, "bob@example.com", "bob")
    a = Client(http_server_client, token=ann["access_token"])
    r = await a.request("GET", "/api/v1/auth/users?email=ANN@example.com")
    assert r.code == 200
    info = body(r)
    assert info["id"] == ann["user"]["id"] and info["email"] == "ann@example.com"
    assert info["created_at"].endswith("Z") and info["email_confirmed_at"].endswith("Z")
    r = await a.request("GET", "/api/v1/auth/users?email=bob@example.com")
    assert r.code == 403
    r = await a.request("GET", "/api/v1/auth/users?email=not-an-email")
    assert r.code == 422
    r = await a.request("GET", "/api/v1/auth/users")
    assert r.code == 422
    accounts.admins = {"ann@example.com"}
    r = await a.request("GET", "/api/v1/auth/users?email=bob@example.com")
    assert r.code == 200 and body(r)["email"] == "bob@example.com"
    r = await a.request("GET", "/api/v1/auth/users?email=nobody@example.com")
    assert r.code == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


async def test_smtp_mode(parley, http_server_client):
    sink = Sink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    svc = wire(parley, smtp={"host": "127.0.0.1", "port": port, "from": "Parley <noreply@parley.test>"})
    try:
        from tests.accounts.conftest import Anon
        anon = Anon(http_server_client)
        r = await anon.request("POST", "/api/v1/auth/verifications",
                               {"username": "smtp_user", "email": "smtp@example.com", "password": "12345678"})
        assert r.code == 202
        assert len(sink.messages) == 1
        sender, rcpts, content = sink.messages[0]
        assert rcpts == ["smtp@example.com"] and sender == "noreply@parley.test"
        text = content.decode("utf-8")
        import re
        code = re.search(r"\b(\d{6})\b", text.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in text else text.split("\n\n", 1)[1])
        assert code
        assert not (parley.data_dir / "outbox").exists()
        r = await anon.request("POST", "/api/v1/auth/verifications/verify",
                               {"email": "smtp@example.com", "token": code.group(1)})
        assert r.code == 200
    finally:
        controller.stop()
        svc.close()


async def test_admin_cli(parley, anon, accounts):
    from accounts.admin import admin_main
    out = io.StringIO()
    # the CLI opens its own Database on the same file (WAL)
    rc = await admin_main(["create-user", "Root@Example.com", "root", "--password-stdin"], parley.data_dir,
                          stdin=io.StringIO("s3cret-pass\n"), stdout=out, passwords=accounts.passwords, store=parley.config.store)
    assert rc == 0, out.getvalue()
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "root@example.com", "password": "s3cret-pass"})
    assert r.code == 200
    refresh = body(r)["refresh_token"]
    rc = await admin_main(["create-user", "root@example.com", "root2", "--password-stdin"], parley.data_dir,
                          stdin=io.StringIO("s3cret-pass\n"), stdout=out, passwords=accounts.passwords, store=parley.config.store)
    assert rc == 1
    out = io.StringIO()
    rc = await admin_main(["reset-password", "root@example.com"], parley.data_dir, stdout=out,
                          passwords=accounts.passwords, store=parley.config.store)
    assert rc == 0
    new_password = out.getvalue().split("password: ", 1)[1].split()[0]
    r = await anon.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": refresh})
    assert r.code == 401  # reset revokes every session
    r = await anon.request("POST", "/api/v1/auth/sessions", {"email": "root@example.com", "password": new_password})
    assert r.code == 200
    plans = PlanConfig.from_extra({"plans": {"pro": {"credits": 500}}}, ())
    assert await admin_main(["set-plan", "root", "pro"], parley.data_dir, stdout=io.StringIO(),
                            passwords=accounts.passwords, store=parley.config.store) == 1  # the default config has no plan pro
    assert await admin_main(["set-plan", "root", "pro"], parley.data_dir, stdout=io.StringIO(),
                            passwords=accounts.passwords, plans=plans, store=parley.config.store) == 0
    assert (await accounts.user("username", "root"))["plan"] == "pro"
    assert await admin_main(["set-plan", "root", "gold"], parley.data_dir, stdout=io.StringIO(),
                            passwords=accounts.passwords, plans=plans, store=parley.config.store) == 1
    out = io.StringIO()
    assert await admin_main(["list-users"], parley.data_dir, stdout=out, passwords=accounts.passwords, plans=plans,
                            store=parley.config.store) == 0
    assert "root@example.com\troot\tpro\t500\t" in out.getvalue()
    assert code_for is not None
