"""Documents on the job surface (SPEC sections 7, 11, 13): upload, list, limits, and knowledge_search."""
import json
import uuid
from pathlib import Path

import pytest
from tornado import web

from agents import knowledge
from agents.tools import ToolEnv
from handlers.jobs import documents
from handlers.openapi import OPERATIONS, document, route_paths
from tests.helpers import MULTIPART_TYPE, body, chunked_body, multipart, raw_exchange, request_head, text_of
from tests.shared_state.kept import kept, kept_names

MIB = 1024 * 1024
UPLOAD = "/api/documents/upload"


@pytest.fixture
def app(parley):
    """The server's application with the documents routes and the knowledge_search tool (as server.py wires them)."""
    if "knowledge_search" not in parley.agents.tools:
        parley.agents.tools["knowledge_search"] = knowledge.make_tool(parley.db, parley.data_dir)
    if "/api/documents" not in route_paths(parley.app):  # until server.py routes them itself
        parley.app.wildcard_router.add_rules(documents.default_handlers)
    return parley.app


async def upload(client, filename, data, knowledge_id="kb1", ctype="application/octet-stream", fields=None):
    return await client.upload(UPLOAD, {"knowledge_id": knowledge_id} if fields is None else fields,
                               [] if filename is None else [("file", filename, data, ctype)])


async def upload_ok(client, filename, data, knowledge_id="kb1", ctype="application/octet-stream"):
    resp = await upload(client, filename, data, knowledge_id, ctype)
    assert resp.code == 201, (resp.code, resp.body)
    return body(resp)


def assert_error(resp, status, code=None):
    assert resp.code == status, (resp.code, resp.body)
    err = body(resp)["error"]
    assert set(err) == {"code", "message", "details"}
    if code:
        assert err["code"] == code, err


