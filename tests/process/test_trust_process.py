"""Trust boundaries of a real server process (SPEC 13, issue 9): a private data dir (0700, files
0600, whatever the umask Parley was started with), and the dev-code route only with `--dev`."""
from __future__ import annotations

import os
import re
import stat
import uuid
from pathlib import Path

from tests.process.proc import Server

V = "/api/v1/auth/verifications"


def multipart(fields: dict[str, str], filename: str, content: bytes, media_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: {media_type}\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def upload(server: Server, path: str, fields: dict[str, str], filename: str, content: bytes, media_type: str,
           token: str) -> int:
    data, ctype = multipart(fields, filename, content, media_type)
    c = server.conn()
    try:
        c.request("POST", path, body=data, headers={"Content-Type": ctype, "Authorization": f"Bearer {token}"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def sign_up(server: Server, email: str, username: str) -> str:
    r = server.request("POST", V, {"username": username, "email": email, "password": "correct horse"}, auth=False)
    assert r.status == 202, (r.status, r.body)
    mails = [p.read_text() for p in sorted((server.data_dir / "outbox").glob("*.txt"))]
    code = re.search(r"\b(\d{6})\b", [m for m in mails if f"To: {email}\n" in m][-1].split("\n\n", 1)[1])
    assert code
    r = server.request("POST", V + "/verify", {"email": email, "token": code.group(1)}, auth=False)
    assert r.status == 200, (r.status, r.body)
    return str(r.json()["access_token"])


def modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_data_dir_is_private_whatever_the_umask(start_server, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)  # as an older Parley (or a person) left it
    old = os.umask(0o022)  # the usual umask, inherited by the server process
    try:
        server = start_server(data_dir)
    finally:
        os.umask(old)
    token = sign_up(server, "files@example.com", "files")
    assert upload(server, "/api/v1/agent/attachments", {"bucket": "agent-inputs"}, "note.txt", b"private words\n",
                  "text/plain", token) == 201
    assert upload(server, "/api/documents/upload", {"knowledge_id": "kb"}, "doc.md", b"# Private\n\nwords\n",
                  "text/markdown", token) == 201
    assert server.start_task("t-files", "hello") and server.request("GET", "/health").status == 200
    found = modes(data_dir)
    assert "parley.db" in found and any(p.startswith("outbox/") for p in found), sorted(found)
    assert any(p.startswith("attachments/") and not stat.S_ISDIR((data_dir / p).stat().st_mode) for p in found)
    assert any(p.startswith("keys/") for p in found)
    wrong = {p: oct(m) for p, m in found.items()
             if m != (0o700 if (data_dir / p).is_dir() else 0o600)}
    assert not wrong, wrong


def test_dev_code_exists_only_with_dev(start_server, tmp_path):
    plain = start_server(tmp_path / "plain", dev=False)
    plain.request("POST", V, {"username": "nodev", "email": "nodev@example.com", "password": "correct horse"},
                  auth=False)
    r = plain.request("GET", "/api/v1/auth/dev-code?email=nodev@example.com", auth=False)
    assert r.status == 404 and not re.search(rb"\b\d{6}\b", r.body)
    r = plain.request("GET", "/api/v1/auth/config", auth=False, headers={"Host": "rebound.attacker.example"})
    assert r.status == 421 and r.headers["content-type"] == "application/problem+json"

    dev = start_server(tmp_path / "dev")  # --dev
    dev.request("POST", V, {"username": "isdev", "email": "isdev@example.com", "password": "correct horse"},
                auth=False)
    r = dev.request("GET", "/api/v1/auth/dev-code?email=isdev@example.com", auth=False)
    assert r.status == 200 and re.fullmatch(r"\d{6}", r.json()["code"])
    r = dev.request("GET", "/api/v1/auth/dev-code?email=isdev@example.com", auth=False,
                    headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status == 403 and r.json()["code"] == "FORBIDDEN"
