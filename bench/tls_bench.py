#!/usr/bin/env python3
"""TLS benchmark: quiesce and HAProxy terminating TLS side by side, same certificates, same
back end, same wrk, one run (issue 16, benchmarks (a) and (b)).

    python3 bench/tls_bench.py [--duration 8] [--write BENCHMARKS.md]

The machinery is bench/proxy_bench.py's (nginx back end with one worker, each proxy a fresh
process pinned to one core, nginx and wrk on the other, CPU from /proc/PID/stat). trustme
makes one CA and two server certificates, ECDSA P-256 and RSA 2048; both proxies serve the
same files. Both speak TLS 1.3 (the clients' default). Scenarios:

p. cleartext L7 keep-alive (the reference: what TLS adds)  wrk -t1 -c50 http://
a. TLS keep-alive, ECDSA P-256                             wrk -t1 -c50 https://
b. a full handshake per connection, ECDSA P-256            4 × openssl s_time -new -www /
r. a full handshake per connection, RSA 2048               the same with the RSA certificate
s. a new connection per request, session resumed, ECDSA    wrk -t1 -c50 -H 'Connection: close'

wrk keeps its TLS session across reconnections (SSL_clear keeps it: measured 442 resumed
of 446 connections), so its new connections are resumed handshakes (TLS 1.3 tickets, still
an ECDHE key exchange, no signature): scenario (s). ``openssl s_time -new`` starts a new
session every time, one connection at a time (four of them run at once), each
``GET / HTTP/1.0``: full handshakes, (b) and (r). Neither client saturates the proxy
here: the proxy's CPU µs per handshake, and the handshakes one core could do (10⁶ / that),
are what compare.

With ``--write FILE`` the results replace the block between the tls-results markers of the
"## TLS" section (created if missing).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme
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
    run_wrk_scenario,
    start_nginx,
    wait_port,
)

START = "<!-- tls-results:start -->"
END = "<!-- tls-results:end -->"

SCENARIOS = [
    ("p", "cleartext L7 keep-alive (reference)", "ecdsa", "http", ["-t1", "-c50"]),
    ("a", "TLS keep-alive, ECDSA P-256", "ecdsa", "https", ["-t1", "-c50"]),
    ("b", "full TLS handshake per connection, ECDSA P-256", "ecdsa", "s_time", []),
    ("r", "full TLS handshake per connection, RSA 2048", "rsa", "s_time", []),
    (
        "s",
        "new connection per request, session resumed, ECDSA",
        "ecdsa",
        "https",
        ["-t1", "-c50", "-H", "Connection: close"],
    ),
]
HANDSHAKES = "brs"  # scenarios counted in handshakes


def s_time(proxy: Proxy, port: int, duration: int, clients: int = 4) -> Result:
    """Full handshakes from ``clients`` openssl s_time processes at once (each one
    connection at a time) for ``duration`` seconds, after a 2 s warm-up."""

    def run(seconds: int) -> int:
        cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-www", "/"]
        procs = [
            subprocess.Popen(
                pinned(OTHER_CPU, [*cmd, "-time", str(seconds)]),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(clients)
        ]
        total = 0
        for proc in procs:
            out, _ = proc.communicate()
            m = re.search(r"(\d+) connections in ([\d.]+)s", out)
            total += int(m.group(1)) if m else 0
        return total

    run(2)
    before = cpu_seconds(proxy.pid)
    n = run(duration)
    r = Result()
    r.cpu_s = cpu_seconds(proxy.pid) - before
    r.rps = n / duration
    return r


def make_certs(tmp: Path) -> dict[str, tuple[Path, Path, Path]]:
    """(cert, key, cert+key for HAProxy) per key type."""
    out = {}
    for name, kind in (("ecdsa", trustme.KeyType.ECDSA), ("rsa", trustme.KeyType.RSA)):
        ca = trustme.CA(key_type=kind)
        leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=kind)
        cert, key, both = tmp / f"{name}.pem", tmp / f"{name}.key", tmp / f"{name}.both.pem"
        chain = b"".join(b.bytes() for b in leaf.cert_chain_pems)
        cert.write_bytes(chain)
        key.write_bytes(leaf.private_key_pem.bytes())
        both.write_bytes(chain + leaf.private_key_pem.bytes())
        out[name] = (cert, key, both)
    return out


def start_haproxy_tls(tmp: Path, backend: int, both: Path) -> Proxy:
    tls, plain = free_port(), free_port()
    conf = tmp / "haproxy-tls.cfg"
    conf.write_text(
        f"""
