"""`make bench ARGS="--store postgresql"`: Parley on SQLite against Parley on PostgreSQL, scaled out.

One PostgreSQL server (Debian's initdb + pg_ctl in a temp dir, fsync on: commits are durable as
SQLite's FULL sync is) and, for each layout, a fresh Parley on a fresh database:

- sqlite:     one process (the default store) — the reference column;
- pg-1:       one instance on PostgreSQL;
- pg-2:       two instances on one database, each load client on one of them;
- pg-workers: one instance with `--workers 2` (two processes sharing the port).

Rows: completed short runs/s (32 clients, POST then the stream to `done`), events/s to 1 reader
and to 100 readers of one `/count N` run (on pg-2 the readers are spread over both instances), and
POST → first chunk p50 when the POST goes to one instance and the stream to the other.  The
"baseline" column of these rows is SQLite in one process.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bench.procs import BENCH_CONFIG, ServerProcess, _process_tree, free_port, parley_argv, raise_nofile
from bench.results import Metric, Target
from bench.suite import Sizes, bench_short_runs_on, fanout, first_chunk_series, pct

LAYOUTS = ("sqlite", "pg-1", "pg-2", "pg-workers")


@asynccontextmanager
async def layout(name: str, cluster: Any, workdir: Path) -> AsyncIterator[list[ServerProcess]]:
    """The server processes of one layout, ready; stopped afterwards."""
    config = workdir / "parley.toml"
    config.write_text(BENCH_CONFIG)
    store = ["--store", cluster.new_database()] if name.startswith("pg") else []
    extra = [*store, *(["--workers", "2"] if name == "pg-workers" else [])]
    count = 2 if name == "pg-2" else 1
    servers = []
    for n in range(count):
        port = free_port()
        servers.append(ServerProcess(f"{name}-{n}", parley_argv(port, workdir, config, f"data-{name}-{n}", extra),
                                     port, workdir))
    try:
        for s in servers:
            s.start()
        for s in servers:
            await s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


def pg_cpu_seconds(cluster: Any) -> float:
    """CPU time of the PostgreSQL server so far: the postmaster and its live backends, and the
    backends it has reaped (the postmaster's children's times)."""
    with open(os.path.join(cluster.root, "data", "postmaster.pid")) as fh:
        postmaster = int(fh.readline())
    total = 0
    for pid in _process_tree(postmaster):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if pid == postmaster else 0)
    return total / os.sysconf("SC_CLK_TCK")


async def measure(name: str, servers: list[ServerProcess], sizes: Sizes, cluster: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    t0, pg0 = time.perf_counter(), pg_cpu_seconds(cluster)
    out: dict[str, Any] = {"short_runs": await bench_short_runs_on(servers, sizes, tag)}
    # the PostgreSQL server's cores busy over the whole closed loop (warm-up included)
    out["short_runs"]["pg_cpu"] = round((pg_cpu_seconds(cluster) - pg0) / (time.perf_counter() - t0), 3)
    n = sizes.events
    for readers in (1, sizes.readers):
        run = await fanout(servers[0], n, readers, f"/count {n}", "/stream/{task_id}", f"sc-{tag}-{readers}",
                           readers_on=servers if len(servers) > 1 else None)
        out[f"events_{readers}"] = run
    if len(servers) > 1:
        iters = sizes.first_chunk_iters
        firsts, _ = await first_chunk_series(servers[0].port, iters + 10, True, tag, stream_port=servers[1].port)
        out["cross_first_chunk_ms"] = pct(firsts[10:], 50) * 1000
    return out


async def run_scale(sizes: Sizes, data_root: str | None, keep: bool) -> list[Metric]:
    """Every layout, measured one after the other on this machine; the table's rows."""
    from tests.pg import start_cluster  # the same throwaway PostgreSQL the tests use

    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="parley-scale-", dir=data_root))
    cluster = start_cluster()
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in LAYOUTS:
            async with layout(name, cluster, workdir) as servers:
                results[name] = await measure(name, servers, sizes, cluster)
    finally:
        cluster.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows(results, sizes)


def rows(results: dict[str, dict[str, Any]], sizes: Sizes) -> list[Metric]:
    ref = results["sqlite"]
    out: list[Metric] = []
    for name in LAYOUTS[1:]:
        r = results[name]
        target = Target("ratio_min", 1.3) if name == "pg-workers" else None
        out.append(Metric("scale", f"completed short runs/s, {name} (vs sqlite)", "/s", r["short_runs"]["rate"],
                          ref["short_runs"]["rate"], target,
                          note=f"CPU cores busy: {name} {r['short_runs']['server_cpu']:.2f} (the PostgreSQL server "
                               f"{r['short_runs']['pg_cpu']:.2f}, the load {r['short_runs']['client_cpu']:.2f}), "
                               f"sqlite {ref['short_runs']['server_cpu']:.2f}",
                          detail={"layout": r["short_runs"], "sqlite": ref["short_runs"]}))
        for readers in (1, sizes.readers):
            key = f"events_{readers}"
            out.append(Metric("scale", f"events/s to {readers} reader(s), {name} (vs sqlite)", "ev/s",
                              r[key]["events_per_s"], ref[key]["events_per_s"], detail={"layout": r[key], "sqlite": ref[key]}))
    cross = results["pg-2"].get("cross_first_chunk_ms")
    out.append(Metric("scale", "POST on one instance to first chunk on the other, p50", "ms", cross, None, Target("max", 10.0),
                      note="pg-2: POST /task to instance A, GET /stream on instance B at once"))
    return out
