"""Authentication and ownership over HTTP (SPEC sections 2, 4 and 13).

Every test runs an in-process Parley that trusts, besides its own ES256 key,
a JWKS *URL* (a small https Tornado app started on a free port in the same
IOLoop, whose hits are counted; its self-signed certificate is trusted by that
source only) and a JWKS *file*.  Time as seen by `auth.jwks` is
faked with `clock` so that the one-refetch-per-minute rule can be proven
without waiting.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

import auth.jwks as jwks_mod
from server import Config
from tests.auth import tls
from tests.helpers import INTERNAL_KEY, Client, parse_frames

# ---------------------------------------------------------------------------
# keys and token builders
# ---------------------------------------------------------------------------

EC_URL = ec.generate_private_key(ec.SECP256R1())      # in the JWKS URL, kid ec-url, alg ES256
EC_NOALG = ec.generate_private_key(ec.SECP256R1())    # in the JWKS URL, kid ec-noalg, no alg (ES256 implied)
EC_ENC = ec.generate_private_key(ec.SECP256R1())      # in the JWKS URL, use=enc: never a signing key
EC_FILE = ec.generate_private_key(ec.SECP256R1())     # in the JWKS file, kid ec-file
EC_ROTATED = ec.generate_private_key(ec.SECP256R1())  # added to a source during a test
EC_OTHER = ec.generate_private_key(ec.SECP256R1())    # nobody trusts this one
RSA_ALG = rsa.generate_private_key(public_exponent=65537, key_size=2048)    # kid rsa-alg, alg RS256
RSA_NOALG = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # kid rsa-noalg, no alg
HMAC_SECRET = b"an-oct-key-that-a-jwks-must-never-make-trusted-0123456789"

DROP = object()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, alg: str | None = "ES256", use: str | None = "sig") -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    if use is not None:
        jwk["use"] = use
    return jwk


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, alg: str | None = "RS256") -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def url_jwks() -> dict[str, Any]:
    return {"keys": [
        ec_jwk(EC_URL, "ec-url"),
        ec_jwk(EC_NOALG, "ec-noalg", alg=None, use=None),
        ec_jwk(EC_ENC, "ec-enc", use="enc"),
        rsa_jwk(RSA_ALG, "rsa-alg"),
        rsa_jwk(RSA_NOALG, "rsa-noalg", alg=None),
        {"kty": "oct", "kid": "hmac", "alg": "HS256", "k": b64(HMAC_SECRET)},
    ]}


def file_jwks(*extra: dict[str, Any]) -> dict[str, Any]:
    return {"keys": [ec_jwk(EC_FILE, "ec-file"), *extra]}


def claims(sub: Any = "carol", **over: Any) -> dict[str, Any]:
    now = int(time.time())
    c: dict[str, Any] = {"sub": sub, "aud": "authenticated", "iat": now, "exp": now + 600}
    c.update(over)
    return {k: v for k, v in c.items() if v is not DROP}


def sign(key: Any, alg: str, payload: dict[str, Any], kid: str | None, **headers: Any) -> str:
    """A JWS over exactly `payload` (PyJWS: no claim checks on the way out, so bad claims can be sent)."""
    h = dict(headers)
    if kid is not None:
        h["kid"] = kid
    return jwt.PyJWS().encode(json.dumps(payload).encode(), key, algorithm=alg, headers=h)


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------
# a JWKS endpoint, a fake clock for auth.jwks, and the server under test
# ---------------------------------------------------------------------------

class JWKSServer:
    """An https JWKS URL on a free port of the test's IOLoop; counts its hits."""

    def __init__(self, directory: Path) -> None:
        self.hits = 0
        self.doc: dict[str, Any] = url_jwks()
        self.raw: bytes | None = None   # served instead of `doc` when set
        self.status = 200
        self.delay = 0.0
        self.hang = False
        self.released = asyncio.Event()
        owner = self

        class Handler(web.RequestHandler):
            async def get(self) -> None:
                owner.hits += 1
                if owner.hang:
                    await owner.released.wait()
                    return
                if owner.delay:
                    await asyncio.sleep(owner.delay)
                self.set_status(owner.status)
                self.set_header("Content-Type", "application/json")
                self.finish(owner.raw if owner.raw is not None else json.dumps(owner.doc).encode())

        sock, self.port = bind_unused_port()
        self.server = HTTPServer(web.Application([(r"/.well-known/jwks.json", Handler)]),
                                 ssl_options=tls.server_context(directory))
        self.server.add_sockets([sock])
        self.url = f"https://127.0.0.1:{self.port}/.well-known/jwks.json"
        self.stopped = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.released.set()
            self.server.stop()
            await self.server.close_all_connections()


