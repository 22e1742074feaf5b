#!/usr/bin/env python3
"""How fast the ``quiesce`` command starts (issue 12, item 6): ``quiesce --version`` and a real
admin verb (``set server web/web1 maintenance --force``, then ``clear``) against a running
``quiesce demo``, each run ``--runs`` times in a fresh interpreter; wall time and CPU time
(user + system) per run, median and minimum. With ``--old-src DIR`` (the ``src`` folder of a
``git worktree`` of an older commit, C extensions need not be built) the same runs use that
code too, interleaved, for an A/B in one run. ``python -X importtime`` of the command's own
module is reported as well.

    python3 bench/cli_startup.py --runs 10
    git worktree add /tmp/old d064a94 && python3 bench/cli_startup.py --old-src /tmp/old/src
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def import_ms(env: dict[str, str], module: str) -> float:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--old-src", help="src/ of an older checkout, for an A/B in the same run")
    args = ap.parse_args()
    demo = subprocess.Popen(
        [sys.executable, "-m", "quiesce", "demo", "--port", "0", "--admin-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    admin = password = None
    assert demo.stdout is not None
    for line in demo.stdout:
        m = re.search(
            r"dashboard and API\s+http://127\.0\.0\.1:(\d+)/\s+\(user admin, password (\S+)\)", line
        )
        if m:
            admin, password = m.group(1), m.group(2)
        if "ready" in line:
            break
    if admin is None:
        demo.kill()
        raise SystemExit("the demo did not print its admin port")
    variants: dict[str, dict[str, str]] = {}
    base = dict(os.environ, QUIESCE_HOSTS=f"127.0.0.1:{admin}", QUIESCE_USER="admin")
    base["QUIESCE_PASSWORD"] = password or ""
    variants["this checkout"] = dict(base, PYTHONPATH=str(HERE / "src"))
    if args.old_src:
        variants["old"] = dict(base, PYTHONPATH=str(Path(args.old_src).resolve()))
    q = [sys.executable, "-m", "quiesce"]
    cases = {
        "--version": [[*q, "--version"]],
        "maintenance --force / clear": [
            [*q, "set", "server", "web/web1", "maintenance", "--force"],
            [*q, "clear", "server", "web/web1", "maintenance"],
        ],
        "python -c pass (floor)": [[sys.executable, "-c", "pass"]],
    }
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for _ in range(args.runs):
            for case, cmds in cases.items():
                for name, env in variants.items():
                    for cmd in cmds:
                        results.setdefault((case, name), []).append(run(cmd, env))
    finally:
        demo.terminate()
        demo.wait(10)
    print(f"{args.runs} runs each, load average {os.getloadavg()[0]:.2f}\n")
    print("| command | code | wall median | wall min | CPU median |")
    print("|---|---|---|---|---|")
    for (case, name), rows in results.items():
        walls = [w for w, _ in rows]
        cpus = [c for _, c in rows]
        print(
            f"| {case} | {name} | {statistics.median(walls) * 1000:.0f} ms "
            f"| {min(walls) * 1000:.0f} ms | {statistics.median(cpus) * 1000:.0f} ms |"
        )
    print()
    for name, env in variants.items():
        module = (
            "quiesce.main"
            if (Path(env["PYTHONPATH"]) / "quiesce/main.py").exists()
            else "quiesce.cli"
        )
        print(f"importtime of {module} ({name}): {import_ms(env, module):.0f} ms cumulative")
    return 0


if __name__ == "__main__":
    sys.exit(main())
