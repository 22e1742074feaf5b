#!/usr/bin/env python3
"""How long a live reload holds the event loop (issue 14, item 4), without client noise.

    python3 bench/reload_stall.py [--servers 10000] [--add 1000] [--rounds 2]
    PYTHONPATH=/tmp/wt-old/src python3 bench/reload_stall.py     # another checkout

Runs :class:`quiesce.app.App` in this process on a pool of ``--servers`` unmonitored servers
(state in SQLite, no traffic), and a probe task that sleeps 1 ms in a loop and records how late
it wakes up: a reload's longest stretch without a turn of the loop is the probe's worst delay.
Per round the file gains ``--add`` servers, then loses them (drained, 1 s); a first reload
starts the reload worker. Reported per reload: its time (``App.reload``), the probe's max and
p99 delay during it and during ``--idle`` seconds just before it (the baseline: the machine's
own noise and the process's periodic work), the CPU time the loop's thread used between two
wake-ups of the probe (its longest holds of the loop, which the machine's load does not
lengthen: a stall with little CPU waited for a core or the GIL), the number of probe
wake-ups, and the reload's CPU seconds in this process (all threads: the probe's are
included) and in its children (the reload worker).

Each callback the event loop runs is timed too (its thread's CPU): per reload, the longest
callback of the reload's own task (``Reloader.reload``: a slice with the end of its batch, the
reload's other steps) and of the admin timer's (deletions of drained servers), and the
longest of anything else (the live series' tick, the probe...), named by the task's
coroutine: what holds the loop, whatever the machine's load (``cpu_by_task``).

``--where MS``: a watcher thread prints to stderr where the loop is (the main thread's stack)
whenever the probe has not woken for MS milliseconds: where the stalls sit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from reload_bench import cpu_seconds  # bench/, this script's directory


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


class Callbacks:
    """Every callback of the event loop timed (thread CPU), the longest kept per task name
    (the coroutine's qualified name; ``other`` for plain callbacks) while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.longest: dict[str, float] = {}
        self._run = asyncio.events.Handle._run
        callbacks = self

        def timed(handle: asyncio.events.Handle) -> None:
            if not callbacks.on:
                callbacks._run(handle)
                return
            cpu = time.thread_time()
            callbacks._run(handle)
            used = time.thread_time() - cpu
            name = callbacks.name(handle)
            if used > callbacks.longest.get(name, 0.0):
                callbacks.longest[name] = used

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    @staticmethod
    def name(handle: asyncio.events.Handle) -> str:
        task = getattr(getattr(handle, "_callback", None), "__self__", None)
        if isinstance(task, asyncio.Task):
            return getattr(task.get_coro(), "__qualname__", "task")
        return "other"

    def take(self) -> dict[str, float]:
        out = {k: round(v * 1000, 2) for k, v in sorted(self.longest.items(), key=lambda x: -x[1])}
        self.longest = {}
        return out


async def started_app(servers: int, prefix: str) -> tuple[Any, Path]:
    """An App on :func:`config` of ``servers`` servers in a new temp directory, started, and
    its config file's path (INFO logging off: one line per change would time the terminal)."""
    import logging

    from quiesce.app import App
    from quiesce.config.loader import load_config

    logging.disable(logging.INFO)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    path = tmp / "quiesce.yaml"
    path.write_text(config(servers))
    app = App(load_config(path), tmp, config_path=path)
    await app.start()
    return app, path


async def run(args: argparse.Namespace) -> list[dict[str, object]]:
    app, path = await started_app(args.servers, "quiesce-reload-stall-")
    callbacks = Callbacks()
    lags: list[float] = []
    busy: list[float] = []  # the loop thread's CPU between two wake-ups of the probe
    running = True

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while running:
            t, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - t - 0.001)
            busy.append(time.thread_time() - cpu)

    beat = [time.monotonic(), time.thread_time(), time.process_time()]

    async def heartbeat() -> None:
        while True:
            beat[:] = time.monotonic(), time.thread_time(), time.process_time()
            await asyncio.sleep(0.001)

    def watch(main: int, ms: float) -> None:
        """Where the loop is when it has not beaten for ``ms`` (its stack, to stderr), and
        how much CPU its thread had meanwhile (less than the stall: it waited for the GIL
        or for a core) and the process's other threads (as much as the stall: the GIL)."""
        clock = time.pthread_getcpuclockid(main)
        while True:
            time.sleep(0.002)
            when, cpu, process = beat
            late = time.monotonic() - when
            if late > ms / 1000:
                used = time.clock_gettime(clock) - cpu
                others = time.process_time() - process - used
                frame = sys._current_frames().get(main)
                stack = "".join(traceback.format_stack(frame, limit=10)) if frame else ""
                print(
                    f"stall {late * 1000:.0f} ms (cpu {used * 1000:.0f} ms, other threads "
                    f"{others * 1000:.0f} ms)\n{stack}",
                    file=sys.stderr,
                    flush=True,
                )
                while beat[0] < time.monotonic() - ms / 1000:  # once per stall
                    time.sleep(0.002)

    if args.where:
        beating = asyncio.create_task(heartbeat())
        threading.Thread(
            target=watch, args=(threading.get_ident(), args.where), daemon=True
        ).start()

    def summary(xs: list[float]) -> tuple[float, float]:
        xs = sorted(xs)
        return round(xs[-1] * 1000, 1), round(xs[int(len(xs) * 0.99)] * 1000, 1)

    out: list[dict[str, object]] = []
    try:
        await app.reload("bench")  # starts the worker
        for _ in range(args.rounds):
            for n, label in (
                (args.servers + args.add, f"+{args.add}"),
                (args.servers, f"-{args.add}"),
            ):
                lags.clear()  # the idle baseline: the probe alone for --idle seconds
                busy.clear()
                running = True
                task = asyncio.create_task(probe())
                await asyncio.sleep(args.idle)
                running = False
                await task
                idle, idle_cpu = summary(lags), summary(busy)
                path.write_text(config(n))
                lags.clear()
                busy.clear()
                running = True
                task = asyncio.create_task(probe())
                began, cpu = time.perf_counter(), cpu_seconds(os.getpid())
                callbacks.on = True
                plan = await app.reload("bench")
                took = time.perf_counter() - began
                cpu_after = cpu_seconds(os.getpid())
                running = False
                await task
                during, during_cpu = summary(lags), summary(busy)
                wakeups = len(lags)
                while len(app.registry.pools["big"].servers) > n:  # drained, then deleted
                    await asyncio.sleep(0.05)
                callbacks.on = False
                by_task = callbacks.take()
                out.append(
                    {
                        "reload": label,
                        "changes": len(plan.changes),
                        "seconds": round(took, 3),
                        "max_stall_ms": during[0],
                        "p99_stall_ms": during[1],
                        "idle_max_ms": idle[0],
                        "idle_p99_ms": idle[1],
                        "cpu_max_ms": during_cpu[0],
                        "cpu_p99_ms": during_cpu[1],
                        "idle_cpu_max_ms": idle_cpu[0],
                        "wakeups": wakeups,
                        "server_cpu": round(cpu_after[0] - cpu[0], 3),
                        "worker_cpu": round(cpu_after[1] - cpu[1], 3),
                        "cpu_by_task": by_task,
                    }
                )
                print(json.dumps(out[-1]), flush=True)
    finally:
        if args.where:
            beating.cancel()
        await app.stop(1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=float, default=1.0, help="seconds of idle probe per reload")
    ap.add_argument("--where", type=float, default=0.0, metavar="MS")
    rows = asyncio.run(run(ap.parse_args()))
    print(
        "| reload | changes | reload (s) | stall max / p99 during (ms) | idle (ms) "
        "| loop CPU per turn max / p99 during (ms) | idle max (ms) | probe wake-ups "
        "| CPU s: server / worker |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['reload']} | {r['changes']} | {r['seconds']} | {r['max_stall_ms']} / "
            f"{r['p99_stall_ms']} | {r['idle_max_ms']} / {r['idle_p99_ms']} | "
            f"{r['cpu_max_ms']} / {r['cpu_p99_ms']} | {r['idle_cpu_max_ms']} | {r['wakeups']} | "
            f"{r['server_cpu']} / {r['worker_cpu']} |"
        )
    print("\nlongest callback of the loop (thread CPU, ms) by task, reload to last deletion:")
    for r in rows:
        top = list(r["cpu_by_task"].items())[:5]  # type: ignore[attr-defined]
        print(f"  {r['reload']}: " + ", ".join(f"{k} {v}" for k, v in top))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
