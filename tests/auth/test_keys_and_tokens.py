"""Unit tests of auth/: the server's keys, issued JWTs, the internal key and stream tokens."""
from __future__ import annotations

import base64
import json
import stat
import time

import jwt
import pytest

import auth as auth_mod
from auth import Authenticator, AuthError
from auth.keys import SigningKey, load_or_create_secret

ISSUER = "parley:test"


@pytest.fixture
def keydir(tmp_path):
    return tmp_path / "data" / "keys"


@pytest.fixture
def authn(keydir):
    key = SigningKey.load_or_create(keydir / "signing-key.pem")
    secret = load_or_create_secret(keydir / "stream-token.secret")
    return Authenticator(key, secret, issuer=ISSUER, internal_key="s3cret-key")


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- keys on disk ----------------------------------------------------------------

def test_keys_are_created_once_with_mode_0600(keydir):
    key = SigningKey.load_or_create(keydir / "signing-key.pem")
    secret = load_or_create_secret(keydir / "stream-token.secret")
    for name in ("signing-key.pem", "stream-token.secret"):
        assert stat.S_IMODE((keydir / name).stat().st_mode) == 0o600
    again = SigningKey.load_or_create(keydir / "signing-key.pem")
    assert again.kid == key.kid
    assert load_or_create_secret(keydir / "stream-token.secret") == secret
    assert len(secret) >= 32


def test_public_jwk_has_no_private_part_and_a_thumbprint_kid(authn):
    jwks = authn.jwks()
    assert len(jwks["keys"]) == 1
    jwk = jwks["keys"][0]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256" and jwk["use"] == "sig"
    assert "d" not in jwk
    assert jwk["kid"] == authn.signing_key.kid
    # RFC 7638 thumbprint, as computed by PyJWT
    pyjwk = jwt.PyJWK(jwk)
    assert pyjwk.key_id == jwk["kid"]


def test_two_data_dirs_have_different_keys(tmp_path):
    a = SigningKey.load_or_create(tmp_path / "a" / "k.pem")
    b = SigningKey.load_or_create(tmp_path / "b" / "k.pem")
    assert a.kid != b.kid


# -- issued JWTs -------------------------------------------------------------------

async def test_issued_jwt_round_trip(io_loop, authn):
    token = authn.issue_jwt("alice", ttl_s=60, role="admin")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == authn.signing_key.kid
    ident = await authn.verify_jwt(token)
    assert ident.user_id == "alice" and ident.via == "jwt"
    assert ident.claims["aud"] == "authenticated" and ident.claims["iss"] == ISSUER and ident.claims["role"] == "admin"
    assert 55 <= ident.claims["exp"] - time.time() <= 65


async def test_token_of_another_server_is_refused(io_loop, authn, tmp_path):
    other = Authenticator(SigningKey.load_or_create(tmp_path / "o.pem"), b"x" * 32, issuer=ISSUER)
    with pytest.raises(AuthError):
        await authn.verify_jwt(other.issue_jwt("alice"))


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Basic abc", "Token abc", "bearer", "Bearerabc"])
async def test_authenticate_refuses_bad_authorization(io_loop, authn, header):
    with pytest.raises(AuthError):
        await authn.authenticate(header, None, None)


async def test_authenticate_prefers_the_authorization_header(io_loop, authn):
    with pytest.raises(AuthError):
        await authn.authenticate("Bearer junk", "s3cret-key", "alice")
    ident = await authn.authenticate(f"Bearer {authn.issue_jwt('bob')}", "s3cret-key", "alice")
    assert ident.user_id == "bob" and ident.via == "jwt"


async def test_jwt_only_refuses_the_internal_key(io_loop, authn):
    with pytest.raises(AuthError):
        await authn.authenticate(None, "s3cret-key", "alice", jwt_only=True)
    ident = await authn.authenticate(f"Bearer {authn.issue_jwt('alice')}", None, None, jwt_only=True)
    assert ident.user_id == "alice"


