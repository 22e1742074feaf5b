"""CPU per operational state change in the registry, by pool size (sans IO, no sockets).

    python3 bench/registry_recompute.py [--sizes 20 100 1000] [--changes 2000] [--old SRC]

Every health-check verdict that changes a server's state makes the registry update that
server's pool (eligible sets, candidates, election, events): this measures that path alone,
with one event listener attached (as the event log is). ``--old /tmp/wt/src``: the same run
on another checkout's ``src`` too (a subprocess), side by side, with the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from quiesce.config import parse_config
from quiesce.core.checks import CheckResult, Reason
from quiesce.core.states import Verdict
from quiesce.state.registry import Registry


def per_change_us(size: int, changes: int) -> float:
    raw: dict[str, Any] = {
        "healthmonitors": {"m": {"type": "tcp", "send_interval": 1, "receive_timeout": 0.5}},
        "pools": {
            "p": {
                "healthmonitors": ["m"],
                "servers": [
                    {"name": f"s{i}", "address": f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}:80"}
                    for i in range(size)
                ],
            }
        },
    }
    registry = Registry(parse_config(raw))
    seen: list[object] = []
    registry.listeners.append(seen.append)
    servers = registry.pool("p").servers
    done = 0
    verdicts = (Verdict.PASS, Verdict.MAINTENANCE)  # each result changes the server's state
    start = time.process_time()
    round_ = 0
    while done < changes:
        verdict = verdicts[round_ % 2]
        for s in servers:
            registry.record_check(s, CheckResult("m", verdict, Reason.OK, 0.0, 0.001))
            done += 1
            if done == changes:
                break
        round_ += 1
    return (time.process_time() - start) / changes * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 1000])
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--old", help="another checkout's src directory, run side by side")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        for size in args.sizes:
            print(per_change_us(size, args.changes))
        return
    old: list[float] = []
    if args.old:
        env = {**os.environ, "PYTHONPATH": args.old}
        cmd = [sys.executable, __file__, "--raw", "--changes", str(args.changes), "--sizes"]
        out = subprocess.run(
            [*cmd, *map(str, args.sizes)], env=env, capture_output=True, text=True, check=True
        )
        old = [float(x) for x in out.stdout.split()]
        print("| servers in the pool | old: CPU µs per change | new: CPU µs per change | old/new |")
        print("|---:|---:|---:|---:|")
    else:
        print("| servers in the pool | CPU µs per state change |")
        print("|---:|---:|")
    for i, size in enumerate(args.sizes):
        new = per_change_us(size, args.changes)
        if old:
            print(f"| {size:,} | {old[i]:.0f} | {new:.1f} | {old[i] / new:.0f}× |")
        else:
            print(f"| {size:,} | {new:.1f} |")


if __name__ == "__main__":
    main()