class FakeClock:
    """Stands in for the `time` module inside auth.jwks: monotonic time can jump forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(jwks_mod, "time", fake)
    return fake


@pytest.fixture
def jwks_server(io_loop, tmp_path):
    srv = JWKSServer(tmp_path)
    yield srv
    io_loop.run_sync(srv.stop)


@pytest.fixture
def jwks_file(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(file_jwks()))
    return path


@pytest.fixture
def config_overrides(request):
    """Per-test Config changes: `@pytest.mark.parametrize("config_overrides", [{...}], indirect=True)`."""
    return getattr(request, "param", {})


@pytest.fixture
def parley_config(tmp_path, jwks_server, jwks_file, config_overrides, clock):
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "internal_key": INTERNAL_KEY,
        "demo_delay_ms": 0,
        "jwks": [jwks_server.url, str(jwks_file)],
    }
    values.update(config_overrides)
    return Config(**values)


@pytest.fixture
def parley(parley):
    """The server of conftest.py, whose JWKS URL source trusts the test certificate (that source only)."""
    for source in parley.auth.sources:
        if source.is_url:
            source.ssl_context = tls.client_context()
    return parley


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def assert_error(resp, status: int, *secrets: str, key: str = "error") -> dict[str, Any]:
    """A JSON error with an `error` string (`message` on kira's routes) that mentions none of `secrets`."""
    assert resp.code == status, (resp.code, resp.body)
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers.get("Content-Type")
    body = json.loads(resp.body)
    assert isinstance(body, dict) and isinstance(body.get(key), str) and body[key], body
    text = resp.body.decode()
    for secret in secrets:
        if secret:
            assert secret not in text, f"error body leaks {secret[:24]}...: {text}"
    return body


async def get(http, path: str, headers: dict[str, str] | None = None, **kw: Any):
    return await http.fetch(path, method="GET", headers=headers or {}, raise_error=False, follow_redirects=False, **kw)


async def post_task(http, headers: dict[str, str], thread_id: str = "t-new", content: str = "hello"):
    body = json.dumps({"threadId": thread_id, "content": content}).encode()
    return await http.fetch("/task", method="POST", body=body, headers={"Content-Type": "application/json", **headers},
                            raise_error=False)


def all_chunks(frames: list) -> list[dict[str, Any]]:
    return [c for f in frames if f.id is not None and f.event is None for c in f.chunks]


async def finished_task(client: Client, thread_id: str, content: str = "hello there") -> tuple[str, list]:
    task_id = await client.start_ok(thread_id, content)
    code, frames = await client.stream(task_id)
    assert code == 200
    assert frames[-1].event == "done", frames[-1]
    return task_id, frames


# ---------------------------------------------------------------------------
# valid credentials
# ---------------------------------------------------------------------------

async def test_issued_jwt_is_the_same_user_as_the_internal_key(parley, alice, http_server_client):
    task_id = await alice.start_ok("t-same-user", "hello")
    await alice.wait_status(task_id, "completed")
    token = parley.auth.issue_jwt("alice")
    jwt_alice = Client(http_server_client, token=token)
    info = await jwt_alice.task(task_id)
    assert info["taskId"] == task_id and info["threadId"] == "t-same-user"
    resp = await jwt_alice.request("GET", "/messages/t-same-user")
    assert resp.code == 200
    assert [m["role"] for m in json.loads(resp.body)["messages"]] == ["user", "assistant"]
    # and the other way round: a thread the JWT user starts belongs to the internal-key "alice"
    other = await jwt_alice.start_ok("t-same-user-2", "hi")
    assert (await alice.task(other))["threadId"] == "t-same-user-2"
    # bob's JWT is bob
    resp = await Client(http_server_client, token=parley.auth.issue_jwt("bob")).request("GET", f"/task/{task_id}")
    assert_error(resp, 403, task_id)


async def test_bearer_scheme_is_case_insensitive(parley, alice, http_server_client):
    task_id = await alice.start_ok("t-scheme")
    token = parley.auth.issue_jwt("alice")
    resp = await get(http_server_client, f"/task/{task_id}", {"Authorization": f"bearer {token}"})
    assert resp.code == 200, resp.body


async def test_expired_within_the_leeway_is_accepted(parley, alice, http_server_client):
    task_id = await alice.start_ok("t-leeway")
    key = parley.auth.signing_key
    token = sign(key.private_key, "ES256", claims("alice", iss=parley.auth.issuer, exp=int(time.time()) - 10), key.kid)
    resp = await get(http_server_client, f"/task/{task_id}", bearer(token))
    assert resp.code == 200, resp.body


@pytest.mark.parametrize("key,kid,alg,user", [
    (EC_URL, "ec-url", "ES256", "carol"),
    (EC_NOALG, "ec-noalg", "ES256", "dave"),
    (RSA_ALG, "rsa-alg", "RS256", "erin"),
    (EC_FILE, "ec-file", "ES256", "frank"),
])
async def test_jwks_tokens_are_accepted(http_server_client, key, kid, alg, user):
    token = sign(key, alg, claims(user, iss="https://anything.example"), kid)
    ext = Client(http_server_client, token=token)
    task_id = await ext.start_ok(f"t-{kid}")
    same_user = Client(http_server_client, user)  # the internal key naming the same user sees the task
    assert (await same_user.task(task_id))["threadId"] == f"t-{kid}"
    resp = await Client(http_server_client, "mallory").request("GET", f"/task/{task_id}")
    assert_error(resp, 403, task_id)


async def test_token_without_kid_is_tried_against_all_keys(parley, alice, http_server_client):
    task_id = await alice.start_ok("t-nokid")
    own = jwt.encode(claims("alice", iss=parley.auth.issuer), parley.auth.signing_key.private_key, algorithm="ES256")
    assert (await get(http_server_client, f"/task/{task_id}", bearer(own))).code == 200
    ext = jwt.encode(claims("alice"), EC_URL, algorithm="ES256")
    assert (await get(http_server_client, f"/task/{task_id}", bearer(ext))).code == 200


# ---------------------------------------------------------------------------
# JWT attacks: each one is a 401 on GET /task/:id and on POST /task
# ---------------------------------------------------------------------------

def _own(parley) -> tuple[Any, str, str]:
    k = parley.auth.signing_key
    return k, k.kid, parley.auth.issuer


def _pub_pem(parley) -> bytes:
    return parley.auth.signing_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _alice(parley, **over: Any) -> dict[str, Any]:
    return claims(over.pop("sub", "alice"), **{"iss": parley.auth.issuer, **over})


def _tamper(parley) -> str:
    token = parley.auth.issue_jwt("bob")
    header, payload, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["sub"] = "alice"
    return f"{header}.{b64json(body)}.{sig}"


def _swap_signature(parley) -> str:
    """alice's claims with the signature of a genuine token of bob's."""
    bob = parley.auth.issue_jwt("bob").split(".")
    forged = _tamper(parley).split(".")
    return f"{forged[0]}.{forged[1]}.{bob[2]}"


Attack = Callable[[Any], dict[str, Any]]

ATTACKS: dict[str, Attack] = {
    "alg-none": lambda p: bearer(unsigned({"alg": "none", "typ": "JWT"}, _alice(p))),
    "alg-none-with-server-kid": lambda p: bearer(unsigned({"alg": "none", "kid": _own(p)[1]}, _alice(p))),
    "alg-None-capitalised": lambda p: bearer(unsigned({"alg": "None", "kid": _own(p)[1]}, _alice(p))),
    "alg-none-with-signature": lambda p: bearer(unsigned({"alg": "none"}, _alice(p), b"x" * 64)),
    "hs256-public-pem-server-kid": lambda p: bearer(hs256({"alg": "HS256", "typ": "JWT", "kid": _own(p)[1]}, _alice(p), _pub_pem(p))),
    "hs256-public-pem-no-kid": lambda p: bearer(hs256({"alg": "HS256", "typ": "JWT"}, _alice(p), _pub_pem(p))),
    "hs256-public-pem-stripped": lambda p: bearer(hs256({"alg": "HS256", "kid": _own(p)[1]}, _alice(p), _pub_pem(p).strip())),
    "hs256-public-jwk-json": lambda p: bearer(hs256({"alg": "HS256", "kid": _own(p)[1]}, _alice(p),
                                                    json.dumps(p.auth.signing_key.public_jwk()).encode())),
    "hs256-jwks-oct-key": lambda p: bearer(hs256({"alg": "HS256", "kid": "hmac"}, claims("alice"), HMAC_SECRET)),
    "other-ec-key-with-server-kid": lambda p: bearer(sign(EC_OTHER, "ES256", _alice(p), _own(p)[1])),
    "other-ec-key-no-kid": lambda p: bearer(sign(EC_OTHER, "ES256", _alice(p), None)),
    "other-ec-key-with-jwks-kid": lambda p: bearer(sign(EC_OTHER, "ES256", claims("alice"), "ec-url")),
    "file-key-with-url-kid": lambda p: bearer(sign(EC_FILE, "ES256", claims("alice"), "ec-url")),
    "embedded-jwk-header": lambda p: bearer(sign(EC_OTHER, "ES256", claims("alice"), "attacker",
                                                 jwk=ec_jwk(EC_OTHER, "attacker"))),
    "jku-header": lambda p: bearer(sign(EC_OTHER, "ES256", claims("alice"), "attacker", jku="http://127.0.0.1:9/jwks")),
    "enc-use-key": lambda p: bearer(sign(EC_ENC, "ES256", claims("alice"), "ec-enc")),
    "expired-beyond-leeway": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, exp=int(time.time()) - 120), _own(p)[1])),
    "expired-issued-by-server": lambda p: bearer(p.auth.issue_jwt("alice", ttl_s=-120)),
    "expired-jwks": lambda p: bearer(sign(EC_URL, "ES256", claims("alice", exp=int(time.time()) - 120), "ec-url")),
    "missing-exp": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, exp=DROP), _own(p)[1])),
    "exp-not-a-number": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, exp="tomorrow"), _own(p)[1])),
    "not-yet-valid": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, nbf=int(time.time()) + 300), _own(p)[1])),
    "missing-sub": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, sub=DROP), _own(p)[1])),
    "empty-sub": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, sub=""), _own(p)[1])),
    "numeric-sub": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, sub=12345), _own(p)[1])),
    "sub-129-chars": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, sub="a" * 129), _own(p)[1])),
    "wrong-aud": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, aud="someone-else"), _own(p)[1])),
    "missing-aud": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p, aud=DROP), _own(p)[1])),
    "wrong-aud-jwks": lambda p: bearer(sign(EC_URL, "ES256", claims("alice", aud="anon"), "ec-url")),
    "crit-header": lambda p: bearer(sign(_own(p)[0].private_key, "ES256", _alice(p), _own(p)[1], crit=["x-unknown"], **{"x-unknown": 1})),
    "crit-header-jwks": lambda p: bearer(sign(EC_URL, "ES256", claims("alice"), "ec-url", crit=["exp"])),
    "rs256-with-jwks-ec-kid": lambda p: bearer(sign(RSA_ALG, "RS256", claims("alice"), "ec-url")),
    "rs256-with-jwks-ec-noalg-kid": lambda p: bearer(sign(RSA_ALG, "RS256", claims("alice"), "ec-noalg")),
    "rs256-with-server-kid": lambda p: bearer(sign(RSA_ALG, "RS256", _alice(p), _own(p)[1])),
    "rs256-key-without-alg": lambda p: bearer(sign(RSA_NOALG, "RS256", claims("alice"), "rsa-noalg")),
    "rs256-no-kid-key-without-alg": lambda p: bearer(sign(RSA_NOALG, "RS256", claims("alice"), None)),
    "rs256-no-kid-untrusted-key": lambda p: bearer(sign(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                                        "RS256", claims("alice"), None)),
    "es256-with-rsa-kid": lambda p: bearer(sign(EC_OTHER, "ES256", claims("alice"), "rsa-alg")),
    "ps256-with-rsa-kid": lambda p: bearer(sign(RSA_ALG, "PS256", claims("alice"), "rsa-alg")),
    "es384-with-server-kid": lambda p: bearer(sign(ec.generate_private_key(ec.SECP384R1()), "ES384", _alice(p), _own(p)[1])),
    "tampered-payload": lambda p: bearer(_tamper(p)),
    "swapped-signature": lambda p: bearer(_swap_signature(p)),
    "signature-stripped": lambda p: bearer(p.auth.issue_jwt("alice").rsplit(".", 1)[0] + "."),
    "two-segments": lambda p: bearer(p.auth.issue_jwt("alice").rsplit(".", 1)[0]),
    "garbage": lambda p: bearer("garbage"),
    "garbage-three-segments": lambda p: bearer("a.b.c"),
    "garbage-base64-json-array": lambda p: bearer(f"{b64json([1])}.{b64json({})}.{b64(b'x')}"),
    "basic-auth": lambda p: {"Authorization": "Basic " + base64.b64encode(b"alice:password").decode()},
    "token-without-scheme": lambda p: {"Authorization": p.auth.issue_jwt("alice")},
    "empty-bearer": lambda p: {"Authorization": "Bearer "},
    "bare-bearer": lambda p: {"Authorization": "Bearer"},
    "empty-authorization": lambda p: {"Authorization": ""},
    "no-credentials": lambda p: {},
    "jwt-in-x-internal-key": lambda p: {"X-Internal-Key": p.auth.issue_jwt("alice"), "X-User-Id": "alice"},
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_jwt_attacks_get_401(parley, alice, http_server_client, jwks_server, attack):
    task_id = await alice.start_ok("t-attacked", "secret words")
    headers = ATTACKS[attack](parley)
    auth_value = headers.get("Authorization", "")
    token = auth_value.partition(" ")[2] if " " in auth_value else auth_value
    token = token if len(token) > 8 else ""  # only real token material counts as a secret
    resp = await get(http_server_client, f"/task/{task_id}", headers)
    assert_error(resp, 401, token, task_id, "secret words")
    assert resp.headers.get("Content-Type", "").startswith("application/json")
    resp = await post_task(http_server_client, headers, thread_id=f"t-by-{attack}")
    assert_error(resp, 401, token)
    # the refused POST started nothing under alice's name
    resp = await alice.request("GET", f"/thread/t-by-{attack}/current-task")
    assert resp.code == 200 and json.loads(resp.body) == {"task": None}
    assert (await alice.request("GET", f"/messages/t-by-{attack}")).body == b'{"messages":[]}'


