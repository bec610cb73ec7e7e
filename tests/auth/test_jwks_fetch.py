"""JWKS URL fetches trust only what they asked for (SPEC 2 and 13; issue 9 item 13).

https only (a local file stays allowed; a plain http:// URL stops the start),
no redirects, a small size cap counted while the body streams in (after
decompression), and a warning at start when external tokens are accepted
without `--jwt-issuer`.  The endpoint is a real https server on the test's
IOLoop whose self-signed certificate the source under test trusts explicitly.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.testing import bind_unused_port

from auth import Authenticator
from auth.jwks import MAX_JWKS_BYTES, JWKSSource
from auth.keys import SigningKey
from tests.auth import tls

ROOT = Path(__file__).resolve().parents[2]
KEY = ec.generate_private_key(ec.SECP256R1())
CHUNK = 64 * 1024


def jwks_doc(pad: int = 0) -> bytes:
    jwk = ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    jwk.update(kid="k1", alg="ES256", use="sig")
    doc: dict[str, Any] = {"keys": [jwk]}
    if pad:
        doc["pad"] = "x" * pad
    return json.dumps(doc).encode()


class Endpoint:
    """An https server with a JWKS and the answers a hostile or broken endpoint may give."""

    def __init__(self, directory: Path) -> None:
        self.hits: dict[str, int] = {}
        self.streamed = 0          # bytes of /endless written before the client went away
        self.stream_done = asyncio.Event()
        owner = self

        class Handler(web.RequestHandler):
            def prepare(self) -> None:
                owner.hits[self.request.path] = owner.hits.get(self.request.path, 0) + 1

        class Doc(Handler):
            def get(self) -> None:
                self.finish(jwks_doc(int(self.get_argument("pad", "0"))))

        class Redirect(Handler):
            def get(self) -> None:
                self.redirect("/jwks.json")

        class Endless(Handler):
            async def get(self) -> None:
                """A valid JWKS of 50 MB, sent slowly (5 ms per 64 KB): 4 s for a client that reads it all."""
                head, tail = jwks_doc()[:-1] + b', "pad": "', b'"}'
                try:
                    self.write(head)
                    while owner.streamed < 50 * 1024 * 1024:
                        self.write(b"x" * CHUNK)
                        await self.flush()
                        owner.streamed += CHUNK
                        await asyncio.sleep(0.005)
                    self.finish(tail)
                except StreamClosedError:
                    pass
                finally:
                    owner.stream_done.set()

        class GzipBomb(Handler):
            def get(self) -> None:
                """50 KB on the wire, 20 MB of (valid) JWKS once decompressed."""
                self.set_header("Content-Encoding", "gzip")
                self.set_header("Content-Type", "application/json")
                self.finish(gzip.compress(jwks_doc()[:-1] + b"," + b" " * (20 * 1024 * 1024) + b"}"))

        sock, port = bind_unused_port()
        self.server = HTTPServer(web.Application([
            (r"/jwks.json", Doc), (r"/redirect", Redirect), (r"/endless", Endless), (r"/gzip-bomb", GzipBomb),
        ]), ssl_options=tls.server_context(directory))
        self.server.add_sockets([sock])
        self.base = f"https://127.0.0.1:{port}"

    def source(self, path: str, trusted: bool = True) -> JWKSSource:
        return JWKSSource(self.base + path, ssl_context=tls.client_context() if trusted else None)

    async def stop(self) -> None:
        self.server.stop()
        await self.server.close_all_connections()


@pytest.fixture
def endpoint(io_loop, tmp_path):
    ep = Endpoint(tmp_path)
    yield ep
    io_loop.run_sync(ep.stop)


# -- where keys may come from ------------------------------------------------------------

@pytest.mark.parametrize("location", [
    "http://127.0.0.1:8080/jwks.json",
    "HTTP://issuer.example.com/.well-known/jwks.json",
    "http://localhost/jwks.json",
    "file:///etc/jwks.json",
    "ftp://issuer.example.com/jwks.json",
    "https:///jwks.json",
])
def test_only_https_urls_are_accepted(location):
    with pytest.raises(ValueError, match="only https://"):
        JWKSSource(location)
    with pytest.raises(ValueError, match="only https://"):
        Authenticator(SigningKey(ec.generate_private_key(ec.SECP256R1())), b"s" * 32, issuer="parley:x", jwks=[location])


@pytest.mark.parametrize("location", ["jwks.json", "/etc/parley/jwks.json", "./keys/jwks.json"])
def test_local_files_stay_allowed(location):
    assert not JWKSSource(location).is_url


def test_the_server_refuses_to_start_with_an_http_jwks_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--host", "127.0.0.1", "--port", "0",
         "--data-dir", str(tmp_path / "data"), "--jwks", "http://127.0.0.1:9/jwks.json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "open http" not in proc.stdout, proc.stdout  # never started
    assert "'http://127.0.0.1:9/jwks.json': only https:// URLs (or a local file path) are trusted" in proc.stderr


# -- the fetch ----------------------------------------------------------------------------

async def test_an_https_endpoint_with_a_trusted_certificate_serves_keys(endpoint):
    assert [alg for alg, _ in await endpoint.source("/jwks.json").find("k1")] == ["ES256"]


async def test_a_certificate_the_system_does_not_trust_is_a_failed_fetch(endpoint, caplog):
    assert await endpoint.source("/jwks.json", trusted=False).find("k1") == []
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


async def test_a_redirect_is_a_failed_fetch(endpoint, caplog):
    assert await endpoint.source("/redirect").find("k1") == []
    assert endpoint.hits == {"/redirect": 1}  # the target was never asked
    assert "HTTP 302 (redirects are not followed)" in caplog.text


async def test_a_document_over_the_cap_is_a_failed_fetch(endpoint, caplog):
    assert await endpoint.source(f"/jwks.json?pad={MAX_JWKS_BYTES - 1024}").find("k1")  # just under: fine
    assert await endpoint.source(f"/jwks.json?pad={MAX_JWKS_BYTES}").find("k1") == []
    assert f"JWKS document over {MAX_JWKS_BYTES} bytes" in caplog.text


async def test_an_endless_body_is_cut_off_while_it_streams_in(endpoint, caplog):
    t0 = time.monotonic()
    assert await endpoint.source("/endless").find("k1") == []
    assert time.monotonic() - t0 < 2
    await asyncio.wait_for(endpoint.stream_done.wait(), 5)  # the server saw the connection close
    assert endpoint.streamed < 8 * 1024 * 1024, endpoint.streamed
    assert f"JWKS document over {MAX_JWKS_BYTES} bytes" in caplog.text


async def test_a_compressed_body_is_capped_after_decompression(endpoint, caplog):
    assert await endpoint.source("/gzip-bomb").find("k1") == []
    assert f"JWKS document over {MAX_JWKS_BYTES} bytes" in caplog.text


# -- the warning at start -------------------------------------------------------------------

@pytest.mark.parametrize("jwks,issuer,warned", [
    (["jwks.json"], None, True),
    (["https://issuer.example.com/.well-known/jwks.json"], None, True),
    (["jwks.json"], "https://issuer.example.com", False),
    ([], None, False),
])
def test_external_tokens_without_an_issuer_are_warned_about(caplog, jwks, issuer, warned):
    with caplog.at_level(logging.WARNING, logger="parley.auth"):
        Authenticator(SigningKey(ec.generate_private_key(ec.SECP256R1())), b"s" * 32, issuer="parley:x", jwks=jwks, expected_issuer=issuer)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "--jwt-issuer" in r.getMessage()]
    assert len(warnings) == int(warned), caplog.text
    if warned:
        assert jwks[0] in warnings[0].getMessage()
