"""--log-format json: every line the server writes to stderr is one JSON object, whatever logged it."""
from __future__ import annotations

import json
import signal
import socket

from tests.process.proc import Server

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_every_stderr_line_is_one_json_object(tmp_path, start_server):
    refused = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # bound, never listening: SMTP is refused
    refused.bind(("127.0.0.1", 0))
    config = tmp_path / "parley.toml"
    config.write_text(f'[smtp]\nhost = "127.0.0.1"\nport = {refused.getsockname()[1]}\nstarttls = false\n')
    try:
        server: Server = start_server(dev=False, extra=["--log-format", "json", "--config", str(config)])
        started = server.request("POST", "/task", {"threadId": "t1", "content": "hello there"},
                                 headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
        assert started.status == 201, started.body
        task_id = started.json()["taskId"]
        server.wait_status(task_id, ("completed",))
        # An application record with a traceback: the sign-up's mail cannot be sent (502).
        signup = server.request("POST", "/api/v1/auth/verifications", auth=False,
                                body={"username": "ann", "email": "ann@example.com", "password": "correct horse"})
        assert signup.status == 502, signup.body
        # A library's record: tornado says so when a request is not HTTP.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw.recv(1024)
        server.signal(signal.SIGTERM)
        assert server.wait_exit(15) == 0
    finally:
        refused.close()

    lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        record = json.loads(line)  # every line: a JSON object, never a bare traceback line
        assert isinstance(record, dict) and {"ts", "level", "logger", "message"} <= record.keys(), line
        records.append(record)

    access = next(r for r in records if r["logger"] == "parley.access" and r.get("path") == "/task")
    assert access["method"] == "POST" and access["status"] == 201 and access["user"] == "u1"
    assert access["trace_id"] == TRACE and access["level"] == "info"
    mail = next(r for r in records if r["message"] == "sending mail to ann@example.com failed")
    assert mail["level"] == "error" and mail["logger"].startswith("parley")
    assert mail["traceback"].startswith("Traceback (most recent call last):") and "\n" in mail["traceback"]
    assert any(r["logger"] == "tornado.general" and "Malformed HTTP" in r["message"] for r in records), records
    assert any(r["logger"] == "parley" and r["message"] == "received SIGTERM" for r in records)
    assert any(r["logger"] == "parley" and r["message"] == "drained; store closed" for r in records)