def make_pdf(text: str) -> bytes:
    """A minimal one-page PDF showing `text` in Helvetica, with a correct xref table."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


async def search(parley, user, args):
    tool = parley.agents.tools["knowledge_search"]
    return await tool.run(args, ToolEnv(user, "task", "thread"))


# ---------------------------------------------------------------------------
# upload each type
# ---------------------------------------------------------------------------

async def test_upload_txt_md_html_pdf(alice, parley):
    txt = await upload_ok(alice, "notes.txt", b"The refund policy gives thirty days.", ctype="text/plain")
    assert set(txt) == {"id", "knowledge_id", "filename", "media_type", "size", "chunks", "created_at"}
    assert (txt["filename"], txt["media_type"], txt["size"], txt["chunks"], txt["knowledge_id"]) == \
        ("notes.txt", "text/plain", 36, 1, "kb1")
    assert uuid.UUID(txt["id"]) and txt["created_at"].endswith("Z")
    md = await upload_ok(alice, "guide.md", "# Shipping\n\nParcels travel by zeppelin. Café ümlaut.".encode())
    assert md["media_type"] == "text/markdown"
    html = (b"<html><head><title>Warranty</title><script>var hiddenscripttoken = 1;</script>"
            b"<style>.stylishtoken{}</style></head><body><p>Warranty covers flux capacitors.</p></body></html>")
    h = await upload_ok(alice, "page.html", html, ctype="text/html")
    assert h["media_type"] == "text/html"
    pdf = await upload_ok(alice, "manual.pdf", make_pdf("Quantum toaster maintenance manual"), ctype="application/pdf")
    assert pdf["media_type"] == "application/pdf" and pdf["chunks"] == 1

    # every type is searchable; the HTML's script and style are not indexed
    for query, doc in (("refund", txt), ("zeppelin", md), ("cafe", md), ("flux capacitors", h), ("toaster", pdf)):
        out = await search(parley, "alice", {"query": query})
        assert [r["document_id"] for r in out["results"]] == [doc["id"]], query
    for hidden in ("hiddenscripttoken", "stylishtoken"):
        assert (await search(parley, "alice", {"query": hidden})) == {"results": []}


def _files_named(root: Path, pattern: str) -> list[Path]:
    return list(root.rglob(pattern))


async def test_stored_file_is_named_by_uuid_under_data_dir(alice, parley):
    data = b"original bytes of the document"
    doc = await upload_ok(alice, "../../etc/evil name.txt", data)
    assert doc["filename"] == "evil name.txt"
    assert await kept(parley.db, parley.data_dir, f"documents/{doc['id']}") == data
    assert await kept_names(parley.db, parley.data_dir, "documents/") == {f"documents/{doc['id']}"}
    assert not _files_named(parley.data_dir, "evil*")


async def test_client_content_type_is_not_trusted(alice):
    # an exe claiming text/plain, a zip named .txt, a text file named .pdf
    assert_error(await upload(alice, "x.exe", b"MZ\x90\x00\x03\x00\x00\x00", ctype="text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await upload(alice, "x.zip", b"PK\x03\x04\x14\x00\x00\x00", ctype="application/zip"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await upload(alice, "x.txt", b"PK\x03\x04\x14\x00\x00\x00", ctype="text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await upload(alice, "x.pdf", b"just text", ctype="application/pdf"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await upload(alice, "x.png", b"\x89PNG\r\n\x1a\n", ctype="image/png"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert body(await alice.request("GET", "/api/documents")) == {"documents": []}


async def test_422s(alice, parley):
    assert_error(await upload(alice, "bad.txt", b"\xff\xfe\xfa not utf-8"), 422, "VALIDATION_ERROR")
    assert_error(await upload(alice, "a.txt", b"text", fields={}), 422, "VALIDATION_ERROR")  # no knowledge_id
    assert_error(await upload(alice, "a.txt", b"text", knowledge_id=""), 422)
    assert_error(await upload(alice, "a.txt", b"text", knowledge_id="k" * 129), 422)
    assert_error(await upload(alice, None, None), 422, "VALIDATION_ERROR")  # no file
    assert_error(await upload(alice, "empty.txt", b"  \n\n "), 422)
    assert_error(await upload(alice, "broken.pdf", b"%PDF-1.4\ngarbage"), 422)
    assert_error(await alice.request("POST", "/api/documents/upload", {"knowledge_id": "kb"}), 422)
    resp = await alice.request("POST", "/api/documents/upload", raw=b"--x\r\nbroken",
                               headers={"Content-Type": "multipart/form-data"})
    assert resp.code in (400, 422)
    assert body(await alice.request("GET", "/api/documents")) == {"documents": []}
    assert await kept_names(parley.db, parley.data_dir, "documents/") == set()


async def test_auth_required(http_server_client):
    for method, path in (("POST", "/api/documents/upload"), ("GET", "/api/documents")):
        resp = await http_server_client.fetch(path, method=method, body=b"" if method == "POST" else None, raise_error=False)
        assert_error(resp, 401, "UNAUTHORIZED")


# ---------------------------------------------------------------------------
# list and ownership
# ---------------------------------------------------------------------------

async def test_list_per_user_and_knowledge_id(alice, bob, parley):
    a1 = await upload_ok(alice, "a1.txt", b"alpha refund rules", knowledge_id="kb1")
    a2 = await upload_ok(alice, "a2.txt", b"beta refund rules", knowledge_id="kb2")
    b1 = await upload_ok(bob, "b1.txt", b"bob refund secrets", knowledge_id="kb1")
    mine = body(await alice.request("GET", "/api/documents"))["documents"]
    assert [d["id"] for d in mine] == [a1["id"], a2["id"]]
    assert mine[0] == a1
    kb1 = body(await alice.request("GET", "/api/documents?knowledge_id=kb1"))["documents"]
    assert [d["id"] for d in kb1] == [a1["id"]]
    assert body(await alice.request("GET", "/api/documents?knowledge_id=none"))["documents"] == []
    assert [d["id"] for d in body(await bob.request("GET", "/api/documents"))["documents"]] == [b1["id"]]
    assert_error(await alice.request("GET", "/api/documents?knowledge_id=" + "k" * 129), 422)

    # bob never finds alice's documents, even in the same knowledge base
    out = await search(parley, "bob", {"query": "refund", "knowledge_id": "kb1"})
    assert [r["document_id"] for r in out["results"]] == [b1["id"]]
    out = await search(parley, "alice", {"query": "refund"})
    assert {r["document_id"] for r in out["results"]} == {a1["id"], a2["id"]}
    out = await search(parley, "alice", {"query": "refund", "knowledge_id": "kb2"})
    assert [r["document_id"] for r in out["results"]] == [a2["id"]]
    assert (await search(parley, "alice", {"query": "secrets"})) == {"results": []}


async def test_ranking_most_relevant_first(alice, parley):
    weak = await upload_ok(alice, "weak.txt", ("General store information. " * 20 + "A refund may apply.").encode())
    strong = await upload_ok(alice, "strong.md", b"# Refund policy\n\nOur refund policy: every refund is paid in 5 days.")
    await upload_ok(alice, "none.txt", b"Nothing to see here.")
    out = await search(parley, "alice", {"query": "refund policy"})
    assert [r["document_id"] for r in out["results"]] == [strong["id"], weak["id"]]
    assert out["results"][0]["score"] > out["results"][1]["score"]
    assert "refund" in out["results"][0]["snippet"].lower()
    assert len((await search(parley, "alice", {"query": "refund", "limit": 1}))["results"]) == 1


# ---------------------------------------------------------------------------
# 413 while streaming
# ---------------------------------------------------------------------------

def _oversized_file() -> bytes:
    raw, _ = multipart({"knowledge_id": "kb1"}, [("file", "big.txt", b"a" * (5 * MIB + 1), "text/plain")])
    return raw


async def test_5_mib_plus_one_with_content_length_is_413(alice, http_server_client):
    raw, ctype = multipart({"knowledge_id": "kb1"}, [("file", "big.txt", b"a", "text/plain")])
    raw = raw.replace(b"a\r\n--", b"a" * (5 * MIB + 1 - len(raw) + 1) + b"\r\n--")
    assert len(raw) == 5 * MIB + 1
    resp = await alice.request("POST", "/api/documents/upload", raw=raw, headers={"Content-Type": ctype})
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    resp = await alice.request("POST", "/api/documents/upload", raw=_oversized_file(), headers={"Content-Type": ctype})
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    assert body(await alice.request("GET", "/api/documents")) == {"documents": []}


async def test_just_under_the_limit_is_accepted(alice):
    # 5 MiB of HTML whose visible text stays under the 2 MB of text a document may hold
    raw, ctype = multipart({"knowledge_id": "kb1"}, [("file", "big.html", b"a", "text/html")])
    visible = ("<p>" + "word " * 100 + "</p>\n").encode() * 3000
    head, tail = b"<html><body>" + visible + b"<script>", b"</script></body></html>"
    size = 5 * MIB - len(raw) + 1
    data = head + b"x" * (size - len(head) - len(tail)) + tail
    raw, ctype = multipart({"knowledge_id": "kb1"}, [("file", "big.html", data, "text/html")])
    assert len(raw) == 5 * MIB
    resp = await alice.request("POST", "/api/documents/upload", raw=raw, headers={"Content-Type": ctype})
    assert resp.code == 201, resp.body
    assert body(resp)["size"] == len(data) and body(resp)["chunks"] > 1000


async def test_more_than_2_mb_of_text_is_refused(alice):
    html = b"<html><body>" + (b"<p>" + b"word " * 200 + b"</p>\n") * 2200 + b"</body></html>"
    assert 2 * MIB < len(html) < 3 * MIB
    resp = await upload(alice, "long.html", html, ctype="text/html")
    assert_error(resp, 422, "DOCUMENT_TOO_LONG")
    assert "2 MB of text" in body(resp)["error"]["message"]
    assert body(await alice.request("GET", "/api/documents")) == {"documents": []}


async def test_5_mib_plus_one_raw_socket_content_length(http_server_client, alice):
    port = http_server_client.get_http_port()
    size = 5 * MIB + 1
    parts = [b"a" * (64 * 1024)] * (size // (64 * 1024)) + [b"a" * (size % (64 * 1024))]
    head = request_head("POST", UPLOAD, port, MULTIPART_TYPE, f"Content-Length: {size}\r\n")
    status, _, resp_body = await raw_exchange(port, head, parts)
    assert status == 413 and json.loads(resp_body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body(await alice.request("GET", "/api/documents")) == {"documents": []}


async def test_5_mib_plus_one_chunked_without_content_length_is_413(http_server_client, alice):
    port = http_server_client.get_http_port()
    raw = _oversized_file()
    parts = chunked_body(raw)
    head = request_head("POST", UPLOAD, port, MULTIPART_TYPE, "Transfer-Encoding: chunked\r\n")
    status, _, resp_body = await raw_exchange(port, head, parts)
    assert status == 413 and json.loads(resp_body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body(await alice.request("GET", "/api/documents")) == {"documents": []}


async def test_chunked_upload_via_body_producer(alice, http_server_client):
    """tornado's client without Content-Length sends chunks: 5 MiB + 1 byte is 413, a small one is 201."""
    raw = _oversized_file()

    async def producer(write):
        for i in range(0, len(raw), 256 * 1024):
            await write(raw[i:i + 256 * 1024])

    resp = await http_server_client.fetch(
        "/api/documents/upload", method="POST", body_producer=producer, raise_error=False,
        headers={**alice.headers(), "Content-Type": MULTIPART_TYPE})
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    small, ctype = multipart({"knowledge_id": "kb1"}, [("file", "s.txt", b"small chunked refund", "text/plain")])

    async def small_producer(write):
        await write(small[:10])
        await write(small[10:])

    resp = await http_server_client.fetch(
        "/api/documents/upload", method="POST", body_producer=small_producer, raise_error=False,
        headers={**alice.headers(), "Content-Type": ctype})
    assert resp.code == 201, resp.body


