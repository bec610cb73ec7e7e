"""Attachments on the Agent API (SPEC sections 8, 13): upload, signed URLs, serving, limits, ownership."""
import hashlib
import io
import json
import re
import time
import wave
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

from agents.images import render_png
from runs.files import STORED_PATH
from server import Config, Parley
from store import attachments as attachments_sql
from tests.handlers.jobs.test_documents import make_pdf
from tests.helpers import (
    BOUNDARY,
    INTERNAL_KEY,
    MULTIPART_TYPE,
    Client,
    body,
    chunked_body,
    multipart,
    raw_exchange,
    request_head,
)
from tests.shared_state.kept import forget, keep, kept, kept_names

MIB = 1024 * 1024
ROUTE = "/api/v1/agent/attachments"

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,"
       b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 + b"\xff\xfb\x90\x64" + b"\x00" * 413


def wav_bytes(seconds: float = 0.25, rate: int = 8000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * int(rate * seconds) * channels)
    return buf.getvalue()


async def upload(client, filename, data, ctype="application/octet-stream", fields=None, field="file"):
    return await client.upload(ROUTE, fields, [] if filename is None else [(field, filename, data, ctype)])


async def upload_ok(client, filename, data, ctype="application/octet-stream", fields=None):
    resp = await upload(client, filename, data, ctype, fields)
    assert resp.code == 201, (resp.code, resp.body)
    assert set(body(resp)) == {"attachment"}  # seed 002's shape
    return body(resp)["attachment"]


def assert_detail(resp, status, *words):
    assert resp.code == status, (resp.code, resp.body)
    err = body(resp)
    assert isinstance(err.get("detail"), str) and err["detail"], err
    for word in words:
        assert word in err["detail"], err
    return err["detail"]


async def signed_url(client, bucket, path, **query):
    return await client.request("GET", f"{ROUTE}/signed-url?" + urlencode({"bucket": bucket, "path": path, **query}))


async def fetch(http, url, headers=None):
    """A signed URL fetched with no credentials at all."""
    return await http.fetch(url, headers=headers or {}, raise_error=False, follow_redirects=False)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# ---------------------------------------------------------------------------
# uploads of each allowed kind
# ---------------------------------------------------------------------------

KINDS = [
    ("photo.png", render_png("a red fox", 16), "image/png", "png"),
    ("photo.JPEG", JPEG, "image/jpeg", "jpg"),
    ("anim.gif", GIF, "image/gif", "gif"),
    ("pic.webp", WEBP, "image/webp", "webp"),
    ("manual.pdf", make_pdf("Quantum toaster"), "application/pdf", "pdf"),
    ("notes.txt", "Plain text, ünïcode, tabs\tand lines\n".encode(), "text/plain", "txt"),
    ("readme.md", b"# Title\n\n- item\n", "text/markdown", "md"),
    ("table.csv", b"a,b\n1,2\n", "text/csv", "csv"),
    ("data.json", b'{"a": [1, 2, 3]}', "application/json", "json"),
    ("voice.wav", wav_bytes(), "audio/wav", "wav"),
    ("song.mp3", MP3, "audio/mpeg", "mp3"),
]


@pytest.mark.parametrize(("filename", "data", "media_type", "ext"), KINDS, ids=[k[0] for k in KINDS])
async def test_upload_each_allowed_kind(alice, parley, filename, data, media_type, ext):
    out = await upload_ok(alice, filename, data)
    assert set(out) == {"bucket", "path", "mimeType", "size", "url", "name"}
    assert (out["bucket"], out["name"], out["size"], out["mimeType"]) == ("attachments", filename, len(data), media_type)
    assert STORED_PATH.fullmatch(out["path"]) and out["path"].endswith("." + ext)
    assert out["path"].split("/")[0] == parley.url_signer.owner_folder("alice") != parley.url_signer.owner_folder("bob")
    assert await kept(parley.db, parley.data_dir, f"attachments/attachments/{out['path']}") == data
    row = await parley.db.read(lambda c: attachments_sql.get(c, "attachments", out["path"]))
    assert (row.user_id, row.bucket, row.media_type, row.size, row.sha256) == \
        ("alice", "attachments", media_type, len(data), hashlib.sha256(data).hexdigest())
    assert row.name == filename

    # the URL in the answer serves the file, to anyone holding it
    assert out["url"].startswith("/api/v1/agent/attachments/file?")
    resp = await fetch(alice.http, out["url"])
    assert resp.code == 200 and resp.body == data
    assert resp.headers["Content-Type"].split(";")[0] == media_type