async def test_no_credentials(io_loop, authn):
    with pytest.raises(AuthError):
        await authn.authenticate(None, None, "alice")


# -- the internal key ---------------------------------------------------------------

def test_internal_key(authn):
    ident = authn.verify_internal("s3cret-key", "alice")
    assert ident.user_id == "alice" and ident.via == "internal"
    for bad in ("", "s3cret-ke", "s3cret-key ", "S3CRET-KEY", "s3cret-key\x00"):
        with pytest.raises(AuthError):
            authn.verify_internal(bad, "alice")
    for user in (None, "", "a" * 129, "bad\nuser", "tab\tuser"):
        with pytest.raises(AuthError):
            authn.verify_internal("s3cret-key", user)
    assert authn.verify_internal("s3cret-key", "a" * 128).user_id == "a" * 128


def test_internal_key_is_compared_in_constant_time(authn, monkeypatch):
    calls = []
    real = auth_mod.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_mod.hmac, "compare_digest", spy)
    authn.verify_internal("s3cret-key", "alice")
    with pytest.raises(AuthError):
        authn.verify_internal("wrong", "alice")
    assert len(calls) == 2


@pytest.mark.parametrize("configured", [None, ""])
def test_internal_key_unset_refuses_everything(keydir, configured):
    a = Authenticator(SigningKey.load_or_create(keydir / "k.pem"), b"s" * 32, issuer=ISSUER, internal_key=configured)
    for key in ("", "s3cret-key", "None"):
        with pytest.raises(AuthError):
            a.verify_internal(key, "alice")


# -- stream tokens ----------------------------------------------------------------

def test_stream_token_round_trip(authn):
    token = authn.stream_token("alice", "task-1")
    ident = authn.verify_stream_token(token, "task-1")
    assert ident.user_id == "alice" and ident.via == "stream-token"
    body = json.loads(b64decode(token.partition(".")[0]))
    assert body["u"] == "alice" and body["t"] == "task-1"
    assert 590 <= body["e"] - time.time() <= 610
    assert "/" not in token and "+" not in token and "=" not in token  # URL-safe as a query value


def test_stream_token_refusals(authn, keydir):
    token = authn.stream_token("alice", "task-1")
    body, _, mac = token.partition(".")
    with pytest.raises(AuthError):
        authn.verify_stream_token(token, "task-2")
    with pytest.raises(AuthError):
        authn.verify_stream_token(authn.stream_token("alice", "task-1", ttl_s=-1), "task-1")
    forged = base64.urlsafe_b64encode(json.dumps({"u": "bob", "t": "task-1", "e": int(time.time()) + 600}).encode())
    with pytest.raises(AuthError):
        authn.verify_stream_token(forged.decode().rstrip("=") + "." + mac, "task-1")
    for bad in ("", ".", body, body + ".", "." + mac, mac + "." + body, token + "x", token[:-1], "a.b.c"):
        with pytest.raises(AuthError):
            authn.verify_stream_token(bad, "task-1")
    # a server with another secret (another data dir) does not accept it
    other = Authenticator(authn.signing_key, b"another-secret" * 3, issuer=ISSUER)
    with pytest.raises(AuthError):
        other.verify_stream_token(token, "task-1")


def test_a_jwt_is_not_a_stream_token(authn):
    with pytest.raises(AuthError):
        authn.verify_stream_token(authn.issue_jwt("alice"), "task-1")


async def test_own_tokens_survive_a_configured_external_issuer(io_loop, keydir):
    """`expected_issuer` (--jwt-issuer) is the `iss` of external (JWKS) tokens; the server's own
    tokens carry `iss` = its own issuer and must still verify."""
    key = SigningKey.load_or_create(keydir / "signing-key.pem")
    a = Authenticator(key, b"s" * 32, issuer=ISSUER, expected_issuer="https://project.supabase.co/auth/v1")
    ident = await a.verify_jwt(a.issue_jwt("alice"))
    assert ident.user_id == "alice"
