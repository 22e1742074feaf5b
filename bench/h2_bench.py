#!/usr/bin/env python3
"""HTTP/2 benchmark: quiesce and HAProxy speaking HTTP/2 to h2load, side by side, same
back end, one run (issue 16, benchmark (c)).

    python3 bench/h2_bench.py [--duration 8] [--rounds 1] [--profile 6] [--only ct]
                              [--write BENCHMARKS.md]

The machinery is bench/proxy_bench.py's (nginx back end with one worker, each proxy a fresh
process pinned to one core, nginx and h2load on the other, CPU from /proc/PID/stat); the
certificate is tls_bench.py's (trustme, ECDSA P-256). Both proxies speak HTTP/1.1 keep-alive
to nginx. Scenarios, each ``h2load -t1 -c50 -m10`` (50 connections, 10 streams each):

c. h2c by prior knowledge (cleartext; HAProxy ``bind … proto h2``)
t. HTTP/2 over TLS 1.3, ALPN h2 (HAProxy ``bind … ssl crt … alpn h2,http/1.1``)

``--only c`` (or ``t``): that scenario alone. ``--rounds N``: the two proxies alternate N
times for each scenario; the table has each one's
median req/s and CPU per request, and a line the CPU ratio of each round (the machine is
shared: one round's ratio swings).

Then, with ``--profile S``, quiesce runs again under cProfile for S seconds of scenario (c)
and the summary says where its time goes (by package, and the top functions by own time):
cProfile slows everything, so only the shares mean something, not the totals.

With ``--write FILE`` the results replace the block between the h2-results markers of the
"## HTTP/2" section (created if missing).
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from proxy_bench import (
    HERE,
    OTHER_CPU,
    PROXY_CPU,
    Proxy,
    Result,
    cpu_seconds,
    ensure_tools,
    free_port,
    pinned,
    raise_nofile,
    ratio,
    start_nginx,
    wait_port,
)
from tls_bench import make_certs

START = "<!-- h2-results:start -->"
END = "<!-- h2-results:end -->"
H2LOAD = ["-t1", "-c50", "-m10"]
SCENARIOS = [
    ("c", "h2c by prior knowledge", "http"),
    ("t", "HTTP/2 over TLS (ALPN h2)", "https"),
]


def h2load(url: str, seconds: int, opts: list[str] = H2LOAD) -> tuple[float, int, str]:
    """(req/s, failed, output) of ``h2load -D seconds`` against ``url``."""
    cmd = pinned(OTHER_CPU, ["h2load", *opts, "-D", str(seconds), url])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    f = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not m or not f:
        raise RuntimeError(out)
    return float(m.group(1)), int(f.group(2)) + int(f.group(3)), out


def measure(proxy: Proxy, url: str, seconds: int) -> Result:
    h2load(url, 2)  # warm-up
    before = cpu_seconds(proxy.pid)
    rps, failed, _ = h2load(url, seconds)
    r = Result()
    r.cpu_s = cpu_seconds(proxy.pid) - before
    r.rps = rps
    r.extra["failed"] = float(failed)
    return r


def start_haproxy_h2(tmp: Path, backend: int, both: Path) -> Proxy:
    tls, plain = free_port(), free_port()
    conf = tmp / "haproxy-h2.cfg"
    conf.write_text(
        f"""
global
  nbthread 1
  ulimit-n 20000
  maxconn 9950
  log stderr format raw local0 emerg

defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 10s
  timeout http-keep-alive 300s
  maxconn 9950
  option http-keep-alive
  option forwardfor

frontend tls
  bind 127.0.0.1:{tls} ssl crt {both} alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend pool

frontend plain
  bind 127.0.0.1:{plain} proto h2
  default_backend pool

backend pool
  server s1 127.0.0.1:{backend}
