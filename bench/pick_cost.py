"""CPU per pick of a server, by number of candidates and algorithm (sans IO, no sockets).

    python3 bench/pick_cost.py [--sizes 100 1000 10000 100000] [--old SRC] [--only CASE]

``PoolRuntime.pick`` as the data plane calls it for each new request or connection, in one
pool of N eligible servers (weights 1-4, no slow start, no load: least_connections sees
ties; source_ip_hash: a new client address at each pick). ``+ change``: a ``set weight`` on
one server before each pick, the worst case of a candidate set that changes between every
two picks. ``(first pick)``: the CPU of the first pick alone (a ring is built there). ``--old
/tmp/wt/src``: the same run on another checkout's ``src`` (a subprocess), side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from quiesce.balancing import make_algorithm
from quiesce.config import parse_config
from quiesce.state.registry import Registry
from quiesce.state.runtime import PoolRuntime

CASES = [
    "round_robin",
    "round_robin + change",
    "weighted_round_robin",
    "weighted_round_robin + change",
    "least_connections",
    "source_ip_hash",
    "source_ip_hash + change",
    "source_ip_hash (first pick)",
]

KEYS = [f"198.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(65_536)]
"""Client addresses for source_ip_hash: a new one for each pick (none repeats in a cell)."""


def pool_of(size: int) -> tuple[Registry, PoolRuntime]:
    raw: dict[str, Any] = {
        "pools": {
            "p": {
                "servers": [
                    {
                        "name": f"s{i}",
                        "address": f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}:80",
                        "weight": 1 + i % 4,
                    }
                    for i in range(size)
                ],
            }
        },
    }
    registry = Registry(parse_config(raw))
    return registry, registry.pool("p")


def per_pick_us(registry: Registry, pool: PoolRuntime, case: str, budget: float) -> float:
    algo, _, change = case.partition(" + ")
    first = algo.endswith(" (first pick)")
    pool.algorithm = make_algorithm(algo.removesuffix(" (first pick)"))
    servers = list(pool.candidates)
    keys = KEYS if algo.startswith("source_ip_hash") else ["10.9.9.9"]
    start = time.process_time()
    pool.pick("10.9.9.9", 0.0)  # warm: a first pick may build its structures
    if first:  # what that first pick cost
        return (time.process_time() - start) * 1e6
    picks = 0
    start = time.process_time()
    spent = 0.0
    while spent < budget or picks < 20:
        for _ in range(10):
            if change:
                s = servers[picks % len(servers)]
                registry.set_weight(s, 1 + (s.weight % 4))
            pool.pick(keys[picks % len(keys)], 0.0)
            picks += 1
        spent = time.process_time() - start
    return spent / picks * 1e6


def run(sizes: list[int], budget: float, cases: list[str]) -> list[list[float]]:
    out = []
    for size in sizes:
        registry, pool = pool_of(size)
        out.append([per_pick_us(registry, pool, case, budget) for case in cases])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    parser.add_argument("--budget", type=float, default=0.3, help="CPU seconds per cell")
    parser.add_argument("--old", help="another checkout's src directory, run side by side")
    parser.add_argument(
        "--only", help="the cases whose name starts with this (e.g. source_ip_hash)", default=""
    )
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cases = [c for c in CASES if c.startswith(args.only)]
    if args.raw:
        for row in run(args.sizes, args.budget, cases):
            print(" ".join(map(str, row)))
        return
    old: list[list[float]] = []
    if args.old:
        env = {**os.environ, "PYTHONPATH": args.old}
        cmd = [sys.executable, __file__, "--raw", "--only", args.only, "--budget"]
        cmd += [str(args.budget), "--sizes"]
        res = subprocess.run(
            [*cmd, *map(str, args.sizes)], env=env, capture_output=True, text=True, check=True
        )
        old = [[float(x) for x in line.split()] for line in res.stdout.splitlines()]
    new = run(args.sizes, args.budget, cases)
    print("| algorithm | candidates | old: CPU µs per pick | new: CPU µs per pick | old/new |")
    print("|---|---:|---:|---:|---:|")
    for j, case in enumerate(cases):
        for i, size in enumerate(args.sizes):
            n = new[i][j]
            if old:
                o = old[i][j]
                print(f"| {case} | {size:,} | {o:.1f} | {n:.1f} | {o / n:.1f}× |")
            else:
                print(f"| {case} | {size:,} | – | {n:.1f} | – |")


if __name__ == "__main__":
    main()
