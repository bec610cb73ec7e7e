"""`server.py backup DEST` of a running server, restored (SPEC section 15): a backup taken in the
middle of a run, from another process, serves every event committed before it, with the same ids
and bytes, and the files the data dir held; the restored server's recovery ends the run that was
live, as after any restart."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

from store.event_types import RUN_ERROR
from tests.helpers import Frame
from tests.process.proc import AUTH, ROOT, Server, SSEReader, server_env
from tests.process.test_shared_state import post_file

NOTE = b"a note that goes into the backup\n" * 100
MANUAL = b"# Returns\n\nA refund for the quantum toaster is given within 30 days.\n"


def thread_events(server: Server, thread_id: str) -> SSEReader:
    """The thread's events from its first, one frame per event (`id:`, `event:` its type, the stored data)."""
    return SSEReader(server.conn(30), f"/api/v1/agent/runs/{thread_id}/events?idle_limit=1",
                     {**AUTH, "Last-Event-ID": "0"})


def raw(frames: list[Frame]) -> list[tuple[int | None, bytes]]:
    return [(f.id, f.raw) for f in frames]


def test_a_backup_taken_mid_run_is_served_by_a_server_on_the_copy(start_server, tmp_path):
    live = start_server(demo_delay_ms=1)
    status, attachment = post_file(live, "/api/v1/agent/attachments", {"bucket": "agent-inputs"}, "note.txt", NOTE,
                                   "text/plain")
    assert status == 201, attachment
    status, document = post_file(live, "/api/documents/upload", {"knowledge_id": "kb"}, "toaster.md", MANUAL,
                                 "text/markdown")
    assert status == 201, document
    task = live.start_task("backup-t", "/count 100000")
    stream = live.stream(task)
    stream.wait_for(lambda r: len(r.deltas) >= 100, 20, "100 deltas")
    seen = [c for f in stream.snapshot() for c in f.chunks]  # committed before the backup began
    seen_last = stream.snapshot()[-1].id
    stream.close()

    dest = tmp_path / "backup"
    made = subprocess.run([sys.executable, str(ROOT / "server.py"), "backup", "--data-dir", str(live.data_dir),
                           str(dest)], cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert live.task(task)["status"] == "running"  # taken in the middle of the run
    with sqlite3.connect(dest / "parley.db") as copy:
        last = copy.execute("SELECT MAX(id) FROM events").fetchone()[0]
    assert f"(last id {last})" in made.stdout
    assert seen_last is not None and last >= seen_last

    # the live server's events up to the backup's last, read after the backup
    reader = thread_events(live, "backup-t")
    reader.wait_for(lambda r: r.ids and max(r.ids) > last, 20, f"the live server's events past {last}")
    reader.close()
    before_backup = [f for f in reader.snapshot() if f.id is not None and f.id <= last]
    assert [f.id for f in before_backup][-1] == last

    restored = start_server(dest)
    info = restored.task(task)
    assert (info["status"], info["error"]["reason"]) == ("failed", "interrupted"), info
    served = thread_events(restored, "backup-t")
    served.wait_ended(20)
    frames = served.snapshot()
    assert raw(frames[: len(before_backup)]) == raw(before_backup)  # the same ids, the same bytes
    ending = frames[len(before_backup):]
    assert [f.event for f in ending] == [RUN_ERROR] and ending[0].id is not None and ending[0].id > last
    replay = restored.replay(task, last_event_id=0)  # the task's own stream from 0
    assert replay.chunks[: len(seen)] == seen
    assert replay.terminal is not None and replay.terminal.event == "error"

    # the files: an attachment through the URL the live server signed (the keys came along), the document
    got = restored.request("GET", attachment["attachment"]["url"], auth=False)
    assert got.status == 200 and got.body == NOTE
    assert (dest / "documents" / document["id"]).read_bytes() == MANUAL
    assert [d["id"] for d in restored.request("GET", "/api/documents").json()["documents"]] == [document["id"]]
    search = restored.start_task("search-t", "search for quantum toaster")
    restored.wait_status(search, ("completed",))
    assert "toaster.md" in "".join(restored.replay(search).deltas)
