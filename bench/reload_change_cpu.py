#!/usr/bin/env python3
"""The event loop's CPU per change a live reload applies (issue 14), without client noise.

    python3 bench/reload_change_cpu.py [--servers 10000] [--add 1000] [--rounds 3]
    PYTHONPATH=/tmp/wt-old/src python3 bench/reload_change_cpu.py     # another checkout
    python3 bench/reload_change_cpu.py --profile --only - --sort tottime  # cProfile, -1000

Runs :class:`quiesce.app.App` in this process on a pool of ``--servers`` unmonitored servers
(state in SQLite, no traffic), as ``bench/reload_stall.py`` does; per round the file gains
``--add`` servers, then loses them (drained, 1 s; a server with no connection is deleted at
once). Per reload: the CPU of the event loop's thread spent in the callbacks of the reload's
own task (the caller's, which awaits ``App.reload``) and of the admin timer's (deletions of
drained servers), summed from the reload to the last deletion and its commit, divided by
the number of changes (``per_change_us``: the live series' tick and other periodic work are
not counted); and the process's CPU over the same span, all threads (``process_cpu_s``: the
store's writer thread, the planning thread, the periodic work). ``--profile``: cProfile of the
last round's reloads (``--only +`` or ``-``)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time

from reload_stall import config, started_app  # bench/, this script's directory

COUNTED = ("run", "AdminService._run_timer", "AdminService.durable")
"""The tasks whose callbacks are the reload's: this script's (which awaits the reload), the
admin timer (drained deletions) and the wait for the commit."""


class Sums:
    """The thread CPU of every callback of the event loop, summed by task (the coroutine's
    qualified name; ``other`` for plain callbacks), while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.sums: dict[str, float] = {}
        run = asyncio.events.Handle._run
        sums = self

        def timed(handle: asyncio.events.Handle) -> None:
            if not sums.on:
                run(handle)
                return
            cpu = time.thread_time()
            run(handle)
            used = time.thread_time() - cpu
            task = getattr(getattr(handle, "_callback", None), "__self__", None)
            name = (
                getattr(task.get_coro(), "__qualname__", "task")
                if isinstance(task, asyncio.Task)
                else "other"
            )
            sums.sums[name] = sums.sums.get(name, 0.0) + used

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]


async def run(a: argparse.Namespace) -> None:
    app, path = await started_app(a.servers, "quiesce-reload-cpu-")
    sums = Sums()
    prof = cProfile.Profile() if a.profile else None
    try:
        await app.reload("bench")  # starts the worker
        for r in range(a.rounds):
            for n, label in ((a.servers + a.add, "+"), (a.servers, "-")):
                await asyncio.sleep(0.3)
                path.write_text(config(n))
                sums.sums = {}
                sums.on = True
                profiled = prof is not None and r == a.rounds - 1 and label in a.only
                cpu = time.process_time()
                if profiled:
                    prof.enable()  # type: ignore[union-attr]
                await app.reload("bench")
                while len(app.registry.pools["big"].servers) > n:  # drained, then deleted
                    await asyncio.sleep(0.01)
                await app.admin.durable()
                if profiled:
                    prof.disable()  # type: ignore[union-attr]
                sums.on = False
                process = time.process_time() - cpu
                loop_cpu = sum(v for k, v in sums.sums.items() if k in COUNTED)
                top = sorted(sums.sums.items(), key=lambda x: -x[1])[:5]
                row = {
                    "reload": f"{label}{a.add}",
                    "per_change_us": round(loop_cpu / a.add * 1e6, 1),
                    "process_cpu_s": round(process, 3),
                    "tasks_ms": {k: round(v * 1000, 1) for k, v in top},
                }
                print(json.dumps(row), flush=True)
    finally:
        await app.stop(1.0)
    if prof is not None:
        pstats.Stats(prof).sort_stats(a.sort).print_stats(a.lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--only", default="+-", help="with --profile: + and/or -")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--lines", type=int, default=45)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
