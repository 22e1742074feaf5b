"""Health checks at scale: quiesce and HAProxy each check the same N HTTP servers.

Every server is its own loopback address (127.1.x.y; Linux routes all of 127/8 to ``lo``)
on one port, and a single nginx bound to 0.0.0.0:PORT answers them all (a listener on
127.0.0.1 would not receive 127.1.0.10). nginx logs ``$server_addr $msec`` for every check,
so both checkers are measured the same way from outside: for each server, how far each gap
between two consecutive checks is from ``send_interval``. quiesce also reports its own
lateness (slot → probe start). The checker under test runs pinned to one core (``--cpu``),
nginx to another (``--responder-cpu``); the two checkers run one after the other in the same
invocation, each with a warm-up that is not measured.

    python bench/health_bench.py --servers 10000 --interval 1 --duration 20

Prints a Markdown table (for BENCHMARKS.md) and, with ``--json FILE``, the raw numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

SERVERS_PER_POOL = 20  # realistic pool size; the registry recomputes a pool per oper change
CLK_TCK = os.sysconf("SC_CLK_TCK")


def address(i: int) -> str:
    return f"127.1.{i // 200}.{i % 200 + 10}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def wait_listening(port: int, host: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --- the responder -------------------------------------------------------------------------


def start_nginx(workdir: Path, ports: list[int], cpu: int) -> subprocess.Popen[bytes]:
    listen = "\n".join(f"        listen 0.0.0.0:{p} backlog=4096 reuseport;" for p in ports)
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
user root;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    log_format bench '$server_addr $msec';
    client_body_temp_path {workdir}/t1; proxy_temp_path {workdir}/t2;
    fastcgi_temp_path {workdir}/t3; uwsgi_temp_path {workdir}/t4; scgi_temp_path {workdir}/t5;
    server {{
{listen}
        access_log {workdir}/access.log bench buffer=1m flush=1s;
        keepalive_timeout 0;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        ["taskset", "-c", str(cpu), "nginx", "-c", str(conf), "-p", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    for port in ports:
        wait_listening(port, "127.0.0.1")
        wait_listening(port, address(0))
    return proc


def arrivals(log: Path, start: float, end: float) -> dict[str, list[float]]:
    by_addr: dict[str, list[float]] = defaultdict(list)
    with log.open() as f:
        for line in f:
            addr, _, msec = line.partition(" ")
            t = float(msec)
            if start <= t <= end:
                by_addr[addr].append(t)
    return by_addr


def gap_error_ms(by_addr: dict[str, list[float]], interval: float) -> list[float]:
    """|gap between consecutive checks of one server - interval|, in ms."""
    out: list[float] = []
    for times in by_addr.values():
        times.sort()
        out.extend(abs((b - a) - interval) * 1000 for a, b in itertools.pairwise(times))
    return out


# --- HAProxy -------------------------------------------------------------------------------


def haproxy_config(n: int, port: int, interval: float, timeout: float) -> str:
    # HAProxy refuses to start without a listener; this one is never used.
    lines = [
        "global",
        "    maxconn 4000",
        "    nbthread 1",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 10s",
        "    timeout server 10s",
        f"    timeout check {int(timeout * 1000)}ms",
        "frontend unused",
        f"    bind 127.0.0.1:{free_port()}",
        "    default_backend p0",
    ]
    for p in range(0, n, SERVERS_PER_POOL):
        lines += [
            f"backend p{p // SERVERS_PER_POOL}",
            "    option httpchk GET /",
            f"    default-server check inter {int(interval * 1000)}ms rise 2 fall 2",
        ]
        for i in range(p, min(n, p + SERVERS_PER_POOL)):
            lines.append(f"    server s{i} {address(i)}:{port}")
    return "\n".join(lines) + "\n"


def run_haproxy(
    args: argparse.Namespace, workdir: Path, port: int, responder: int
) -> dict[str, Any]:
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(haproxy_config(args.servers, port, args.interval, args.timeout))
    proc = subprocess.Popen(
        ["taskset", "-c", str(args.cpu), "haproxy", "-f", str(cfg), "-db"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(args.warmup)
        if proc.poll() is not None:
            raise SystemExit(f"haproxy exited with {proc.returncode}")
        (u0, s0), t0, r0 = cpu_split(proc.pid), time.time(), cpu_seconds(responder)
        time.sleep(args.duration)
        (u1, s1), t1, r1 = cpu_split(proc.pid), time.time(), cpu_seconds(responder)
    finally:
        proc.send_signal(signal.SIGUSR1)  # soft stop
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "window": [t0, t1],
        "cpu": (u1 + s1 - u0 - s0) / (t1 - t0),
        "user": (u1 - u0) / (t1 - t0),
        "sys": (s1 - s0) / (t1 - t0),
        "responder_cpu": (r1 - r0) / (t1 - t0),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


# --- quiesce (a child process, so that it is alone on its core) -----------------------------


def run_quiesce(args: argparse.Namespace, port: int, responder: int) -> dict[str, Any]:
    cmd = [
        "taskset",
        "-c",
        str(args.cpu),
        sys.executable,
        __file__,
        "--child",
        "--port",
        str(port),
        "--servers",
        str(args.servers),
        "--interval",
        str(args.interval),
        "--timeout",
        str(args.timeout),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
    ]
    if args.no_uvloop:
        cmd.append("--no-uvloop")
    cmd += ["--max-concurrency", str(args.max_concurrency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    time.sleep(args.warmup)
    r0 = cpu_seconds(responder)
    time.sleep(args.duration)
    r1 = cpu_seconds(responder)
    stdout, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"the quiesce child exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["responder_cpu"] = (r1 - r0) / args.duration
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    return result


async def child(args: argparse.Namespace) -> dict[str, Any]:
    from quiesce.config.models import Config
    from quiesce.core.states import Oper
    from quiesce.health import HealthManager
    from quiesce.health.probes import fast
    from quiesce.state.registry import Registry

    n = args.servers[0] if isinstance(args.servers, list) else args.servers
    pools = {
        f"p{p // SERVERS_PER_POOL}": {
            "healthmonitors": ["hc"],
            "servers": [
                {"name": f"s{i}", "address": f"{address(i)}:{args.port}"}
                for i in range(p, min(n, p + SERVERS_PER_POOL))
            ],
        }
        for p in range(0, n, SERVERS_PER_POOL)
    }
    config = Config.model_validate(
        {
            "healthmonitors": {
                "hc": {
                    "type": "http",
                    "send_interval": args.interval,
                    "receive_timeout": args.timeout,
                }
            },
            "pools": pools,
        }
    )
    registry = Registry(config)
    # Long-lived objects (10,000 servers' config and runtime) out of the cyclic GC's reach,
    # as a long-running server should do after start-up: full collections otherwise rescan
    # them while checks wait.
    gc.collect()
    gc.freeze()
    manager = HealthManager(registry, max_concurrency=args.max_concurrency)
    manager.stats.lateness = deque(maxlen=int(n / args.interval * args.duration * 1.2) + 1000)
    manager.start()
    await asyncio.sleep(args.warmup)
    stats = manager.stats
    stats.lateness.clear()
    done0, skipped0 = stats.completed, stats.skipped
    cpu0, t0, times0 = time.process_time(), time.time(), os.times()
    await asyncio.sleep(args.duration)
    cpu1, t1, times1 = time.process_time(), time.time(), os.times()
    lateness = [x * 1000 for x in stats.lateness]
    latency = [r.latency * 1000 for s in registry.servers() for r in s.last_checks["hc"]]
    done, skipped = stats.completed - done0, stats.skipped - skipped0
    states: dict[str, int] = defaultdict(int)
    for s in registry.servers():
        states[s.oper.value] += 1
    await manager.stop()
    return {
        "window": [t0, t1],
        "cpu": (cpu1 - cpu0) / (t1 - t0),
        "user": (times1.user - times0.user) / (t1 - t0),
        "sys": (times1.system - times0.system) / (t1 - t0),
        "checks_per_s": done / (t1 - t0),
        "skipped": skipped,
        "lateness_ms": {
            "p50": percentile(lateness, 50),
            "p99": percentile(lateness, 99),
            "p999": percentile(lateness, 99.9),
            "max": max(lateness) if lateness else float("nan"),
            "n": len(lateness),
        },
        "check_latency_ms": {
            "p50": percentile(latency, 50),
            "p99": percentile(latency, 99),
        },
        "engine": "C (quiesce._checkfast)" if fast.available() else "pure Python",
        "up": states.get(Oper.UP.value, 0),
        "states": dict(states),
    }


# --- main ----------------------------------------------------------------------------------


def summarize(
    by_addr: dict[str, list[float]], interval: float, window: list[float]
) -> dict[str, Any]:
    errors = gap_error_ms(by_addr, interval)
    total = sum(len(v) for v in by_addr.values())
    return {
        "servers_seen": len(by_addr),
        "checks_per_s": total / (window[1] - window[0]),
        "gap_error_ms": {
            "p50": percentile(errors, 50),
            "p99": percentile(errors, 99),
            "p999": percentile(errors, 99.9),
            "max": max(errors) if errors else float("nan"),
        },
    }


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    uname = os.uname()
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    engines = sorted({run["quiesce"]["engine"] for run in runs if "quiesce" in run})
    lines = [
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {os.cpu_count()} CPUs · "
        f"Linux {uname.release} · Python {sys.version.split()[0]} · "
        f"{haproxy.splitlines()[0] if haproxy else 'HAProxy'}"
        f" · uvloop{' off' if args.no_uvloop else ''} · HealthManager max_concurrency "
        f"{args.max_concurrency} · quiesce check engine: {', '.join(engines) or '—'}.",
        "",
        f"send_interval {args.interval:g}s, receive_timeout {args.timeout:g}s; each checker "
        f"pinned to CPU {args.cpu}, nginx (1 worker) to CPU {args.responder_cpu}; measured for "
        f"{args.duration:g}s after a {args.warmup:g}s warm-up. *Gap error*: per server, "
        "|time between two consecutive checks − send_interval|, from nginx's log (the same "
        "measure for both). *User / sys*: the checker's user and kernel CPU time per check. "
        "*Lateness*: quiesce's own slot → probe start. *Load avg*: "
        "the machine's 1-minute load at the end of the window (other work shares the 2 CPUs).",
        "",
        "| servers | checker | checks/s | CPU (1 core = 100%) | CPU µs per check "
        "| user / sys µs per check "
        "| gap error p50 / p99 / max ms | lateness p50 / p99 / max ms | nginx CPU | load avg |",
        "|---:|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for run in runs:
        for name in ("haproxy", "quiesce"):
            r = run.get(name)
            if r is None:
                continue
            g = r["gap_error_ms"]
            late = r.get("lateness_ms")
            late_text = (
                f"{late['p50']:.1f} / {late['p99']:.1f} / {late['max']:.1f}" if late else "—"
            )
            rate = r["checks_per_s"] or float("nan")
            per_check = r["cpu"] / rate * 1e6
            split = f"{r['user'] / rate * 1e6:.0f} / {r['sys'] / rate * 1e6:.0f}"
            lines.append(
                f"| {run['servers']:,} | {name} | {r['checks_per_s']:,.0f} | {r['cpu'] * 100:.1f}% "
                f"| {per_check:.0f} | {split} | {g['p50']:.0f} / {g['p99']:.0f} / {g['max']:.0f} "
                f"| {late_text} | {r['responder_cpu'] * 100:.1f}% | {r['loadavg'][0]} |"
            )
        if "haproxy" in run and "quiesce" in run:
            q, h = run["quiesce"], run["haproxy"]
            ratio = q["cpu"] / h["cpu"]
            # Per check too: a checker that falls behind does fewer checks for its CPU.
            per_check = (q["cpu"] / q["checks_per_s"]) / (h["cpu"] / h["checks_per_s"])
            run["cpu_ratio_quiesce_over_haproxy"] = ratio
            run["per_check_ratio_quiesce_over_haproxy"] = per_check
            lines.append(
                f"| {run['servers']:,} | **ratio quiesce / HAProxy** | | "
                f"**{ratio:.2f}** | **{per_check:.2f}** | | | | | |"
            )
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    begin, end = "<!-- health-results:start -->", "<!-- health-results:end -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no {begin} ... {end} block")
    head, _, rest = doc.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{text}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--servers", type=int, nargs="+", default=[10_000])
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--cpu", type=int, default=0, help="core for the checker under test")
    ap.add_argument("--responder-cpu", type=int, default=1, help="core for nginx")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", type=Path, help="replace the health-results block of this file")
    ap.add_argument("--no-uvloop", action="store_true")
    ap.add_argument("--max-concurrency", type=int, default=1000, help="HealthManager's cap")
    ap.add_argument("--only", choices=["quiesce", "haproxy"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        if not args.no_uvloop:
            import uvloop

            uvloop.install()
        print(json.dumps(asyncio.run(child(args))))
        return

    for tool in ("nginx", "haproxy", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="quiesce-health-bench-"))
    # Ports of their own for every checker and size: the kernel picks the same ephemeral
    # ports again for the same destinations, and a SYN that lands on an earlier run's
    # TIME_WAIT costs a 1 s retransmission; distinct ports keep the runs' connections apart.
    ports = [(free_port(), free_port()) for _ in args.servers]
    nginx = start_nginx(workdir, [p for pair in ports for p in pair], args.responder_cpu)
    runs: list[dict[str, Any]] = []
    try:
        for n, (haproxy_port, quiesce_port) in zip(args.servers, ports, strict=True):
            size = argparse.Namespace(**{**vars(args), "servers": n})
            run: dict[str, Any] = {"servers": n, "interval": args.interval}
            if args.only != "quiesce":
                run["haproxy"] = run_haproxy(size, workdir, haproxy_port, nginx.pid)
            if args.only != "haproxy":
                run["quiesce"] = run_quiesce(size, quiesce_port, nginx.pid)
            runs.append(run)
    finally:
        nginx.send_signal(signal.SIGQUIT)  # graceful: flushes the access log
        nginx.wait(10)
    log = workdir / "access.log"
    for run in runs:
        for name in ("haproxy", "quiesce"):
            if name in run:
                window = run[name]["window"]
                run[name].update(summarize(arrivals(log, *window), args.interval, window))
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(runs, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