@pytest.mark.parametrize("param", ["access_token", "token", "jwt", "authorization"])
async def test_valid_jwt_in_the_query_string_is_refused(parley, alice, http_server_client, param):
    task_id = await alice.start_ok("t-query")
    token = parley.auth.issue_jwt("alice")
    resp = await get(http_server_client, f"/task/{task_id}?{param}={token}")
    assert_error(resp, 401, token, task_id)
    resp = await http_server_client.fetch(f"/task?{param}={token}", method="POST", raise_error=False,
                                          body=json.dumps({"threadId": "t-query-2", "content": "x"}))
    assert_error(resp, 401, token)
    # a JWT is not a stream token either
    await alice.wait_status(task_id, "completed")
    resp = await get(http_server_client, f"/stream/{task_id}?{param}={token}")
    assert_error(resp, 401, token, task_id)


async def test_invalid_bearer_does_not_fall_back_to_the_internal_key(alice, http_server_client):
    task_id = await alice.start_ok("t-fallback")
    headers = {"Authorization": "Bearer garbage", "X-Internal-Key": INTERNAL_KEY, "X-User-Id": "alice"}
    assert_error(await get(http_server_client, f"/task/{task_id}", headers), 401, task_id)


# ---------------------------------------------------------------------------
# issuer
# ---------------------------------------------------------------------------