global
  nbthread 1
  ulimit-n 20000
  maxconn 9950
  log stderr format raw local0 emerg
  ssl-default-bind-options ssl-min-ver TLSv1.2

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
  bind 127.0.0.1:{tls} ssl crt {both} alpn http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend pool

frontend plain
  bind 127.0.0.1:{plain}
  default_backend pool

backend pool
  server s1 127.0.0.1:{backend}
"""
    )
    haproxy = "/usr/sbin/haproxy"
    cmd = [haproxy, "-db", "-f", str(conf)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.DEVNULL)
    wait_port(tls)
    wait_port(plain)
    return Proxy("haproxy", proc, tls, plain, " ".join(cmd))


def start_quiesce_tls(tmp: Path, backend: int, cert: Path, key: Path) -> Proxy:
    pool = {"servers": [{"name": "s1", "address": f"127.0.0.1:{backend}"}]}
    common = {"protocol": "http", "pool": "pool", "client_idle_timeout": "300s"}
    config = {
        "pools": {"pool": pool},
        "services": {
            "tls": {
                "listen": "127.0.0.1:0",
                "tls": {"certificates": [{"cert": str(cert), "key": str(key)}]},
                **common,
            },
            "plain": {"listen": "127.0.0.1:0", **common},
        },
    }
    path = tmp / "quiesce-tls.json"
    path.write_text(json.dumps(config))
    cmd = [sys.executable, str(HERE / "quiesce_proxy.py"), str(path)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE)
    assert proc.stdout is not None
    ports = json.loads(proc.stdout.readline())["ports"]
    return Proxy("quiesce", proc, ports["tls"], ports["plain"], " ".join(cmd))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--write", type=Path, default=None)
    ap.add_argument("--only", default="pabrs")
    ap.add_argument("--rounds", type=int, default=2, help="cells per proxy; the best is kept")
    args = ap.parse_args()
    ensure_tools()
    raise_nofile()
    results: dict[str, dict[str, Result]] = {}
    commands: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="quiesce-tls-bench-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)
        certs = make_certs(tmp)
        backend = start_nginx(tmp)
        try:
            for key, _title, kind, scheme, wargs in SCENARIOS:
                if key not in args.only:
                    continue
                cert, priv, both = certs[kind]
                results[key] = {}
                for name in ("quiesce", "haproxy") * args.rounds:
                    if name == "quiesce":
                        proxy = start_quiesce_tls(tmp, backend.port, cert, priv)
                    else:
                        proxy = start_haproxy_tls(tmp, backend.port, both)
                    try:
                        port = proxy.l4 if scheme == "http" else proxy.l7
                        if scheme == "s_time":
                            res = s_time(proxy, port, args.duration)
                            commands[key] = (
                                f"openssl s_time -connect 127.0.0.1:PORT -new -www / "
                                f"-time {args.duration}"
                            )
                        else:
                            url = f"{scheme}://127.0.0.1:{port}/"
                            res = run_wrk_scenario(proxy, url, wargs, args.duration)
                            commands[key] = "wrk --latency -d {}s {} {}://127.0.0.1:PORT/".format(
                                args.duration,
                                " ".join(f"'{a}'" if " " in a else a for a in wargs),
                                scheme,
                            )
                        best = results[key].get(name)
                        if best is None or res.rps > best.rps:
                            results[key][name] = res
                        commands[name] = proxy.command
                        print(f"{key} {name}: {res}", file=sys.stderr)
                    finally:
                        proxy.stop()
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    text = render(results, commands, args)
    print(text)
    if args.write is not None:
        write_block(args.write, text)
    return 0


def cpu_us(r: Result, duration: int) -> float:
    return r.cpu_s / (r.rps * duration) * 1e6 if r.rps else 0.0


def render(
    results: dict[str, dict[str, Result]], commands: dict[str, str], args: argparse.Namespace
) -> str:
    hv = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    ov = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    lines = [
        START,
        f"{hv.split(' - ')[0]} · {ov} · both proxies pinned to CPU {PROXY_CPU}, nginx and wrk "
        f"to CPU {OTHER_CPU}; each cell a fresh proxy process measured for {args.duration}s "
        f"after a 2s warm-up, {args.rounds} cells each, alternating, the best kept. Ratio = "
        "quiesce / HAProxy. TLS 1.3; (b) and (r): full handshakes (4 openssl s_time -new "
        "at once), (s): resumed ones (wrk keeps its session).",
        "",
        "| scenario | metric | quiesce | HAProxy | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for key, title, _kind, _scheme, _ in SCENARIOS:
        cell = results.get(key)
        if not cell:
            continue
        q, h = cell.get("quiesce", Result()), cell.get("haproxy", Result())
        metric = "handshakes/s" if key in HANDSHAKES else "req/s"
        target = "≥ 0.8" if key in "abr" else ""
        lines.append(
            f"| ({key}) {title} | {metric} | {q.rps:,.0f} | {h.rps:,.0f} | "
            f"{ratio(q.rps, h.rps)} | {target} |"
        )
        qc, hc = cpu_us(q, args.duration), cpu_us(h, args.duration)
        lines.append(f"| | CPU µs per request | {qc:.1f} | {hc:.1f} | {ratio(qc, hc)} | |")
        if key in HANDSHAKES and qc and hc:  # what one core could do, the client not limiting
            lines.append(
                f"| | handshakes per CPU second | {1e6 / qc:,.0f} | {1e6 / hc:,.0f} | "
                f"{ratio(hc, qc)} | ≥ 0.8 |"
            )
        if q.p50_ms or h.p50_ms:  # wrk's (s_time measures no latency)
            lines.append(
                f"| | p50 / p99 ms | {q.p50_ms:.2f} / {q.p99_ms:.2f} | "
                f"{h.p50_ms:.2f} / {h.p99_ms:.2f} | | |"
            )
        if q.extra or h.extra:
            lines.append(f"| | wrk errors | {q.extra} | {h.extra} | | |")
    if "p" in results and "a" in results:
        qp = cpu_us(results["p"]["quiesce"], args.duration)
        qa = cpu_us(results["a"]["quiesce"], args.duration)
        hp = cpu_us(results["p"]["haproxy"], args.duration)
        ha = cpu_us(results["a"]["haproxy"], args.duration)
        lines += [
            "",
            f"What TLS costs per keep-alive request (CPU µs, (a) − (p)): quiesce "
            f"{qa - qp:+.1f}, HAProxy {ha - hp:+.1f}.",
        ]
    lines += ["", "Reproduce: `python3 bench/tls_bench.py --write BENCHMARKS.md`.", ""]
    for key, *_ in SCENARIOS:
        if key in commands:
            lines.append(f"- ({key}) `taskset -c {OTHER_CPU} {commands[key]}`")
    for name in ("quiesce", "haproxy"):
        if name in commands:
            lines.append(f"- {name}: `taskset -c {PROXY_CPU} {commands[name]}`")
    lines.append(END)
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    """The block replaces the one between the markers, or starts a "## TLS" section."""
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        path.write_text(pattern.sub(lambda _: block, text))
    else:
        path.write_text(text.rstrip("\n") + "\n\n## TLS\n\n" + block + "\n")


if __name__ == "__main__":
    sys.exit(main())