class OtherServer:
    """A second in-process Parley (its own data dir, so its own secrets) on a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.parley = Parley(Config(data_dir=data_dir, internal_key=INTERNAL_KEY, demo_delay_ms=0))
        self.base = ""
        self.server: HTTPServer | None = None

    async def open(self) -> None:
        app = await self.parley.open()
        sock, port = bind_unused_port()
        self.server = HTTPServer(app)
        self.server.add_sockets([sock])
        self.base = f"http://127.0.0.1:{port}"

    async def fetch(self, path: str, **kw):
        return await AsyncHTTPClient().fetch(self.base + path, **kw)

    async def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            await self.server.close_all_connections()
        await self.parley.close()


async def test_the_owner_folder_needs_the_server_secret(alice, parley, tmp_path):
    """The folder in a path is an HMAC of the user id under the server's secret: someone who guesses
    the id cannot confirm it from a path, and another server (another secret) names it otherwise."""
    png = render_png("a red fox", 16)
    folder = (await upload_ok(alice, "a.png", png))["path"].split("/")[0]
    assert folder == (await upload_ok(alice, "b.png", png))["path"].split("/")[0]  # one folder per user
    for guess in (b"alice", b"parley-attachments:alice", b"attachments:alice", b"attachment-folder:alice"):
        assert folder != hashlib.sha256(guess).hexdigest()[:32]
    other = OtherServer(tmp_path / "other")
    await other.open()
    try:
        elsewhere = await upload_ok(Client(other, "alice"), "a.png", png)
        assert elsewhere["path"].split("/")[0] != folder
        assert (await upload_ok(Client(other, "bob"), "a.png", png))["path"].split("/")[0] not in (
            folder, elsewhere["path"].split("/")[0])
    finally:
        await other.close()


async def test_files_stored_under_the_old_folder_name_are_still_served(alice, bob, parley):
    """Attachments uploaded before the folder became an HMAC: their row holds the path, so they stay readable."""
    png = render_png("an old upload", 16)
    path = f"{hashlib.sha256(b'parley-attachments:alice').hexdigest()[:32]}/{'1' * 8}-2222-3333-4444-{'5' * 12}.png"
    await keep(parley.db, parley.data_dir, f"attachments/attachments/{path}", png)
    await parley.db.write(lambda tx: attachments_sql.insert(
        tx, "attachments", path, "alice", "old.png", "image/png", len(png), hashlib.sha256(png).hexdigest()))
    resp = await signed_url(alice, "attachments", path)
    assert resp.code == 200, resp.body
    served = await fetch(alice.http, body(resp)["url"])
    assert served.code == 200 and served.body == png
    assert_detail(await signed_url(bob, "attachments", path), 403)


async def test_custom_bucket_and_thread_and_type_from_a_name_without_extension(alice, bob, parley):
    out = await upload_ok(alice, "blob", render_png("blue sky", 16), ctype="image/png",
                          fields={"bucket": "agent-inputs", "threadId": "t-attach"})
    assert out["bucket"] == "agent-inputs" and out["path"].endswith(".png") and out["mimeType"] == "image/png"
    assert await kept(parley.db, parley.data_dir, f"attachments/agent-inputs/{out['path']}") is not None
    row = await parley.db.read(lambda c: attachments_sql.get(c, "agent-inputs", out["path"]))
    assert row.thread_id == "t-attach"
    # a thread of another user is refused
    await bob.start_ok("t-bob", "hi")
    assert_detail(await upload(alice, "a.txt", b"x", fields={"threadId": "t-bob"}), 403)


async def test_upload_needs_credentials(http_server_client):
    raw, ctype = multipart({}, [("file", "a.txt", b"x", "text/plain")])
    resp = await http_server_client.fetch(ROUTE, method="POST", body=raw, headers={"Content-Type": ctype}, raise_error=False)
    assert_detail(resp, 401)
    resp = await http_server_client.fetch(f"{ROUTE}/signed-url?bucket=attachments&path=x", raise_error=False)
    assert_detail(resp, 401)


# ---------------------------------------------------------------------------
# 415 and 422
# ---------------------------------------------------------------------------

async def test_disallowed_types_are_415(alice, parley):
    for filename, data, ctype in [
        ("x.exe", b"MZ\x90\x00\x03\x00", "application/octet-stream"),
        ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "image/svg+xml"),
        ("x.html", b"<html><script>alert(1)</script></html>", "text/html"),
        ("x.zip", b"PK\x03\x04\x14\x00", "application/zip"),
        ("noext", b"hello", "application/octet-stream"),
        ("noext", b"<html></html>", "text/html"),
        ("x.png.exe", render_png("fox", 16), "image/png"),  # the last extension counts
    ]:
        assert_detail(await upload(alice, filename, data, ctype), 415)
    assert tree(parley.data_dir / "attachments") == set()


async def test_content_that_does_not_match_its_type_is_422(alice, parley):
    png = render_png("fox", 16)
    for filename, data in [
        ("fake.png", b"just some text"),          # text claiming to be an image
        ("fake.png", JPEG),                        # another image type
        ("fake.jpg", png),
        ("fake.gif", b"GIF87"),
        ("fake.webp", wav_bytes()),                # RIFF, but WAVE
        ("fake.pdf", b"%PDF-1.4 but no end"),
        ("fake.txt", png),                         # binary named .txt
        ("fake.txt", b"NUL\x00byte"),
        ("fake.txt", b"\xff\xfe\xfa not utf-8"),
        ("fake.txt", make_pdf("pdf as text")),
        ("fake.csv", b"a,b\x07\n"),
        ("fake.json", b"{not json"),
        ("fake.wav", b"RIFF\x04\x00\x00\x00WAVE"),  # a header and no chunks
        ("fake.wav", MP3),
        ("fake.mp3", b"not an mp3 at all"),
        ("empty.txt", b""),
    ]:
        assert_detail(await upload(alice, filename, data), 422)
    assert tree(parley.data_dir / "attachments") == set()


async def test_malformed_bodies_are_422(alice, parley):
    assert_detail(await upload(alice, None, None), 422, "file")                          # no file
    assert_detail(await upload(alice, "a.txt", b"x", field="other"), 422, "file")        # wrong field
    raw, ctype = multipart({}, [("file", "a.txt", b"x", "text/plain"), ("file", "b.txt", b"y", "text/plain")])
    assert_detail(await alice.request("POST", ROUTE, raw=raw, headers={"Content-Type": ctype}), 422)  # two files
    assert_detail(await alice.request("POST", ROUTE, {"file": "x"}), 422, "multipart")   # JSON
    resp = await alice.request("POST", ROUTE, raw=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert_detail(resp, 422, "multipart")
    for bucket in ("", "../etc", "a/b", "a" * 65, "spaces here", "dot.dot"):
        assert_detail(await upload(alice, "a.txt", b"x", fields={"bucket": bucket}), 422, "bucket")
    assert_detail(await upload(alice, "a.txt", b"x", fields={"bucket": b"\xff"}), 422)
    assert_detail(await upload(alice, "a.txt", b"x", fields={"threadId": "t" * 129}), 422)
    assert tree(parley.data_dir / "attachments") == set()


# ---------------------------------------------------------------------------
# nothing the client names reaches the disk, nothing is written outside data-dir
# ---------------------------------------------------------------------------

async def test_hostile_filenames_never_reach_the_disk(alice, parley, tmp_path):
    before = {p for p in tree(tmp_path) if not p.startswith("data")}
    expected = {  # the client's name -> the display name kept (never a file name on disk)
        "../../../../tmp/evil.txt": "evil.txt", "..\\..\\evil.txt": "evil.txt", "/etc/passwd.txt": "passwd.txt",
        "a/../../b.txt": "b.txt", "%2e%2e%2fevil.txt": "%2e%2e%2fevil.txt",
        "..": "attachment", "../": "attachment",  # nothing left: no extension, so the declared type counts
    }
    outs = []
    for name, shown in expected.items():
        out = await upload_ok(alice, name, b"hostile name", ctype="text/plain")
        assert out["name"] == shown, (name, out)
        outs.append(out)
    for name in ("evil\x00.png.txt", "\x00\x01\x02.txt"):  # raw NUL bytes in a header: the body does not parse
        assert_detail(await upload(alice, name, b"hostile name", ctype="text/plain"), 422, "multipart")
    # an RFC 5987 name is decoded by the multipart parser (here into "../../evil\x00.txt"): still only a display name
    raw = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename*=UTF-8\'\'..%2F..%2Fevil%00.txt\r\n'
           f"Content-Type: text/plain\r\n\r\nrfc5987\r\n--{BOUNDARY}--\r\n").encode()
    resp = await alice.request("POST", ROUTE, raw=raw, headers={"Content-Type": MULTIPART_TYPE})
    assert resp.code == 201, resp.body
    assert body(resp)["attachment"]["name"] == "evil.txt"
    outs.append(body(resp)["attachment"])
    root = parley.data_dir / "attachments"
    names = await kept_names(parley.db, parley.data_dir, "attachments/")
    stored = sorted(n.removeprefix("attachments/attachments/") for n in names)
    assert stored == sorted(o["path"] for o in outs)
    assert all(STORED_PATH.fullmatch(p) for p in stored)
    assert all(p.resolve().is_relative_to(parley.data_dir.resolve()) for p in root.rglob("*"))
    assert not list(parley.data_dir.rglob("*evil*")) and not list(tmp_path.rglob("*evil*"))
    assert not list(parley.data_dir.rglob("*passwd*"))
    after = {p for p in tree(tmp_path) if not p.startswith("data")}
    assert after == before  # nothing written beside the data dir


async def test_nothing_outside_data_dir_and_keys_are_private(alice, parley, tmp_path):
    out = await upload_ok(alice, "x.txt", b"hello")
    resp = await signed_url(alice, out["bucket"], out["path"])
    assert resp.code == 200
    assert {p.name for p in tmp_path.iterdir()} == {"data"}
    secret = parley.data_dir / "keys" / "attachment-url.secret"
    if parley.db.shared:  # the secret is in the store, for every instance
        assert not secret.exists()
    else:
        assert secret.is_file() and secret.stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------------------
# signed URLs: ownership, the capability, tampering, expiry
# ---------------------------------------------------------------------------

async def test_signed_url_is_for_the_owner_and_a_capability(alice, bob, http_server_client):
    png = render_png("green grass", 16)
    out = await upload_ok(alice, "grass.png", png)
    assert_detail(await signed_url(bob, out["bucket"], out["path"]), 403)
    resp = await signed_url(alice, out["bucket"], out["path"])
    assert resp.code == 200, resp.body
    signed = body(resp)
    assert set(signed) == {"bucket", "path", "url", "expiresAt"}
    assert (signed["bucket"], signed["path"]) == (out["bucket"], out["path"])
    q = parse_qs(urlsplit(signed["url"]).query)
    assert urlsplit(signed["url"]).path == "/api/v1/agent/attachments/file"
    assert set(q) == {"bucket", "path", "exp", "sig"}
    assert abs(int(q["exp"][0]) - (time.time() + 3600)) < 5
    assert signed["expiresAt"].endswith("Z") and signed["expiresAt"].startswith(time.strftime("%Y", time.gmtime(int(q["exp"][0]))))

    # bob holds the URL alice gave him: he may read the file, with or without his own credentials
    assert (await fetch(http_server_client, signed["url"])).body == png
    assert (await fetch(http_server_client, signed["url"], bob.headers())).body == png


async def test_signed_url_errors(alice, bob):
    out = await upload_ok(alice, "a.txt", b"alpha")
    assert_detail(await signed_url(alice, out["bucket"], out["path"].replace(out["path"][-12:-4], "00000000")), 404)
    assert_detail(await signed_url(alice, "other", out["path"]), 404)
    assert_detail(await signed_url(alice, "../x", out["path"]), 422, "bucket")
    assert_detail(await alice.request("GET", f"{ROUTE}/signed-url?path=x"), 422, "bucket")
    assert_detail(await alice.request("GET", f"{ROUTE}/signed-url?bucket=attachments"), 422, "path")
    for bad in ("0", "86401", "-5", "soon", "1.5"):
        assert_detail(await signed_url(alice, out["bucket"], out["path"], expires_in=bad), 422, "expires_in")
    for ok in ("1", "86400"):
        assert (await signed_url(alice, out["bucket"], out["path"], expires_in=ok)).code == 200


def _with(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q.update(changes)
    return f"{parts.path}?{urlencode(q)}"


async def test_tampered_expired_and_other_path_signatures_are_403(alice, parley, http_server_client):
    a = await upload_ok(alice, "a.txt", b"alpha")
    b = await upload_ok(alice, "b.txt", b"beta")
    url = body(await signed_url(alice, a["bucket"], a["path"], expires_in="60"))["url"]
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert (await fetch(http_server_client, url)).body == b"alpha"
    flipped = q["sig"][:-2] + ("A" if q["sig"][-2] != "A" else "B") + q["sig"][-1]
    for bad in (
        _with(url, sig=flipped),
        _with(url, sig=""),
        _with(url, sig=q["sig"] + "x"),
        _with(url, exp=str(int(q["exp"]) + 3600)),        # a longer life
        _with(url, exp="soon"),
        _with(url, path=b["path"]),                       # another path, this signature
        _with(url, bucket="other"),
        f"{urlsplit(url).path}?bucket={q['bucket']}&path={q['path']}&exp={q['exp']}",  # no signature
        urlsplit(url).path,
    ):
        resp = await fetch(http_server_client, bad)
        assert_detail(resp, 403)
        assert b"alpha" not in resp.body and b"beta" not in resp.body
    # expired: a URL signed in the past with the server's own key
    old, _ = parley.url_signer.url(a["bucket"], a["path"], 10, now=time.time() - 11)
    assert_detail(await fetch(http_server_client, old), 403, "expired")
    # a valid signature for a path that has no attachment
    ghost, _ = parley.url_signer.url("attachments", "0" * 32 + "/00000000-0000-0000-0000-000000000000.txt", 60)
    assert_detail(await fetch(http_server_client, ghost), 404)


async def test_served_file_headers(alice, http_server_client):
    png = await upload_ok(alice, "my \"pic\" é.png", render_png("night sky", 16))
    url = body(await signed_url(alice, png["bucket"], png["path"], expires_in="120"))["url"]
    resp = await fetch(http_server_client, url)
    h = resp.headers
    assert h["Content-Type"] == "image/png"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Content-Disposition"].startswith("inline;")
    assert "filename*=UTF-8''my%20%22pic%22%20%C3%A9.png" in h["Content-Disposition"]
    assert 'filename="my _pic_ _.png"' in h["Content-Disposition"]
    m = re.fullmatch(r"private, max-age=(\d+)", h["Cache-Control"])
    assert m and 110 <= int(m.group(1)) <= 120
    assert h["ETag"] == f'"{hashlib.sha256(resp.body).hexdigest()}"'
    assert "sandbox" in h["Content-Security-Policy"] and h["Referrer-Policy"] == "no-referrer"

    for filename, data, ctype in [("doc.pdf", make_pdf("x"), "application/pdf"), ("t.txt", b"text", "text/plain; charset=utf-8"),
                                  ("d.json", b"[1]", "application/json; charset=utf-8"), ("v.wav", wav_bytes(), "audio/wav")]:
        out = await upload_ok(alice, filename, data)
        resp = await fetch(http_server_client, out["url"])
        assert resp.code == 200 and resp.body == data
        assert resp.headers["Content-Type"] == ctype
        assert resp.headers["Content-Disposition"].startswith("attachment;"), filename
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert int(re.fullmatch(r"private, max-age=(\d+)", resp.headers["Cache-Control"]).group(1)) <= 3600


async def test_ranges_and_etag(alice, http_server_client):
    out = await upload_ok(alice, "v.wav", wav_bytes(1.0))
    full = (await fetch(http_server_client, out["url"])).body
    resp = await fetch(http_server_client, out["url"], {"Range": "bytes=10-19"})
    assert resp.code == 206 and resp.body == full[10:20]
    assert resp.headers["Content-Range"] == f"bytes 10-19/{len(full)}"
    resp = await fetch(http_server_client, out["url"], {"Range": "bytes=-5"})
    assert resp.code == 206 and resp.body == full[-5:]
    resp = await fetch(http_server_client, out["url"], {"Range": f"bytes={len(full) - 3}-"})
    assert resp.code == 206 and resp.body == full[-3:]
    resp = await fetch(http_server_client, out["url"], {"Range": f"bytes={len(full)}-"})
    assert resp.code == 416 and resp.headers["Content-Range"] == f"bytes */{len(full)}"
    resp = await fetch(http_server_client, out["url"], {"Range": "bytes=0-1,4-5"})  # several ranges: all of it
    assert resp.code == 200 and resp.body == full
    etag = resp.headers["ETag"]
    resp = await fetch(http_server_client, out["url"], {"If-None-Match": etag})
    assert resp.code == 304 and resp.body == b""
    resp = await fetch(http_server_client, out["url"], {"Range": "bytes=0-3", "If-Range": '"other"'})
    assert resp.code == 200 and resp.body == full


async def test_a_file_gone_from_disk_is_404(alice, parley, http_server_client):
    out = await upload_ok(alice, "gone.txt", b"soon gone")
    await forget(parley.db, parley.data_dir, f"attachments/{out['bucket']}/{out['path']}")
    assert_detail(await fetch(http_server_client, out["url"]), 404)


# ---------------------------------------------------------------------------
# 413 while streaming
# ---------------------------------------------------------------------------

def _oversized() -> bytes:
    raw, _ = multipart({}, [("file", "big.txt", b"a" * (5 * MIB + 1), "text/plain")])
    return raw


async def test_5_mib_plus_one_with_content_length_is_413(alice, parley, http_server_client):
    raw, ctype = multipart({}, [("file", "big.txt", b"a", "text/plain")])
    raw = raw.replace(b"a\r\n--", b"a" * (5 * MIB + 1 - len(raw) + 1) + b"\r\n--")
    assert len(raw) == 5 * MIB + 1
    assert_detail(await alice.request("POST", ROUTE, raw=raw, headers={"Content-Type": ctype}), 413)
    assert_detail(await alice.request("POST", ROUTE, raw=_oversized(), headers={"Content-Type": ctype}), 413)
    port = http_server_client.get_http_port()
    size = 5 * MIB + 1
    parts = [b"a" * (64 * 1024)] * (size // (64 * 1024)) + [b"a" * (size % (64 * 1024))]
    head = request_head("POST", ROUTE, port, MULTIPART_TYPE, f"Content-Length: {size}\r\n")
    status, _, resp_body = await raw_exchange(port, head, parts)
    assert status == 413 and "detail" in json.loads(resp_body)
    # the server keeps serving, and an upload at the limit is taken
    raw, ctype = multipart({}, [("file", "big.txt", b"a", "text/plain")])
    raw = raw.replace(b"a\r\n--", b"a" * (5 * MIB - len(raw) + 1) + b"\r\n--")
    assert len(raw) == 5 * MIB
    resp = await alice.request("POST", ROUTE, raw=raw, headers={"Content-Type": ctype})
    assert resp.code == 201, resp.body
    stored = await kept_names(parley.db, parley.data_dir, "attachments/")
    assert len(stored) == 1
    assert len(await kept(parley.db, parley.data_dir, stored.pop()) or b"") == body(resp)["attachment"]["size"]


async def test_5_mib_plus_one_without_content_length_is_413(alice, parley, http_server_client):
    port = http_server_client.get_http_port()
    raw = _oversized()
    head = request_head("POST", ROUTE, port, MULTIPART_TYPE, "Transfer-Encoding: chunked\r\n")
    status, _, resp_body = await raw_exchange(port, head, chunked_body(raw))
    assert status == 413 and "detail" in json.loads(resp_body)

    async def producer(write):
        for i in range(0, len(raw), 256 * 1024):
            await write(raw[i:i + 256 * 1024])

    resp = await http_server_client.fetch(ROUTE, method="POST", body_producer=producer, raise_error=False,
                                          headers={**alice.headers(), "Content-Type": MULTIPART_TYPE})
    assert_detail(resp, 413)
    assert tree(parley.data_dir / "attachments") == set()
    # still serving
    assert (await upload(alice, "small.txt", b"small")).code == 201


async def test_oversized_body_is_not_buffered(alice, parley, http_server_client, monkeypatch):
    """The handler's buffer never holds more than the limit while 8 MiB stream in."""
    from handlers.uploads import MultipartHandler

    peak = [0]
    original = MultipartHandler.data_received

    def spy(self, chunk):
        original(self, chunk)
        peak[0] = max(peak[0], len(self._body))

    monkeypatch.setattr(MultipartHandler, "data_received", spy)
    raw, ctype = multipart({}, [("file", "big.txt", b"a" * (8 * MIB), "text/plain")])

    async def producer(write):
        for i in range(0, len(raw), 256 * 1024):
            await write(raw[i:i + 256 * 1024])

    resp = await http_server_client.fetch(ROUTE, method="POST", body_producer=producer, raise_error=False,
                                          headers={**alice.headers(), "Content-Type": ctype})
    assert_detail(resp, 413)
    assert 0 < peak[0] <= 5 * MIB
