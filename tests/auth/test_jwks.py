"""Unit tests of auth/jwks.py: which JWKs are trusted for which algorithm, file sources, the refetch limit."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

import auth.jwks as jwks_mod
from auth import Authenticator, AuthError
from auth.jwks import JWKSSource, key_alg
from auth.keys import SigningKey

EC1 = ec.generate_private_key(ec.SECP256R1())
EC2 = ec.generate_private_key(ec.SECP256R1())
EC384 = ec.generate_private_key(ec.SECP384R1())
RSA1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_jwk(key, kid, **extra):
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, **extra)
    return jwk


def rsa_jwk(key, kid, **extra):
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, **extra)
    return jwk


class FakeClock:
    def __init__(self):
        self.offset = 0.0

    def monotonic(self):
        return time.monotonic() + self.offset


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(jwks_mod, "time", fake)
    return fake


@pytest.mark.parametrize("jwk,expected", [
    ({"kty": "EC", "crv": "P-256"}, "ES256"),
    ({"kty": "EC", "crv": "P-256", "alg": "ES256"}, "ES256"),
    ({"kty": "EC", "crv": "P-384"}, None),
    ({"kty": "RSA"}, None),
    ({"kty": "RSA", "alg": "RS256"}, "RS256"),
    ({"kty": "RSA", "alg": "PS256"}, None),
    ({"kty": "oct", "alg": "HS256"}, None),
    ({"kty": "oct"}, None),
    ({"kty": "EC", "crv": "P-256", "alg": "none"}, None),
    ({"kty": "EC", "crv": "P-256", "alg": "HS256"}, None),
    ({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA"}, None),
])
def test_key_alg(jwk, expected):
    assert key_alg(jwk) == expected


async def test_file_source_keeps_only_usable_signing_keys(io_loop, tmp_path):
    doc = {"keys": [
        ec_jwk(EC1, "ec1", alg="ES256"),
        ec_jwk(EC2, "ec2"),  # no alg: ES256 implied
        ec_jwk(EC1, "enc", use="enc"),
        ec_jwk(EC384, "p384"),
        rsa_jwk(RSA1, "rsa", alg="RS256"),
        rsa_jwk(RSA1, "rsa-noalg"),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"},
        {"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AAAA", "y": "AAAA", "alg": "ES256"},
        "not-a-jwk",
    ]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(doc))
    src = JWKSSource(str(path))
    assert not src.is_url
    assert [a for a, _ in await src.find("ec1")] == ["ES256"]
    assert [a for a, _ in await src.find("ec2")] == ["ES256"]
    assert [a for a, _ in await src.find("rsa")] == ["RS256"]
    for kid in ("enc", "p384", "rsa-noalg", "hmac", "broken", "nope"):
        assert await src.find(kid) == [], kid
    assert sorted(a for a, _ in await src.find(None)) == ["ES256", "ES256", "RS256"]


async def test_missing_file_is_no_keys_not_an_error(io_loop, tmp_path):
    src = JWKSSource(str(tmp_path / "missing.json"))
    assert await src.find("any") == []
    assert await src.find(None) == []


async def test_file_refetch_at_most_once_a_minute(io_loop, tmp_path, clock, monkeypatch):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_jwk(EC1, "ec1")]}))
    src = JWKSSource(str(path))
    loads = []
    real_load = src._load

    def counting_load(body):
        loads.append(body)
        real_load(body)

    monkeypatch.setattr(src, "_load", counting_load)
    assert await src.find("ec1")
    assert len(loads) == 1
    path.write_text(json.dumps({"keys": [ec_jwk(EC1, "ec1"), ec_jwk(EC2, "ec2")]}))
    for i in range(20):
        assert await src.find(f"unknown-{i}") == []
    assert await src.find("ec2") == []  # not yet: the minute has not passed
    assert len(loads) == 1
    clock.offset += 61
    assert await src.find("ec2")
    assert len(loads) == 2
    for i in range(20):
        assert await src.find(f"unknown-b{i}") == []
    assert len(loads) == 2
    # stale after 10 minutes: refreshed even for a known kid
    clock.offset += 601
    assert await src.find("ec1")
    assert len(loads) == 3


async def test_unreadable_update_keeps_the_cache(io_loop, tmp_path, clock):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_jwk(EC1, "ec1")]}))
    src = JWKSSource(str(path))
    assert await src.find("ec1")
    path.write_text("{ not json")
    clock.offset += 700
    assert await src.find("ec1")
    path.unlink()
    clock.offset += 700
    assert await src.find("ec1")


async def test_authenticator_with_a_file_source(io_loop, tmp_path, clock):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ec_jwk(EC1, "ec1"), rsa_jwk(RSA1, "rsa", alg="RS256")]}))
    own = SigningKey.load_or_create(tmp_path / "own.pem")
    a = Authenticator(own, b"s" * 32, issuer="parley:x", jwks=[str(path)], expected_issuer="https://iss")
    now = int(time.time())
    good = {"sub": "carol", "aud": "authenticated", "exp": now + 60, "iss": "https://iss"}
    ident = await a.verify_jwt(jwt.encode(good, EC1, algorithm="ES256", headers={"kid": "ec1"}))
    assert ident.user_id == "carol"
    ident = await a.verify_jwt(jwt.encode(good, RSA1, algorithm="RS256", headers={"kid": "rsa"}))
    assert ident.user_id == "carol"
    # the RSA key is trusted for RS256 only, the EC key for ES256 only
    with pytest.raises(AuthError):
        await a.verify_jwt(jwt.encode(good, RSA1, algorithm="PS256", headers={"kid": "rsa"}))
    with pytest.raises(AuthError):
        await a.verify_jwt(jwt.encode(good, RSA1, algorithm="RS256", headers={"kid": "ec1"}))
    with pytest.raises(AuthError):
        await a.verify_jwt(jwt.encode({**good, "iss": "https://other"}, EC1, algorithm="ES256", headers={"kid": "ec1"}))
    with pytest.raises(AuthError):
        await a.verify_jwt(jwt.encode(good, EC2, algorithm="ES256", headers={"kid": "ec1"}))
