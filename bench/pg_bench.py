"""pgbench through quiesce's ``postgresql`` service, its plain ``tcp`` service, HAProxy in TCP
mode, and straight to PostgreSQL, in one run (issue 20).

    python bench/pg_bench.py [--seconds 10] [--rounds 2] [--clients 16] [--builtin select-only]
                             [--pure] [--paired]

Starts a PostgreSQL 15 (tests/support/postgres.py: initdb in a temp dir, SCRAM over TCP),
``pgbench -i -s 10``, quiesce's data plane alone (bench/quiesce_proxy.py, uvloop) with both
services, and HAProxy (``nbthread 1``, ``mode tcp``), the proxies pinned to CPU 1 and
PostgreSQL and pgbench left to the scheduler. Each round runs every target once, in turn,
the order rotated by one each round; the table gives each target's best round and median TPS,
their ratios to HAProxy's, and the proxy's CPU µs per transaction (utime + stime of its
process over the run / transactions; median of the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from proxy_bench import PROXY_CPU, cpu_seconds, free_port, pinned, wait_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support.postgres import BIN, PASSWORD, USER, postgres_server  # noqa: E402


def start_haproxy(tmp: Path, pg: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""
global
  nbthread 1
  maxconn 2000
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
frontend pg
  bind 127.0.0.1:{port}
  default_backend pg
backend pg
  server s1 127.0.0.1:{pg}
"""
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    proc = subprocess.Popen(pinned(PROXY_CPU, [haproxy, "-db", "-f", str(conf)]))
    wait_port(port)
    return proc, port


