"""Two Parley processes on one PostgreSQL database (SPEC section 14): a request may reach either.

Real processes (`server.py --store postgresql://…`), real HTTP, a real PostgreSQL; leases of 3 s
(`--lease-s 3`) so that the death of an instance is noticed within seconds.
"""
from __future__ import annotations

import concurrent.futures
import signal
import time

import pytest

from tests.process.proc import wait_until

LEASE_S = 3


@pytest.fixture
def pair(start_server, pg_url, tmp_path):
    """Instances A and B of one Parley: one database, each its own data dir."""
    def start(name):
        return start_server(tmp_path / name, demo_delay_ms=20, extra=["--store", pg_url, "--lease-s", str(LEASE_S)])

    return start("a"), start("b")


def test_a_run_started_on_one_instance_streams_on_the_other_live_and_resumed(pair):
    a, b = pair
    task = a.start_task("t1", "/count 60")
    on_b = b.stream(task)
    on_a = a.stream(task)
    on_b.wait_ended(20)
    on_a.wait_ended(20)
    assert on_b.terminal.event == "done"
    # the same chunks and the same last id (frames group the events of a commit as they come)
    assert on_b.chunks == on_a.chunks and on_b.ids[-1] == on_a.ids[-1]
    assert on_b.deltas == [f"{n} " for n in range(1, 61)]
    # resumed half-way, on the other instance
    middle = on_a.ids[len(on_a.ids) // 2]
    rest = b.replay(task, last_event_id=middle)
    assert rest.ids[-1] == on_a.ids[-1] and all(i > middle for i in rest.ids)
    assert on_a.deltas[:len(on_a.deltas) - len(rest.deltas)] + rest.deltas == on_a.deltas


def test_the_other_instance_stops_a_run(pair):
    a, b = pair
    task = a.start_task("t2", "/sleep 60")
    on_a = a.stream(task)
    on_a.wait_for(lambda r: r.ids, 10, "the run's first event")
    assert b.request("DELETE", f"/task/{task}").status == 204
    assert b.task(task)["status"] == "cancelled"  # the stop returns once the run has ended
    on_a.wait_ended(10)
    assert on_a.terminal.event == "error"
    assert b.start_task("t2", "hello")  # the thread is free


def test_a_job_parked_on_one_instance_is_signalled_through_the_other(pair):
    a, b = pair
    task = a.start_task("t3", "/approve refund order-9")
    info = a.wait_status(task, ("parked",))
    key = info["parked"]["correlationKey"]
    r = b.request("POST", f"/api/jobs/{task}/signal", {"correlation_key": key, "payload": {"approved": True}})
    assert r.status == 200, r.body
    done = a.wait_status(task, ("completed",), timeout=20)
    assert done["status"] == "completed"
    assert "Approved" in "".join(a.replay(task).deltas)


def test_an_agent_created_on_one_instance_is_listed_run_and_woken_on_the_other(pair):
    """A user's agent lives in the database: B lists it and runs it, and a job of it parked on B
    is resumed by A when the signal comes through A."""
    a, b = pair
    r = a.request("POST", "/api/agents", {"id": "helper-x", "name": "Helper", "type": "demo", "tools": ["wait_approval"]})
    assert r.status == 201, r.body
    assert "helper-x" in [agent["id"] for agent in b.request("GET", "/api/agents").json()["agents"]]
    r = b.request("POST", "/api/runs", {"workflow_id": "w", "input": {"message": "/approve refund order-7",
                                                                       "agent_id": "helper-x"}})
    assert r.status == 201, r.body
    job = r.json()["job_id"]
    key = b.wait_status(job, ("parked",))["parked"]["correlationKey"]
    r = a.request("POST", f"/api/jobs/{job}/signal", {"correlation_key": key, "payload": {"approved": True}})
    assert r.status == 200, r.body
    assert a.wait_status(job, ("completed",), timeout=20)["status"] == "completed"
    assert a.request("GET", "/api/agents/helper-x/state").status == 200


def test_one_201_for_100_concurrent_starts_over_two_instances(pair):
    a, b = pair

    def start(n):
        server = a if n % 2 else b
        return server.request("POST", "/task", {"threadId": "t4", "content": "/sleep 5"}).status

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(start, range(100)))
    assert codes.count(201) == 1 and codes.count(409) == 99, codes


def test_runs_of_a_killed_instance_end_and_their_streams_get_the_end_everywhere(pair):
    a, b = pair
    task = a.start_task("t5", "/sleep 60")
    on_b = b.stream(task)
    on_b.wait_for(lambda r: r.ids, 10, "the run's first event on B")
    seen = on_b.ids[-1]
    a.kill()
    killed_at = time.monotonic()
    on_b.wait_ended(LEASE_S + 10)
    assert time.monotonic() - killed_at <= LEASE_S + 5
    assert on_b.terminal.event == "error"
    info = b.task(task)
    assert info["status"] == "failed" and info["error"]["reason"] == "interrupted"
    # a client of A resumes on B after A died: the rest of the run, the end included
    rest = b.replay(task, last_event_id=seen)
    assert rest.terminal.event == "error" and all(i > seen for i in rest.ids)
    assert b.start_task("t5", "hello")  # the thread is free


def test_draining_one_instance_leaves_the_other_s_runs_alone(pair):
    a, b = pair
    on_b = b.start_task("t6", "/count 100")
    reader = b.stream(on_b)
    a.signal(signal.SIGTERM)
    assert a.wait_exit(20) == 0
    reader.wait_ended(20)
    assert reader.terminal.event == "done" and len(reader.deltas) == 100
    assert b.task(on_b)["status"] == "completed"
    wait_until(lambda: b.request("GET", "/health").status == 200, 5, "B healthy")



def test_a_users_running_runs_are_counted_once_over_both_instances(pair):
    """The plan's 10 runs going at once (the default) hold for starts that race on two instances."""
    a, b = pair

    def start(n):
        server = a if n % 2 else b
        return server.request("POST", "/task", {"threadId": f"cap-{n}", "content": "/sleep 5"}).status

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        codes = list(pool.map(start, range(30)))
    assert codes.count(201) == 10 and codes.count(429) == 20, codes
