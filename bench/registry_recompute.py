"""CPU per operational state change in the registry, by pool size (sans IO, no sockets).

    python3 bench/registry_recompute.py [--sizes 20 100 1000] [--changes 2000]

Every health-check verdict that changes a server's state makes the registry recompute that
server's pool (candidates, election, events): this measures that path alone.
"""

from __future__ import annotations

import argparse
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
                    {"name": f"s{i}", "address": f"127.0.0.1:{1024 + i}"} for i in range(size)
                ],
            }
        },
    }
    registry = Registry(parse_config(raw))
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
    args = parser.parse_args()
    print("| servers in the pool | CPU µs per state change |")
    print("|---:|---:|")
    for size in args.sizes:
        print(f"| {size:,} | {per_change_us(size, args.changes):.0f} |")


if __name__ == "__main__":
    main()