ISSUER = "https://issuer.example/auth/v1"


@pytest.mark.parametrize("config_overrides", [{"jwt_issuer": ISSUER}], indirect=True)
@pytest.mark.parametrize("iss", ["https://evil.example/auth/v1", ISSUER + "/", ISSUER.upper(), "", DROP, ["x", ISSUER]])
async def test_wrong_iss_is_refused_when_configured(config_overrides, alice, http_server_client, iss):
    task_id = await alice.start_ok("t-iss")
    token = sign(EC_URL, "ES256", claims("alice", iss=iss), "ec-url")
    assert_error(await get(http_server_client, f"/task/{task_id}", bearer(token)), 401, token, task_id)
    assert_error(await post_task(http_server_client, bearer(token), "t-iss-2"), 401, token)


@pytest.mark.parametrize("config_overrides", [{"jwt_issuer": ISSUER}], indirect=True)
async def test_exact_iss_is_accepted_when_configured(config_overrides, alice, http_server_client):
    task_id = await alice.start_ok("t-iss-ok")
    token = sign(EC_URL, "ES256", claims("alice", iss=ISSUER), "ec-url")
    assert (await get(http_server_client, f"/task/{task_id}", bearer(token))).code == 200


@pytest.mark.parametrize("config_overrides", [{"jwt_issuer": ISSUER}], indirect=True)
async def test_server_issued_tokens_still_work_when_an_external_issuer_is_configured(config_overrides, parley, alice, http_server_client):
    """`--jwt-issuer` names the issuer of *external* tokens (Config help); the server's own
    tokens (section 9 logins) carry its own `iss` and must keep working."""
    task_id = await alice.start_ok("t-own-iss")
    resp = await get(http_server_client, f"/task/{task_id}", bearer(parley.auth.issue_jwt("alice")))
    assert resp.code == 200, resp.body


