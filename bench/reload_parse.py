#!/usr/bin/env python3
"""The reload worker's parse and validation of a config file (issue 14), in-process: CPU
seconds of the full parse (``quiesce.config.loader.load_text``, what ``quiesce check`` does)
against the incremental one (``quiesce.config.reparse.load_text`` with the last file's
cache), for a file of ``--servers`` gaining ``--add`` servers and losing them again.

    python3 bench/reload_parse.py [--servers 10000] [--add 1000] [--style flow|block]

``flow``: a server a line, ``- {name: s1, address: ...}``; ``block``: ``- name: s1`` and
its ``address:`` and ``weight:`` on the lines below. Each figure is the best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def config(n: int, style: str) -> str:
    if style == "flow":
        item = "      - {{name: s{i}, address: 127.0.0.1:{p}}}"
    else:
        item = "      - name: s{i}\n        address: 127.0.0.1:{p}\n        weight: 2"
    servers = "\n".join(item.format(i=i, p=9000 + i % 1000) for i in range(n))
    return f"""admin:
  listen: 127.0.0.1:0
pools:
  big:
    servers:
{servers}
services:
  www: {{listen: 127.0.0.1:0, pool: big}}
"""


def main() -> None:
    from quiesce.config.loader import load_text as full
    from quiesce.config.reparse import ParseCache, load_text

    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--add", type=int, default=1_000)
    ap.add_argument("--style", choices=("flow", "block"), default="flow")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    small, big = config(args.servers, args.style), config(args.servers + args.add, args.style)

    def cpu(fn: Callable[..., object], *a: object) -> float:
        t = time.process_time()
        fn(*a)
        return time.process_time() - t

    rows: dict[str, list[float]] = {
        "full": [],
        "first (empty cache)": [],
        f"+{args.add}": [],
        f"-{args.add}": [],
    }
    for _ in range(args.repeat):
        rows["full"].append(cpu(full, big))
        cache = ParseCache()
        rows["first (empty cache)"].append(cpu(load_text, small, cache))
        rows[f"+{args.add}"].append(cpu(load_text, big, cache))
        rows[f"-{args.add}"].append(cpu(load_text, small, cache))
    assert load_text(big, cache) == full(big)
    print(f"| {args.style}, {args.servers} servers | CPU s (best of {args.repeat}) |")
    print("|---|---|")
    for name, xs in rows.items():
        print(f"| {name} | {min(xs):.3f} |")


if __name__ == "__main__":
    main()
