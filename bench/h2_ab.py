#!/usr/bin/env python3
"""HTTP/2 A/B between trees: quiesce alone over h2c, ``h2load -t1 -c50 -m10``, the trees
alternating in one run, CPU µs per request each (issue 16, benchmark (c)).

    git worktree add /tmp/wt-old COMMIT   # (copy the built .so files of src/quiesce too)
    python3 bench/h2_ab.py /tmp/wt-old /work/main [--rounds 3] [--duration 6] [--gc] [--h1]

Same machinery as bench/h2_bench.py (nginx back end, the proxy pinned to CPU 1, h2load and
nginx to CPU 0, CPU from /proc/PID/stat); each tree's proxy runs with ``PYTHONPATH=TREE/src``.
Prints each cell (with the proxy's resident set at the end of the load) and each tree's
median. With ``--gc`` each proxy also times its cyclic garbage collections (``gc.callbacks``,
from a ``sitecustomize`` put first on its path) and the share of its CPU they took is
printed. ``--h1``: HTTP/1.1 keep-alive instead (``h2load --h1 -t1 -c50 -m1``, the same
listener), to see that a change for HTTP/2 costs HTTP/1.1 nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from h2_bench import H2LOAD, h2load, quiesce_config
from proxy_bench import (
    HERE,
    PROXY_CPU,
    cpu_seconds,
    ensure_tools,
    pinned,
    raise_nofile,
    start_nginx,
)
from tls_bench import make_certs

GC_SITE = """
import gc, os, threading, time
_t = [0.0, 0.0]
def _cb(phase, info):
    if phase == "start":
        _t[0] = time.process_time()
    else:
        _t[1] += time.process_time() - _t[0]
gc.callbacks.append(_cb)
def _dump():
    while True:  # (written twice a second: SIGTERM ends the proxy without atexit)
        time.sleep(0.5)
        path = os.environ["QUIESCE_GC_OUT"]
        with open(path + ".tmp", "w") as f:
            f.write(f"{_t[1]} {time.process_time()}")
        os.replace(path + ".tmp", path)  # (never read half written)
threading.Thread(target=_dump, daemon=True).start()
"""


def rss_mib(pid: int) -> float:
    """The process's resident set now (VmRSS), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


H1LOAD = ["--h1", "-t1", "-c50", "-m1"]


def cell(
    tree: str, config: Path, seconds: int, site: Path | None, opts: list[str] = H2LOAD
) -> tuple[float, float, float, float]:
    """(req/s, CPU µs per request, GC share of the process's CPU or -1, RSS MiB at the end
    of the load)."""
    env = dict(os.environ, PYTHONPATH=str(Path(tree) / "src"))
    out = None
    if site is not None:
        out = site / f"gc-{time.monotonic_ns()}"
        env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
        env["QUIESCE_GC_OUT"] = str(out)
    cmd = [sys.executable, str(HERE / "quiesce_proxy.py"), str(config)]
    proc = subprocess.Popen(pinned(PROXY_CPU, cmd), stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["ports"]["plain"]
        url = f"http://127.0.0.1:{port}/"
        h2load(url, 2, opts)
        before = cpu_seconds(proc.pid)
        rps, failed, _ = h2load(url, seconds, opts)
        cpu = cpu_seconds(proc.pid) - before
        rss = rss_mib(proc.pid)
        time.sleep(0.6)
    finally:
        proc.terminate()
        proc.wait()
    if failed:
        raise RuntimeError(f"{tree}: {failed} failed requests")
    share = -1.0
    if out is not None:
        gc_s, total = map(float, out.read_text().split())
        share = gc_s / total
    return rps, cpu / (rps * seconds) * 1e6, share, rss


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--gc", action="store_true")
    ap.add_argument("--h1", action="store_true", help="HTTP/1.1 keep-alive (h2load --h1)")
    args = ap.parse_args()
    ensure_tools()
    raise_nofile()
    results: dict[str, list[float]] = {t: [] for t in args.trees}
    shares: dict[str, list[float]] = {t: [] for t in args.trees}
    with tempfile.TemporaryDirectory(prefix="quiesce-h2-ab-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)
        site = None
        if args.gc:
            site = tmp / "site"
            site.mkdir()
            (site / "sitecustomize.py").write_text(GC_SITE)
        cert, key, _both = make_certs(tmp)["ecdsa"]
        backend = start_nginx(tmp)
        config = quiesce_config(tmp, backend.port, cert, key)
        try:
            for _ in range(args.rounds):
                for tree in args.trees:
                    rps, us, share, rss = cell(
                        tree, config, args.duration, site, H1LOAD if args.h1 else H2LOAD
                    )
                    results[tree].append(us)
                    shares[tree].append(share)
                    gc_note = f", GC {share:.1%} of its CPU" if share >= 0 else ""
                    print(
                        f"{tree}: {rps:,.0f} req/s, {us:.1f} µs/req{gc_note}, RSS {rss:.1f} MiB",
                        flush=True,
                    )
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    for tree in args.trees:
        v = sorted(results[tree])
        line = f"{tree}: median {v[len(v) // 2]:.1f} µs per request ({args.rounds} rounds)"
        if args.gc:
            g = sorted(shares[tree])
            line += f", GC median {g[len(g) // 2]:.1%} of its CPU"
        print(line)


if __name__ == "__main__":
    main()
