#!/usr/bin/env python3
"""Proxy benchmark: quiesce and HAProxy side by side, same back end, same wrk, one run.

    python3 bench/proxy_bench.py [--duration 8] [--write BENCHMARKS.md]

Installs what it needs on Debian (haproxy, nginx, wrk) when missing, starts one nginx back
end (one worker) and then, for every scenario, runs quiesce and HAProxy alternately, each a
fresh process pinned to the same single core (HAProxy ``nbthread 1``, quiesce its one
process); nginx and wrk share the other core. Per run it records req/s and p50/p99 latency
(wrk --latency), the proxy's CPU seconds during the measured window (utime+stime from
/proc/PID/stat) and its peak RSS (VmHWM). Scenarios:

a. L7 keep-alive, small responses       wrk -t1 -c50
b. L7 new connection per request        wrk -t1 -c50 -H 'Connection: close'
c. L4 relay of small requests           wrk -t1 -c50 through the tcp listener
d. L4 bulk throughput                   wrk -t1 -c4 on a 64 MiB file
e. RSS with 10,000 idle client connections (each sent one request, then stays idle)

With ``--access-log`` it measures quiesce alone instead: the access log off, to a file as
httplog and to a file as json, alternating in one run (``--rounds`` times), scenarios (a), (b)
and (c) (``--only``), and prints the CPU µs per request of each and the change against off.
``--outlier`` does the same with the pool's ``outlier_detection`` off and on (its defaults).

With ``--write FILE`` the results replace the block between the proxy-results markers of
the "## Proxy" section (created if missing); the rest of the file is left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROXY_CPU = "1"
OTHER_CPU = "0"
START = "<!-- proxy-results:start -->"
END = "<!-- proxy-results:end -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_tools() -> None:
    missing = [
        p
        for p, b in (("haproxy", "haproxy"), ("nginx", "nginx"), ("wrk", "wrk"))
        if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()
    ]
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", cpu, *cmd]
    return cmd


# --- processes ------------------------------------------------------------------------------


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Backend:
    port: int
    proc: subprocess.Popen[bytes]


def start_nginx(tmp: Path) -> Backend:
    port = free_port()
    www = tmp / "www"
    www.mkdir()
    with open(www / "big", "wb") as f:
        f.write(os.urandom(1024 * 1024) * 64)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = / {{ default_type text/plain; return 200 "hello, world\\n"; }}
    location /big {{ root {www.parent}; try_files /www/big =404; }}
  }}
}}
"""
    )
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen(
        pinned(OTHER_CPU, [nginx, "-c", str(conf), "-e", str(tmp / "nginx-error.log")]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return Backend(port, proc)


@dataclass
class Proxy:
    name: str
    proc: subprocess.Popen[bytes]
    l7: int
    l4: int
    command: str

    @property
    def pid(self) -> int:
        # taskset execs the program: same pid
        return self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_haproxy(tmp: Path, backend: int, maxconn: int = 9950) -> Proxy:
    """HAProxy on free ports. Above 9,950 connections HAProxy wants 2 descriptors a
    connection (37,000 for 18,500) where the machine allows 20,000: ``no strict-limits``
    lets it start anyway (idle client connections hold no server connection)."""
    l7, l4 = free_port(), free_port()
    limits = "\n  no strict-limits" if maxconn > 9950 else ""
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""
global
  nbthread 1
  ulimit-n 20000{limits}
  maxconn {maxconn}
  log stderr format raw local0 emerg

defaults
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 10s
  timeout http-keep-alive 300s
  maxconn {maxconn}

frontend web7
  mode http
  option http-keep-alive
  option forwardfor
  bind 127.0.0.1:{l7}
  default_backend pool7

backend pool7
  mode http
  server s1 127.0.0.1:{backend}

frontend web4
  mode tcp
  bind 127.0.0.1:{l4}
  default_backend pool4

backend pool4
  mode tcp
  server s1 127.0.0.1:{backend}
"""
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    cmd = [haproxy, "-db", "-f", str(conf)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.DEVNULL)
    wait_port(l7)
    wait_port(l4)
    return Proxy("haproxy", proc, l7, l4, " ".join(cmd))


def start_quiesce(
    tmp: Path,
    backend: int,
    logging: dict[str, object] | None = None,
    pool: dict[str, object] | None = None,
) -> Proxy:
    config: dict[str, object] = {
        "pools": {
            "pool": {"servers": [{"name": "s1", "address": f"127.0.0.1:{backend}"}], **(pool or {})}
        },
        "services": {
            "web7": {
                "listen": "127.0.0.1:0",
                "protocol": "http",
                "pool": "pool",
                "client_idle_timeout": "300s",
            },
            "web4": {"listen": "127.0.0.1:0", "protocol": "tcp", "pool": "pool"},
        },
    }
    if logging is not None:
        config["logging"] = logging
    path = tmp / "quiesce.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, str(HERE / "quiesce_proxy.py"), str(path)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = json.loads(line)["ports"]
    return Proxy("quiesce", proc, ports["web7"], ports["web4"], " ".join(cmd))


# --- measuring --------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    transfer_gbs: float = 0.0
    idle_rss_mib: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_wrk(text: str) -> Result:
    r = Result()
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r.rps = float(m.group(1)) if m else 0.0
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", text)
    if m:
        r.transfer_gbs = float(m.group(1)) * _BYTES[m.group(2)] / 1e9
    for pct, attr in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            setattr(r, attr, float(m.group(1)) * _UNITS[m.group(2)])
    errors = re.search(r"Socket errors: (.*)", text)
    if errors:
        r.extra["socket_errors"] = 1.0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        r.extra["non_2xx"] = float(non2xx.group(1))
    return r


def wrk(args: list[str], duration: int) -> str:
    cmd = pinned(OTHER_CPU, ["wrk", "--latency", "-d", f"{duration}s", *args])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return out.stdout


def run_wrk_scenario(proxy: Proxy, url: str, args: list[str], duration: int) -> Result:
    wrk([*args, url], 2)  # warm-up (connections, caches, the JIT-less interpreter's dicts)
    before = cpu_seconds(proxy.pid)
    text = wrk([*args, url], duration)
    r = parse_wrk(text)
    r.cpu_s = cpu_seconds(proxy.pid) - before
    r.peak_rss_mib = status_kib(proxy.pid, "VmHWM") / 1024
    return r


async def _idle_clients(port: int, n: int) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(200)

    async def one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            await reader.readuntil(b"hello, world\n")
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(n)))
    return writers


def idle_scenario(proxy: Proxy, n: int) -> Result:
    r = Result()
    base = status_kib(proxy.pid, "VmRSS")

    async def go() -> None:
        writers = await _idle_clients(proxy.l7, n)
        await asyncio.sleep(3.0)  # idle means idle: let the proxy settle (no waiting on it)
        r.idle_rss_mib = status_kib(proxy.pid, "VmRSS") / 1024
        r.extra["rss_before_mib"] = base / 1024
        r.extra["per_conn_kib"] = (status_kib(proxy.pid, "VmRSS") - base) / n
        for w in writers:
            w.close()

    asyncio.run(go())
    r.peak_rss_mib = status_kib(proxy.pid, "VmHWM") / 1024
    return r


SCENARIOS = [
    ("a", "L7 keep-alive, small responses", "l7", ["-t1", "-c50"], "/"),
    ("b", "L7 new connection per request", "l7", ["-t1", "-c50", "-H", "Connection: close"], "/"),
    ("c", "L4 relay, small requests", "l4", ["-t1", "-c50"], "/"),
    ("d", "L4 bulk throughput", "l4", ["-t1", "-c4"], "/big"),
]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--idle", type=int, default=9_500)
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--only", default="abcde")
    ap.add_argument("--access-log", action="store_true")
    ap.add_argument("--outlier", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    ensure_tools()
    raise_nofile()
    if args.access_log or args.outlier:
        return access_log_cost(args)
    results: dict[str, dict[str, Result]] = {}
    commands: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="quiesce-bench-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)  # nginx's workers run as nobody and must read the files
        backend = start_nginx(tmp)
        try:
            for key, _title, layer, wargs, path in SCENARIOS:
                if key not in args.only:
                    continue
                results[key] = {}
                for starter in (start_quiesce, start_haproxy):
                    proxy = starter(tmp, backend.port)
                    try:
                        port = proxy.l7 if layer == "l7" else proxy.l4
                        url = f"http://127.0.0.1:{port}{path}"
                        res = run_wrk_scenario(proxy, url, wargs, args.duration)
                        results[key][proxy.name] = res
                        commands[key] = "wrk --latency -d {}s {} http://127.0.0.1:PORT{}".format(
                            args.duration, " ".join(_q(a) for a in wargs), path
                        )
                        commands[proxy.name] = proxy.command
                        print(f"{key} {proxy.name}: {res}", file=sys.stderr)
                    finally:
                        proxy.stop()
            if "e" in args.only:
                results["e"] = {}
                for starter in (start_quiesce, start_haproxy):
                    proxy = starter(tmp, backend.port)
                    try:
                        res = idle_scenario(proxy, args.idle)
                        results["e"][proxy.name] = res
                        print(f"e {proxy.name}: {res}", file=sys.stderr)
                    finally:
                        proxy.stop()
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    text = render(results, commands, args)
    print(text)
    if args.write is not None:
        write_section(args.write, text)
    return 0


ACCESS_LOGS: dict[str, dict[str, object] | None] = {
    "off": None,
    "httplog": {"access": {"format": "httplog", "path": "access.log"}},
    "json": {"access": {"format": "json", "path": "access.log"}},
}
OUTLIER: dict[str, dict[str, object] | None] = {"off": None, "on": {"outlier_detection": {}}}


def access_log_cost(args: argparse.Namespace) -> int:
    """quiesce with its access log off, as httplog and as json to a file, alternating (with
    ``--outlier``: outlier_detection off and on)."""
    variants = OUTLIER if args.outlier else ACCESS_LOGS
    us: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="quiesce-bench-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)
        backend = start_nginx(tmp)
        try:
            for _ in range(args.rounds):
                for key, _title, layer, wargs, path in SCENARIOS:
                    if key not in args.only or key not in "abc":
                        continue
                    for name, variant in variants.items():
                        logging = None if args.outlier else variant
                        pool = variant if args.outlier else None
                        proxy = start_quiesce(tmp, backend.port, logging, pool)
                        try:
                            port = proxy.l7 if layer == "l7" else proxy.l4
                            url = f"http://127.0.0.1:{port}{path}"
                            res = run_wrk_scenario(proxy, url, wargs, args.duration)
                        finally:
                            proxy.stop()
                        per = res.cpu_s * 1e6 / (res.rps * args.duration)
                        us.setdefault((key, name), []).append(per)
                        lines = (tmp / "access.log").read_text().count("\n") if logging else 0
                        (tmp / "access.log").unlink(missing_ok=True)
                        print(
                            f"{key} {name}: {res.rps:.0f} req/s, {per:.1f} CPU us/request, "
                            f"{lines} lines",
                            file=sys.stderr,
                        )
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    what = "outlier_detection" if args.outlier else "access log"
    print(f"| scenario | {what} | CPU µs per request (each round) | median | vs off |")
    print("|---|---|---|---:|---:|")
    for (key, name), values in us.items():
        med = statistics.median(values)
        off = statistics.median(us[(key, "off")])
        each = " · ".join(f"{v:.1f}" for v in values)
        print(f"| {key} | {name} | {each} | {med:.1f} | {(med / off - 1) * 100:+.1f}% |")
    return 0


def _q(a: str) -> str:
    return f"'{a}'" if " " in a else a


def ratio(q: float, h: float) -> str:
    return f"{q / h:.2f}" if h else "n/a"


def render(
    results: dict[str, dict[str, Result]], commands: dict[str, str], args: argparse.Namespace
) -> str:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [
        START,
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
        f"{os.cpu_count()} CPUs ({cpu}) · Linux {platform.release()} · "
        f"Python {platform.python_version()} · {hv.split(' - ')[0]} · "
        "wrk, nginx (1 worker) as the back end.",
        "",
        f"Both proxies pinned to CPU {PROXY_CPU} (HAProxy `nbthread 1`, quiesce's one "
        f"process); nginx and wrk pinned to CPU {OTHER_CPU}. Each cell is a fresh proxy "
        "process, measured for "
        f"{args.duration}s after a 2s warm-up. Ratio = quiesce / HAProxy.",
        "",
        "| scenario | metric | quiesce | HAProxy | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]

    def row(key: str, title: str, metric: str, attr: str, fmt: str, target: str) -> None:
        cell = results.get(key, {})
        q = getattr(cell.get("quiesce", Result()), attr)
        h = getattr(cell.get("haproxy", Result()), attr)
        lines.append(
            f"| {title} | {metric} | {fmt.format(q)} | {fmt.format(h)} | {ratio(q, h)} | {target} |"
        )

    for key, title, layer, _, _ in SCENARIOS:
        if key not in results:
            continue
        label = f"({key}) {title}"
        if key == "d":
            row(key, label, "throughput GB/s", "transfer_gbs", "{:.2f}", "≥ 0.9")
        else:
            row(key, label, "req/s", "rps", "{:,.0f}", "≥ 0.8" if layer == "l7" else "≥ 0.9")
        row(key, "", "p50 ms", "p50_ms", "{:.2f}", "")
        row(key, "", "p99 ms", "p99_ms", "{:.2f}", "≤ 1.5")
        row(key, "", "CPU s", "cpu_s", "{:.1f}", "")
        if key != "d":
            cell = results.get(key, {})
            qr, hr = cell.get("quiesce", Result()), cell.get("haproxy", Result())
            qc = qr.cpu_s / (qr.rps * args.duration) * 1e6 if qr.rps else 0.0
            hc = hr.cpu_s / (hr.rps * args.duration) * 1e6 if hr.rps else 0.0
            lines.append(f"| | CPU µs per request | {qc:.1f} | {hc:.1f} | {ratio(qc, hc)} | |")
        row(key, "", "peak RSS MiB", "peak_rss_mib", "{:.1f}", "")
    if "e" in results:
        row(
            "e",
            f"(e) {args.idle:,} idle client connections",
            "RSS MiB",
            "idle_rss_mib",
            "{:.1f}",
            "≤ 1.0",
        )
        q = results["e"].get("quiesce", Result()).extra.get("per_conn_kib", 0.0)
        h = results["e"].get("haproxy", Result()).extra.get("per_conn_kib", 0.0)
        lines.append(f"| | per connection KiB | {q:.1f} | {h:.1f} | {ratio(q, h)} | |")
    lines += [
        "",
        "Reproduce: `python3 bench/proxy_bench.py --write BENCHMARKS.md` (about 2 minutes).",
        "",
        "Commands used in this run:",
        "",
    ]
    for key, *_ in SCENARIOS:
        if key in commands:
            lines.append(f"- ({key}) `taskset -c {OTHER_CPU} {commands[key]}`")
    lines.append(
        f"- (e) {args.idle:,} connections from one asyncio client, each `GET /` then idle; "
        "RSS = VmRSS"
    )
    for name in ("quiesce", "haproxy"):
        if name in commands:
            lines.append(
                f"- {name}: `taskset -c {PROXY_CPU} {commands[name]}` "
                "(config generated in a temp dir)"
            )
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    elif "## Proxy" in text:
        head, rest = text.split("## Proxy", 1)
        nl = rest.find("\n")
        text = head + "## Proxy" + rest[: nl + 1] + "\n" + block + "\n" + rest[nl + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n## Proxy\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
