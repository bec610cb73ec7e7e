"""The benchmarks.  Each one starts a fresh Parley and a fresh baseline and
drives both with the same load from this process (see bench/__init__.py).
"""
from __future__ import annotations

import asyncio
import gc
import math
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson

from bench.client import Connection, HTTPError, Response, SSEReader
from bench.flood import Flood
from bench.procs import AUTH, HOST, JSON_HEADERS, ServerProcess, Servers
from bench.results import Metric, Target

STREAM_TIMEOUT = 180.0
FANOUT_TIMEOUT = 30.0  # a 100-reader /count 20000 takes 1-2 s; a reader still open after this has stalled


class StreamsIncomplete(RuntimeError):
    """Some readers of a run did not get the whole stream (a server bug, not a slow server)."""


@dataclass(frozen=True)
class Sizes:
    clients: int = 32           # concurrent keep-alive clients (starts, short runs)
    warmup_s: float = 0.5
    duration_s: float = 6.0     # measured window of the closed-loop benchmarks
    events: int = 20_000        # /count N for throughput and replay
    readers: int = 100          # concurrent readers of one run
    repeats: int = 3            # throughput and replay: median of this many
    first_chunk_iters: int = 500
    idle_streams: int = 10_000
    health_probes: int = 200    # idle and fairness: sequential /health round trips
    fairness_streams: int = 100  # runs streaming flat out while a newcomer is timed
    fairness_iters: int = 100   # the newcomer's POST + first chunk, sequential


FULL = Sizes()
QUICK = Sizes(warmup_s=0.3, duration_s=1.5, events=5_000, readers=20, repeats=1,
              first_chunk_iters=100, idle_streams=2_000, health_probes=100, fairness_iters=20)


@dataclass
class Ctx:
    servers: Servers
    sizes: Sizes
    tag: str  # makes thread ids unique per run

    @property
    def parley(self) -> ServerProcess:
        return self.servers.parley

    @property
    def baseline(self) -> ServerProcess:
        return self.servers.baseline


# -- helpers -----------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


async def open_conns(port: int, n: int, concurrency: int = 200) -> list[Connection]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> Connection:
        async with sem:
            return await Connection.open(HOST, port)

    return list(await asyncio.gather(*(one() for _ in range(n))))


def task_body(thread_id: str, content: str) -> bytes:
    return orjson.dumps({"threadId": thread_id, "content": content})


async def start_task(conn: Connection, thread_id: str, content: str) -> str:
    resp = await conn.request("POST", "/task", JSON_HEADERS, task_body(thread_id, content))
    if resp.status != 201:
        raise HTTPError(f"POST /task answered {resp.status}: {resp.body[:200]!r}")
    return str(orjson.loads(resp.body)["taskId"])


async def read_sse(conn: Connection, path: str, headers: dict[str, str] | None = None,
                   reader: SSEReader | None = None, timeout: float = STREAM_TIMEOUT) -> tuple[Response, SSEReader]:
    reader = reader or SSEReader()
    resp = await asyncio.wait_for(conn.send("GET", path, {**AUTH, **(headers or {})}, on_body=reader.feed), timeout)
    return resp, reader


