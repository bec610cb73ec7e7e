"""One server per SQLite data dir (SPEC section 15), with real processes: a second server on the
data dir refuses to start and names the owner; a server killed with SIGKILL blocks nobody."""
from __future__ import annotations

import subprocess
import sys

from tests.process.proc import ROOT, server_command, server_env


def run_to_exit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, env=server_env(), capture_output=True, text=True, timeout=30)


def test_a_second_server_on_the_data_dir_refuses_to_start_naming_the_dir_and_the_owner(start_server):
    first = start_server()
    task = first.start_task("lock-t", "hello")

    refused = run_to_exit(*server_command(first.data_dir))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stdout == ""  # no start line: it never listened
    lines = refused.stderr.splitlines()
    assert len(lines) == 1, refused.stderr
    assert f"the data dir {first.data_dir.resolve()} is in use" in lines[0]
    assert f"pid {first.proc.pid} " in lines[0]

    # the owner goes on undisturbed, and the admin CLI still works beside it (it takes no lock)
    assert first.wait_status(task, ("completed",))["status"] == "completed"
    admin = run_to_exit(sys.executable, str(ROOT / "server.py"), "admin", "--data-dir", str(first.data_dir), "list-users")
    assert admin.returncode == 0, admin.stderr


def test_after_the_owner_is_killed_with_sigkill_the_next_server_starts(start_server):
    first = start_server(demo_delay_ms=1)
    task = first.start_task("lock-k", "/count 100000")
    first.wait_status(task, ("running",))
    first.kill()

    again = start_server(first.data_dir)  # fails with the refusal in its log if the lock outlived the process
    info = again.task(task)
    assert (info["status"], info["error"]["reason"]) == ("failed", "interrupted")  # its recovery ran on the store
    assert (first.data_dir / "parley.lock").read_text().startswith(f"pid {again.proc.pid} started ")


def test_instances_on_postgresql_may_share_a_data_dir(start_server, pg_url, tmp_path):
    """Its data dir holds no store (keys and files are in the database): no lock is taken."""
    a = start_server(tmp_path / "shared", extra=["--store", pg_url])
    b = start_server(tmp_path / "shared", extra=["--store", pg_url])
    task = b.start_task("shared-t", "hello")
    assert a.wait_status(task, ("completed",))["status"] == "completed"
    assert not (tmp_path / "shared" / "parley.lock").exists()
