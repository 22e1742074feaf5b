"""pgbench through quiesce's ``postgresql`` service, its plain ``tcp`` service, HAProxy in TCP
mode, and straight to PostgreSQL, in one run (issue 20).

    python bench/pg_bench.py [--seconds 10] [--rounds 2] [--clients 16] [--builtin select-only]

Starts a PostgreSQL 15 (tests/support/postgres.py: initdb in a temp dir, SCRAM over TCP),
``pgbench -i -s 10``, quiesce's data plane alone (bench/quiesce_proxy.py, uvloop) with both
services, and HAProxy (``nbthread 1``, ``mode tcp``), the proxies pinned to CPU 1 and
PostgreSQL and pgbench left to the scheduler. Each round runs every target once, in turn;
the table gives the best round's TPS per target, the ratios to HAProxy, and the proxy's CPU
µs per transaction (utime + stime of its process over the run / transactions).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
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
    tmp: Path, pg: int, protocol: str = "postgresql"
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """quiesce's data plane with a ``protocol`` service (port "pg") and a ``tcp`` one."""
    server = {"name": "pg1", "address": f"127.0.0.1:{pg}"}
    config = {
        "pools": {"db": {"servers": [server]}},
        "services": {
            "pg": {"listen": "127.0.0.1:0", "protocol": protocol, "pool": "db"},
            "tcp": {"listen": "127.0.0.1:0", "protocol": "tcp", "pool": "db"},
        },
    }
    path = tmp / "quiesce.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, str(HERE / "quiesce_proxy.py"), str(path)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE)
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
        haproxy, hport = start_haproxy(tmp, pg.port)
        quiesce, qports = start_quiesce(tmp, pg.port)
        targets = {
            "direct": (pg.port, None),
            "quiesce postgresql": (qports["pg"], quiesce.pid),
            "quiesce tcp": (qports["tcp"], quiesce.pid),
            "haproxy tcp": (hport, haproxy.pid),
        }
        try:
            best = compare(targets, lambda port: pgbench(port, [*run, "postgres"]), opts.rounds)
        finally:
            quiesce.terminate()
            haproxy.terminate()
            quiesce.wait(10)
            haproxy.wait(10)
        print(f"\npgbench -b {opts.builtin} -c {opts.clients} -j 2 -T {opts.seconds}, best of")
        print(f"{opts.rounds} rounds\n")
        table(best, "TPS")


def compare(
    targets: dict[str, tuple[int, int | None]],
    once: Callable[[int], tuple[float, int, int]],
    rounds: int,
) -> dict[str, tuple[float, float, int]]:
    """Each round runs every target (port, the proxy's pid or None) once with ``once(port)``
    -> (rate, transactions, failed); each target's best round: (rate, proxy CPU µs per
    transaction, failed)."""
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(rounds):
        for name, (port, pid) in targets.items():
            cpu0 = cpu_seconds(pid) if pid else 0.0
            tps, done, failed = once(port)
            cpu = (cpu_seconds(pid) - cpu0) if pid else 0.0
            us = cpu / done * 1e6 if done and pid else 0.0
            print(f"{name:20} {tps:10.0f} tps  {us:6.1f} µs CPU/txn  failed {failed}")
            if name not in best or tps > best[name][0]:
                best[name] = (tps, us, failed)
    return best


def table(best: dict[str, tuple[float, float, int]], rate: str) -> None:
    """The best rounds as a markdown table, with the ratios to "haproxy tcp"."""
    ha = best["haproxy tcp"][0]
    print(f"| target | {rate} | × HAProxy TCP | proxy CPU µs / transaction |")
    print("|---|---|---|---|")
    for name, (tps, us, _) in best.items():
        cpu = f"{us:.1f}" if us else "—"
        print(f"| {name} | {tps:.0f} | {tps / ha:.2f} | {cpu} |")


if __name__ == "__main__":
    main()