def _swallow(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def closed_loop(server: ServerProcess | list[ServerProcess], clients: int, warmup: float, duration: float,
                      op: Callable[[Connection, int, int], Awaitable[bool]]) -> dict[str, Any]:
    """`clients` workers, each on its own keep-alive connection, run `op` back to back; with
    several servers (instances of one Parley), worker w talks to server w mod n.

    Counts the operations that complete inside the measured window (after
    `warmup`); a failed operation counts as an error, never as throughput.
    """
    servers = server if isinstance(server, list) else [server]
    ports = [servers[w % len(servers)].port for w in range(clients)]
    conns = list(await asyncio.gather(*(Connection.open(HOST, port) for port in ports)))
    stop = False
    measuring = False
    done = 0
    errors = 0
    first_error = ""
    latencies: list[float] = []

    async def worker(w: int) -> None:
        nonlocal done, errors, first_error
        conn = conns[w]
        i = 0
        while not stop:
            t = time.perf_counter()
            try:
                ok = await op(conn, w, i)
                err = "" if ok else "bad answer"
            except (HTTPError, OSError, TimeoutError) as exc:
                ok, err = False, repr(exc)
            i += 1
            if measuring:
                if ok:
                    done += 1
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
                    first_error = first_error or err
            if conn.closed:
                conn = conns[w] = await Connection.open(HOST, ports[w])

    workers = [asyncio.create_task(worker(w)) for w in range(clients)]
    await asyncio.sleep(warmup)
    measuring = True
    t0, c0, s0 = time.perf_counter(), time.process_time(), sum(s.cpu_seconds() for s in servers)
    await asyncio.sleep(duration)
    measuring = False
    elapsed = time.perf_counter() - t0
    client_cpu = (time.process_time() - c0) / elapsed
    server_cpu = (sum(s.cpu_seconds() for s in servers) - s0) / elapsed
    stop = True
    await asyncio.wait(workers, timeout=30)
    for w in workers:
        w.cancel()
    for c in conns:
        c.close()
    return {
        "rate": done / elapsed,
        "ops": done,
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": elapsed,
        "client_cpu": round(client_cpu, 3),  # cores busy in this (load) process
        "server_cpu": round(server_cpu, 3),  # cores busy in the server process
        "p50_ms": pct(latencies, 50) * 1000 if latencies else None,
        "p99_ms": pct(latencies, 99) * 1000 if latencies else None,
    }


def _err_note(res: dict[str, Any], who: str) -> str:
    return f"{who}: {res['errors']} failed ops ({res['first_error']})" if res["errors"] else ""


def _loop_note(p: dict[str, Any], b: dict[str, Any]) -> str:
    """CPU use (cores) of server and load generator, and any failures."""
    parts = [(f"CPU cores busy: Parley server {p['server_cpu']:.2f} / load {p['client_cpu']:.2f}, "
              f"baseline server {b['server_cpu']:.2f} / load {b['client_cpu']:.2f}")]
    parts += [x for x in (_err_note(p, "Parley"), _err_note(b, "baseline")) if x]
    return "; ".join(parts)


# -- run starts ----------------------------------------------------------------

async def bench_starts(ctx: Ctx) -> list[Metric]:
    """POST /task → 201 on distinct threads; 32 keep-alive clients."""
    sz = ctx.sizes

    async def parley_op(conn: Connection, w: int, i: int) -> bool:
        resp = await conn.request("POST", "/task", JSON_HEADERS, task_body(f"st-{ctx.tag}-{w}-{i}", "hi"))
        return resp.status == 201

    async def base_op(conn: Connection, w: int, i: int) -> bool:
        resp = await conn.request("POST", "/task", JSON_HEADERS, task_body(f"st-{ctx.tag}-{w}-{i}", "hi"))
        return resp.status == 201

    p = await closed_loop(ctx.parley, sz.clients, sz.warmup_s, sz.duration_s, parley_op)
    b = await closed_loop(ctx.baseline, sz.clients, sz.warmup_s, sz.duration_s, base_op)
    note = _loop_note(p, b)
    return [
        Metric("starts", f"run starts/s ({sz.clients} clients)", "/s", p["rate"], b["rate"], Target("ratio_min", 0.3),
               note=note, detail={"parley": p, "baseline": b}),
        Metric("starts", "run start latency p50", "ms", p["p50_ms"], b["p50_ms"], detail={"p99_parley": p["p99_ms"], "p99_baseline": b["p99_ms"]}),
    ]


# -- completed short runs ------------------------------------------------------------

async def bench_short_runs_on(servers: list[ServerProcess], sz: Sizes, tag: str) -> dict[str, Any]:
    """The closed loop of short runs on Parley (instances of one Parley: each client on one of them)."""

    async def parley_op(conn: Connection, w: int, i: int) -> bool:
        task_id = await start_task(conn, f"sr-{tag}-{w}-{i}", "hi")
        resp, r = await read_sse(conn, f"/stream/{task_id}")
        return resp.status == 200 and r.done and r.deltas > 0

    return await closed_loop(servers, sz.clients, sz.warmup_s, sz.duration_s, parley_op)


async def bench_short_runs(ctx: Ctx) -> list[Metric]:
    """POST /task `hi`, then GET /stream to `event: done`, 32 clients back to back."""
    sz = ctx.sizes

    async def base_op(conn: Connection, w: int, i: int) -> bool:
        await start_task(conn, f"sr-{ctx.tag}-{w}-{i}", "hi")
        resp, r = await read_sse(conn, "/stream?n=3&per=6&prefix=3")
        return resp.status == 200 and r.done and r.deltas == 3

    p = await bench_short_runs_on([ctx.parley], sz, ctx.tag)
    b = await closed_loop(ctx.baseline, sz.clients, sz.warmup_s, sz.duration_s, base_op)
    note = _loop_note(p, b)
    return [
        Metric("short-runs", f"completed short runs/s ({sz.clients} clients)", "/s", p["rate"], b["rate"], Target("min", 1000),
               note=note, detail={"parley": p, "baseline": b}),
        Metric("short-runs", "short run latency p50 (POST to done)", "ms", p["p50_ms"], b["p50_ms"],
               detail={"p99_parley": p["p99_ms"], "p99_baseline": b["p99_ms"]}),
    ]


# -- event throughput ----------------------------------------------------------------

async def fanout(server: ServerProcess, n: int, readers: int, content: str, path_template: str, thread_id: str,
                 readers_on: list[ServerProcess] | None = None) -> dict[str, Any]:
    """Start a run on `server`, then `readers` concurrent GET /stream to the end (reader i on
    `readers_on[i mod n]` when given: other instances of one Parley); time from before the POST."""
    port = server.port
    post_conn = await Connection.open(HOST, port)
    if readers_on:
        conns = list(await asyncio.gather(*(Connection.open(HOST, readers_on[i % len(readers_on)].port)
                                             for i in range(readers))))
    else:
        conns = await open_conns(port, readers)
    # Reader 0 counts frames and chunks too; every reader counts its text-deltas.
    rs = [SSEReader(detail=(i == 0)) for i in range(readers)]
    try:
        everyone = [server, *[r for r in (readers_on or []) if r is not server]]
        t0, c0, s0 = time.perf_counter(), time.process_time(), sum(x.cpu_seconds() for x in everyone)
        task_id = await start_task(post_conn, thread_id, content)
        path = path_template.format(task_id=task_id)
        futs = [c.send("GET", path, AUTH, on_body=r.feed) for c, r in zip(conns, rs, strict=True)]
        for f in futs:
            f.add_done_callback(_swallow)
        await asyncio.wait(futs, timeout=FANOUT_TIMEOUT)
        elapsed = time.perf_counter() - t0
        # /proc CPU times tick every 10 ms: meaningless for a very short run.
        client_cpu = (time.process_time() - c0) / elapsed if elapsed >= 0.1 else None
        server_cpu = (sum(x.cpu_seconds() for x in everyone) - s0) / elapsed if elapsed >= 0.1 else None
    finally:
        post_conn.close()
        for c in conns:
            c.close()
    bad = []
    for f, r in zip(futs, rs, strict=True):
        if not f.done():
            seen = f", last id {r.last_id}" if r.last_id else ""
            bad.append(f"{r.deltas}/{n} text-deltas{seen}, no `done`, still open after {FANOUT_TIMEOUT:g} s")
        elif f.exception() is not None:
            bad.append(f"{f.exception()!r} after {r.deltas}/{n} text-deltas")
        elif f.result().status != 200 or not r.done or r.deltas != n:
            bad.append(f"status {f.result().status}, done={r.done}, error={r.error!r}, {r.deltas}/{n} text-deltas")
    if bad:
        shown = "; ".join(sorted(set(bad))[:3])
        raise StreamsIncomplete(f"{len(bad)}/{readers} readers of task {task_id} got an incomplete stream: {shown}")
    frames, chunks = rs[0].data_frames, rs[0].chunks
    return {
        "task_id": task_id,
        "elapsed_s": elapsed,
        "events_per_s": n * readers / elapsed,
        "chunks_per_frame": chunks / frames if frames else 0.0,
        "frames_per_reader": frames,
        "client_cpu": None if client_cpu is None else round(client_cpu, 3),
        "server_cpu": None if server_cpu is None else round(server_cpu, 3),
    }


def _cpu(run: dict[str, Any]) -> str:
    if run["server_cpu"] is None or run["client_cpu"] is None:
        return "n/a (run under 0.1 s)"
    return f"{run['server_cpu']:.2f}/{run['client_cpu']:.2f}"


async def task_info(port: int, task_id: str) -> dict[str, Any]:
    conn = await Connection.open(HOST, port)
    try:
        resp = await conn.request("GET", f"/task/{task_id}", AUTH)
    finally:
        conn.close()
    if resp.status != 200:
        raise HTTPError(f"GET /task answered {resp.status}")
    return dict(orjson.loads(resp.body))


async def bench_throughput(ctx: Ctx) -> list[Metric]:
    """`/count N` on one run: text-delta events/s delivered to 1 reader and to R readers.

    Baseline: bare Tornado writes the same N chunks in frames of K chunks,
    K = Parley's measured average chunks per frame in that same scenario.
    """
    sz = ctx.sizes
    n = sz.events
    out: list[Metric] = []
    repeats = sz.repeats
    for readers in (1, sz.readers):
        who = "1 reader" if readers == 1 else f"{readers} readers"
        name = f"events/s to {who} (/count {n})"
        p_runs, failures = [], []
        for rep in range(repeats):
            try:
                p_runs.append(await fanout(ctx.parley, n, readers, f"/count {n}", "/stream/{task_id}",
                                           f"tp-{ctx.tag}-{readers}-{rep}"))
            except StreamsIncomplete as exc:
                failures.append(str(exc))
        error = f"{len(failures)} of {repeats} Parley runs failed: {failures[0]}" if failures else ""
        if not p_runs:
            out.append(Metric("throughput", name, "ev/s", None, None, Target("ratio_min", 0.5), error=error))
            continue
        p = sorted(p_runs, key=lambda x: x["events_per_s"])[len(p_runs) // 2]
        info = await task_info(ctx.parley.port, p["task_id"])
        run_s = (info["finishedAt"] - info["startedAt"]) / 1000 if info.get("finishedAt") and info.get("startedAt") else None
        per = max(1, round(statistics.mean(x["chunks_per_frame"] for x in p_runs)))
        b_runs = []
        for rep in range(repeats):
            b_runs.append(await fanout(ctx.baseline, n, readers, "x", f"/stream?n={n}&per={per}&prefix=3",
                                       f"tpb-{ctx.tag}-{readers}-{rep}"))
        b = sorted(b_runs, key=lambda x: x["events_per_s"])[len(b_runs) // 2]
        note = (f"Parley sent {p['chunks_per_frame']:.0f} chunks/frame ({p['frames_per_reader']} frames per reader), "
                f"baseline mirrored {per}/frame; all readers together, POST to the last `done`"
                + (f", median of {len(p_runs)}" if len(p_runs) > 1 else "")
                + (f"; Parley's run itself took {run_s:.2f} s = {n / run_s:,.0f} ev/s committed" if run_s else "")
                + f"; CPU cores busy (server/load): Parley {_cpu(p)}, baseline {_cpu(b)}")
        out.append(Metric(
            "throughput", name, "ev/s", p["events_per_s"], b["events_per_s"], Target("ratio_min", 0.5),
            note=note, error=error,
            detail={"parley": p_runs, "baseline": b_runs, "run_s": run_s, "mirrored_chunks_per_frame": per, "failures": failures},
        ))
    return out


# -- first chunk latency ---------------------------------------------------------------

async def first_chunk_series(port: int, iters: int, parley: bool, tag: str,
                             stream_port: int | None = None) -> tuple[list[float], list[float]]:
    """POST then at once GET the stream (on `stream_port` when given: another instance); seconds
    from before the POST to the first `data:` frame (and, second list, to the POST's answer)."""
    post_conn = await Connection.open(HOST, port)
    stream_conn = await Connection.open(HOST, stream_port or port)
    out: list[float] = []
    posts: list[float] = []
    try:
        for i in range(iters):
            r = SSEReader()
            t0 = time.perf_counter()
            task_id = await start_task(post_conn, f"fc-{tag}-{i}", "hi")
            posts.append(time.perf_counter() - t0)
            path = f"/stream/{task_id}" if parley else "/stream?n=3&per=6&prefix=3"
            resp = await asyncio.wait_for(stream_conn.send("GET", path, AUTH, on_body=r.feed), 30)
            if resp.status != 200 or not r.done or not r.t_first_data:
                raise RuntimeError(f"stream {i} ended badly: status {resp.status}, done={r.done}")
            out.append(r.t_first_data - t0)
    finally:
        post_conn.close()
        stream_conn.close()
    return out, posts


async def bench_first_chunk(ctx: Ctx) -> list[Metric]:
    """POST /task then GET /stream at once: time from before the POST to the first chunk, p50/p99."""
    sz = ctx.sizes
    warm = min(20, sz.first_chunk_iters // 10)
    p, p_post = (x[warm:] for x in await first_chunk_series(ctx.parley.port, sz.first_chunk_iters + warm, True, ctx.tag))
    b, b_post = (x[warm:] for x in await first_chunk_series(ctx.baseline.port, sz.first_chunk_iters + warm, False, ctx.tag))
    ms = 1000.0
    detail = {"iterations": len(p), "parley_mean_ms": statistics.mean(p) * ms, "baseline_mean_ms": statistics.mean(b) * ms,
              "parley_post_p50_ms": pct(p_post, 50) * ms, "baseline_post_p50_ms": pct(b_post, 50) * ms}
    return [
        Metric("first-chunk", "POST to first chunk p50", "ms", pct(p, 50) * ms, pct(b, 50) * ms, Target("max", 5.0),
               note=f"{len(p)} sequential iterations: POST /task then GET /stream at once, timed from before the POST; "
                    f"the POST's own answer took p50 {pct(p_post, 50) * ms:.2f} ms (baseline {pct(b_post, 50) * ms:.2f} ms); "
                    "baseline = POST + a stream whose first frame is ready", detail=detail),
        Metric("first-chunk", "POST to first chunk p99", "ms", pct(p, 99) * ms, pct(b, 99) * ms, detail=detail),
    ]


# -- idle streams ------------------------------------------------------------------------

async def hold_streams(port: int, path: str, n: int) -> tuple[list[Connection], float]:
    """Open n streams; each counts as open once its first `data:` frame arrived."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(128)  # more in-flight connects overflow the accept backlog
    conns: list[Connection] = []

    async def one() -> None:
        async with sem:
            conn = await Connection.open(HOST, port)
            conns.append(conn)
            first: asyncio.Future[Any] = loop.create_future()

            def opened() -> None:
                if not first.done():
                    first.set_result(None)

            r = SSEReader(on_first_data=opened)
            fut: asyncio.Future[Any] = conn.send("GET", path, AUTH, on_body=r.feed)
            fut.add_done_callback(_swallow)
            await asyncio.wait([first, fut], timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if not first.done():
                status = fut.result().status if fut.done() and not fut.exception() else "?"
                raise RuntimeError(f"stream {len(conns)} did not stay open (status {status}, done={r.done})")

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one() for _ in range(n)))
    except BaseException:
        for c in conns:
            c.abort()
        raise
    return conns, time.perf_counter() - t0


async def health_latency(conn: Connection, probes: int) -> list[float]:
    out = []
    for _ in range(probes):
        t = time.perf_counter()
        resp = await asyncio.wait_for(conn.request("GET", "/health"), 30)
        if resp.status != 200:
            raise HTTPError(f"/health answered {resp.status}")
        out.append(time.perf_counter() - t)
    return out


async def idle_scenario(server: ServerProcess, path: str, n: int, probes: int) -> dict[str, Any]:
    health_conn = await Connection.open(HOST, server.port)
    try:
        warm, _ = await hold_streams(server.port, path, 50)  # first-use allocations, not per-stream cost
        for c in warm:
            c.abort()
        await asyncio.sleep(0.3)
        quiet = await health_latency(health_conn, min(probes, 50))
        gc.collect()
        rss0 = server.rss_kib()
        conns, open_s = await hold_streams(server.port, path, n)
        await asyncio.sleep(0.5)
        rss1 = server.rss_kib()
        lat = await health_latency(health_conn, probes)
        rss2 = server.rss_kib()
        for c in conns:
            c.abort()
    finally:
        health_conn.close()
    return {
        "streams": n,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "rss_after_probes_kib": rss2,
        "bytes_per_stream": (rss1 - rss0) * 1024 / n,
        "open_s": open_s,
        "opened_per_s": n / open_s,
        "health_p50_ms": pct(lat, 50) * 1000,
        "health_p99_ms": pct(lat, 99) * 1000,
        "health_quiet_p50_ms": pct(quiet, 50) * 1000,
    }


async def bench_idle(ctx: Ctx) -> list[Metric]:
    """N idle streams on one parked run (`/approve ...`): server RSS per stream, /health while held."""
    sz = ctx.sizes
    conn = await Connection.open(HOST, ctx.parley.port)
    try:
        task_id = await start_task(conn, f"idle-{ctx.tag}", "/approve hold these streams")
        deadline = time.monotonic() + 10
        while True:
            resp = await conn.request("GET", f"/task/{task_id}", AUTH)
            status = orjson.loads(resp.body).get("status")
            if status == "parked":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the /approve run did not park (status {status})")
            await asyncio.sleep(0.02)
    finally:
        conn.close()
    p = await idle_scenario(ctx.parley, f"/stream/{task_id}", sz.idle_streams, sz.health_probes)
    await asyncio.sleep(0.2)
    b = await idle_scenario(ctx.baseline, "/idle", sz.idle_streams, sz.health_probes)
    n = sz.idle_streams
    return [
        Metric("idle", f"RSS per idle stream ({n:,} streams)", "B", p["bytes_per_stream"], b["bytes_per_stream"], Target("ratio_max", 2.0),
               note=f"server VmRSS before/after opening: Parley {p['rss_before_kib'] / 1024:.0f}->{p['rss_after_kib'] / 1024:.0f} MiB, "
                    f"baseline {b['rss_before_kib'] / 1024:.0f}->{b['rss_after_kib'] / 1024:.0f} MiB; streams on one parked run",
               detail={"parley": p, "baseline": b}),
        Metric("idle", f"/health p50 with {n:,} streams held", "ms", p["health_p50_ms"], b["health_p50_ms"],
               note=f"{sz.health_probes} sequential probes; without streams: Parley {p['health_quiet_p50_ms']:.2f} ms, "
                    f"baseline {b['health_quiet_p50_ms']:.2f} ms", detail={"parley": p, "baseline": b}),
        Metric("idle", f"/health p99 with {n:,} streams held", "ms", p["health_p99_ms"], b["health_p99_ms"]),
        Metric("idle", "idle streams opened/s", "/s", p["opened_per_s"], b["opened_per_s"]),
    ]


# -- replay ---------------------------------------------------------------------------------

async def bench_replay(ctx: Ctx) -> list[Metric]:
    """Reconnect from the first event id of a finished N-event run: text-delta events/s."""
    sz = ctx.sizes
    n = sz.events
    conn = await Connection.open(HOST, ctx.parley.port)
    try:
        task_id = await start_task(conn, f"rp-{ctx.tag}", f"/count {n}")
        _, first = await read_sse(conn, f"/stream/{task_id}")  # waits for the run to finish
        if not first.done or first.deltas != n:
            raise RuntimeError(f"the /count run did not complete ({first.deltas}/{n})")
        # The first frame starts at run.started and has one chunk per event, ids consecutive
        # (one run on a fresh server): its first event id is last id - chunks + 1.
        first_id = first.first_frame_id - first.first_frame_chunks + 1
        p_runs = []
        for _ in range(sz.repeats + 1):
            t0 = time.perf_counter()
            resp, r = await read_sse(conn, f"/stream/{task_id}", {"Last-Event-ID": str(first_id)})
            dt = time.perf_counter() - t0
            if resp.status != 200 or not r.done or r.deltas != n:
                raise RuntimeError(f"replay incomplete: {r.deltas}/{n} text-deltas, done={r.done}")
            p_runs.append({"elapsed_s": dt, "events_per_s": n / dt, "chunks_per_frame": r.chunks / r.data_frames,
                           "chunks": r.chunks})
    finally:
        conn.close()
    p_runs = p_runs[1:]  # the first read is a warm-up (page cache, code paths)
    p = sorted(p_runs, key=lambda x: x["events_per_s"])[len(p_runs) // 2]
    per = max(1, round(p["chunks_per_frame"]))
    conn = await Connection.open(HOST, ctx.baseline.port)
    b_runs = []
    try:
        for _ in range(sz.repeats + 1):
            t0 = time.perf_counter()
            resp, r = await read_sse(conn, f"/stream?n={n}&per={per}&prefix=2")
            dt = time.perf_counter() - t0
            if not r.done or r.deltas != n:
                raise RuntimeError("baseline replay incomplete")
            b_runs.append({"elapsed_s": dt, "events_per_s": n / dt})
    finally:
        conn.close()
    b_runs = b_runs[1:]
    b = sorted(b_runs, key=lambda x: x["events_per_s"])[len(b_runs) // 2]
    return [Metric(
        "replay", f"replay events/s (finished /count {n})", "ev/s", p["events_per_s"], b["events_per_s"],
        note=f"Last-Event-ID = first event id; Parley replayed {p['chunks_per_frame']:.0f} chunks/frame, baseline mirrored {per}/frame; "
             f"median of {len(p_runs)}",
        detail={"parley": p_runs, "baseline": b_runs, "first_event_id": first_id},
    )]


# -- fairness under load ---------------------------------------------------------------------

FAIR_WARMUP = 3  # the newcomer's first iterations open its code paths in this process: not counted


async def newcomer_series(port: int, iters: int, stream_path: str | None, tag: str) -> tuple[list[float], list[float]]:
    """POST `hi`, then at once GET its stream on a connection opened before the POST, dropped at
    the first `data:` frame (a newcomer need not wait for its run to end, and under load that takes
    a second); seconds from before the POST to that frame, and to the POST's answer."""
    loop = asyncio.get_running_loop()
    post_conn = await Connection.open(HOST, port)
    first: list[float] = []
    posts: list[float] = []
    try:
        for i in range(iters):
            stream_conn = await Connection.open(HOST, port)
            try:
                got: asyncio.Future[Any] = loop.create_future()
                r = SSEReader(on_first_data=partial(got.set_result, None))  # once: the reader's first frame
                t0 = time.perf_counter()
                task_id = await start_task(post_conn, f"nc-{tag}-{i}", "hi")
                posts.append(time.perf_counter() - t0)
                fut = stream_conn.send("GET", stream_path or f"/stream/{task_id}", AUTH, on_body=r.feed)
                fut.add_done_callback(_swallow)
                await asyncio.wait([got, fut], timeout=30, return_when=asyncio.FIRST_COMPLETED)
                if not r.t_first_data:
                    status = fut.result().status if fut.done() and not fut.exception() else "?"
                    raise RuntimeError(f"newcomer stream {i} had no data frame (status {status})")
                first.append(r.t_first_data - t0)
            finally:
                stream_conn.abort()
    finally:
        post_conn.close()
    return first, posts


async def fairness_scenario(server: ServerProcess, sz: Sizes, tag: str) -> dict[str, Any]:
    """`sz.fairness_streams` runs of `/count N` streaming at once (Flood: each client starts its next
    run when its stream ends), and meanwhile, sequentially, a newcomer's POST + first chunk and
    /health round trips."""
    n = sz.events
    async with Flood(server.port, sz.fairness_streams, f"/count {n}", "/stream/{task_id}", n) as flood:
        # Opened before the newcomer's turn, not before the load: an idle keep-alive connection is closed after a while.
        health_conn = await Connection.open(HOST, server.port)
        try:
            load_avg = os.getloadavg()[0]
            flood.mark()
            t0, s0 = time.perf_counter(), server.cpu_seconds()
            first, posts = await newcomer_series(server.port, sz.fairness_iters + FAIR_WARMUP, None, tag)
            health = await health_latency(health_conn, sz.health_probes)
            elapsed = time.perf_counter() - t0
            server_cpu = (server.cpu_seconds() - s0) / elapsed
            load = await flood.finish()
        finally:
            health_conn.close()
    first, posts = first[FAIR_WARMUP:], posts[FAIR_WARMUP:]
    ms = 1000.0
    return {
        "first_p50_ms": pct(first, 50) * ms, "first_max_ms": max(first) * ms, "post_p50_ms": pct(posts, 50) * ms,
        "post_max_ms": max(posts) * ms, "health_p50_ms": pct(health, 50) * ms, "health_max_ms": max(health) * ms,
        "window_s": elapsed, "server_cpu": round(server_cpu, 3), "load_avg_1m": load_avg, "load": load,
    }


async def bench_fairness(ctx: Ctx) -> list[Metric]:
    """While 100 runs stream flat out: a newcomer's POST → first chunk, and /health round trips.

    No baseline: bare Tornado streams pre-built frames as fast as the load reads them (40-100x
    Parley's event rate), so the same number of streams is not the same load, and its newcomer's
    figures swung from 2 to 700 ms with the frame size (and took up to 100 s) in trials."""
    sz = ctx.sizes
    n, streams = sz.events, sz.fairness_streams
    p = await fairness_scenario(ctx.parley, sz, ctx.tag)
    pl = p["load"]
    error = f"{pl['failures']} streams of the load failed ({pl['first_failures'][0]})" if pl["failures"] else ""
    under = f"{streams} runs streaming"
    note = (f"{streams} clients in a load process of their own, each POSTing `/count {n}` and reading its stream to `done`, "
            f"then the next; meanwhile, sequentially, {sz.fairness_iters} newcomer iterations (after {FAIR_WARMUP} not counted: "
            "POST `hi` then GET /stream at once on a connection opened before, dropped at the first `data:` frame, timed from "
            f"before the POST; the POST alone p50 {p['post_p50_ms']:.1f} ms, max {p['post_max_ms']:.1f} ms), then "
            f"{sz.health_probes} /health round trips on a connection opened before; 1-min load average "
            f"{p['load_avg_1m']:.2f} as the window began; server CPU cores busy {p['server_cpu']:.2f}; no baseline: bare "
            "Tornado streams 40-100x faster under the same load, so it is not the same load (bench/README.md)")
    detail = {"parley": p}
    return [
        Metric("fairness", f"newcomer POST to first chunk p50 ({under})", "ms", p["first_p50_ms"], None,
               Target("max", 50.0), note=note, error=error, detail=detail),
        Metric("fairness", f"newcomer POST to first chunk max ({under})", "ms", p["first_max_ms"], None, Target("max", 150.0)),
        Metric("fairness", f"/health p50 ({under})", "ms", p["health_p50_ms"], None),
        Metric("fairness", f"/health max ({under})", "ms", p["health_max_ms"], None, Target("max", 20.0)),
        Metric("fairness", f"text-deltas/s streamed meanwhile ({under})", "ev/s", pl["deltas_per_s"], None,
               note=f"all {streams} load streams together over the measured window ({p['window_s']:.1f} s); "
                    f"runs of the load read to `done` in it: {pl['runs_done']}; Parley's frames averaged "
                    f"{pl['chunks_per_frame'] or 0:.0f} chunks"),
    ]


BENCHMARKS: dict[str, Callable[[Ctx], Awaitable[list[Metric]]]] = {
    "starts": bench_starts,
    "short-runs": bench_short_runs,
    "throughput": bench_throughput,
    "first-chunk": bench_first_chunk,
    "idle": bench_idle,
    "replay": bench_replay,
    "fairness": bench_fairness,
}


async def run_one(name: str, sizes: Sizes, data_root: str | None, keep: bool) -> list[Metric]:
    async with Servers(data_root, keep) as servers:
        ctx = Ctx(servers, sizes, uuid.uuid4().hex[:8])
        return await BENCHMARKS[name](ctx)