# ---------------------------------------------------------------------------
# the tool through a run
# ---------------------------------------------------------------------------

async def test_knowledge_search_through_a_demo_run(alice, bob, parley):
    doc = await upload_ok(alice, "policy.md", b"# Refunds\n\nThe refund policy allows returns within 30 days.")
    await upload_ok(bob, "bob.txt", b"Bob's private refund policy.")
    resp = await alice.request("POST", "/api/agents", {"name": "kb", "type": "demo", "tools": ["knowledge_search"]})
    assert resp.code == 201, resp.body
    agent_id = body(resp)["id"]
    task_id = await alice.start_ok("kb-thread", '/tool knowledge_search {"query": "refund policy"}', agentId=agent_id)
    code, frames = await alice.stream(task_id)
    assert code == 200
    chunks = [c for f in frames if f.id is not None and f.event is None for c in f.chunks]
    outputs = [c for c in chunks if c["type"] == "tool-output-available"]
    assert len(outputs) == 1, chunks
    results = outputs[0]["output"]["results"]
    assert [(r["document_id"], r["filename"], r["knowledge_id"]) for r in results] == [(doc["id"], "policy.md", "kb1")]
    assert "Bob" not in json.dumps(chunks)
    assert (await alice.task(task_id))["status"] == "completed"


