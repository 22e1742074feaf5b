"""CPU a registry event costs the metrics' listeners, the HAProxy exporter's
(``HaproxyCollector._on_event``) and quiesce's own (``QuiesceCollector._on_event``), which
every event reaches: a reload's thousand ``server_added``, each oper change.

    python3 bench/haproxy_listener_cost.py [--old /tmp/wt/src] [-n 500000]

ns a call (``time.process_time``, median of 7 rounds) for a ``server_added`` event, an
oper change up -> down (counted) and one down -> up; ``--old``: the same on another
checkout's ``src`` (a subprocess), side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

from quiesce.config import parse_config
from quiesce.core.events import Event, EventKind
from quiesce.frontends.metrics import HaproxyCollector, QuiesceCollector
from quiesce.state.registry import Registry

CASES = {
    "server_added": Event(1.0, EventKind.SERVER_ADDED, "web", "a"),
    "oper up -> down": Event(1.0, EventKind.OPER_CHANGE, "web", "a", "up", "down"),
    "oper down -> up": Event(1.0, EventKind.OPER_CHANGE, "web", "a", "down", "up"),
}


def measure(n: int) -> dict[str, float]:
    registry = Registry(parse_config({"pools": {"web": {"servers": []}}}))
    app = SimpleNamespace(registry=registry)
    out = {}
    for who, collector in (("haproxy", HaproxyCollector(app)), ("quiesce", QuiesceCollector(app))):
        on_event = collector._on_event
        for name, e in CASES.items():
            rounds = []
            for _ in range(7):
                c = time.process_time()
                for _ in range(n):
                    on_event(e)
                rounds.append((time.process_time() - c) / n * 1e9)
            out[f"{who}: {name}"] = statistics.median(rounds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old")
    ap.add_argument("-n", type=int, default=500000)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    new = measure(args.n)
    if args.child:
        for k, v in new.items():
            print(f"{k}\t{v}")
        return
    old: dict[str, float] = {}
    if args.old:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "-n", str(args.n)],
            env={**os.environ, "PYTHONPATH": args.old},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        old = {k: float(v) for k, v in (line.split("\t") for line in out.splitlines())}
    for k, v in new.items():
        before = f"old {old[k]:6.1f} ns | " if k in old else ""
        print(f"{k:27} {before}new {v:6.1f} ns a call (CPU)")


if __name__ == "__main__":
    main()
