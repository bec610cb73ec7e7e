from __future__ import annotations

import re
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from tornado.routing import PathMatches

from accounts import Accounts
from handlers.accounts import auth as accounts_handlers
from tests.helpers import Client, body

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def wire(parley, **kw) -> Accounts:
    """Put a (cheap-hashing) service into the app, and the routes unless server.py already has them."""
    app = parley.app
    routed = any(isinstance(r.matcher, PathMatches) and r.matcher.regex.pattern.startswith("/api/v1/auth/sessions")
                 for r in app.wildcard_router.rules)
    if not routed:
        app.add_handlers(r".*", accounts_handlers.default_handlers)
    old = app.settings.get("accounts")
    kw.setdefault("hasher", CHEAP)
    kw.setdefault("public_url", parley.public_url)
    svc = Accounts(parley.db, parley.auth, parley.data_dir, **kw)
    app.settings["accounts"] = svc
    if old is not None and old is not svc:
        old.close()
    return svc


@pytest.fixture
def accounts(parley):
    svc = wire(parley)
    yield svc
    svc.close()


@pytest.fixture
def anon(http_server_client, accounts):
    return Anon(http_server_client)


class Anon(Client):
    """A client without credentials (the public account routes)."""

    def headers(self, **more: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(self.extra_headers)
        h.update(more)
        return h


def outbox(data_dir: Path) -> list[str]:
    box = data_dir / "outbox"
    if not box.exists():
        return []
    return [f.read_text(encoding="utf-8") for f in sorted(box.glob("*.txt"))]


def code_for(data_dir: Path, email: str) -> str:
    mails = [m for m in outbox(data_dir) if f"To: {email}\n" in m and "verification code" in m]
    assert mails, f"no code mailed to {email}"
    m = re.search(r"\b(\d{6})\b", mails[-1].split("\n\n", 1)[1])
    assert m
    return m.group(1)


async def sign_up(anon: Anon, data_dir: Path, email: str = "ann@example.com", username: str = "ann",
                  password: str = "correct horse") -> dict:
    r = await anon.request("POST", "/api/v1/auth/verifications",
                           {"username": username, "email": email, "password": password})
    assert r.code == 202, (r.code, r.body)
    r = await anon.request("POST", "/api/v1/auth/verifications/verify",
                           {"email": email, "token": code_for(data_dir, email)})
    assert r.code == 200, (r.code, r.body)
    return body(r)
