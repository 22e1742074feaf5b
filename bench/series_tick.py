"""Cost of the live series' 1 s tick (``SeriesStore.tick``), by number of servers, idle and
with 1% of the servers busy each second (sans IO, no sockets).

    python3 bench/series_tick.py [--sizes 1000 10000 100000] [--old SRC]

N servers in 10 pools of a :class:`Registry` (real ``ServerRuntime`` objects), one service.
Each second, before the tick, "1% active" gives 1% of the servers (another 1% each second)
ten requests each, as the data plane counts them (``requests_total``, the response class,
``traffic.account_timed``: bytes, times and the latency histogram). "checks" is "1% active"
with one monitor a server checking every 5 s: each second a fifth of the servers get a check
result, as the registry keeps it (their monitor's ``last_checks``; the series reads them).
"34% active" gives a third of the servers ten requests each a second (about the servers
bench/reload_bench.py's 4 clients, ~3,400 requests a second round-robin over 10,000 servers,
make). Reported: the tick's total time (median of the ticks after the baseline one) and its
longest slice (with :meth:`SeriesStore.ticking`, ``BATCH`` servers: since 2026-12-07 the
app's timer pauses after ~1 ms of batches, ``quiesce.app.reload_pace.Pacer``, so the longest
hold of the event loop is ~1 ms, not a slice; without ``ticking``, the whole tick).
``--old /tmp/wt/src``: the same run on another checkout's ``src`` (a subprocess), side by
side. Requests go through the servers' ``connections`` (busy, then not: the connection
table's steps, which mark a server for the tick since 2026-12-07) and check results through
``Registry.record_check``, as in the process.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

from quiesce.config import parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.state import series as series_mod
from quiesce.state import traffic
from quiesce.state.registry import Registry
from quiesce.state.runtime import NO_COUNTS, Recent

POOLS = 10


def registry_of(size: int) -> Registry:
    per = size // POOLS
    raw: dict[str, Any] = {
        "pools": {
            f"p{p}": {
                "servers": [
                    {"name": f"s{i}", "address": f"10.{p}.{i // 250}.{i % 250 + 1}:80"}
                    for i in range(per)
                ]
            }
            for p in range(POOLS)
        },
        "services": {"w": {"listen": "127.0.0.1:0", "pool": "p0"}},
    }
    return Registry(parse_config(raw))


def run(size: int, active: float, ticks: int, checks: bool = False) -> tuple[float, float, float]:
    """(median ms per tick, longest slice in ms, median CPU ms per tick) over ``ticks`` ticks
    after the baseline."""
    registry = registry_of(size)
    pools = registry.pools
    servers = [s for p in pools.values() for s in p.servers]
    if checks:
        for s in servers:
            s.last_checks = {"m": Recent()}
    svc = traffic.Traffic()
    store = series_mod.SeriesStore()
    sliced = hasattr(store, "ticking")
    try:  # the slice the app's timer uses
        from quiesce.app.series import BATCH as batch
    except ImportError:
        batch = 2000
    rng = random.Random(1)
    totals: list[float] = []
    cpu: list[float] = []  # CPU time per tick: steadier than wall time on a loaded machine
    longest = 0.0
    for t in range(ticks + 1):
        for s in rng.sample(servers, int(len(servers) * active)):
            for _ in range(10):  # as the connection table counts a request
                s.connections += 1
                s.requests_in_flight += 1
                s.requests_total += 1
                if s.responses is NO_COUNTS:  # its first answer (as the data plane does)
                    s.responses = {}
                s.responses["2xx"] = s.responses.get("2xx", 0) + 1
                t_ = s.own_traffic or s.new_traffic()  # made by its first request
                traffic.account_timed(t_, svc, 100, 1000, 0.002, 0.003)
                s.requests_in_flight -= 1
                s.connections -= 1
        now = 1000.0 + t
        if checks:
            for s in servers[t % 5 :: 5]:  # as the health manager reports one
                registry.record_check(
                    s, CheckResult("m", Verdict.PASS, Reason.OK, now - 0.5, 0.001)
                )
        start = time.perf_counter()
        cpu0 = time.process_time()
        if sliced:
            last = start
            for _ in store.ticking(now, pools, {}, batch=batch):
                x = time.perf_counter()
                longest = max(longest, x - last) if t else longest
                last = time.perf_counter()  # the loop's other work runs here
            x = time.perf_counter()
            total = x - start  # (with the bench's own bookkeeping: a few µs a slice)
            longest = max(longest, x - last) if t else longest
        else:
            store.tick(now, pools, {})
            total = time.perf_counter() - start
            longest = max(longest, total) if t else longest
        if t:  # the first tick is the baseline (every series new)
            totals.append(total)
            cpu.append(time.process_time() - cpu0)
    return statistics.median(totals) * 1000, longest * 1000, statistics.median(cpu) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--old", help="another checkout's src directory, run side by side")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    results: dict[str, list[str]] = {}
    for size in args.sizes:
        ticks = 3 if size >= 100000 else 5 if size >= 10000 else 10
        for active, checks in ((0.0, False), (0.01, False), (0.01, True), (0.34, False)):
            kind = "checks   " if checks else f"{active:.0%} active" if active else "idle     "
            label = f"{size:>7} servers, {kind}"
            ms, worst, cpu = run(size, active, ticks, checks)
            results[label] = [f"{ms:7.1f} ms/tick ({cpu:7.1f} CPU), longest slice {worst:6.1f}"]
            if args.child:
                print(f"{label}\t{results[label][0]}", flush=True)
    if args.child:
        return
    if args.old:
        env = {**os.environ, "PYTHONPATH": args.old}
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--sizes", *map(str, args.sizes)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            label, text = line.split("\t")
            results[label].insert(0, text)
    head = "old | new" if args.old else "this checkout"
    print(f"{'':27} {head}")
    for label, cols in results.items():
        print(f"{label}  " + " | ".join(cols))


if __name__ == "__main__":
    main()
