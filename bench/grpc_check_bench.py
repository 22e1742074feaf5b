"""What a ``grpc`` health check costs: quiesce's HealthManager checking N servers with a
``type: grpc`` monitor (grpc.health.v1.Health/Check, a fresh channel per check) against a
real grpcio health server, side by side in one run with a ``tcp`` monitor (connect only)
of the same servers, as the floor of any check that opens a connection.

Every server is its own loopback address (127.1.x.y, as bench/health_bench.py) on one port,
answered by one grpcio server (``grpc.aio``, the standard ``HealthServicer``) bound to
0.0.0.0:PORT, pinned to CPU 1; the checker runs pinned to CPU 0 (``taskset``). Each checker
is a child process: a warm-up, then a measured window; CPU is the child's
``time.process_time()`` over the window (grpcio's own threads included).

    python3 bench/grpc_check_bench.py --servers 1000 --interval 2 --duration 15

Also prints, for one channel reused against a new channel per check, the CPU of 2,000
sequential checks from one coroutine (where a check's cost goes).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any

from health_bench import SERVERS_PER_POOL, address, cpu_seconds, free_port


async def serve(port: int) -> None:
    """The grpc health server (a child process): SERVING for ""."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"0.0.0.0:{port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    print("ready", flush=True)
    await server.wait_for_termination()


async def checker(args: argparse.Namespace) -> dict[str, Any]:
    """The HealthManager over N servers with one monitor of ``args.kind`` (a child)."""
    from quiesce.config.models import Config
    from quiesce.core.states import Verdict
    from quiesce.health import HealthManager
    from quiesce.state.registry import Registry

    n = args.servers
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
    monitor = {"type": args.kind, "send_interval": args.interval, "receive_timeout": args.timeout}
    registry = Registry(Config.model_validate({"healthmonitors": {"hc": monitor}, "pools": pools}))
    gc.collect()
    gc.freeze()
    manager = HealthManager(registry)
    results: list[Any] = []
    record = registry.record_check

    def counting(server: Any, result: Any) -> None:
        results.append(result.verdict)
        record(server, result)

    registry.record_check = counting  # type: ignore[method-assign]
    manager.start()
    await asyncio.sleep(args.warmup)
    results.clear()
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(args.duration)
    cpu, wall = time.process_time() - c0, time.monotonic() - t0
    done = len(results)
    passed = sum(1 for v in results if v is Verdict.PASS)
    await manager.stop()
    return {
        "kind": args.kind,
        "servers": n,
        "checks_per_s": done / wall,
        "passed": passed / done if done else 0.0,
        "cpu": cpu / wall,
        "cpu_us_per_check": cpu / done * 1e6 if done else float("nan"),
        "checks_per_cpu_s": done / cpu if cpu else float("nan"),
    }


async def sequential(port: int, count: int) -> dict[str, float]:
    """CPU µs per check from one coroutine: GrpcProber (a new channel each) and one reused
    channel (the RPC alone)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from quiesce.config.models import HealthMonitor
    from quiesce.core.clock import SystemClock
    from quiesce.health.probes import GrpcProber, Target

    prober = GrpcProber(SystemClock())
    monitor = HealthMonitor.model_validate({"type": "grpc"})
    target = Target("127.0.0.1", port)
    for _ in range(50):
        await prober.check(target, monitor, "g")
    c0 = time.process_time()
    for _ in range(count):
        await prober.check(target, monitor, "g")
    fresh = (time.process_time() - c0) / count * 1e6
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        for _ in range(50):
            await stub.Check(request, timeout=2)
        c0 = time.process_time()
        for _ in range(count):
            await stub.Check(request, timeout=2)
        reused = (time.process_time() - c0) / count * 1e6
    return {"new_channel_us": fresh, "reused_channel_us": reused}


def run_child(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    cmd = ["taskset", "-c", str(args.cpu), sys.executable, __file__, *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--role", choices=["serve", "check", "sequential"], default=None)
    parser.add_argument("--kind", default="grpc")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.role == "serve":
        asyncio.run(serve(args.port))
        return
    if args.role in ("check", "sequential"):
        import uvloop

        if args.role == "check":
            print(json.dumps(uvloop.run(checker(args))))
        else:
            print(json.dumps(uvloop.run(sequential(args.port, args.sequential))))
        return

    port = free_port()
    serve_args = ("--role", "serve", "--port", str(port))
    server = subprocess.Popen(
        [*("taskset", "-c", str(args.server_cpu), sys.executable, __file__), *serve_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        common = ["--servers", str(args.servers), "--interval", str(args.interval)]
        common += ["--timeout", str(args.timeout), "--warmup", str(args.warmup)]
        common += ["--duration", str(args.duration), "--port", str(port)]
        rows = []
        for kind in ("tcp", "grpc"):
            s0 = cpu_seconds(server.pid)
            row = run_child(args, "--role", "check", "--kind", kind, *common)
            row["server_cpu"] = (cpu_seconds(server.pid) - s0) / (args.warmup + args.duration)
            rows.append(row)
        seq = run_child(
            args, "--role", "sequential", "--port", str(port), "--sequential", str(args.sequential)
        )
    finally:
        server.terminate()
        server.wait(10)
    import grpc

    print(
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {os.cpu_count()} CPUs · "
        f"Python {sys.version.split()[0]} · grpcio {grpc.__version__} · uvloop · "
        f"{args.servers} servers, send_interval {args.interval:g}s, receive_timeout "
        f"{args.timeout:g}s, warm-up {args.warmup:g}s, measured {args.duration:g}s; "
        f"checker on CPU {args.cpu}, grpc server on CPU {args.server_cpu}\n"
    )
    print(
        "| monitor | checks/s | passed | checker CPU (1 core = 100%) | CPU µs per check "
        "| checks per CPU second | grpc server CPU |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| `{r['kind']}` | {r['checks_per_s']:,.0f} | {r['passed']:.1%} | "
            f"{r['cpu']:.1%} | {r['cpu_us_per_check']:,.0f} | {r['checks_per_cpu_s']:,.0f} | "
            f"{r['server_cpu']:.1%} |"
        )
    tcp, grpc_row = rows
    ratio = grpc_row["cpu_us_per_check"] / tcp["cpu_us_per_check"]
    print(f"| **ratio grpc / tcp** | | | | **{ratio:.1f}** | | |")
    print(
        f"\nSequential, one coroutine, {args.sequential} checks: a new channel per check "
        f"(GrpcProber) {seq['new_channel_us']:,.0f} µs CPU each; the same Check on one reused "
        f"channel {seq['reused_channel_us']:,.0f} µs."
    )


if __name__ == "__main__":
    main()
