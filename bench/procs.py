"""Server subprocesses for the benchmarks: Parley and the bare Tornado baseline.

Each server gets a free loopback port (bind to port 0, close, pass the
number), a raised open-file limit, its own session (a Ctrl-C on the bench
does not reach it; the bench stops it), and its output in a log file.
"""
from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from bench.client import Connection

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
INTERNAL_KEY = "bench-internal-key"
USER = "bench-user"
AUTH = {"X-Internal-Key": INTERNAL_KEY, "X-User-Id": USER}
JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}
# One bench user starts runs from 32 clients at once: lift the plan's bound on runs going at once
# (10 for a free sign-up).
BENCH_CONFIG = """\
[plans.free]
max_running = 0
"""


def raise_nofile() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_PR_SET_PDEATHSIG = 1
_LIVE: set[ServerProcess] = set()


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the server when the bench process dies
    (even by SIGKILL or a `timeout`), so no server outlives its benchmark."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        proc.stop()


def _process_tree(pid: int) -> list[int]:
    """The process and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def parley_argv(port: int, workdir: Path, config: Path, name: str = "data", extra: list[str] | None = None) -> list[str]:
    """The command line of a benchmarked Parley on `port` (its data dir `workdir/name`)."""
    return [
        sys.executable, str(ROOT / "server.py"),
        "--host", HOST, "--port", str(port),
        "--data-dir", str(workdir / name),
        "--internal-key", INTERNAL_KEY,
        "--demo-delay-ms", "0",
        "--max-streams-per-user", "20000",
        "--log-level", "warning",
        "--drain-timeout", "1",
        "--config", str(config),
        *(extra or []),
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One server subprocess on HOST:port."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The child inherits this process's raised RLIMIT_NOFILE (see Servers).  Its own
        # session keeps a Ctrl-C on the bench from reaching it (the bench stops it).
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll GET /health until it answers 200."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                conn = await Connection.open(HOST, self.port)
                try:
                    resp = await asyncio.wait_for(conn.request("GET", "/health"), 2.0)
                finally:
                    conn.close()
                if resp.status == 200:
                    return
            except Exception as exc:  # any failure means "not ready yet"
                last = exc
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout}s ({last!r}):\n{self.log_tail()}")

    def rss_kib(self) -> int:
        """VmRSS of the server process, in KiB."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, its live child processes
        included (the workers of `--workers N`, the tool sandbox)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in _process_tree(self.pid):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            total += int(fields[11]) + int(fields[12])
        return total / ticks

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        _LIVE.discard(self)
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass


class Servers:
    """A fresh Parley (own temp data dir) and a fresh baseline, started side by side."""

    def __init__(self, data_root: str | None = None, keep: bool = False) -> None:
        raise_nofile()  # inherited by both servers (10,000 idle streams need it)
        self.workdir = Path(tempfile.mkdtemp(prefix="parley-bench-", dir=data_root))
        self.keep = keep
        py = sys.executable
        config = self.workdir / "parley.toml"
        config.write_text(BENCH_CONFIG)
        pport, bport = free_port(), free_port()
        while bport == pport:
            bport = free_port()
        self.parley = ServerProcess("parley", parley_argv(pport, self.workdir, config), pport, self.workdir)
        self.baseline = ServerProcess(
            "baseline",
            [py, str(ROOT / "bench" / "baseline.py"), "--host", HOST, "--port", str(bport)],
            bport,
            self.workdir,
        )

    async def __aenter__(self) -> Self:
        try:
            self.parley.start()
            self.baseline.start()
            await asyncio.gather(self.parley.wait_ready(), self.baseline.wait_ready())
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.parley.stop()
        self.baseline.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