def start_quiesce(
    tmp: Path, pg: int, protocol: str = "postgresql", pure: bool = False
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """quiesce's data plane with a ``protocol`` service (port "pg") and a ``tcp`` one;
    ``pure``: with QUIESCE_PURE=1 (the pure-Python framers, for an A/B in the same run)."""
    server = {"name": "pg1", "address": f"127.0.0.1:{pg}"}
    config = {
        "pools": {"db": {"servers": [server]}},
        "services": {
            "pg": {"listen": "127.0.0.1:0", "protocol": protocol, "pool": "db"},
            "tcp": {"listen": "127.0.0.1:0", "protocol": "tcp", "pool": "db"},
        },
    }
    path = tmp / ("quiesce-pure.json" if pure else "quiesce.json")
    path.write_text(json.dumps(config))
    cmd = [sys.executable, str(HERE / "quiesce_proxy.py"), str(path)]
    env = {**os.environ, "QUIESCE_PURE": "1" if pure else ""}
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    ports = json.loads(proc.stdout.readline())["ports"]
    return proc, ports


def pgbench(port: int, args: list[str]) -> tuple[float, int, int]:
    """(TPS, transactions, failed) of one pgbench run."""
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "disable"}
    cmd = [str(BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    failed_m = re.search(r"number of failed transactions: (\d+)", out)
    return tps, done, int(failed_m.group(1)) if failed_m else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--builtin", default="select-only", help="select-only or tpcb-like")
    ap.add_argument("--pure", action="store_true", help=PURE_HELP)
    ap.add_argument("--paired", action="store_true", help=PAIRED_HELP)
    opts = ap.parse_args()
    run = ["-c", str(opts.clients), "-j", "2", "-T", str(opts.seconds), "-b", opts.builtin]
    with tempfile.TemporaryDirectory() as tmpdir, postgres_server() as pg:
        tmp = Path(tmpdir)
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        init = [str(BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", USER]
        subprocess.run(
            [*init, "-i", "-s", "10", "-q", "postgres"],
            check=True,
            capture_output=True,
            env=env,
        )
        procs, targets = start_targets(tmp, pg.port, "postgresql", opts.pure, opts.paired)
        try:
            runs = compare(
                targets, lambda port: pgbench(port, [*run, "postgres"]), opts.rounds, opts.paired
            )
        finally:
            stop(procs)
        print(f"\npgbench -b {opts.builtin} -c {opts.clients} -j 2 -T {opts.seconds},")
        print(f"{opts.rounds} rounds (the order of the targets rotated each round)\n")
        table(runs, "TPS")


PURE_HELP = "also the protocol service with the pure-Python framers (QUIESCE_PURE=1)"
PAIRED_HELP = "run the proxies of a round at the same time (the same machine load for each)"


def start_targets(
    tmp: Path, port: int, protocol: str, pure: bool, paired: bool = False
) -> tuple[list[subprocess.Popen[bytes]], dict[str, tuple[int, int | None]]]:
    """HAProxy and quiesce (and with ``pure`` a second quiesce, QUIESCE_PURE=1) in front of
    the database at ``port``: the processes, and the targets (port, proxy pid) by name.
    ``paired``: the ``tcp`` service is another quiesce's (one process per target, for its
    CPU)."""
    haproxy, hport = start_haproxy(tmp, port)
    quiesce, qports = start_quiesce(tmp, port, protocol)
    procs = [haproxy, quiesce]
    targets = {
        "direct": (port, None),
        f"quiesce {protocol}": (qports["pg"], quiesce.pid),
        "quiesce tcp": (qports["tcp"], quiesce.pid),
        "haproxy tcp": (hport, haproxy.pid),
    }
    if pure:
        slow, sports = start_quiesce(tmp, port, protocol, pure=True)
        procs.append(slow)
        targets[f"quiesce {protocol}, Python framers"] = (sports["pg"], slow.pid)
    if paired:
        solo, tports = start_quiesce(tmp, port, protocol)
        procs.append(solo)
        targets["quiesce tcp"] = (tports["tcp"], solo.pid)
    return procs, targets


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


def compare(
    targets: dict[str, tuple[int, int | None]],
    once: Callable[[int], tuple[float, int, int]],
    rounds: int,
    paired: bool = False,
) -> dict[str, list[tuple[float, float, int]]]:
    """Each round runs every target (port, the proxy's pid or None) once with ``once(port)``
    -> (rate, transactions, failed), in an order rotated by one each round (no target always
    runs right after another); per target, its rounds: (rate, proxy CPU µs per transaction,
    failed). ``paired``: the proxies of a round run at the same time instead (each with its
    own load generator), so that they see the same machine load; "direct" alone before them."""
    runs: dict[str, list[tuple[float, float, int]]] = {}
    names = list(targets)
    for r in range(rounds):
        if paired:
            steps = [["direct"], [n for n in names if n != "direct"]]
        else:
            steps = [[n] for n in names[r % len(names) :] + names[: r % len(names)]]
        for step in steps:
            pids = {name: targets[name][1] for name in step}
            cpu0 = {name: cpu_seconds(pid) if pid else 0.0 for name, pid in pids.items()}
            with ThreadPoolExecutor(len(step)) as pool:
                results = dict(
                    zip(step, pool.map(lambda n: once(targets[n][0]), step), strict=True)
                )
            for name, (tps, done, failed) in results.items():
                pid = pids[name]
                cpu = (cpu_seconds(pid) - cpu0[name]) if pid else 0.0
                us = cpu / done * 1e6 if done and pid else 0.0
                print(f"{name:32} {tps:10.0f} tps  {us:6.1f} µs CPU/txn  failed {failed}")
                runs.setdefault(name, []).append((tps, us, failed))
    return runs


def table(runs: dict[str, list[tuple[float, float, int]]], rate: str) -> None:
    """Per target: its best round's rate and the median of its rounds, each as a ratio to
    "haproxy tcp"'s, and the median proxy CPU µs per transaction; a markdown table."""
    best = {name: max(r[0] for r in rs) for name, rs in runs.items()}
    median = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    ha, ha_med = best["haproxy tcp"], median["haproxy tcp"]
    print(f"| target | best {rate} | × HAProxy | median {rate} | × HAProxy | CPU µs / txn |")
    print("|---|---|---|---|---|---|")
    for name, rs in runs.items():
        us = statistics.median(r[1] for r in rs)
        cpu = f"{us:.1f}" if us else "—"
        print(
            f"| {name} | {best[name]:.0f} | {best[name] / ha:.2f} | {median[name]:.0f} "
            f"| {median[name] / ha_med:.2f} | {cpu} |"
        )


if __name__ == "__main__":
    main()
