#!/usr/bin/env python3
"""Live reload at scale (issue 14, item 1): the time to apply a reload that adds 1,000
servers to a pool of 10,000, and the latency of requests through the service meanwhile.

    python3 bench/reload_bench.py [--servers 10000] [--add 1000] [--clients 4] [--rounds 3]

At the end, the requests of all windows of a kind are pooled too (idle, +N, -N): one
window's p99 is its 6th-9th slowest request; with --rounds 10 the pooled p99 has 6,000+.
The 1.5 s after each answer are pooled too (a drained removal's drains and deletions).

Starts a small asyncio HTTP back end (keep-alive, "ok") in a thread and ``quiesce run`` with
one pool of ``--servers`` unmonitored servers (distinct names, all the back end's address)
behind one HTTP service, state in SQLite. ``--clients`` threads send keep-alive requests
(http.client) all along. Per round: 3 s idle (the idle p99), then the file gains ``--add``
servers (and, the next round, loses them again) and ``POST /api/v1/reload`` applies it; the
requests that started between the POST and its answer are the "during" sample. Reported:
the POST's wall time (file read and validated, plan, apply), the apply time the
``config_reload`` event records (``detail.seconds``, from the reload's start to the end of
its changes), and p50/p99/max latency idle and during. ``--rate R``: the clients send R
requests a second between them on a schedule (open loop), leaving the cores some idle time;
``--control S``: no reload, a process that burns S CPU seconds in its place (the reload
worker's YAML parse cost ~0.5 s of CPU at 11,000 servers before it parsed only the changed
lines). Each reload's CPU seconds (user + system, from /proc) of the serving process (its
request handling during the POST included) and of its children (the reload worker) are
reported too: they depend far less on the machine's load than the times. A first reload
without a change, during the warm-up, starts the reload worker (its start is not in the
rounds; ``--no-warm``: it is, in the first).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Ok(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[attr-defined]


def backend() -> int:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Ok, "127.0.0.1", 0))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return int(server.sockets[0].getsockname()[1])


def config(n: int, port: int, password_hash: str) -> str:
    servers = "\n".join(f"      - {{name: s{i}, address: 127.0.0.1:{port}}}" for i in range(n))
    return f"""
admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{password_hash}", role: admin}}]
state:
  sqlite: ./state.db
pools:
  big:
    graceful_disable_timeout: 1s
    max_idle_per_server: 1
    servers:
{servers}
services:
  www: {{listen: 127.0.0.1:0, pool: big}}
"""


class Clients:
    def __init__(self, port: int, n: int, rate: float = 0.0) -> None:
        self.port = port
        self.every = n / rate if rate > 0 else 0.0  # each thread's interval (0: closed loop)
        self.samples: list[tuple[float, float]] = []  # (start, latency)
        self.failures = 0
        self.failed: list[tuple[float, str]] = []  # (start, status or exception): what failed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        due = time.monotonic()
        while not self.stop.is_set():
            if self.every:  # open loop: one request every ``every`` s, late ones sent at once
                due += self.every
                wait = due - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    break  # stopped while waiting: the server is being stopped too
            t0 = time.monotonic()
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
                why = f"status {r.status}"
            except (OSError, http.client.HTTPException) as e:
                ok, why = False, repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            dt = time.monotonic() - t0
            with self.lock:
                self.samples.append((t0, dt))
                self.failures += not ok
                if not ok:
                    self.failed.append((t0, why))

    def window(self, a: float, b: float) -> list[float]:
        with self.lock:
            return [dt for t0, dt in self.samples if a <= t0 <= b]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process ``pid`` and of all its descendants alive,
    from /proc (Linux)."""

    def own(p: int) -> float:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            return 0.0  # gone
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def children(p: int) -> list[int]:
        out: list[int] = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return out

    kids, stack = 0.0, children(pid)
    while stack:
        p = stack.pop()
        kids += own(p)
        stack += children(p)
    return own(pid), kids


BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {}: pass"


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=1_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--no-warm", action="store_true", help="no reload during the warm-up")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests per second over all clients, sent on a schedule (open loop); "
        "0 (the default): each client sends its next request when the last is answered",
    )
    ap.add_argument(
        "--control",
        type=float,
        default=0.0,
        metavar="CPU_SECONDS",
        help="the control: no reload, a process burning this much CPU in its place (what "
        "any process of the reload worker's cost does to the latency on these cores)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from quiesce.security import hash_password

    pw_hash = hash_password("pw")
    auth = "Basic " + base64.b64encode(b"admin:pw").decode()
    port = backend()
    tmp = Path(tempfile.mkdtemp(prefix="quiesce-reload-bench-"))
    cfg = tmp / "quiesce.yaml"
    cfg.write_text(config(args.servers, port, pw_hash))
    proc = subprocess.Popen(
        [sys.executable, "-m", "quiesce", "run", "-c", str(cfg)],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ports: dict[str, int] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", file=sys.stderr) if "rror" in line or "cannot" in line else None
        if m := re.search(r"(service www|admin) listening on port (\d+)", line):
            ports[m.group(1)] = int(m.group(2))
        if "quiesce: ready" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def api(method: str, path: str) -> tuple[int, dict]:
        c = http.client.HTTPConnection("127.0.0.1", ports["admin"], timeout=60)
        c.request(method, path, headers={"Authorization": auth})
        r = c.getresponse()
        body = json.loads(r.read() or b"null")
        c.close()
        return r.status, body

    # The bench's own process (the clients' threads and the back end's loop) runs without
    # the cyclic GC: its samples grow to hundreds of thousands of tuples, and each full
    # collection (14-46 ms, seen by gc.callbacks) stalled its clients and back end, a latency
    # the proxy did not cause (the idle p99.9 of ~70 ms had some of it). It makes no cyclic
    # garbage worth collecting in a minute's run.
    gc.collect()
    gc.freeze()
    gc.disable()
    clients = Clients(ports["service www"], args.clients, args.rate)
    rows = []
    try:
        time.sleep(2.0)  # warm up
        if not args.control and not args.no_warm:
            assert api("POST", "/api/v1/reload")[0] == 200  # no change: starts the worker
        for rnd in range(args.rounds * 2):
            grow = rnd % 2 == 0
            t_idle = time.monotonic()
            time.sleep(3.0)
            idle = clients.window(t_idle, time.monotonic())
            n = args.servers + (args.add if grow else 0)
            cfg.write_text(config(n, port, pw_hash))
            cpu_a = cpu_seconds(proc.pid)
            a = time.monotonic()
            if args.control:  # no reload: a process burning as much CPU as its worker
                subprocess.run([sys.executable, "-c", BURN.format(args.control)], check=True)
                status, body = 200, {"changes": []}
            else:
                status, body = api("POST", "/api/v1/reload")
            b = time.monotonic()
            cpu_b = cpu_seconds(proc.pid)
            assert status == 200, body
            time.sleep(0.2)
            during = clients.window(a, b)
            applied = 0.0
            if not args.control:
                _, events = api("GET", "/api/v1/events?kind=config_reload&limit=1")
                applied = float(events[-1]["detail"]["seconds"])
            rows.append(
                {
                    "reload": f"+{args.add}" if grow else f"-{args.add} (drained, 1s)",
                    "changes": len(body["changes"]),
                    "post_s": b - a,
                    "at": (a, b),
                    "event_s": applied,
                    "server_cpu": round(cpu_b[0] - cpu_a[0], 3),
                    "worker_cpu": round(cpu_b[1] - cpu_a[1], 3),
                    "idle": (pct(idle, 0.5), pct(idle, 0.99), len(idle)),
                    "idle_samples": idle,
                    "during_samples": during,
                    "during": (
                        pct(during, 0.5),
                        pct(during, 0.99),
                        max(during) * 1000 if during else float("nan"),
                        len(during),
                    ),
                }
            )
            print(
                json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_samples")}),
                flush=True,
            )
            time.sleep(2.0 if grow else 2.5)  # removals finish (1 s drain)
            rows[-1]["after_samples"] = clients.window(b, b + 1.5)  # drains, deletions
    finally:
        clients.stop.set()
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print(f"\nfailed requests: {clients.failures} of {len(clients.samples)}")
    for t0, why in clients.failed[:20]:
        when = "after the clients were stopped" if t0 >= stopped else "during the run"
        print(f"  at {t0:.3f} (monotonic, {when}): {why}")
    for r in rows:
        print(f"  {r['reload']}: POST from {r['at'][0]:.3f} to {r['at'][1]:.3f}")
    print(
        "| reload | changes | POST (s) | applied (s) | idle p50 / p99 (ms) "
        "| during p50 / p99 / max (ms) | requests during | CPU s: server / worker |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        i, d = r["idle"], r["during"]
        print(
            f"| {r['reload']} | {r['changes']} | {r['post_s']:.3f} | {r['event_s']:.3f} | "
            f"{i[0]:.2f} / {i[1]:.2f} | {d[0]:.2f} / {d[1]:.2f} / {d[2]:.2f} | {d[3]} | "
            f"{r['server_cpu']:.3f} / {r['worker_cpu']:.3f} |"
        )
    pooled(rows)
    return 0


def pooled(rows: list[dict]) -> None:
    """The requests of every window of a kind pooled (a 0.1-0.2 s reload window holds
    600-900 requests: its p99 is its 6th-9th slowest, one stall decides it): the idle p99
    of all idle windows, the during p99 of all reloads of each kind, and their ratio."""
    idle = [x for r in rows for x in r["idle_samples"]]
    print("\npooled over the rounds (every window's requests together):")
    print("| reload | windows | requests | p50 / p99 / p99.9 (ms) | p99 / idle p99 |")
    print("|---|---|---|---|---|")
    i99 = pct(idle, 0.99)
    print(
        f"| idle | {len(rows)} | {len(idle)} | {pct(idle, 0.5):.2f} / {i99:.2f} / "
        f"{pct(idle, 0.999):.2f} | 1 |"
    )
    for kind in dict.fromkeys(r["reload"] for r in rows):
        xs = [x for r in rows if r["reload"] == kind for x in r["during_samples"]]
        n = sum(r["reload"] == kind for r in rows)
        ys = [x for r in rows if r["reload"] == kind for x in r.get("after_samples", [])]
        for what, zs in ((kind, xs), (f"{kind}: 1.5 s after its answer", ys)):
            print(
                f"| {what} | {n} | {len(zs)} | {pct(zs, 0.5):.2f} / {pct(zs, 0.99):.2f} / "
                f"{pct(zs, 0.999):.2f} | {pct(zs, 0.99) / i99:.2f}x |"
            )


if __name__ == "__main__":
    sys.exit(main())