# ---------------------------------------------------------------------------
# OpenAPI
# ---------------------------------------------------------------------------

async def test_routes_are_documented(parley, app, monkeypatch):
    for path, ops in documents.OPENAPI.items():
        monkeypatch.setitem(OPERATIONS, path, ops)
    routes = route_paths(app)
    assert "/api/documents/upload" in routes and "/api/documents" in routes
    assert not [p for p in routes if p not in OPERATIONS]
    doc = document(app, "test")
    own = route_paths(web.Application(documents.default_handlers))  # in the order of default_handlers
    handlers = {path: handler for path, (_, handler) in zip(own, documents.default_handlers, strict=True)}
    for path in documents.OPENAPI:
        for method, op in doc["paths"][path].items():
            assert op["responses"], (method, path)
            handler = handlers[path]
            assert method.upper() in handler.SUPPORTED_METHODS and hasattr(handler, method)
    json.dumps(doc)


async def test_demo_agent_searches_documents_on_natural_phrasing(alice):
    await upload_ok(alice, "policy.md", b"# Refunds\n\nOur refund policy: refunds are paid within 14 days of the request.\n", "kb-natural")
    task_id = await alice.start_ok("natural-search", "search for refund policy")
    _, frames = await alice.stream(task_id)
    chunks = [c for f in frames if f.id is not None and f.event is None for c in f.chunks]
    out = next(c for c in chunks if c["type"] == "tool-output-available")
    assert out["output"]["results"][0]["filename"] == "policy.md"
    assert "policy.md" in text_of(frames)


async def test_demo_agent_parks_a_refund_for_approval(alice):
    task_id = await alice.start_ok("natural-refund", "please refund order 42")
    info = await alice.wait_status(task_id, "parked")
    assert info["status"] == "parked" and info["parked"]["prompt"] == "please refund order 42"
    await alice.request("DELETE", f"/task/{task_id}")
