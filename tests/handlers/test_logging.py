import io
import json
import logging

import pytest

from agents import AgentDef
from agents.tools import Tool
from server import Config
from telemetry.logs import JsonFormatter


@pytest.fixture
def parley_config(tmp_path):
    from tests.helpers import INTERNAL_KEY

    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, log_format="json")


async def test_one_json_line_per_request_with_user_and_trace(alice, caplog):
    caplog.set_level(logging.INFO, logger="parley.access")
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    task_id = await alice.start_ok("log-me", "hi")
    await alice.request("GET", f"/task/{task_id}?token=secret-value", headers={"traceparent": trace})
    formatter = JsonFormatter()  # what --log-format json installs on stderr
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "parley.access"]
    post = next(line for line in lines if line["method"] == "POST")
    assert post["path"] == "/task" and post["status"] == 201 and post["user"] == "alice"
    assert post["level"] == "info" and post["logger"] == "parley.access" and post["message"].startswith("201 POST /task ")
    assert isinstance(post["duration_ms"], float)
    get = next(line for line in lines if line["method"] == "GET")
    assert get["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert all("secret-value" not in formatter.format(r) for r in caplog.records)


async def test_internal_key_never_logged(alice, caplog):
    caplog.set_level(logging.DEBUG)
    await alice.request("GET", "/task/unknown")
    await alice.request("GET", "/task/unknown", headers={"X-Internal-Key": "wrong-key-value"})
    assert all("test-internal-key" not in r.getMessage() and "wrong-key-value" not in r.getMessage() for r in caplog.records)


async def test_levels_by_status(app, caplog):
    from server import RequestLog

    class Handler:
        def __init__(self, status):
            self.status = status
            self.request = type("R", (), {"method": "GET", "path": "/x", "request_time": lambda self: 0.001})()

        def get_status(self):
            return self.status

    caplog.set_level(logging.DEBUG, logger="parley.access")
    log = RequestLog("text")
    for status in (200, 404, 500, 501, 502, 503, 504):
        log(Handler(status))
    levels = [r.levelname for r in caplog.records if r.name == "parley.access"]
    assert levels == ["INFO", "WARNING", "ERROR", "WARNING", "WARNING", "WARNING", "ERROR"]


@pytest.fixture
def json_stderr():
    """What --log-format json writes: the root logger's records through the JSON formatter, one per line."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


async def test_a_runs_records_carry_its_task_and_the_trace_of_the_request_that_started_it(parley, alice, json_stderr):
    async def boom(args, env):
        raise RuntimeError("the boom tool broke")

    parley.agents.tools["boom"] = Tool("boom", "always breaks", {"type": "object"}, boom)
    parley.agents.add(AgentDef(id="crashy", name="Crashy", type="demo", tools=("boom",)))
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    resp = await alice.request("POST", "/task", {"threadId": "ctx", "content": "/tool boom", "agentId": "crashy"},
                               headers={"traceparent": trace})
    assert resp.code == 201, resp.body
    task_id = json.loads(resp.body)["taskId"]
    await alice.wait_status(task_id, "completed")
    await alice.request("GET", "/task/unknown-task")  # another request, no trace: its records carry none

    lines = json_stderr.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line one JSON object
    failed = next(r for r in records if r["message"].startswith("tool boom failed"))
    assert failed["task_id"] == task_id and failed["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert failed["level"] == "error" and failed["logger"] == "parley.agents"
    assert "RuntimeError: the boom tool broke" in failed["traceback"] and "Traceback" in failed["traceback"]
    post = next(r for r in records if r.get("method") == "POST" and r.get("path") == "/task")
    assert post["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and "task_id" not in post
    unknown = next(r for r in records if r.get("path") == "/task/unknown-task")
    assert unknown["trace_id"] is None and "task_id" not in unknown
