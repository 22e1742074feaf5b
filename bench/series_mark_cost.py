"""What the live series' marks cost a request (``PoolTally.moved``: the connections setter
adds a server that goes from 0 to busy, once a request at most; quiesce.state.series): CPU
time of the connection table's ``request_started`` + ``request_finished`` (one connection,
one server, keep-alive: every request a 0-to-busy step, the most marks a request can make),
with a store reading the pool's marks, drained once a second's worth as its tick does.

    python3 bench/series_mark_cost.py [--old /tmp/wt/src] [-n 200000] [--rounds 7]

``--old``: the same on another checkout's ``src`` (a subprocess), rounds alternated; the
median of the rounds, ns a request (CPU, ``time.process_time``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from quiesce.config import parse_config
from quiesce.dataplane.table import ConnectionTable
from quiesce.state.registry import Registry
from quiesce.state.series import SeriesStore


class Conn:
    layer = 7

    def cut(self, why: str = "") -> None:
        pass

    def close_at_boundary(self, force: bool = False) -> bool | None:
        return True


def one_round(n: int) -> float:
    raw: dict[str, Any] = {
        "pools": {"p": {"servers": [{"name": "a", "address": "10.0.0.1:80"}]}},
    }
    reg = Registry(parse_config(raw))
    store = SeriesStore()
    store.tick(1000.0, reg.pools, {})  # the store reads the pool's marks from here on
    store.tick(1001.0, reg.pools, {})
    table = ConnectionTable(reg)
    server = reg.pools["p"].server("a")
    conn = Conn()
    started, finished = table.request_started, table.request_finished
    cpu0 = time.process_time()
    for _ in range(n):
        started(server, conn, None)
        finished(server, conn, 200, False)
    cpu = time.process_time() - cpu0
    store.tick(1002.0, reg.pools, {})
    return cpu / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old")
    ap.add_argument("-n", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(one_round(args.n))
        return
    new: list[float] = []
    old: list[float] = []
    for _ in range(args.rounds):
        new.append(one_round(args.n))
        if args.old:
            out = subprocess.run(
                [sys.executable, __file__, "--child", "-n", str(args.n)],
                env={**os.environ, "PYTHONPATH": args.old},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            old.append(float(out))
    if old:
        print(f"old: {statistics.median(old):6.1f} ns a request (CPU), rounds {old}")
    print(f"new: {statistics.median(new):6.1f} ns a request (CPU)")


if __name__ == "__main__":
    main()
