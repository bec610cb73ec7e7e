"""Parley's benchmark suite: a real server subprocess against a bare Tornado baseline.

    make bench                      # or: .venv/bin/python -m bench
    make bench ARGS="--quick"       # smaller sizes
    make bench ARGS="throughput idle --json"

Modules: `__main__` (command line, table/JSON), `suite` (the benchmarks:
starts, short-runs, throughput, first-chunk, idle, replay, fairness), `client` (the
asyncio HTTP/1.1 + SSE load client), `flood` (a standing load of many streaming runs in
a process of its own), `procs` (server subprocesses),
`baseline` (the bare Tornado app), `results` (rows, targets, the table).
Method, baselines and caveats: bench/README.md.
"""
