#!/usr/bin/env python3
"""A /metrics scrape, ``show stat`` and ``GET /api/v1/servers`` at 10,000-100,000 servers,
and what they do to the data plane meanwhile (issue 21).

    python3 bench/metrics_scale.py [--servers 10000 100000] [--pools 100 1] [--rounds 3]
        [--what metrics metrics?scope=pool show-stat servers] [--no-monitors]

For each layout, one ``quiesce run`` with that many servers split into that many pools (every
pool with a TCP monitor, interval 60 s, against a closed loopback port unless
``--no-monitors``), plus a one-server pool ``probe`` in front of a tiny HTTP back end run by
this script, behind the service ``probe``. Once ready and its first round of checks is over,
each view is fetched ``--rounds`` times while a thread sends requests to ``probe`` one after
another (keep-alive), and the script reports, per view:

- wall: from the request to the last byte; first byte: to the first byte of the answer;
- CPU: the ``quiesce run`` process's user + system seconds over that fetch (/proc);
- size of the answer;
- probe: the longest a probe request took while the fetch ran (a healthy one is < 1 ms), and
  how many were answered: with the loop held for the whole fetch, one or none.

Runs on loopback only, each fetch bounded by ``--timeout``; the processes end with it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from health_bench import cpu_seconds, free_port  # noqa: E402


def config(
    servers: int, pools: int, port: int, monitors: bool, backend: int, admin: int, probe: int
) -> str:
    per = max(1, servers // pools)
    lines = [
        f"admin: {{listen: 127.0.0.1:{admin}, runtime_socket: ./q.sock,",
        f"  tokens: [{{name: bench, token_hash: '{_hash(TOKEN)}', role: read_only}}]}}",
        "state: {sqlite: ./state.db}",
        "healthmonitors:",
        "  hc: {type: tcp, send_interval: 60s, receive_timeout: 2s}",
        "pools:",
        f"  probe: {{servers: [{{name: b, address: 127.0.0.1:{backend}}}]}}",
    ]
    for p in range(pools):
        lines.append(f"  p{p}:")
        if monitors:
            lines.append("    healthmonitors: [hc]")
        lines.append("    max_idle_per_server: 0")  # the fd budget reserves 64 each else
        lines.append("    servers:")
        for i in range(p * per, min(servers, (p + 1) * per)):
            lines.append(f"      - {{name: s{i}, address: 127.0.0.1:{port}}}")
    lines.append("services:")
    lines.append(f"  probe: {{listen: 127.0.0.1:{probe}, pool: probe}}")
    return "\n".join(lines) + "\n"


TOKEN = "bench-token-0123456789"


def _hash(secret: str) -> str:
    """quiesce's scrypt format at a low cost factor (tests/api/harness.py's cheap_hash)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    return f"scrypt$1024$8$1${b64encode(salt).decode()}${b64encode(digest).decode()}"


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class Probe(threading.Thread):
    """Requests to the probe service one after another; (start, seconds) of each."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.done: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                continue
            self.done.append((t, time.monotonic() - t))
            time.sleep(0.005)

    def during(self, start: float, end: float) -> tuple[float, int]:
        """The longest probe request overlapping [start, end], and how many ended in it."""
        over = [d for t, d in self.done if t < end and t + d > start]
        return (max(over) if over else float("nan")), len(over)


def fetch_http(port: int, path: str, timeout: float) -> tuple[int, float]:
    """(size, first byte time) of GET path on the admin listener."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n"
        s.sendall(f"{head}connection: close\r\n\r\n".encode())
        size, first, status = _drain(s, t)
        if not status.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"GET {path}: {status!r}")
        return size, first


def fetch_socket(path: Path, command: str, timeout: float) -> tuple[int, float]:
    t = time.monotonic()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(command.encode() + b"\n")
        size, first, _ = _drain(s, t)
        return size, first


def _drain(s: socket.socket, t: float) -> tuple[int, float, bytes]:
    size, first, head = 0, float("nan"), b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            return size, first, head
        if size == 0:
            first = time.monotonic() - t
            head = chunk.split(b"\r\n", 1)[0]
        size += len(chunk)


def start(tmp: Path, text: str) -> subprocess.Popen[str]:
    (tmp / "quiesce.yaml").write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "quiesce", "run", "-c", "quiesce.yaml"],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=(tmp / "quiesce.log").open("w"),
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "quiesce: ready" in line:
            break
    else:
        raise SystemExit("quiesce did not start: " + (tmp / "quiesce.log").read_text()[-500:])
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe open
    return proc


def run(args: argparse.Namespace, servers: int, pools: int) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix="quiesce-metrics-"))
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    admin, front = free_port(), free_port()
    monitors = not args.no_monitors
    text = config(servers, pools, free_port(), monitors, backend.server_port, admin, front)
    proc = start(tmp, text)
    rows = []
    try:
        time.sleep(args.settle)  # the first round of checks (spread over the interval's start)
        probe = Probe(front)
        probe.start()
        while not probe.done:
            time.sleep(0.01)
        for what in args.what:
            for _ in range(args.rounds):
                time.sleep(0.3)
                cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
                if what == "show-stat":
                    size, first = fetch_socket(tmp / "q.sock", "show stat", args.timeout)
                else:
                    path = "/api/v1/servers" if what == "servers" else "/" + what
                    size, first = fetch_http(admin, path, args.timeout)
                t1, cpu1 = time.monotonic(), cpu_seconds(proc.pid)
                time.sleep(0.05)  # the probe request under way at the end finishes
                worst, n = probe.during(t0, t1)
                rows.append(
                    f"| {servers:,} in {pools} pool(s) | {what} | {t1 - t0:.2f} | {first:.2f} "
                    f"| {cpu1 - cpu0:.2f} | {size / 1e6:.1f} | {worst * 1000:,.0f} | {n} |"
                )
                print(rows[-1], flush=True)
        probe.stop.set()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        backend.shutdown()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--pools", type=int, nargs="+", default=[100, 1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settle", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--no-monitors", action="store_true")
    ap.add_argument(
        "--what",
        nargs="+",
        default=["metrics", "metrics?scope=pool", "show-stat", "servers"],
        help="metrics[?query], show-stat, servers (unpaged GET /api/v1/servers)",
    )
    args = ap.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "| servers | view | wall (s) | first byte (s) | CPU (s) | size (MB) "
        "| longest probe request (ms) | probe requests during it |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for servers in args.servers:
        for pools in args.pools:
            run(args, servers, pools)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