async def test_iss_is_not_checked_when_not_configured(alice, http_server_client):
    task_id = await alice.start_ok("t-any-iss")
    for iss in ("https://a.example", DROP):
        token = sign(EC_URL, "ES256", claims("alice", iss=iss), "ec-url")
        assert (await get(http_server_client, f"/task/{task_id}", bearer(token))).code == 200


@pytest.mark.parametrize("config_overrides", [{"jwt_audience": "my-app"}], indirect=True)
async def test_configured_audience(config_overrides, parley, alice, http_server_client):
    task_id = await alice.start_ok("t-aud")
    good = sign(EC_URL, "ES256", claims("alice", aud="my-app"), "ec-url")
    listed = sign(EC_URL, "ES256", claims("alice", aud=["other", "my-app"]), "ec-url")
    default = sign(EC_URL, "ES256", claims("alice"), "ec-url")
    assert (await get(http_server_client, f"/task/{task_id}", bearer(good))).code == 200
    assert (await get(http_server_client, f"/task/{task_id}", bearer(listed))).code == 200
    assert (await get(http_server_client, f"/task/{task_id}", bearer(parley.auth.issue_jwt("alice")))).code == 200
    assert_error(await get(http_server_client, f"/task/{task_id}", bearer(default)), 401, default)


# ---------------------------------------------------------------------------
# JWKS URL: cache, rotation, refetch limit, endpoint down
# ---------------------------------------------------------------------------

def ext(kid: str = "ec-url", key: Any = EC_URL, sub: str = "carol") -> dict[str, str]:
    return bearer(sign(key, "ES256", claims(sub), kid))


async def test_unknown_kid_refetches_at_most_once_a_minute(http_server_client, jwks_server, clock):
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    assert jwks_server.hits == 1
    # a flood of unknown kids within the minute: at most one refetch
    for i in range(10):
        resp = await get(http_server_client, "/thread/t/current-task", ext(f"unknown-{i}", EC_OTHER))
        assert_error(resp, 401)
    assert jwks_server.hits <= 2
    # the known key keeps working from the cache, without fetching
    before = jwks_server.hits
    for _ in range(3):
        assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    assert jwks_server.hits == before
    # a minute later: again at most one refetch for any number of unknown kids
    clock.advance(61)
    for i in range(10):
        assert_error(await get(http_server_client, "/thread/t/current-task", ext(f"unknown-b{i}", EC_OTHER)), 401)
    assert before <= jwks_server.hits <= before + 1
    after_second_minute = jwks_server.hits
    clock.advance(61)
    for i in range(5):
        assert_error(await get(http_server_client, "/thread/t/current-task", ext(f"unknown-c{i}", EC_OTHER)), 401)
    assert jwks_server.hits <= after_second_minute + 1
    assert jwks_server.hits >= 2, "an unknown kid never caused a refetch"


async def test_rotation_new_kid_is_picked_up(http_server_client, jwks_server, clock):
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    jwks_server.doc = {"keys": [ec_jwk(EC_ROTATED, "ec-rotated")]}
    clock.advance(61)
    resp = await get(http_server_client, "/thread/t/current-task", ext("ec-rotated", EC_ROTATED, sub="carol"))
    assert resp.code == 200, resp.body
    assert jwks_server.hits == 2
    # the key that was rotated out is gone after that refetch
    assert_error(await get(http_server_client, "/thread/t/current-task", ext()), 401)


async def test_cached_keys_keep_working_when_the_endpoint_is_down(http_server_client, jwks_server, clock):
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    await jwks_server.stop()
    clock.advance(3600)  # the cache is stale and any refetch is allowed: it fails
    resp = await get(http_server_client, "/thread/t/current-task", ext())
    assert resp.code == 200, resp.body
    assert_error(await get(http_server_client, "/thread/t/current-task", ext("unknown", EC_OTHER)), 401)
    clock.advance(61)
    assert_error(await get(http_server_client, "/thread/t/current-task", ext("unknown-2", EC_OTHER)), 401)
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    assert (await get(http_server_client, "/health")).code == 200


async def test_cached_keys_keep_working_when_the_endpoint_errors(http_server_client, jwks_server, clock):
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    jwks_server.status = 500
    jwks_server.raw = b'{"error": "boom"}'
    clock.advance(3600)
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    clock.advance(61)
    assert_error(await get(http_server_client, "/thread/t/current-task", ext("unknown", EC_OTHER)), 401)
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    assert jwks_server.hits >= 2


