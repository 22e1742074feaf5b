"""CPU of one turn of the admin timer's deletions of drained servers
(``AdminService._finish_removals``, every 50 ms while some are being removed) with N servers
being removed that still have connections (none can be deleted yet), and with one of them
drained each turn (deleted).

    python3 bench/finish_removals_cost.py [--sizes 1000 10000] [--old /tmp/wt/src]

One pool of N servers, all draining to be removed with one connection each. Median CPU
(``time.process_time``) of 200 calls; ``--old``: the same on another checkout's ``src`` (a
subprocess), side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quiesce.admin import AdminService
from quiesce.config import parse_config
from quiesce.core.admin import AdminCommand
from quiesce.core.clock import FakeClock
from quiesce.core.states import Admin
from quiesce.state.registry import Registry
from quiesce.store import SqliteStore


async def run(size: int, drain_one: bool) -> float:
    raw: dict[str, Any] = {
        "pools": {
            "p": {
                "servers": [
                    {"name": f"s{i}", "address": f"10.0.{i // 250}.{i % 250 + 1}:80"}
                    for i in range(size)
                ]
            }
        }
    }
    clock = FakeClock(1000.0)
    registry = Registry(parse_config(raw), clock)
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "state.db")
        await store.open()
        service = AdminService(registry, store, clock)
        servers = list(registry.pools["p"].servers)
        with registry.deferring():
            for s in servers:
                s.connections = 1
                registry.admin_command(s, AdminCommand(Admin.DRAIN, "b"), force_guard=True)
                s.removing = True
        cpu: list[float] = []
        for k in range(200):
            if drain_one:
                servers[k].connections = 0
            c = time.process_time()
            service._finish_removals(0.001)
            cpu.append(time.process_time() - c)
        await service.stop()
        store.close()
    return statistics.median(cpu) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--old")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rows: dict[str, list[str]] = {}
    for size in args.sizes:
        for drain_one in (False, True):
            label = (
                f"{size:>6} being removed, {'one drained a turn' if drain_one else 'none drained'}"
            )
            rows[label] = [f"{asyncio.run(run(size, drain_one)):8.1f} µs CPU a turn"]
            if args.child:
                print(f"{label}\t{rows[label][0]}", flush=True)
    if args.child:
        return
    if args.old:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--sizes", *map(str, args.sizes)],
            env={**os.environ, "PYTHONPATH": args.old},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            label, text = line.split("\t")
            rows[label].insert(0, text)
    print(f"{'':40} {'old | new' if args.old else 'this checkout'}")
    for label, cols in rows.items():
        print(f"{label:40} " + " | ".join(cols))


if __name__ == "__main__":
    main()
