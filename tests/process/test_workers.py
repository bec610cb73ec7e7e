"""`--workers N` (SPEC section 14): N processes of one instance on one machine, sharing the port.

Real processes on a real PostgreSQL, leases of 3 s.  Which worker takes a connection is the
kernel's choice (each worker has a socket on the port, SO_REUSEPORT); the tests find the worker
of a connection in /proc, and send the requests meant for a given worker on a keep-alive
connection that it holds.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.process.proc import AUTH, ROOT, Server, SSEReader, wait_until

LEASE_S = 3


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(c) for c in fh.read().split())
    return sorted(found)


def state_of(pid: int) -> str | None:
    """The process's state letter in /proc (S, R, T: stopped, Z: exited, not reaped), None once reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def gone(pid: int) -> bool:
    return state_of(pid) in (None, "Z")


def workers_of(server: Server, n: int = 2) -> list[int]:
    def found() -> list[int] | None:
        pids = children_of(server.proc.pid)
        return pids if len(pids) == n else None

    return list(wait_until(found, 10, f"{n} workers"))


def worker_of(conn: http.client.HTTPConnection, server: Server, workers: list[int]) -> int | None:
    """The worker holding the server's end of `conn` (an answered connection): the one whose open
    files include the socket that /proc/net/tcp lists from the server's port to the client's."""
    assert conn.sock is not None
    client_port = conn.sock.getsockname()[1]
    with open("/proc/net/tcp") as fh:
        rows = [line.split() for line in fh.read().splitlines()[1:]]
    inodes = {f"socket:[{row[9]}]" for row in rows
              if int(row[1].rsplit(":", 1)[1], 16) == server.port and int(row[2].rsplit(":", 1)[1], 16) == client_port}
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
    return None


@pytest.fixture
def pinned() -> Iterator[Callable[[Server, int, list[int]], http.client.HTTPConnection]]:
    """`pinned(server, worker, workers)`: a keep-alive connection that `worker` accepted: every
    request sent on it is that worker's (new connections until the kernel gives it one)."""
    conns: list[http.client.HTTPConnection] = []

    def pin(server: Server, worker: int, workers: list[int]) -> http.client.HTTPConnection:
        for _ in range(100):
            conn = server.conn(30)
            conns.append(conn)
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            if worker_of(conn, server, workers) == worker:
                return conn
            conn.close()
        raise AssertionError(f"no connection of 100 reached worker {worker}")

    yield pin
    for conn in conns:
        conn.close()


