"""Parley's benchmark suite: a real server subprocess against a bare Tornado baseline.

    make bench                      # or: .venv/bin/python -m bench
    make bench ARGS="--quick"       # smaller sizes, well under a minute
    make bench ARGS="throughput idle --json"
    .venv/bin/python -m bench --list

Every benchmark starts a fresh Parley (`server.py`, temp data dir, demo
agent with no delay) and a fresh bare Tornado app (`bench/baseline.py`) doing
the same HTTP/SSE I/O with no Parley logic, each in its own subprocess on a
free loopback port, and drives both with the same load from this process:
a hand-written asyncio HTTP/1.1 keep-alive client (`bench/client.py`) that
parses responses inside `Protocol.data_received`, so the load generator is
cheap next to the servers.

Benchmarks (names for selection):
- `starts`: POST /task on distinct threads, 32 keep-alive clients back to
  back; runs/s.  Baseline: a JSON POST answering 201 {taskId}.
- `short-runs`: POST /task `hi` + GET /stream to `event: done`, 32 clients.
- `throughput`: `/count N` on one run read by 1 and by R concurrent readers;
  every reader must count all N text-delta chunks; events/s aggregated over
  readers, from before the POST to the last reader's `done`.  Baseline: the
  same chunks in frames of K chunks, K = Parley's measured average chunks per
  frame in that same scenario (Parley sends one frame per group commit, so
  mirroring its framing compares the I/O, not the batching).
- `first-chunk`: POST /task then GET /stream at once, sequentially; time from
  before the POST to the first `data:` frame; p50 / p99.
- `idle`: N streams held open on one parked run (`/approve ...`): server
  VmRSS growth per stream, and /health round trips while they are held.
  Baseline: N idle SSE responses.
- `replay`: a finished `/count N` run re-read from its first event id.
"""