@pytest.mark.parametrize("raw", [
    b"<html>502 bad gateway</html>", b"", b"[]", b'"keys"', b"{}", b'{"keys": null}', b'{"keys": 5}',
    b'{"keys": "abc"}',
])
async def test_malformed_jwks_document_keeps_the_cache_and_never_500s(http_server_client, jwks_server, clock, raw):
    """A 200 whose body is not a JWKS is an endpoint that is down: the cached keys stay,
    tokens are never answered with a 500."""
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    jwks_server.raw = raw
    clock.advance(61)
    assert_error(await get(http_server_client, "/thread/t/current-task", ext("unknown", EC_OTHER)), 401)
    clock.advance(3600)
    resp = await get(http_server_client, "/thread/t/current-task", ext())
    assert resp.code == 200, (resp.code, resp.body)


async def test_jwks_fetch_times_out(http_server_client, jwks_server, clock, monkeypatch):
    monkeypatch.setattr(jwks_mod, "FETCH_TIMEOUT_S", 0.5)
    assert (await get(http_server_client, "/thread/t/current-task", ext())).code == 200
    jwks_server.hang = True
    clock.advance(3600)
    t0 = time.monotonic()
    resp = await get(http_server_client, "/thread/t/current-task", ext(), request_timeout=10)
    assert resp.code == 200, resp.body
    assert time.monotonic() - t0 < 3
    clock.advance(61)
    t0 = time.monotonic()
    assert_error(await get(http_server_client, "/thread/t/current-task", ext("unknown", EC_OTHER), request_timeout=10), 401)
    assert time.monotonic() - t0 < 3


async def test_concurrent_first_requests_share_one_fetch_and_all_succeed(http_server_client, jwks_server):
    """A cold cache with several requests at once: none may be refused while the first fetch is in flight."""
    jwks_server.delay = 0.3
    resps = await asyncio.gather(*(get(http_server_client, "/thread/t/current-task", ext(sub=f"user{i}"))
                                   for i in range(5)))
    assert [r.code for r in resps] == [200] * 5, [(r.code, r.body) for r in resps]
    assert jwks_server.hits == 1


async def test_jwks_file_source_and_its_rotation(http_server_client, jwks_server, jwks_file, clock):
    resp = await get(http_server_client, "/thread/t/current-task", ext("ec-file", EC_FILE, sub="frank"))
    assert resp.code == 200, resp.body
    jwks_file.write_text(json.dumps(file_jwks(ec_jwk(EC_ROTATED, "ec-file-2"))))
    clock.advance(61)
    resp = await get(http_server_client, "/thread/t/current-task", ext("ec-file-2", EC_ROTATED))
    assert resp.code == 200, resp.body
    # the file disappears: its cached keys keep working
    jwks_file.unlink()
    clock.advance(3600)
    assert (await get(http_server_client, "/thread/t/current-task", ext("ec-file", EC_FILE))).code == 200
    assert_error(await get(http_server_client, "/thread/t/current-task", ext("nope", EC_OTHER)), 401)


# ---------------------------------------------------------------------------
# the internal key
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["wrong", INTERNAL_KEY + "x", INTERNAL_KEY[:-1], INTERNAL_KEY.upper(), "",
                                 INTERNAL_KEY + "\u00e9", INTERNAL_KEY * 2, "x" * 10_000])
async def test_wrong_internal_key_is_401(alice, http_server_client, key):
    task_id = await alice.start_ok("t-ik")
    headers = {"X-Internal-Key": key, "X-User-Id": "alice"}
    assert_error(await get(http_server_client, f"/task/{task_id}", headers), 401, INTERNAL_KEY, task_id)
    assert_error(await post_task(http_server_client, headers, "t-ik-2"), 401, INTERNAL_KEY)


@pytest.mark.parametrize("user_headers", [{}, {"X-User-Id": ""}])
async def test_internal_key_without_user_id_is_401(alice, http_server_client, user_headers):
    task_id = await alice.start_ok("t-ik-user")
    headers = {"X-Internal-Key": INTERNAL_KEY, **user_headers}
    assert_error(await get(http_server_client, f"/task/{task_id}", headers), 401, INTERNAL_KEY, task_id)
    assert_error(await post_task(http_server_client, headers, "t-ik-user-2"), 401, INTERNAL_KEY)


