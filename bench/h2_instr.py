#!/usr/bin/env python3
"""HTTP/2 A/B between trees in instructions per request: quiesce under valgrind's callgrind,
``h2load -c50 -m10 -n N`` over h2c, the user-space instructions its process executes per
request (issue 16, benchmark (c)). A count, not a time: it does not move with the machine's
load as CPU seconds do (a loaded machine also changes how many streams a loop turn
batches), so a change of a few percent shows on a shared machine. What it leaves out: the
kernel's side of the socket calls (the same for any tree), and the machine's caches.

    git worktree add /tmp/wt-old COMMIT   # (copy the built .so files of src/quiesce too)
    python3 bench/h2_instr.py /tmp/wt-old /work/main [--requests 4000] [--rounds 1]

Each tree's proxy (bench/quiesce_proxy.py, ``PYTHONPATH=TREE/src``) starts with callgrind's
instrumentation off; after a warm-up of the same size it is switched on
(``callgrind_control -i on``) for the measured requests, then the counts are dumped and
the total ``Ir`` divided by the requests. The same nginx back end as bench/h2_bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from h2_bench import quiesce_config
from proxy_bench import HERE, ensure_tools, raise_nofile, start_nginx
from tls_bench import make_certs


def h2load_n(url: str, n: int) -> None:
    out = subprocess.run(
        ["h2load", "-t1", "-c50", "-m10", "-n", str(n), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    f = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not f or int(f.group(1)) != n:
        raise RuntimeError(out)


def cell(tree: str, config: Path, tmp: Path, n: int) -> float:
    """Instructions per request of one proxy process."""
    env = dict(os.environ, PYTHONPATH=str(Path(tree) / "src"))
    out = tmp / f"callgrind-{time.monotonic_ns()}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(HERE / "quiesce_proxy.py"),
        str(config),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert proc.stdout is not None
        port = json.loads(proc.stdout.readline())["ports"]["plain"]
        url = f"http://127.0.0.1:{port}/"
        h2load_n(url, n)  # warm-up (not counted)
        subprocess.run(
            ["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True
        )
        h2load_n(url, n)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.terminate()
        proc.wait(60)
    total = 0
    for dump in tmp.glob(out.name + "*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
                break
        dump.unlink()
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    ensure_tools()
    raise_nofile()
    got: dict[str, list[float]] = {t: [] for t in args.trees}
    with tempfile.TemporaryDirectory(prefix="quiesce-h2-instr-") as t:
        tmp = Path(t)
        tmp.chmod(0o755)
        cert, key, _ = make_certs(tmp)["ecdsa"]
        backend = start_nginx(tmp)
        config = quiesce_config(tmp, backend.port, cert, key)
        try:
            for _ in range(args.rounds):
                for tree in args.trees:
                    ir = cell(tree, config, tmp, args.requests)
                    got[tree].append(ir)
                    print(f"{tree}: {ir:,.0f} instructions per request", flush=True)
        finally:
            backend.proc.terminate()
            backend.proc.wait()
    first = sorted(got[args.trees[0]])[len(got[args.trees[0]]) // 2]
    for tree, irs in got.items():
        med = sorted(irs)[len(irs) // 2]
        print(f"{tree}: median {med:,.0f} instructions per request ({med / first:.3f}x the first)")


if __name__ == "__main__":
    main()
