"""The event loop's CPU per operational state change with the listeners ``quiesce run``
attaches (sans sockets): the registry, the AdminService (the SQLite store with its writer
thread, the event bus) and the process log (its writer thread, stderr to /dev/null).

    python3 bench/event_cost.py [--servers 10000] [--repeat 5] [--old SRC]

A pool of ``--servers`` servers under one monitor (one failed check takes a server down, one
pass brings it back) is flipped down and up, the check results handed over 32 at a time in
one registry batch each (as the C check engine delivers them), ``--repeat`` times; reported:
the calling thread's CPU time per change (``time.thread_time``: the writer threads' own
work is theirs), the median and the lowest of the flips. ``--old SRC``: the same in a
subprocess on another checkout's ``src``, alternating with this one.
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


async def flips(servers: int, repeat: int) -> list[float]:
    from quiesce import logs
    from quiesce.admin import AdminService
    from quiesce.config import parse_config
    from quiesce.config.logs import ProcessLogConfig
    from quiesce.core.checks import CheckResult, Reason
    from quiesce.core.states import Verdict
    from quiesce.state.registry import Registry
    from quiesce.store.sqlite import SqliteStore

    monitor = {"type": "http", "send_interval": 5, "receive_timeout": 2.5}
    raw = {
        "healthmonitors": {"m": {**monitor, "successful_checks": 1, "failed_checks": 1}},
        "pools": {
            "p": {
                "healthmonitors": ["m"],
                "servers": [{"name": f"s{i}", "address": "127.0.0.1:80"} for i in range(servers)],
            }
        },
    }
    registry = Registry(parse_config(raw))
    store = SqliteStore(Path(tempfile.mkdtemp(prefix="quiesce-event-cost-")) / "state.db")
    await store.open()
    service = AdminService(registry, store)
    await service.start()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process log's lines
    logs.setup_process_log(ProcessLogConfig())
    registry.listeners.append(logs.log_event)
    members = list(registry.pool("p").servers)

    def flip(verdict: Verdict) -> float:
        cpu = time.thread_time()
        for i in range(0, len(members), 32):
            with registry.deferring(freeze=False):
                for s in members[i : i + 32]:
                    result = CheckResult("m", verdict, Reason.OK, time.time(), 0.001, 200)
                    registry.record_check(s, result)
        return (time.thread_time() - cpu) / len(members) * 1e6

    flip(Verdict.PASS)
    out = []
    for _ in range(repeat):
        await asyncio.sleep(0.5)  # the writers catch up
        out.append(flip(Verdict.FAIL))
        await asyncio.sleep(0.5)
        out.append(flip(Verdict.PASS))
    await service.stop()
    store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--old", help="another checkout's src directory, run alternately")
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        print(" ".join(f"{x:.2f}" for x in asyncio.run(flips(args.servers, args.repeat))))
        return
    srcs = {"this tree": str(Path(__file__).resolve().parents[1] / "src")}
    if args.old:
        srcs["old"] = args.old
    got: dict[str, list[float]] = {name: [] for name in srcs}
    for _ in range(args.repeat):  # alternate, so the machine's moods fall on both
        for name, src in srcs.items():
            cmd = [sys.executable, __file__, "--raw", "--servers", str(args.servers)]
            out = subprocess.run(
                [*cmd, "--repeat", "1"],
                env={**os.environ, "PYTHONPATH": src},
                capture_output=True,
                text=True,
                check=True,
            )
            got[name] += [float(x) for x in out.stdout.split()]
    print(f"{args.servers:,} servers flipped down and up, 32 results a batch, {args.repeat}x")
    print("| code | loop CPU µs per state change: median | lowest |")
    print("|---|---:|---:|")
    for name, xs in got.items():
        print(f"| {name} | {statistics.median(xs):.1f} | {min(xs):.1f} |")


if __name__ == "__main__":
    main()