def start_on(conn: http.client.HTTPConnection, thread_id: str, content: str) -> str:
    conn.request("POST", "/task", body=json.dumps({"threadId": thread_id, "content": content}),
                 headers={**AUTH, "Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    assert response.status == 201, (response.status, body)
    return str(json.loads(body)["taskId"])


@pytest.fixture
def start_workers(start_server, pg_url, tmp_path):
    """`start_workers(n)`: a server of n workers on a fresh database.  Afterwards its workers are
    killed with it (its supervisor stopped first, so that it replaces none of them)."""
    servers: list[Server] = []

    def start(n: int = 2, extra: tuple[str, ...] = (), **options) -> Server:
        server = start_server(tmp_path / f"data-{len(servers)}", demo_delay_ms=20,
                              extra=["--store", pg_url, "--lease-s", str(LEASE_S), "--workers", str(n), *extra],
                              **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGSTOP)
        for pid in children_of(server.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_two_workers_serve_the_port_and_a_killed_one_ends_only_its_runs(start_workers, pinned):
    server = start_workers(2)
    assert sum("open http://" in line for line in server._stdout) == 1  # one start line, from the supervisor
    first, second = workers_of(server)
    to_first, to_second = pinned(server, first, [first, second]), pinned(server, second, [first, second])
    on_first = start_on(to_first, "w1", "/sleep 60")
    on_second = start_on(to_second, "w2", "/sleep 60")
    reader = server.stream(on_first)
    reader.wait_for(lambda r: r.ids, 10, "the first run's first event")

    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    reader.wait_over(LEASE_S + 10)  # its stream was on either worker: it ends, or breaks with its worker
    info = server.wait_status(on_first, ("failed",), timeout=LEASE_S + 10)
    assert time.monotonic() - killed_at <= LEASE_S + 5
    assert info["error"]["reason"] == "interrupted"
    # the run of the other worker, a different process, goes on; the port is still served
    assert server.task(on_second)["status"] == "running"
    assert server.request("DELETE", f"/task/{on_second}").status == 204
    assert server.task(on_second)["status"] == "cancelled"
    done = server.stream(server.start_task("w1", "/count 5"))  # the killed worker's thread is free
    done.wait_ended(10)
    assert done.terminal.event == "done"
    # the supervisor started another worker in its place, and it serves
    replacement = wait_until(lambda: [p for p in children_of(server.proc.pid) if p not in (first, second)],
                             10, "a replacement worker")[0]
    assert children_of(server.proc.pid) == sorted([second, replacement])
    to_replacement = pinned(server, replacement, [second, replacement])
    assert server.wait_status(start_on(to_replacement, "w3", "/count 3"), ("completed",))


def test_runs_started_through_the_shared_port_stream_to_done(start_workers, pinned):
    server = start_workers(2)
    first, second = workers_of(server)
    to_first, to_second = pinned(server, first, [first, second]), pinned(server, second, [first, second])
    tasks = [start_on(conn, f"s{n}", "/count 20") for n, conn in enumerate((to_first, to_second, to_first, to_second))]
    readers = [server.stream(task) for task in tasks]  # on whichever worker the kernel chooses
    for reader in readers:
        reader.wait_ended(20)
        assert reader.terminal.event == "done"
        assert reader.deltas == [f"{k} " for k in range(1, 21)]
        live = [f.id for f in reader.data_frames]
        assert live == sorted(set(live))  # ids strictly increase, whichever worker committed them
    assert all(server.task(task)["status"] == "completed" for task in tasks)


def test_sigterm_drains_every_worker(start_workers, pinned):
    server = start_workers(2)
    first, second = workers_of(server)
    readers = []
    for worker, thread in ((first, "d1"), (second, "d2")):
        conn = pinned(server, worker, [first, second])
        task = start_on(conn, thread, "/count 80")
        readers.append(SSEReader(conn, f"/stream/{task}", dict(AUTH)))  # on the worker running it
    for reader in readers:
        reader.wait_for(lambda r: len(r.deltas) >= 3, 10, "the first deltas")

    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0, server.log_tail()
    for reader in readers:
        reader.wait_ended(5)
        assert reader.terminal.event == "done" and len(reader.deltas) == 80  # each run finished
    assert gone(first) and gone(second)


def test_json_logs_of_the_supervisor_and_every_worker_name_their_process(start_workers, pinned):
    server = start_workers(2, extra=("--log-format", "json"))
    first, second = workers_of(server)
    for worker, thread in ((first, "j1"), (second, "j2")):
        server.wait_status(start_on(pinned(server, worker, [first, second]), thread, "hello"), ("completed",))
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0, server.log_tail()
    records = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]
    assert all(isinstance(r["pid"], int) for r in records)
    access = {r["pid"] for r in records if r["logger"] == "parley.access" and r.get("path") == "/task"}
    assert access == {first, second}
    assert any(r["pid"] == server.proc.pid and r["logger"] == "parley.workers" for r in records)


def test_a_second_signal_stops_the_workers_at_once(start_workers):
    server = start_workers(2)
    first, second = workers_of(server)
    reader = server.stream(server.start_task("x1", "/sleep 60"))
    reader.wait_for(lambda r: r.ids, 10, "the first event")
    server.signal(signal.SIGINT)
    wait_until(lambda: server.log_path.read_text().count("draining: new runs refused") == 2, 5, "both draining")
    assert not gone(first) or not gone(second)  # the worker of the run gives it the drain timeout (5 s)
    server.signal(signal.SIGINT)
    assert server.wait_exit(5) == 1
    wait_until(lambda: gone(first) and gone(second), 5, "the workers gone")


def test_workers_whose_supervisor_is_killed_drain_and_exit(start_workers):
    server = start_workers(2)
    first, second = workers_of(server)
    server.kill()
    wait_until(lambda: gone(first) and gone(second), 15, "the workers gone after their supervisor")
    log = server.log_path.read_text()
    for pid in (first, second):  # each worker says it, and its log lines say which worker it is
        assert f"WARNING [{pid}] parley: the supervisor of this worker is gone: draining" in log


def test_a_worker_that_fails_to_start_stops_the_instance(pg_url, tmp_path):
    bad = tmp_path / "parley.toml"
    bad.write_text("[demo]\nmax_count = -1\n")
    proc = subprocess.run([sys.executable, str(ROOT / "server.py"), "--port", "0", "--data-dir", str(tmp_path / "d"),
                           "--store", pg_url, "--workers", "2", "--config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, env=_env())
    assert proc.returncode == 2, proc.stderr
    assert "open http://" not in proc.stdout
    assert "parley.toml: [demo] max_count: expected an integer, at least 0, got -1" in proc.stderr


def test_workers_with_sqlite_are_refused(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "server.py"), "--port", "0", "--data-dir", str(tmp_path / "d"),
                           "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=30, env=_env())
    assert proc.returncode == 2
    assert "--workers: more than one needs the PostgreSQL store (--store postgresql://…)" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "d").exists()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}


def test_a_replacement_that_fails_to_start_is_not_replaced_again(start_workers, tmp_path):
    server = start_workers(2)
    first, second = workers_of(server)
    # a data dir that is now a file: a new worker fails as it opens it; the running ones go on
    server.data_dir.rename(tmp_path / "moved")
    server.data_dir.write_text("")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: "not replaced again (1 worker(s) left)" in server.log_path.read_text(), 15,
               "the replacement's failure")
    assert children_of(server.proc.pid) == [second]
    for _ in range(20):  # the instance goes on with one worker, which takes every connection
        assert server.request("GET", "/health", timeout=5).status == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 1  # it drained, but one of its workers had failed


def test_sigterm_to_every_process_at_once_drains_once(start_workers, pinned):
    """As systemd stops a unit (SIGTERM to each of its processes) or Ctrl-C (the process group):
    each worker hears the stop twice, directly and from its supervisor, and drains once."""
    server = start_workers(2)
    first, second = workers_of(server)
    conn = pinned(server, first, [first, second])
    task = start_on(conn, "g1", "/count 60")
    reader = SSEReader(conn, f"/stream/{task}", dict(AUTH))
    reader.wait_for(lambda r: len(r.deltas) >= 3, 10, "the first deltas")
    for pid in (first, second, server.proc.pid):
        os.kill(pid, signal.SIGTERM)
    assert server.wait_exit(20) == 0, server.log_tail()
    reader.wait_ended(5)
    assert reader.terminal.event == "done" and len(reader.deltas) == 60


def test_a_port_another_server_holds_is_refused(tmp_path):
    """SO_REUSEPORT lets sockets of one user share a port: the workers' must not join another server's."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        proc = subprocess.run([sys.executable, str(ROOT / "server.py"), "--port", str(other.getsockname()[1]),
                               "--data-dir", str(tmp_path / "d"), "--store", "postgresql://127.0.0.1:1/none",
                               "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=30, env=_env())
    assert proc.returncode != 0 and "Address already in use" in proc.stderr
    assert "open http://" not in proc.stdout


def test_a_stop_before_the_workers_listen_is_a_clean_exit(pg_url, tmp_path):
    """SIGTERM while the first worker still opens the store (held here at the migrations' lock)."""
    import psycopg

    from store.postgres import MIGRATION_LOCK

    with psycopg.connect(pg_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        proc = subprocess.Popen([sys.executable, str(ROOT / "server.py"), "--port", "0", "--data-dir", str(tmp_path / "d"),
                                 "--store", pg_url, "--workers", "2"], cwd=ROOT, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: children_of(proc.pid), 15, "the first worker")
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "open http://" not in out


def test_while_one_worker_still_drains_it_takes_every_connection(start_workers, pinned):
    """The idle worker has drained and exited; the one with a run drains on (drain timeout 3 s)."""
    server = start_workers(2, drain_timeout=3)
    first, second = workers_of(server)
    start_on(pinned(server, first, [first, second]), "r1", "/sleep 60")
    server.signal(signal.SIGTERM)
    wait_until(lambda: f"(pid {second}) exited with 0" in server.log_path.read_text(), 10, "the idle worker's exit")
    assert not gone(first)
    for _ in range(20):  # none waits at the socket of the worker that has gone
        assert server.request("GET", "/health", auth=False, timeout=3).status == 503
    assert server.wait_exit(15) == 0
