#!/usr/bin/env python3
"""How long a live reload holds the event loop (issue 14, item 4), without client noise.

    python3 bench/reload_stall.py [--servers 10000] [--add 1000] [--rounds 2]
    PYTHONPATH=/tmp/wt-old/src python3 bench/reload_stall.py     # another checkout

Runs :class:`quiesce.app.App` in this process on a pool of ``--servers`` unmonitored servers
(state in SQLite, no traffic), and a probe task that sleeps 1 ms in a loop and records how late
it wakes up: a reload's longest stretch without a turn of the loop is the probe's worst delay.
Per round the file gains ``--add`` servers, then loses them (drained, 1 s); a first reload
starts the reload worker. Reported per reload: its time (``App.reload``), the probe's max and
p99 delay during it, and the number of probe wake-ups.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path


def config(n: int) -> str:
    servers = "\n".join(
        f"      - {{name: s{i}, address: 127.0.0.1:{9000 + i % 1000}}}" for i in range(n)
    )
    return f"""
admin:
  listen: 127.0.0.1:0
state:
  sqlite: ./state.db
pools:
  big:
    graceful_disable_timeout: 1s
    max_idle_per_server: 1
    servers:
{servers}
services:
  www: {{listen: 127.0.0.1:0, pool: big}}
"""


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    import logging

    from quiesce.app import App
    from quiesce.config.loader import load_config

    logging.disable(logging.INFO)  # one line per change would time the terminal
    tmp = Path(tempfile.mkdtemp(prefix="quiesce-reload-stall-"))
    path = tmp / "quiesce.yaml"
    path.write_text(config(args.servers))
    app = App(load_config(path), tmp, config_path=path)
    await app.start()
    lags: list[float] = []
    running = True

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while running:
            t = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - t - 0.001)

    out: list[dict[str, object]] = []
    try:
        await app.reload("bench")  # starts the worker
        for _ in range(args.rounds):
            for n, label in (
                (args.servers + args.add, f"+{args.add}"),
                (args.servers, f"-{args.add}"),
            ):
                path.write_text(config(n))
                lags.clear()
                running = True
                task = asyncio.create_task(probe())
                began = time.perf_counter()
                plan = await app.reload("bench")
                took = time.perf_counter() - began
                running = False
                await task
                while len(app.registry.pools["big"].servers) > n:  # drained, then deleted
                    await asyncio.sleep(0.05)
                lags.sort()
                out.append(
                    {
                        "reload": label,
                        "changes": len(plan.changes),
                        "seconds": round(took, 3),
                        "max_stall_ms": round(lags[-1] * 1000, 1),
                        "p99_stall_ms": round(lags[int(len(lags) * 0.99)] * 1000, 1),
                        "wakeups": len(lags),
                    }
                )
                print(json.dumps(out[-1]), flush=True)
    finally:
        await app.stop(1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=2)
    rows = asyncio.run(run(ap.parse_args()))
    print("| reload | changes | reload (s) | max stall (ms) | p99 stall (ms) | probe wake-ups |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['reload']} | {r['changes']} | {r['seconds']} | {r['max_stall_ms']} | "
            f"{r['p99_stall_ms']} | {r['wakeups']} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
