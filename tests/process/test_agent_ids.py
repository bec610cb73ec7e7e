"""A configured agent owns its id across a restart (issue 9 item 6), against real server processes.

A user created agent `assistant` through the API; the operator then configured `[[agents]] id =
"assistant"` and restarted: every other user's run of it was refused 403, because the stored
agent replaced the configured one at load.
"""
from __future__ import annotations

CONFIG = """
[[agents]]
id = "assistant"
name = "Assistant"
type = "demo"
"""


def test_a_configured_agent_owns_its_id_after_a_restart(start_server, tmp_path):
    first = start_server()
    created = first.request("POST", "/api/agents", {"id": "assistant", "name": "Mine", "type": "demo"})
    assert created.status == 201, created.body
    first.kill()

    config = tmp_path / "parley.toml"
    config.write_text(CONFIG)
    again = start_server(first.data_dir, extra=["--config", str(config)])
    other = {"X-User-Id": "someone-else"}
    started = again.request("POST", "/task", {"threadId": "t-other", "content": "hello", "agentId": "assistant"},
                            headers=other)
    assert started.status == 201, started.body
    task_id = started.json()["taskId"]
    info = again.request("GET", f"/task/{task_id}", headers=other).json()
    assert info["agentId"] == "assistant"
    listed = [a for a in again.request("GET", "/api/agents").json()["agents"] if a["id"] == "assistant"]
    assert [a["name"] for a in listed] == ["Assistant"]  # its creator sees the configured one too
    refused = again.request("POST", "/api/agents", {"id": "assistant", "name": "Mine", "type": "demo"})
    assert refused.status == 409
    assert "agent 'assistant' of user 'u1' is not loaded" in again.log_tail(200)