async def test_internal_key_with_overlong_user_id_is_refused(alice, http_server_client):
    headers = {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": "u" * 129}
    resp = await post_task(http_server_client, headers, "t-long-user")
    assert resp.code in (401, 422), resp.body
    assert_error(resp, resp.code, INTERNAL_KEY)


@pytest.mark.parametrize("config_overrides", [{"internal_key": None}, {"internal_key": ""}], indirect=True)
async def test_server_without_internal_key_refuses_the_header(parley, http_server_client, config_overrides):
    for key in (INTERNAL_KEY, "", "anything"):
        headers = {"X-Internal-Key": key, "X-User-Id": "alice"}
        assert_error(await post_task(http_server_client, headers, "t-no-ik"), 401)
        assert_error(await get(http_server_client, "/thread/t-no-ik/current-task", headers), 401)
    # JWTs still work
    jwt_alice = Client(http_server_client, token=parley.auth.issue_jwt("alice"))
    task_id = await jwt_alice.start_ok("t-no-ik")
    assert (await jwt_alice.task(task_id))["threadId"] == "t-no-ik"


# ---------------------------------------------------------------------------
# stream tokens
# ---------------------------------------------------------------------------

async def test_stream_token_reads_the_stream_without_headers(alice, http_server_client):
    task_id, frames = await finished_task(alice, "t-stream-token")
    info = await alice.task(task_id)
    token = info["streamToken"]
    assert isinstance(token, str) and token
    resp = await get(http_server_client, f"/stream/{task_id}?token={token}")
    assert resp.code == 200, resp.body
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    got = parse_frames(resp.body)
    # a replay may group chunks differently: compare the chunks and the terminal frame
    assert all_chunks(got) == all_chunks(frames)
    assert got[-1].event == "done" and got[-1].id == frames[-1].id


async def test_stream_token_is_bound_to_the_task(parley, alice, http_server_client):
    t1, _ = await finished_task(alice, "t-st-1")
    t2, _ = await finished_task(alice, "t-st-2")
    token1 = (await alice.task(t1))["streamToken"]
    assert_error(await get(http_server_client, f"/stream/{t2}?token={token1}"), 401, token1, t1)
    assert_error(await get(http_server_client, f"/stream/unknown-task?token={token1}"), 401, token1, t1)


def _tampered_stream_tokens(token: str, other_task: str) -> dict[str, str]:
    body, _, mac = token.partition(".")
    claims_ = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    longer = dict(claims_, e=claims_["e"] + 86400)
    other_user = dict(claims_, u="mallory")
    other = dict(claims_, t=other_task)
    flip = "A" if mac[0] != "A" else "B"
    return {
        "mac-flipped": f"{body}.{flip}{mac[1:]}",
        "mac-truncated": f"{body}.{mac[:-2]}",
        "mac-empty": f"{body}.",
        "no-mac": body,
        "extended-expiry": f"{b64json(longer)}.{mac}",
        "other-user": f"{b64json(other_user)}.{mac}",
        "other-task": f"{b64json(other)}.{mac}",
        "garbage": "garbage",
        "empty": "",
        "dot": ".",
    }


STREAM_TOKEN_VARIANTS = ["mac-flipped", "mac-truncated", "mac-empty", "no-mac", "extended-expiry", "other-user",
                         "other-task", "garbage", "empty", "dot"]


@pytest.mark.parametrize("variant", STREAM_TOKEN_VARIANTS)
async def test_tampered_stream_token_is_401(alice, http_server_client, variant):
    task_id, _ = await finished_task(alice, "t-st-tamper")
    other_id, _ = await finished_task(alice, "t-st-tamper-2")
    token = (await alice.task(task_id))["streamToken"]
    bad = _tampered_stream_tokens(token, other_id)[variant]
    target = other_id if variant == "other-task" else task_id
    resp = await get(http_server_client, f"/stream/{target}?token={bad}")
    assert_error(resp, 401, token, *([bad] if len(bad) > 8 else []))


async def test_expired_stream_token_is_401(parley, alice, http_server_client):
    task_id, _ = await finished_task(alice, "t-st-expired")
    token = parley.auth.stream_token("alice", task_id, ttl_s=-5)
    assert_error(await get(http_server_client, f"/stream/{task_id}?token={token}"), 401, token)
    # and it lives about 10 minutes
    fresh = (await alice.task(task_id))["streamToken"]
    body = fresh.partition(".")[0]
    exp = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["e"]
    assert 540 <= exp - time.time() <= 660


async def test_stream_token_of_another_user_is_403(parley, alice, http_server_client):
    task_id, _ = await finished_task(alice, "t-st-bob")
    token = parley.auth.stream_token("bob", task_id)  # genuinely signed, but for bob
    resp = await get(http_server_client, f"/stream/{task_id}?token={token}")
    assert_error(resp, 403, token, "hello there")


async def test_stream_token_is_only_for_the_stream(alice, http_server_client):
    task_id, _ = await finished_task(alice, "t-st-only")
    token = (await alice.task(task_id))["streamToken"]
    assert_error(await get(http_server_client, f"/task/{task_id}?token={token}"), 401, token)
    assert_error(await get(http_server_client, "/messages/t-st-only?token=" + token), 401, token)
    assert_error(await get(http_server_client, "/thread/t-st-only/current-task?token=" + token), 401, token)
    assert_error(await get(http_server_client, f"/task/{task_id}", bearer(token)), 401, token)
    resp = await http_server_client.fetch(f"/task/{task_id}?token={token}", method="DELETE", raise_error=False)
    assert_error(resp, 401, token)


async def test_stream_token_at_or_after_the_terminal_event_is_204(alice, http_server_client):
    task_id, frames = await finished_task(alice, "t-st-204")
    token = (await alice.task(task_id))["streamToken"]
    last = frames[-1].id
    assert last is not None
    for cursor in (last, last + 1, last + 1000):
        resp = await get(http_server_client, f"/stream/{task_id}?token={token}&lastEventId={cursor}")
        assert resp.code == 204, (cursor, resp.code, resp.body)
        assert resp.body == b""
        # an EventSource reconnects with the Last-Event-ID header
        resp = await get(http_server_client, f"/stream/{task_id}?token={token}", {"Last-Event-ID": str(cursor)})
        assert resp.code == 204, (cursor, resp.code, resp.body)
    # before the terminal event: the rest of the stream
    # (the whole run may have been one commit, one frame: the event just before the terminal one)
    before_end = last - 1
    resp = await get(http_server_client, f"/stream/{task_id}?token={token}", {"Last-Event-ID": str(before_end)})
    assert resp.code == 200 and parse_frames(resp.body)[-1].event == "done"
    # without a token (fetch with headers) the terminal frame is sent again
    code, again = await alice.stream(task_id, last_event_id=last)
    assert code == 200
    assert [f.event for f in again if f.id is not None] == ["done"] and again[-1].id == last


async def test_stream_token_on_a_failed_run_at_the_terminal_event_is_204(alice, http_server_client):
    task_id = await alice.start_ok("t-st-fail", "/fail")
    code, frames = await alice.stream(task_id)
    assert code == 200 and frames[-1].event == "error"
    token = (await alice.task(task_id))["streamToken"]
    resp = await get(http_server_client, f"/stream/{task_id}?token={token}&lastEventId={frames[-1].id}")
    assert resp.code == 204


# ---------------------------------------------------------------------------
# JWT-only route
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "key"), [("video", "error"), ("music", "message")])  # native / kira-be shapes
async def test_media_submit_is_jwt_only(parley, alice, bob, http_server_client, kind, key):
    task_id, _ = await finished_task(alice, f"t-{kind}")
    resp = await alice.request("POST", f"/{kind}/submit/{task_id}", {})
    assert_error(resp, 401, INTERNAL_KEY, task_id, key=key)
    jwt_alice = Client(http_server_client, token=parley.auth.issue_jwt("alice"))
    jwt_bob = Client(http_server_client, token=parley.auth.issue_jwt("bob"))
    assert_error(await jwt_alice.request("POST", f"/{kind}/submit/{task_id}", {}), 400, key=key)  # completed: not retryable
    assert_error(await jwt_bob.request("POST", f"/{kind}/submit/{task_id}", {}), 403, task_id, "hello there", key=key)
    assert_error(await jwt_alice.request("POST", f"/{kind}/submit/no-such-task", {}), 404, key=key)
    garbage = Client(http_server_client, token="garbage")
    assert_error(await garbage.request("POST", f"/{kind}/submit/{task_id}", {}), 401, key=key)


