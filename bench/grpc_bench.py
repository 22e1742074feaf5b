#!/usr/bin/env python3
"""gRPC benchmark: unary calls/s through quiesce and HAProxy side by side, one run (issue 16,
benchmark (d)).

    python3 bench/grpc_bench.py [--duration 8] [--concurrency 64] [--rounds 2] [--write FILE]

A grpcio server (``grpc.aio``, one process, the generic handler of one unary method that
echoes its request) behind each proxy; a grpcio client (``grpc.aio``, one process, one
channel, ``--concurrency`` calls in flight) in front, over h2c. Both proxies speak HTTP/2 to
the server: quiesce with ``pools.X.protocol: h2`` (quiesce.dataplane.h2client), HAProxy 2.6
``mode http`` with ``bind … proto h2`` and ``server … proto h2``. Each proxy is a fresh
process pinned to CPU 1 (bench/proxy_bench.py's machinery), the gRPC server and client to
CPU 0; quiesce and HAProxy alternate, ``--rounds`` times, the best round of each kept.

CPU per call is the proxy's CPU time (/proc/PID/stat) over the calls it carried.

With ``--write FILE`` the results replace the block between the grpc-results markers of the
"## gRPC" section (created if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxy_bench import (
    HERE,
    OTHER_CPU,
    PROXY_CPU,
    Proxy,
    cpu_seconds,
    free_port,
    pinned,
    ratio,
    wait_port,
)

START = "<!-- grpc-results:start -->"
END = "<!-- grpc-results:end -->"
METHOD = "/bench.Echo/Say"
PAYLOAD = b"x" * 64


# --- the peers (run as this script with --serve / --load) ------------------------------------


async def serve(port: int) -> None:
    import grpc

    async def say(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def load(target: str, seconds: float, concurrency: int) -> None:
    """Prints one JSON line: calls completed, failed, seconds."""
    import grpc

    ok = failed = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)
        await call(PAYLOAD, timeout=10)  # connected
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal ok, failed
            while time.monotonic() < end:
                try:
                    await call(PAYLOAD, timeout=10)
                    ok += 1
                except grpc.RpcError:
                    failed += 1

        began = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        took = time.monotonic() - began
    print(json.dumps({"ok": ok, "failed": failed, "seconds": took}), flush=True)


# --- the run ----------------------------------------------------------------------------------


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]
    proc = subprocess.Popen(pinned(OTHER_CPU, cmd))
    wait_port(port)
    return proc, port


def run_load(port: int, seconds: float, concurrency: int) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--load", f"127.0.0.1:{port}"]
    cmd += [str(seconds), str(concurrency)]
    out = subprocess.run(pinned(OTHER_CPU, cmd), capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def start_haproxy(tmp: Path, backend: int) -> Proxy:
    port = free_port()
    conf = tmp / "haproxy-grpc.cfg"
    conf.write_text(
        f"""
global
  nbthread 1
  log stderr format raw local0 emerg

defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  option http-keep-alive

frontend grpc
  bind 127.0.0.1:{port} proto h2
  default_backend pool

backend pool
  server s1 127.0.0.1:{backend} proto h2
"""
    )
    cmd = ["/usr/sbin/haproxy", "-db", "-f", str(conf)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.DEVNULL)
    wait_port(port)
    return Proxy("haproxy", proc, port, port, " ".join(cmd))


def start_quiesce(tmp: Path, backend: int) -> Proxy:
    config = {
        "pools": {
            "pool": {
                "protocol": "h2",
                "servers": [{"name": "s1", "address": f"127.0.0.1:{backend}"}],
            }
        },
        "services": {
            "grpc": {"listen": "127.0.0.1:0", "pool": "pool", "client_idle_timeout": "300s"}
        },
    }
    path = tmp / "quiesce-grpc.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, str(HERE / "quiesce_proxy.py"), str(path)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["ports"]["grpc"]
    return Proxy("quiesce", proc, port, port, " ".join(cmd))


def measure(proxy: Proxy, port: int, args: argparse.Namespace) -> dict[str, float]:
    run_load(port, 2, args.concurrency)  # warm-up
    before = cpu_seconds(proxy.pid)
    r = run_load(port, args.duration, args.concurrency)
    cpu = cpu_seconds(proxy.pid) - before
    r["calls_s"] = r["ok"] / r["seconds"]
    r["cpu_us"] = cpu / r["ok"] * 1e6 if r["ok"] else 0.0
    return r


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--load", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    if args.load is not None:
        asyncio.run(load(args.load[0], float(args.load[1]), int(args.load[2])))
        return 0
    best: dict[str, dict[str, float]] = {}
    commands: dict[str, str] = {}
    load1 = os.getloadavg()[0]
    server, backend = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="quiesce-grpc-bench-") as t:
            tmp = Path(t)
            for _ in range(args.rounds):
                for name, start in (("quiesce", start_quiesce), ("haproxy", start_haproxy)):
                    proxy = start(tmp, backend)
                    try:
                        r = measure(proxy, proxy.l7, args)
                    finally:
                        proxy.stop()
                    commands[name] = proxy.command
                    print(f"{name}: {r}", file=sys.stderr)
                    if name not in best or r["calls_s"] > best[name]["calls_s"]:
                        best[name] = r
    finally:
        server.terminate()
        server.wait()
    text = render(best, commands, args, load1, os.getloadavg()[0])
    print(text)
    if args.write is not None:
        write_block(args.write, text)
    return 0


def render(
    best: dict[str, dict[str, float]],
    commands: dict[str, str],
    args: argparse.Namespace,
    load_before: float,
    load_after: float,
) -> str:
    import grpc

    hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    q, h = best["quiesce"], best["haproxy"]
    lines = [
        START,
        f"{hv.split(' - ')[0]} · grpcio {grpc.__version__} (grpc.aio server and client, one "
        f"process each, pinned to CPU {OTHER_CPU}) · proxies pinned to CPU {PROXY_CPU} · "
        f"unary calls of {len(PAYLOAD)} bytes each way, {args.concurrency} in flight on one "
        f"h2c channel, {args.duration:g}s after a 2s warm-up, best of {args.rounds} rounds, "
        f"quiesce and HAProxy alternating · load average {load_before:.1f} before, "
        f"{load_after:.1f} after (2 cores shared with other work). Ratio = quiesce / HAProxy.",
        "",
        "| metric | quiesce | HAProxy | ratio |",
        "|---|---:|---:|---:|",
        f"| calls/s | {q['calls_s']:,.0f} | {h['calls_s']:,.0f} | "
        f"{ratio(q['calls_s'], h['calls_s'])} |",
        f"| proxy CPU µs per call | {q['cpu_us']:.1f} | {h['cpu_us']:.1f} | "
        f"{ratio(q['cpu_us'], h['cpu_us'])} |",
        f"| failed calls | {q['failed']:.0f} | {h['failed']:.0f} | |",
        "",
        "Reproduce: `python3 bench/grpc_bench.py --write BENCHMARKS.md`.",
        "",
    ]
    for name in ("quiesce", "haproxy"):
        if name in commands:
            lines.append(f"- {name}: `taskset -c {PROXY_CPU} {commands[name]}`")
    lines.append(END)
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        path.write_text(pattern.sub(lambda _: block, text))
    else:
        head = "## gRPC (2026-12-06, issue 16: benchmark (d))"
        path.write_text(text.rstrip("\n") + "\n\n" + head + "\n\n" + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
