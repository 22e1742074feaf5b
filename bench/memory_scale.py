#!/usr/bin/env python3
"""Resident memory of ``quiesce run`` per configured server (issue 21).

    python3 bench/memory_scale.py [--servers 100000] [--pools 1 100] [--settle 8] [--stable]

For each layout, one ``quiesce run`` with ``--servers`` servers split into that many pools,
every pool with a TCP health monitor attached (interval 60 s, so the checks are running but
rare; each server has its own loopback address, 127.a.b.c, all on one closed port, so every
check is refused), one HTTP service, the admin API on,
``max_idle_per_server: 0`` (the start-up check of the descriptor budget reserves 64 idle
upstream connections per server by default: 6.4 million for 100,000 servers).
Its resident set (``VmRSS``) is read once it says ready and its first round of checks is over,
then compared with the same process with one server: the difference per server is reported.

``--stable``: after ``--settle`` and at least one monitor interval plus a timeout (the first
checks are spread over up to an interval: quiesce.health.schedule.first_offset), RSS is read
every 2 s until it moved less than 1% over the
last 10 s (at most 300 s more): the first round of checks, its 100,000 state changes and
the live series' first ticks over every server are then done, whatever the machine's load
(with a fixed 5-8 s a loaded machine reads part-way through them: the runs of 15:23-15:55
below swung from 352 to 1,058 MiB).

``--tracemalloc N``: the process runs under ``tracemalloc`` and, at the same moment, the N
lines of code holding the most memory are printed (size, blocks, per server), to see what
dominates (slower to start and twice the memory: use fewer servers, e.g. 20,000).

``--no-store``: ``state: {sqlite: null}``, no state store (to size the share of the first
round's events queued for it and their JSON).

``--mallocstats``: when RSS is read, the process also prints ``sys._debugmallocstats()``; the
line shown is pymalloc's arenas (1 MiB each) in use now and at their peak, and how much of
them live objects fill: what the first round's burst leaves resident (arenas held by a few
live objects among freed ones) against what is live; then glibc's ``mallinfo2()`` (all
threads' arenas): its heap, the bytes in use and free in it, and its mmapped blocks.

``--nice N``: quiesce runs at niceness N (negative needs root): on a loaded machine its
start-up and first round then run about as fast as on a quiet one (the figure depends on it).

``--same-address``: every server at 127.0.0.1, as the runs before 2026-12-07 02:40 UTC had
them: the check's per-target state (the C engine's ``Spec``, the prober's plan) was then
made once for all servers, and those runs did not count it.

``--interval S``: the monitor's ``send_interval`` (default 60 s). Each monitor keeps its last
10 results, so the steady state of a long-running process (every ring full) is read with a
short interval and a settle of more than 10 of them, e.g. ``--servers 20000 --interval 4
--settle 50 --stable`` (5,000 refused checks a second).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from health_bench import free_port  # noqa: E402


def address(i: int, port: int, same: bool) -> str:
    """Server ``i``'s: its own loopback address (127.a.b.c: a real pool's servers each have
    one, and so their own check target), or 127.0.0.1 for all with ``same``."""
    if same:
        return f"127.0.0.1:{port}"
    return f"127.{1 + i // 62_500}.{i // 250 % 250}.{1 + i % 250}:{port}"


def config(
    servers: int,
    pools: int,
    port: int,
    interval: float = 60.0,
    store: bool = True,
    same: bool = False,
) -> str:
    per = max(1, servers // pools)
    lines = [
        "admin: {listen: 127.0.0.1:0}",
        *([] if store else ["state: {sqlite: null}"]),
        "healthmonitors:",
        f"  hc: {{type: tcp, send_interval: {interval:g}s, receive_timeout: 2s}}",
        "pools:",
    ]
    for p in range(pools):
        lines.append(f"  p{p}:")
        lines.append("    healthmonitors: [hc]")
        lines.append("    max_idle_per_server: 0")  # the fd budget reserves 64 each else
        lines.append("    servers:")
        for i in range(p * per, min(servers, (p + 1) * per)):
            lines.append(f"      - {{name: s{i}, address: {address(i, port, same)}}}")
    lines.append("services:")
    lines.append("  www: {listen: 127.0.0.1:0, pool: p0}")
    return "\n".join(lines) + "\n"


def rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert m is not None
    return int(m.group(1))


TRACED = r"""
import os, sys, threading, time, tracemalloc
def dump():
    flag = os.environ["QUIESCE_MEM_DUMP"]
    while not os.path.exists(flag):
        time.sleep(0.1)
    frames = tracemalloc.get_traceback_limit()
    stats = tracemalloc.take_snapshot().statistics("traceback" if frames > 1 else "lineno")
    with open(flag + ".out", "w") as f:
        f.write(f"total {sum(s.size for s in stats)}\n")
        for s in stats[: int(os.environ["QUIESCE_MEM_TOP"])]:
            where = " < ".join(str(fr) for fr in reversed(s.traceback))
            f.write(f"{s.size} {s.count} {where}\n")
