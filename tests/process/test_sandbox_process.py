"""The sandbox workers of a real server process (agents/sandbox.py) never outlive it:
a drain kills them, and after a kill -9 of the server they end on their own."""
from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.process.proc import AUTH, wait_until


def workers_of(pid: int) -> list[int]:
    """The live sandbox worker processes that `pid` started."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"agents/sandbox.py" in cmdline:
                out.append(int(child))
    return out


def ended(pid: int) -> bool:
    """The process is gone, or a zombie waiting to be reaped by whoever inherited it (no CPU, no memory)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def calculate(server, expression: str) -> dict:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "calculator", "arguments": {"expression": expression}}}
    resp = server.request("POST", "/mcp", body, headers={**AUTH, "Accept": "application/json, text/event-stream"})
    assert resp.status == 200, resp.body
    return json.loads(resp.body)["result"]


def test_a_drain_leaves_no_worker_behind(start_server):
    server = start_server()
    assert calculate(server, "6*7")["structuredContent"]["result"] == 42
    workers = workers_of(server.proc.pid)
    assert workers
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    wait_until(lambda: all(ended(p) for p in workers), 5, "the workers to end")


def test_workers_end_on_their_own_after_a_kill_9(start_server):
    server = start_server()
    assert calculate(server, "2**10")["structuredContent"]["result"] == 1024
    workers = workers_of(server.proc.pid)
    assert workers
    server.kill()
    wait_until(lambda: all(ended(p) for p in workers), 5, "the orphaned workers to end")
