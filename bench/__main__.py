"""`python -m bench [NAME ...] [--quick] [--json]`: see bench/__init__.py."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import traceback

from bench.procs import raise_nofile
from bench.results import Metric, table
from bench.suite import BENCHMARKS, FULL, QUICK, run_one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark Parley against a bare Tornado baseline (both as real subprocesses over loopback).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a quick look, well under a minute)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--data-root", default=None, help="where the servers' temp data dirs go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs (server logs, parley.db)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite",
                        help="postgresql: the scale-out table instead (SQLite vs PostgreSQL: one instance, two, --workers 2)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


async def run_all(names: list[str], args: argparse.Namespace) -> tuple[list[Metric], list[tuple[str, str]], dict[str, float]]:
    sizes = QUICK if args.quick else FULL
    metrics: list[Metric] = []
    errors: list[tuple[str, str]] = []
    timings: dict[str, float] = {}
    if args.store == "postgresql":
        from bench.scale import run_scale

        t0 = time.perf_counter()
        try:
            metrics = await run_scale(sizes, args.data_root, args.keep)
        except Exception as exc:
            errors.append(("scale", f"{type(exc).__name__}: {exc}"))
            traceback.print_exc()
        timings["scale"] = round(time.perf_counter() - t0, 2)
        return metrics, errors, timings
    for name in names:
        t0 = time.perf_counter()
        if not args.json:
            print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            metrics.extend(await run_one(name, sizes, args.data_root, args.keep))
        except Exception as exc:  # one broken benchmark must not hide the others
            errors.append((name, f"{type(exc).__name__}: {exc}"))
            if not args.json:
                traceback.print_exc()
        timings[name] = round(time.perf_counter() - t0, 2)
    return metrics, errors, timings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, fn in BENCHMARKS.items():
            print(f"{name:12} {((fn.__doc__ or '').strip().splitlines() or [''])[0]}")
        return 0
    names = args.names or list(BENCHMARKS)
    nofile = raise_nofile()
    sizes = QUICK if args.quick else FULL
    if "idle" in names and nofile < sizes.idle_streams + 500:
        print(f"warning: RLIMIT_NOFILE is {nofile}; the idle benchmark needs about {sizes.idle_streams + 500}", file=sys.stderr)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    metrics, errors, timings = asyncio.run(run_all(names, args))
    total = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if args.json:
        doc = {
            "mode": "quick" if args.quick else "full",
            "sizes": sizes.__dict__,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                        "loadavg_1m_before": load_before, "loadavg_1m_after": load_after},
            "seconds": {"total": round(total, 2), **timings},
            "results": [m.as_json() for m in metrics],
            "errors": [{"bench": b, "error": e} for b, e in errors],
        }
        print(json.dumps(doc, indent=2))
    else:
        print()
        print(table(metrics, errors))
        print(f"\n{'quick' if args.quick else 'full'} run, {total:.0f} s ({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}); "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}; 1-min load average {load_before:.2f} before, "
              f"{load_after:.2f} after (other work on the machine skews every number)")
    if errors or any(m.error for m in metrics):
        return 2
    if args.strict and any(m.met is False for m in metrics):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
