#!/usr/bin/env python3
"""What publishing a node's health views costs (issue 15, case 7): one pass over the servers
(``AdminService._verdicts``: the verdicts other than up or unmonitored, the servers a pool
cannot use) and its JSON, as the cluster agent makes it after an event, at most once a probe
interval. It runs on the event loop, so this is also how long it holds the loop.

    python3 bench/health_views_cost.py [--servers 1000 10000 50000]

N servers in 10 pools of a real ``Registry`` (a TCP monitor each, forced up; ``--down``
percent of them forced down); the median of 20 passes, and the record's size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from quiesce.admin.remote import RemoteChanges
from quiesce.config import parse_config
from quiesce.core.clock import SystemClock
from quiesce.core.states import Cause, Oper
from quiesce.state.registry import Registry


class Holder:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    ap.add_argument("--down", type=float, default=1.0, help="percent of servers down")
    args = ap.parse_args()
    print(f"{args.down:g}% of the servers down")
    print(f"{'servers':>8} {'ms per pass':>12} {'record bytes':>13}")
    for n in args.servers:
        per = n // 10
        servers = [
            {"name": f"s{i}", "address": f"127.0.0.1:{1000 + i % 60000}"} for i in range(per)
        ]
        raw = {
            "healthmonitors": {"hm": {"type": "tcp"}},
            "pools": {f"p{p}": {"servers": servers, "healthmonitors": ["hm"]} for p in range(10)},
        }
        registry = Registry(parse_config(raw), SystemClock())
        every = max(1, round(100 / args.down)) if args.down > 0 else 0
        for i, server in enumerate(s for p in registry.pools.values() for s in p.servers):
            down = every and i % every == 0
            registry.force_oper(server, Oper.DOWN if down else Oper.UP, Cause.HEALTH, {})
        holder = Holder(registry)
        times, size = [], 0
        for _ in range(20):
            t = time.perf_counter()
            record = RemoteChanges._verdicts(holder)  # type: ignore[arg-type]
            value = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
            times.append(time.perf_counter() - t)
            size = len(value)
        print(f"{n:8d} {statistics.median(times) * 1000:12.1f} {size:13d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
