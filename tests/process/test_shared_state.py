"""State every instance shares (SPEC section 14): two Parley processes on one PostgreSQL database,
each with its own data dir, so that nothing can pass between them but through the database.

What one instance signs the other accepts (a Bearer token, a stream token, a signed attachment
URL, a sign-up code), what one stores the other serves (attachments, documents for
knowledge_search), rate limits count over both, and an MCP session of one is "not found" on the
other (404), so that the client initializes again.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.process.proc import AUTH, KEY, Server
from tests.process.test_trust_process import multipart

V = "/api/v1/auth/verifications"
PASSWORD = "correct horse battery"


@pytest.fixture
def pair(start_server, pg_url, tmp_path):
    """Instances A and B of one Parley: one database, each its own data dir."""
    return tuple(start_server(tmp_path / name, extra=["--store", pg_url]) for name in ("a", "b"))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_file(server: Server, path: str, fields: dict[str, str], filename: str, content: bytes,
              media_type: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    data, ctype = multipart(fields, filename, content, media_type)
    c = server.conn()
    try:
        c.request("POST", path, body=data, headers={"Content-Type": ctype, **(headers or AUTH)})
        r = c.getresponse()
        body = r.read()
        return r.status, (json.loads(body) if body else {})
    finally:
        c.close()


def mailed_code(server: Server, email: str) -> str:
    mails = [p.read_text() for p in sorted((server.data_dir / "outbox").glob("*.txt"))]
    code = re.search(r"\b(\d{6})\b", [m for m in mails if f"To: {email}\n" in m][-1].split("\n\n", 1)[1])
    assert code
    return code.group(1)


def test_accounts_made_on_one_instance_sign_in_and_are_accepted_on_the_other(pair):
    a, b = pair
    r = a.request("POST", V, {"username": "ann", "email": "ann@example.com", "password": PASSWORD}, auth=False)
    assert r.status == 202, r.body
    # the code A mailed is checked by B (the pepper of the codes' hashes is shared)
    r = b.request("POST", V + "/verify", {"email": "ann@example.com", "token": mailed_code(a, "ann@example.com")},
                  auth=False)
    assert r.status == 200, r.body
    from_b = r.json()
    assert a.request("GET", "/api/v1/users/me", headers=bearer(from_b["access_token"]), auth=False).status == 200
    # a login through A gives a token that B accepts, and a refresh token that B rotates
    r = a.request("POST", "/api/v1/auth/sessions", {"email": "ann@example.com", "password": PASSWORD}, auth=False)
    assert r.status == 200, r.body
    tokens = r.json()
    me = b.request("GET", "/api/v1/users/me", headers=bearer(tokens["access_token"]), auth=False)
    assert me.status == 200 and me.json()["username"] == "ann"
    r = b.request("POST", "/api/v1/auth/sessions/refresh", {"refresh_token": tokens["refresh_token"]}, auth=False)
    assert r.status == 200, r.body
    # one signing key: the same JWKS on both
    jwks = a.request("GET", "/.well-known/jwks.json", auth=False).json()
    assert jwks == b.request("GET", "/.well-known/jwks.json", auth=False).json() and len(jwks["keys"]) == 1
    # and no key is on either disk
    assert not (a.data_dir / "keys").exists() and not (b.data_dir / "keys").exists()
    # sign-ups for the account's email, through both: one "already has an account" mail over both
    for server, name in ((a, "ann2"), (b, "ann3"), (a, "ann4"), (b, "ann5")):
        r = server.request("POST", V, {"username": name, "email": "ann@example.com", "password": PASSWORD}, auth=False)
        assert r.status == 202, r.body
    notices = [p for s in pair for p in (s.data_dir / "outbox").glob("*.txt") if "already has an account" in p.read_text()]
    assert len(notices) == 1, notices


def test_a_stream_token_from_one_instance_opens_the_stream_on_the_other(pair):
    a, b = pair
    task = a.start_task("t-token", "hello there")
    token = a.task(task)["streamToken"]
    a.wait_status(task, ("completed",))
    c = b.conn()
    try:
        c.request("GET", f"/stream/{task}?token={token}")  # no other credentials
        r = c.getresponse()
        body = r.read().decode()
    finally:
        c.close()
    assert r.status == 200, body
    assert "event: done" in body and "hello" in body.lower()
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert b.request("GET", f"/stream/{task}?token={forged}", auth=False).status == 401


def test_an_attachment_uploaded_to_one_instance_is_served_by_the_other(pair):
    a, b = pair
    content = b"a note kept in the database\n" * 1000
    status, out = post_file(a, "/api/v1/agent/attachments", {"bucket": "agent-inputs"}, "note.txt", content,
                            "text/plain")
    assert status == 201, out
    url = out["attachment"]["url"]
    r = b.request("GET", url, auth=False)  # the signed URL is the only credential
    assert r.status == 200 and r.body == content
    assert r.headers["content-type"].startswith("text/plain")
    r = b.request("GET", url, headers={"Range": "bytes=2-5"}, auth=False)
    assert r.status == 206 and r.body == content[2:6]
    # B signs a URL for it too (the owner folder in the path is A's HMAC, the same secret)
    att = out["attachment"]
    r = b.request("GET", f"/api/v1/agent/attachments/signed-url?bucket={att['bucket']}&path={att['path']}")
    assert r.status == 200, r.body
    assert a.request("GET", r.json()["url"], auth=False).body == content
    assert not (a.data_dir / "attachments").exists()  # kept in the database, not on A's disk


def test_a_document_uploaded_to_one_instance_is_found_by_knowledge_search_on_the_other(pair):
    a, b = pair
    text = b"# Returns\n\nA refund for the quantum toaster is given within 30 days.\n"
    status, doc = post_file(a, "/api/documents/upload", {"knowledge_id": "kb"}, "toaster.md", text, "text/markdown")
    assert status == 201, doc
    listed = b.request("GET", "/api/documents")
    assert [d["id"] for d in listed.json()["documents"]] == [doc["id"]]
    task = b.start_task("t-search", "search for quantum toaster")
    b.wait_status(task, ("completed",))
    said = "".join(b.replay(task).deltas)
    assert "toaster.md" in said and "1 passage" in said, said
    assert b.request("DELETE", f"/api/documents/{doc['id']}").status == 204  # deleted through the other
    assert a.request("GET", "/api/documents").json()["documents"] == []
    assert not (a.data_dir / "documents").exists()


def test_the_document_upload_limit_counts_the_uploads_to_both_instances(pair):
    a, b = pair
    codes = []
    for n in range(31):  # 30 a minute per user, over A and B in turn
        status, _ = post_file((a, b)[n % 2], "/api/documents/upload", {"knowledge_id": "kb"}, f"d{n}.txt",
                              f"document number {n}\n".encode(), "text/plain")
        codes.append(status)
    assert codes == [201] * 30 + [429], codes
    status, body = post_file(b, "/api/documents/upload", {"knowledge_id": "kb"}, "late.txt", b"late\n", "text/plain")
    assert status == 429 and body["error"]["code"] == "RATE_LIMITED"
    status, _ = post_file(a, "/api/documents/upload", {"knowledge_id": "kb"}, "other.txt", b"other user\n",
                          "text/plain", headers={"X-Internal-Key": KEY, "X-User-Id": "u2"})
    assert status == 201  # per user


def rpc(server: Server, method: str, msg_id: int, session: str | None = None):
    headers = {"Accept": "application/json, text/event-stream"}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    params = {"protocolVersion": "2025-06-18", "capabilities": {},
              "clientInfo": {"name": "t", "version": "1"}} if method == "initialize" else {}
    return server.request("POST", "/mcp", {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params},
                          headers=headers)


def test_an_mcp_session_of_one_instance_is_not_found_on_the_other_and_the_client_starts_over(pair):
    a, b = pair
    r = rpc(a, "initialize", 1)
    assert r.status == 200, r.body
    session = r.headers["mcp-session-id"]
    assert rpc(a, "tools/list", 2, session).status == 200
    r = rpc(b, "tools/list", 3, session)
    assert r.status == 404  # the MCP "session not found": the client initializes again …
    assert r.json()["id"] == 3 and r.json()["error"]["message"] == "session not found"
    r = rpc(b, "initialize", 4)
    assert r.status == 200
    again = r.headers["mcp-session-id"]
    r = rpc(b, "tools/list", 5, again)  # … and goes on with B's session
    assert r.status == 200 and r.json()["result"]["tools"]