"""
    )
    cmd = ["/usr/sbin/haproxy", "-db", "-f", str(conf)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.DEVNULL)
    wait_port(tls)
    wait_port(plain)
    return Proxy("haproxy", proc, tls, plain, " ".join(cmd))


def quiesce_config(tmp: Path, backend: int, cert: Path, key: Path) -> Path:
    # 500 streams in flight need 500 server connections (HTTP/1.1 upstream); HAProxy keeps
    # every idle one (pool-max-conn -1), quiesce 64 a server by default: keep them all too
    pool = {
        "servers": [{"name": "s1", "address": f"127.0.0.1:{backend}"}],
        "max_idle_per_server": 1000,
    }
    common = {"protocol": "http", "pool": "pool", "client_idle_timeout": "300s"}
    tls = {"certificates": [{"cert": str(cert), "key": str(key)}], "alpn": ["h2", "http/1.1"]}
    config = {
        "pools": {"pool": pool},
        "services": {
            "tls": {"listen": "127.0.0.1:0", "tls": tls, **common},
            "plain": {"listen": "127.0.0.1:0", **common},
        },
    }
    path = tmp / "quiesce-h2.json"
    path.write_text(json.dumps(config))
    return path


def start_quiesce_h2(config: Path, profile: Path | None = None) -> Proxy:
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [str(HERE / "quiesce_proxy.py"), str(config)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ports = json.loads(proc.stdout.readline())["ports"]
    return Proxy("quiesce", proc, ports["tls"], ports["plain"], " ".join(cmd))


def profile_summary(path: Path, top: int = 14) -> list[str]:
    """Own time by package, and the functions with the most own time."""
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    groups: dict[str, float] = defaultdict(float)
    for (file, _line, _name), (_cc, _nc, tt, _ct, _callers) in raw.items():
        groups[_group(file)] += tt
    lines = ["| where (own time) | share |", "|---|---:|"]
    for name, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        if tt / total >= 0.005:
            lines.append(f"| {name} | {tt / total:.1%} |")
    lines += ["", "| function (own time) | share | calls |", "|---|---:|---:|"]
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (file, line, name), (_cc, nc, tt, _ct, _callers) in ranked:
        where = _short(file)
        lines.append(f"| `{where}:{line} {name}` | {tt / total:.1%} | {nc:,} |")
    return lines


def _group(file: str) -> str:
    for key, label in (
        # (ngh2's methods are Cython's: cProfile does not see them, their time is the
        # own time of the session.py functions that call them)
        ("/quiesce/dataplane/h2/", "quiesce.dataplane.h2 (the HTTP/2 front end, ngh2 in it)"),
        ("/quiesce/dataplane/h1/", "quiesce.dataplane.h1 (the exchange, upstream side)"),
        ("/quiesce/", "quiesce (other)"),
        ("/h2/", "h2 (the library)"),
        ("/hpack/", "hpack"),
        ("/hyperframe/", "hyperframe"),
        ("/asyncio/", "asyncio (uvloop's loop: its C, socket reads and writes, epoll)"),
        ("/enum.py", "enum (h2's flags and states)"),
    ):
        if key in file:
            return label
    if file == "~":
        return "built-ins (socket writes, bytes, dicts: called from the above)"
    return "other"


def _short(file: str) -> str:
    for key in ("/quiesce/", "/h2/", "/hpack/", "/hyperframe/", "/asyncio/"):
        if key in file:
            return key.strip("/") + "/" + file.split(key, 1)[1]
    return Path(file).name if file != "~" else "~"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--profile", type=int, default=6, help="seconds under cProfile (0: none)")
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--only", default="ct", help="scenarios to run (c, t; default both)")
    args = ap.parse_args()
    ensure_tools()
    raise_nofile()
    results: dict[str, dict[str, Result]] = {}
    rounds: dict[str, list[float]] = {}  # a scenario's CPU ratio in each round
    commands: dict[str, str] = {}
    prof_lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="quiesce-h2-bench-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)
        cert, key, both = make_certs(tmp)["ecdsa"]
        backend = start_nginx(tmp)
        config = quiesce_config(tmp, backend.port, cert, key)
        try:
            for skey, _title, scheme in SCENARIOS:
                if skey not in args.only:
                    continue
                runs: dict[str, list[Result]] = {"quiesce": [], "haproxy": []}
                for _ in range(args.rounds):
                    for name in ("quiesce", "haproxy"):
                        if name == "quiesce":
                            proxy = start_quiesce_h2(config)
                        else:
                            proxy = start_haproxy_h2(tmp, backend.port, both)
                        try:
                            port = proxy.l4 if scheme == "http" else proxy.l7
                            url = f"{scheme}://127.0.0.1:{port}/"
                            res = measure(proxy, url, args.duration)
                            runs[name].append(res)
                            commands[name] = proxy.command
                            print(f"{skey} {name}: {res}", file=sys.stderr)
                        finally:
                            proxy.stop()
                results[skey] = {n: median_result(rs, args.duration) for n, rs in runs.items()}
                rounds[skey] = [
                    cpu_us(q, args.duration) / cpu_us(h, args.duration)
                    for q, h in zip(runs["quiesce"], runs["haproxy"], strict=True)
                ]
            if args.profile:
                out = tmp / "quiesce.prof"
                proxy = start_quiesce_h2(config, out)
                try:
                    h2load(f"http://127.0.0.1:{proxy.l4}/", 1)
                    h2load(f"http://127.0.0.1:{proxy.l4}/", args.profile)
                finally:
                    proxy.proc.send_signal(signal.SIGTERM)
                    proxy.proc.wait(30)
                deadline = time.monotonic() + 10
                while not out.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                prof_lines = profile_summary(out)
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    text = render(results, commands, prof_lines, args, rounds)
    print(text)
    if args.write is not None:
        write_block(args.write, text)
    return 0


def cpu_us(r: Result, duration: int) -> float:
    return r.cpu_s / (r.rps * duration) * 1e6 if r.rps else 0.0


def median_result(rs: list[Result], duration: int) -> Result:
    """The median req/s and the median CPU per request of a proxy's rounds (as one Result)."""
    rps = sorted(r.rps for r in rs)[len(rs) // 2]
    us = sorted(cpu_us(r, duration) for r in rs)[len(rs) // 2]
    out = Result()
    out.rps = rps
    out.cpu_s = us * rps * duration / 1e6
    out.extra["failed"] = sum(r.extra.get("failed", 0.0) for r in rs)
    return out


def render(
    results: dict[str, dict[str, Result]],
    commands: dict[str, str],
    prof: list[str],
    args: argparse.Namespace,
    rounds: dict[str, list[float]],
) -> str:
    hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    lv = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        START,
        f"{hv.split(' - ')[0]} · {lv} · both proxies pinned to CPU {PROXY_CPU}, nginx and "
        f"h2load to CPU {OTHER_CPU}; each cell a fresh proxy process measured for "
        f"{args.duration}s after a 2s warm-up, "
        + (
            "one cell each"
            if args.rounds == 1
            else f"alternating {args.rounds} rounds: medians, failed requests summed"
        )
        + ". Ratio = quiesce / HAProxy.",
        "",
        "| scenario | metric | quiesce | HAProxy | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for key, title, _ in SCENARIOS:
        cell = results.get(key)
        if not cell:
            continue
        q, h = cell.get("quiesce", Result()), cell.get("haproxy", Result())
        target = "≥ 0.5" if key == "c" else ""
        lines.append(
            f"| ({key}) {title} | req/s | {q.rps:,.0f} | {h.rps:,.0f} | "
            f"{ratio(q.rps, h.rps)} | {target} |"
        )
        qc, hc = cpu_us(q, args.duration), cpu_us(h, args.duration)
        lines.append(f"| | CPU µs per request | {qc:.1f} | {hc:.1f} | {ratio(qc, hc)} | |")
        if len(rounds.get(key, ())) > 1:
            each = ", ".join(f"{x:.2f}" for x in rounds[key])
            lines.append(f"| | CPU ratio, each round | | | {each} | |")
        lines.append(
            f"| | failed requests | {q.extra.get('failed', 0):.0f} | "
            f"{h.extra.get('failed', 0):.0f} | | |"
        )
    if prof:
        lines += [
            "",
            f"Where quiesce's time goes, (c) under cProfile for {args.profile}s "
            "(shares of own time; cProfile's overhead inflates every call alike):",
            "",
            *prof,
        ]
    again = f" --rounds {args.rounds}" if args.rounds > 1 else ""
    lines += ["", f"Reproduce: `python3 bench/h2_bench.py{again} --write BENCHMARKS.md`.", ""]
    lines.append(f"- `taskset -c {OTHER_CPU} h2load {' '.join(H2LOAD)} -D {args.duration} URL`")
    for name in ("quiesce", "haproxy"):
        if name in commands:
            lines.append(f"- {name}: `taskset -c {PROXY_CPU} {commands[name]}`")
    lines.append(END)
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    """The block replaces the one between the markers, or starts a "## HTTP/2" section."""
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        path.write_text(pattern.sub(lambda _: block, text))
    else:
        head = "## HTTP/2 (2026-12-06, issue 16: benchmark (c))"
        path.write_text(text.rstrip("\n") + "\n\n" + head + "\n\n" + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
