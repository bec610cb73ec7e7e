"""A standing load in a process of its own: N clients, each starting a run and reading its
stream to the end, then the next, until told to stop (the `fairness` benchmark).

The load runs in a child process so that the process that times a newcomer is
quiet: reading 100 fast streams keeps a load process busy, and a timer sharing
its event loop would measure the load client's own queue, not the server's.

Parent and child speak over a `multiprocessing` pipe: the child says `ready`
once every client has had its first `data:` frame, the parent says `mark`
where the measured window begins and `stop` where it ends, and the child
answers `stop` with its counts since the mark.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection as Pipe
from typing import Any

import orjson

from bench.client import Connection, HTTPError, SSEReader
from bench.procs import AUTH, HOST, JSON_HEADERS, raise_nofile

STREAM_TIMEOUT = 180.0  # a run of the load that is not over by then has stalled
READY_TIMEOUT = 60.0


class _Load:
    """The clients of the child process and their counts."""

    def __init__(self, port: int, clients: int, content: str, path: str, deltas: int) -> None:
        self.port = port
        self.clients = clients
        self.content = content
        self.path = path  # "{task_id}" is replaced by the run's id
        self.deltas = deltas  # text-delta chunks a whole stream has
        self.stop = False
        self.started = 0  # clients that have had a first data frame
        self.ready = asyncio.Event()
        self.runs_done = 0
        self.done_deltas = 0  # text-deltas of the streams read to the end or left
        self.reading: dict[int, SSEReader] = {}  # each client's stream in flight
        self.failures: list[str] = []
        self.frames = 0  # of client 0's streams: frames and chunks (its chunks per frame)
        self.chunks = 0

    def _first_data(self) -> None:
        self.started += 1
        if self.started == self.clients:
            self.ready.set()

    async def client(self, c: int) -> None:
        conn = await Connection.open(HOST, self.port)
        first = True
        i = 0
        while not self.stop:
            i += 1
            reader = SSEReader(on_first_data=self._first_data if first else None, detail=(c == 0))
            first = False
            try:
                resp = await conn.request("POST", "/task", JSON_HEADERS,
                                          orjson.dumps({"threadId": f"flood-{self.port}-{c}-{i}", "content": self.content}))
                if resp.status != 201:
                    raise HTTPError(f"POST /task answered {resp.status}: {resp.body[:200]!r}")
                task_id = orjson.loads(resp.body)["taskId"]
                self.reading[c] = reader
                got = await asyncio.wait_for(conn.send("GET", self.path.format(task_id=task_id), AUTH, on_body=reader.feed),
                                             STREAM_TIMEOUT)
                if got.status != 200 or not reader.done or reader.deltas != self.deltas:
                    raise HTTPError(f"status {got.status}, done={reader.done}, {reader.deltas}/{self.deltas} text-deltas")
                self.runs_done += 1
                if c == 0:
                    self.frames += reader.data_frames
                    self.chunks += reader.chunks
            except (HTTPError, OSError, TimeoutError) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = await Connection.open(HOST, self.port)
            finally:
                self.done_deltas += reader.deltas
                self.reading.pop(c, None)

    def chunks_per_frame(self) -> float | None:
        """Client 0's chunks per data frame, its stream in flight included."""
        now = self.reading.get(0)
        frames = self.frames + (now.data_frames if now else 0)
        return (self.chunks + (now.chunks if now else 0)) / frames if frames else None

    def counts(self) -> dict[str, Any]:
        deltas = self.done_deltas + sum(r.deltas for r in self.reading.values())
        return {"runs_done": self.runs_done, "deltas": deltas, "failures": len(self.failures),
                "first_failures": self.failures[:3]}


async def _serve(pipe: Pipe, port: int, clients: int, content: str, path: str, deltas: int) -> None:
    load = _Load(port, clients, content, path, deltas)
    loop = asyncio.get_running_loop()
    said: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: said.put_nowait(pipe.recv()))
    tasks = [asyncio.create_task(load.client(c)) for c in range(clients)]
    try:
        await asyncio.wait_for(load.ready.wait(), READY_TIMEOUT)
    except TimeoutError:
        pipe.send({"error": f"only {load.started}/{clients} streams had a first frame after {READY_TIMEOUT:g} s",
                   **load.counts()})
        load.stop = True
    else:
        pipe.send({"ready": True})
        mark = {"t": time.perf_counter(), **load.counts()}
        while (word := await said.get()) != "stop":
            if word == "mark":
                mark = {"t": time.perf_counter(), **load.counts()}
        now = load.counts()
        elapsed = time.perf_counter() - mark["t"]
        load.stop = True
        pipe.send({
            "elapsed_s": elapsed,
            "runs_done": now["runs_done"] - mark["runs_done"],
            "deltas_per_s": (now["deltas"] - mark["deltas"]) / elapsed,
            "failures": now["failures"],
            "first_failures": now["first_failures"],
            "chunks_per_frame": load.chunks_per_frame(),
        })
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _main(pipe: Pipe, port: int, clients: int, content: str, path: str, deltas: int) -> None:
    raise_nofile()
    asyncio.run(_serve(pipe, port, clients, content, path, deltas))


class Flood:
    """`clients` runs streaming at once against the server on `port`, each client starting its next
    run when its stream ends: `async with Flood(...) as flood:` returns once every client streams;
    `mark()` opens the measured window, `await finish()` closes it and returns the load's counts."""

    def __init__(self, port: int, clients: int, content: str, path: str, deltas: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_main, args=(child, port, clients, content, path, deltas), daemon=True)
        self._result: dict[str, Any] | None = None

    async def _recv(self, timeout: float) -> dict[str, Any]:
        if not await asyncio.to_thread(self._pipe.poll, timeout):
            raise RuntimeError(f"the load process said nothing for {timeout:g} s")
        answer: dict[str, Any] = self._pipe.recv()
        return answer

    async def __aenter__(self) -> Flood:
        self._proc.start()
        try:
            said = await self._recv(READY_TIMEOUT + 30)
            if "error" in said:
                raise RuntimeError(f"the load did not get going: {said['error']} ({said['first_failures']})")
        except BaseException:
            self._proc.kill()
            raise
        return self

    def mark(self) -> None:
        self._pipe.send("mark")

    async def finish(self) -> dict[str, Any]:
        self._pipe.send("stop")
        self._result = await self._recv(30)
        return self._result

    async def __aexit__(self, *exc: object) -> None:
        if self._result is None and self._proc.is_alive():
            self._pipe.send("stop")
        await asyncio.to_thread(self._proc.join, 10)
        if self._proc.is_alive():
            self._proc.kill()
