"""CPU a runtime ``add server`` spends re-planning the connection budget (review 14 R14,
quiesce.app.budget.admit): the live servers listed by pool and quiesce.dataplane.limits.plan
over them, for a pool of N servers, monitored (the check pairs settle at the 1,000 cap
without a walk) or not (each server is looked at for monitors of its own).

    PYTHONPATH=src python3 bench/runtime_add_budget.py 10000
"""

from __future__ import annotations

import sys
import time

from quiesce.app.budget import live_servers
from quiesce.config.loader import parse_config
from quiesce.core.clock import SystemClock
from quiesce.dataplane.limits import plan
from quiesce.state.registry import Registry


def cost(n: int, monitored: bool, rounds: int = 50) -> float:
    servers = [{"name": f"s{i}", "address": f"127.0.{i // 250}.{i % 250 + 1}:80"} for i in range(n)]
    data = {
        "admin": {"listen": "127.0.0.1:0"},
        "state": {"sqlite": None},
        "healthmonitors": {"h": {"type": "tcp"}},
        "pools": {
            "big": {
                "max_idle_per_server": 1,
                "healthmonitors": ["h"] if monitored else [],
                "servers": servers,
            }
        },
        "services": {"www": {"listen": "127.0.0.1:0", "pool": "big"}},
    }
    config = parse_config(data)
    registry = Registry(config, SystemClock())
    began = time.process_time()
    for _ in range(rounds):
        plan(config, 1 << 20, live_servers(registry))
    return (time.process_time() - began) / rounds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    for monitored in (True, False):
        ms = cost(n, monitored) * 1000
        kind = "monitored" if monitored else "unmonitored"
        print(f"{n} servers, {kind}: {ms:.2f} ms CPU an admitted add (live servers + plan)")


if __name__ == "__main__":
    main()
