#!/usr/bin/env python3
"""Propagation between quiesce nodes through etcd (issue 15): the time from a command on node
A to the moment nodes B and C show it through their API.

    python3 bench/cluster_propagation.py [--trials 200] [--nodes 3]

Starts one etcd (Debian's etcd-server, single member, on loopback) and ``--nodes`` ``quiesce
run`` processes (A, B, C, ...) sharing it, one pool ``web`` of one server. B, C, ... each
have an event stream open (``GET /api/v1/events/stream``, Server-Sent Events, read in a
thread). Each trial: ``POST /api/v1/servers/web/b1/maintenance`` (then ``enable``, turn about)
on A with the reason ``trial N``; the clock starts just before the request is sent and stops,
per node, when that node's stream delivers its ``admin_change`` with reason ``trial N`` (the
change applied there: eligibility, events, closes). A's own answer comes after etcd took the
compare-and-swap write (it is timed as "A answered"). Reported: p50 / p99 / max per node and
over all, in ms; the trials run one after the other.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUTH = "Basic " + base64.b64encode(b"admin:pw").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_etcd(data: Path) -> tuple[subprocess.Popen[bytes], int]:
    client, peer = free_port(), free_port()
    c, p = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    proc = subprocess.Popen(
        [
            *(etcd, "--data-dir", str(data), "--name", "default"),
            *("--listen-client-urls", c, "--advertise-client-urls", c),
            *("--listen-peer-urls", p, "--initial-advertise-peer-urls", p),
            *("--initial-cluster", f"default={p}"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 15
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{c}/health", timeout=1) as r:
                if b'"true"' in r.read():
                    return proc, client
        except OSError:
            time.sleep(0.05)
    raise SystemExit("etcd not healthy within 15 s")


def start_node(
    tmp: Path, name: str, etcd_port: int, pw_hash: str
) -> tuple[subprocess.Popen[str], int]:
    d = tmp / name
    d.mkdir()
    (d / "quiesce.yaml").write_text(
        f"""admin:
  listen: 127.0.0.1:0
  users: [{{name: admin, password_hash: "{pw_hash}", role: admin}}]
state: {{etcd: {{endpoints: ["127.0.0.1:{etcd_port}"], prefix: /bench/, node: {name}}}}}
pools:
  web:
    servers: [{{name: b1, address: "127.0.0.1:9"}}]
services:
  www: {{listen: 127.0.0.1:0, pool: web}}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "quiesce", "run", "-c", "quiesce.yaml"],
        cwd=d,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT / "src")},
    )
    assert proc.stdout is not None
    port = 0
    for line in proc.stdout:
        if m := re.search(r"admin listening on port (\d+)", line):
            port = int(m.group(1))
        if "quiesce: ready" in line:
            break
    else:
        raise SystemExit(f"node {name} did not start")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, port


class Watcher:
    """A node's event stream: when each ``trial N`` admin_change arrived (monotonic)."""

    def __init__(self, port: int) -> None:
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        self.conn.request("GET", "/api/v1/events/stream", headers={"Authorization": AUTH})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        for raw in self.resp:
            if not raw.startswith(b"data: "):
                continue
            now = time.monotonic()
            event = json.loads(raw[6:])
            if event["kind"] == "admin_change" and str(event.get("reason", "")).startswith(
                "trial "
            ):
                with self.cond:
                    self.seen.setdefault(event["reason"], now)
                    self.cond.notify_all()

    def wait(self, reason: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: reason in self.seen, timeout)
            return self.seen.get(reason)


def post(port: int, path: str, reason: str) -> tuple[int, float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"reason": reason})
    t0 = time.monotonic()
    c.request(
        "POST", path, body, headers={"Authorization": AUTH, "Content-Type": "application/json"}
    )
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, t0


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from quiesce.security import hash_password

    pw_hash = hash_password("pw")
    tmp = Path(tempfile.mkdtemp(prefix="quiesce-cluster-bench-"))
    etcd, etcd_port = start_etcd(tmp / "etcd")
    names = [chr(ord("A") + i) for i in range(args.nodes)]
    procs: list[subprocess.Popen[str]] = []
    try:
        ports = {}
        for name in names:
            proc, ports[name] = start_node(tmp, name, etcd_port, pw_hash)
            procs.append(proc)
        watchers = {name: Watcher(ports[name]) for name in names[1:]}
        time.sleep(1.0)  # every node registered and watching
        lat: dict[str, list[float]] = {name: [] for name in watchers}
        answered: list[float] = []
        missed = 0
        for i in range(args.trials):
            verb = "maintenance" if i % 2 == 0 else "enable"
            reason = f"trial {i}"
            status, t0 = post(ports["A"], f"/api/v1/servers/web/b1/{verb}", reason)
            answered.append(time.monotonic() - t0)
            assert status == 200, status
            for name, w in watchers.items():
                t = w.wait(reason, 5.0)
                if t is None:
                    missed += 1
                else:
                    lat[name].append(t - t0)
        every = [x for xs in lat.values() for x in xs]
        rows = {
            **{f"node {n}": xs for n, xs in lat.items()},
            "all nodes": every,
            "A answered": answered,
        }
        print(f"{args.trials} changes on A, {args.nodes} nodes, load {os.getloadavg()[0]:.2f}")
        print(f"{'':14} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for label, xs in rows.items():
            print(
                f"{label:14} {len(xs):5d} {pct(xs, 0.5):8.1f} {pct(xs, 0.99):8.1f} "
                f"{max(xs) * 1000:8.1f}"
            )
        print(f"missed (not seen within 5 s): {missed}")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        etcd.terminate()
        etcd.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
