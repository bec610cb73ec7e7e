import json

from tests.helpers import text_of


async def test_health_and_root(alice):
    resp = await alice.request("GET", "/health")
    assert resp.code == 200 and json.loads(resp.body) == {"status": "ok"}
    resp = await alice.request("GET", "/")
    assert json.loads(resp.body)["service"] == "parley"
    resp = await alice.request("GET", "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert resp.code == 302 and resp.headers["Location"] == "/ui/"


async def test_run_streams_to_done(alice):
    task_id = await alice.start_ok("t1", "/count 20")
    code, frames = await alice.stream(task_id)
    assert code == 200
    assert text_of(frames) == "".join(f"{k} " for k in range(1, 21))
    assert frames[-1].event == "done" and frames[-1].data == ""
    assert frames[-2].chunks[-1] == {"type": "finish"}
    assert frames[-2].id == frames[-1].id
    info = await alice.task(task_id)
    assert info["status"] == "completed"
