#!/usr/bin/env python3
"""Memory per idle (parked) client keep-alive connection: quiesce and HAProxy in one run.

    python3 bench/parked_memory.py [--clients 2] [--per-client 9000] [--rounds 2] [--settle 5]

Issue 21 asks for 100,000 idle keep-alive connections. This machine caps open files at
20,000 per process (``ulimit -Hn``), which neither the proxy nor a client can go past, so
the count is the largest that fits: ``--clients`` client processes (each under the cap)
open ``--per-client`` connections each, send one ``GET /`` on each, read the answer and
then keep the connection open and silent. The proxy holds every one of them (plus its few
upstream connections) under its own 20,000.

One nginx back end (one worker), then per round quiesce's data plane
(``bench/quiesce_proxy.py``, the same as ``proxy_bench.py`` (e)) and HAProxy (``nbthread
1``, ``maxconn`` raised to hold them all), alternately, each a fresh process pinned to
core 1 (the clients and nginx on core 0). Per proxy: ``VmRSS`` before the first
connection, and ``--settle`` seconds after the last client said all its connections were
answered (quiesce parks a connection after 0.5 s idle); the difference divided by the
connections is the memory per parked connection. Also the proxy's open descriptors then.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from proxy_bench import (  # noqa: E402
    OTHER_CPU,
    Proxy,
    _idle_clients,
    pinned,
    raise_nofile,
    start_haproxy,
    start_nginx,
    start_quiesce,
    status_kib,
)


async def _hold(port: int, n: int) -> None:
    """The client process: ``n`` connections, one request each, then silence until stdin
    closes (the parent's word to end)."""
    writers = await _idle_clients(port, n)  # each sent GET / and read its answer
    print(f"ready {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.close()


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure(proxy: Proxy, clients: int, per: int, settle: float) -> dict[str, float]:
    time.sleep(1.0)
    base = status_kib(proxy.pid, "VmRSS")
    procs = [
        subprocess.Popen(
            pinned(OTHER_CPU, [sys.executable, __file__, "--hold", str(proxy.l7), str(per)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    try:
        held = 0
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line.startswith("ready"):
                raise SystemExit(f"a client failed against {proxy.name}: {line!r}")
            held += int(line.split()[1])
        time.sleep(settle)  # idle means idle: quiesce parks after 0.5 s, then trims its heap
        rss = status_kib(proxy.pid, "VmRSS")
        return {
            "connections": held,
            "base_mib": base / 1024,
            "rss_mib": rss / 1024,
            "per_conn_kib": (rss - base) / held,
            "fds": fds(proxy.pid),
        }
    finally:
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in procs:
            p.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--per-client", type=int, default=9000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--hold", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    raise_nofile()
    if args.hold:
        asyncio.run(_hold(*args.hold))
        return 0
    total = args.clients * args.per_client
    rows = []
    with tempfile.TemporaryDirectory(prefix="quiesce-parked-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)  # nginx's workers run as nobody
        backend = start_nginx(tmp)
        try:
            for rnd in range(1, args.rounds + 1):
                for name in ("quiesce", "haproxy"):
                    if name == "quiesce":
                        proxy = start_quiesce(tmp, backend.port)
                    else:
                        proxy = start_haproxy(tmp, backend.port, maxconn=total + 500)
                    try:
                        r = measure(proxy, args.clients, args.per_client, args.settle)
                    finally:
                        proxy.stop()
                    rows.append((rnd, name, r))
                    print(f"round {rnd} {name}: {r}", file=sys.stderr)
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    load = os.getloadavg()
    print(
        f"{total:,} idle keep-alive connections ({args.clients} clients x "
        f"{args.per_client:,}), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    print("| round | proxy | RSS before (MiB) | RSS idle (MiB) | per connection (KiB) | fds |")
    print("|---|---|---:|---:|---:|---:|")
    for rnd, name, r in rows:
        print(
            f"| {rnd} | {name} | {r['base_mib']:.1f} | {r['rss_mib']:.1f} "
            f"| {r['per_conn_kib']:.2f} | {r['fds']:,} |"
        )
    q = [r["per_conn_kib"] for _, n, r in rows if n == "quiesce"]
    h = [r["per_conn_kib"] for _, n, r in rows if n == "haproxy"]
    print(f"\nper connection, quiesce / HAProxy: {min(q) / max(h):.2f} - {max(q) / min(h):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