def mallocstats():
    flag = os.environ["QUIESCE_MEM_DUMP"]
    while not os.path.exists(flag):
        time.sleep(0.1)
    saved = os.dup(2)
    os.dup2(os.open(flag + ".malloc", os.O_WRONLY | os.O_CREAT, 0o600), 2)
    sys._debugmallocstats()
    os.dup2(saved, 2)
    import ctypes
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    i = libc.mallinfo2()
    with open(flag + ".malloc", "a") as f:
        f.write(f"# glibc heap = {i.arena}\n# glibc in use = {i.uordblks}\n")
        f.write(f"# glibc free = {i.fordblks}\n# glibc mmapped = {i.hblkhd}\n")
    open(flag + ".out", "w").write("done\n")
hook = dump if os.environ.get("QUIESCE_MEM_TOP") else mallocstats
threading.Thread(target=hook, daemon=True).start()
sys.argv = ["quiesce", *sys.argv[1:]]
from quiesce.main import main
main()
"""


def pymalloc(path: Path) -> str:
    """The arenas of ``sys._debugmallocstats()``: MiB held, MiB in live blocks, the peak."""
    text = path.read_text()

    def num(label: str) -> int:
        m = re.search(r"# " + label + r"\s+=\s+([\d,]+)", text)
        return int(m.group(1).replace(",", "")) if m else -1

    mib = 1 << 20
    return (
        f"pymalloc arenas {num('arenas allocated current')} MiB"
        f" (peak {num('arenas highwater mark')}),"
        f" in live blocks {num('bytes in allocated blocks') / mib:,.0f} MiB,"
        f" free in arenas {num('bytes in available blocks') / mib:,.0f} MiB;"
        f" glibc malloc: heap {num('glibc heap') / mib:,.0f} MiB, in use"
        f" {num('glibc in use') / mib:,.0f}, free {num('glibc free') / mib:,.0f},"
        f" mmapped {num('glibc mmapped') / mib:,.0f}"
    )


def stable_rss(pid: int, limit: float = 300.0) -> int:
    """RSS (KiB) once it moved less than 1% over the last 10 s (or after ``limit`` s)."""
    seen = [rss_kib(pid)]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(2.0)
        seen.append(rss_kib(pid))
        last = seen[-6:]
        if len(last) == 6 and max(last) - min(last) < 0.01 * max(last):
            break
    return seen[-1]


def measure(
    servers: int,
    pools: int,
    port: int,
    settle: float,
    top: int = 0,
    stable: bool = False,
    interval: float = 60.0,
    frames: int = 1,
    store: bool = True,
    malloc: bool = False,
    nice: int = 0,
    same: bool = False,
) -> tuple[int, float]:
    tmp = Path(tempfile.mkdtemp(prefix="quiesce-mem-"))
    cfg = tmp / "quiesce.yaml"
    cfg.write_text(config(servers, pools, port, interval, store, same))
    start = time.monotonic()
    cmd = [sys.executable, "-m", "quiesce"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if top:
        cmd = [sys.executable, "-X", f"tracemalloc={frames}", "-c", TRACED]
        env |= {"QUIESCE_MEM_DUMP": str(tmp / "dump"), "QUIESCE_MEM_TOP": str(top)}
    elif malloc:
        cmd = [sys.executable, "-c", TRACED]
        env |= {"QUIESCE_MEM_DUMP": str(tmp / "dump")}
    proc = subprocess.Popen(
        [*cmd, "run", "-c", str(cfg)],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=(tmp / "quiesce.log").open("w"),  # a line per state event: not into the pipe
        text=True,
        env=env,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if "quiesce: ready" in line:
                break
        else:
            log = (tmp / "quiesce.log").read_text()[-500:]
            raise SystemExit(f"quiesce did not start ({servers} in {pools} pools): {log}")
        ready = time.monotonic() - start
        time.sleep(settle)
        if stable:
            # every first check is due within one interval (quiesce.health.schedule): the
            # first round is over after it and a check's timeout, whatever the machine's load
            time.sleep(max(0.0, interval + 2.0 - settle))
        rss = stable_rss(proc.pid) if stable else rss_kib(proc.pid)
        if malloc and not top:
            (tmp / "dump").touch()
            while not (tmp / "dump.out").exists():
                time.sleep(0.2)
            print(f"{servers:,} servers in {pools} pool(s): {pymalloc(tmp / 'dump.malloc')}")
        if top:
            (tmp / "dump").touch()
            out = tmp / "dump.out"
            while not out.exists() or not out.read_text().count("\n") > top:
                time.sleep(0.2)
            print(f"tracemalloc, {servers:,} servers in {pools} pool(s), bytes per server:")
            for line in out.read_text().splitlines():
                size, rest = line.split(" ", 1)
                if size == "total":
                    size, rest = rest, "(everything traced)"
                print(f"{int(size) / servers:8.1f}  {size:>11} {rest}")
        return rss, ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=100_000)
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 100])
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--stable", action="store_true", help="then wait for RSS to settle")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="N", help="top N lines")
    ap.add_argument("--interval", type=float, default=60.0, help="the monitor's, in seconds")
    ap.add_argument(
        "--frames", type=int, default=1, help="with --tracemalloc: group by this many frames"
    )
    ap.add_argument(
        "--no-store", action="store_true", help="state: {sqlite: null} (no state store)"
    )
    ap.add_argument(
        "--mallocstats",
        action="store_true",
        help="also print pymalloc's arenas (sys._debugmallocstats) when RSS is read",
    )
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run quiesce at this niceness (negative, as root: ahead of the machine's other"
        " load, so that its start-up and first checks run as on a quiet machine)",
    )
    ap.add_argument(
        "--same-address",
        action="store_true",
        help="every server at 127.0.0.1 (the runs before 2026-12-07 02:40 UTC): one check"
        " target for all, so what a check keeps per target is counted once",
    )
    args = ap.parse_args()
    every = args.interval
    store = not args.no_store
    load = os.getloadavg()
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.tracemalloc:
        for pools in args.pools:
            measure(
                args.servers,
                pools,
                free_port(),
                args.settle,
                args.tracemalloc,
                stable=args.stable,
                interval=every,
                frames=args.frames,
                store=store,
                nice=args.nice,
                same=args.same_address,
            )
        return 0
    port = free_port()  # nothing listens there: every check is refused
    base, _ = measure(
        1, 1, port, args.settle, stable=args.stable, interval=every, store=store, nice=args.nice
    )
    print(
        f"{args.servers:,} servers, a TCP monitor every {every:g} s on each pool"
        f"{'' if store else ', no state store'} (one server: {base:,} KiB)\n"
    )
    print(
        "| layout | RSS (MiB) | above one server (MiB) | per server (KiB) | start-up to ready (s)"
        " | load (1 min) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for pools in args.pools:
        rss, ready = measure(
            args.servers,
            pools,
            port,
            args.settle,
            stable=args.stable,
            interval=every,
            store=store,
            malloc=args.mallocstats,
            nice=args.nice,
            same=args.same_address,
        )
        load = os.getloadavg()
        extra = rss - base
        print(
            f"| {pools} pool(s) of {args.servers // pools:,} | {rss / 1024:,.0f} "
            f"| {extra / 1024:,.0f} | {extra / args.servers:.2f} | {ready:.1f} | {load[0]:.1f} |"
        )
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
