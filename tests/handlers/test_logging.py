import json
import logging

import pytest

from server import Config


@pytest.fixture
def parley_config(tmp_path):
    from tests.helpers import INTERNAL_KEY

    return Config(data_dir=tmp_path / "data", internal_key=INTERNAL_KEY, demo_delay_ms=0, log_format="json")


async def test_one_json_line_per_request_with_user_and_trace(alice, caplog):
    caplog.set_level(logging.INFO, logger="parley.access")
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    task_id = await alice.start_ok("log-me", "hi")
    await alice.request("GET", f"/task/{task_id}?token=secret-value", headers={"traceparent": trace})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "parley.access"]
    post = next(line for line in lines if line["method"] == "POST")
    assert post["path"] == "/task" and post["status"] == 201 and post["user"] == "alice"
    assert isinstance(post["duration_ms"], float)
    get = next(line for line in lines if line["method"] == "GET")
    assert get["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert all("secret-value" not in r.getMessage() for r in caplog.records)


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