# ---------------------------------------------------------------------------
# ownership
# ---------------------------------------------------------------------------

@pytest.fixture(params=["internal", "jwt"])
def intruder(request, parley, http_server_client):
    if request.param == "internal":
        return Client(http_server_client, "bob")
    return Client(http_server_client, token=parley.auth.issue_jwt("bob"))


async def parked_task(alice: Client, thread_id: str) -> str:
    task_id = await alice.start_ok(thread_id, "/approve launch the secret rocket")
    await alice.wait_status(task_id, "parked")
    return task_id


async def test_bob_cannot_read_or_delete_alices_task(alice, intruder):
    task_id = await parked_task(alice, "t-alice-own")
    secrets = (task_id, "secret rocket")
    assert_error(await intruder.request("GET", f"/task/{task_id}"), 403, *secrets)
    assert_error(await intruder.request("DELETE", f"/task/{task_id}"), 403, *secrets)
    assert (await alice.task(task_id))["status"] == "parked"  # not aborted by bob
    code, _ = await intruder.stream(task_id)
    assert code == 403
    resp = await intruder.request("GET", f"/stream/{task_id}")
    assert_error(resp, 403, *secrets)
    resp = await intruder.request("GET", f"/stream/{task_id}", headers={"Last-Event-ID": "999999"})
    assert_error(resp, 403, *secrets)
    # an unknown task is a 404 for anybody
    assert_error(await intruder.request("GET", "/task/no-such-task"), 404)


async def test_bob_cannot_read_alices_thread(alice, intruder):
    task_id = await parked_task(alice, "t-alice-thread")
    secrets = (task_id, "secret rocket")
    assert_error(await intruder.request("GET", "/thread/t-alice-thread/current-task"), 403, *secrets)
    assert_error(await intruder.request("GET", "/messages/t-alice-thread"), 403, *secrets)
    # alice herself sees it
    resp = await alice.request("GET", "/thread/t-alice-thread/current-task")
    assert json.loads(resp.body)["task"]["taskId"] == task_id


async def test_post_on_alices_busy_thread_is_403_never_409(alice, intruder):
    task_id = await parked_task(alice, "t-alice-busy")
    resp = await intruder.start("t-alice-busy", "let me in")
    body = assert_error(resp, 403, task_id, "secret rocket")
    assert "taskId" not in body
    # with a rewind, an agent, a message: still 403 without a leak
    msgs = json.loads((await alice.request("GET", "/messages/t-alice-busy")).body)["messages"]
    resp = await intruder.start("t-alice-busy", "x", rewindFrom=msgs[0]["id"])
    assert_error(resp, 403, task_id, "secret rocket")
    resp = await intruder.request("POST", "/task", {"threadId": "t-alice-busy",
                                                      "message": {"role": "user", "parts": [{"type": "text", "text": "x"}]}})
    assert_error(resp, 403, task_id, "secret rocket")
    # alice gets the 409 with her live task id
    resp = await alice.start("t-alice-busy", "again")
    assert resp.code == 409 and json.loads(resp.body) == {"taskId": task_id, "reason": "running"}
    # nothing of bob's reached the thread
    msgs_after = json.loads((await alice.request("GET", "/messages/t-alice-busy")).body)["messages"]
    assert msgs_after == msgs


async def test_post_on_alices_idle_thread_is_403(alice, intruder):
    task_id, _ = await finished_task(alice, "t-alice-idle")
    resp = await intruder.start("t-alice-idle", "let me in")
    assert_error(resp, 403, task_id, "hello there")


async def test_errors_are_json_and_carry_cors_headers(parley, http_server_client):
    token = parley.auth.issue_jwt("alice", ttl_s=-3600)
    resp = await get(http_server_client, "/task/x", {**bearer(token), "Origin": "http://localhost:3000"})
    assert_error(resp, 401, token)
    assert resp.headers.get("Access-Control-Allow-Origin") == "http://localhost:3000"
