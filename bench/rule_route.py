"""CPU per ``ServiceRouter.route`` (the rules of an HTTP service, sans IO, no sockets): what
the rules' hit counts (``ServiceRouter.hits``, ``GET /api/v1/services``) add per request.

    python3 bench/rule_route.py [--rounds 4] [--old SRC]

A service with two path rules and a monitor URI; three requests: one the first rule takes,
one no rule takes (both rules tried, then the default), and the monitor URI. Best of 7
``timeit`` repeats of 200,000 calls, in ns per call. ``--old /tmp/wt/src``: the same on
another checkout's ``src`` (a subprocess), alternating with this one ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import timeit

CONFIG = """
pools:
  web: {servers: [{name: a, address: 127.0.0.1:8001}]}
  static: {servers: [{name: s, address: 127.0.0.1:8002}]}
services:
  www:
    listen: 127.0.0.1:8080
    pool: web
    monitor_uri: {path: /alive}
    rules:
      - {name: api, if: {path_prefix: /api}, then: {pool: static}}
      - {if: {path_prefix: /static}, then: {pool: static}}
"""
CASES = (("first rule", "/api/x"), ("default (2 rules tried)", "/x"), ("monitor URI", "/alive"))
CALLS = 200_000


def measure() -> dict[str, float]:
    from quiesce.config import load_text
    from quiesce.rules import RequestView, compile_router
    from quiesce.state.registry import Registry

    config = load_text(CONFIG)
    router = compile_router("www", config.services["www"], Registry(config))
    assert router is not None
    out = {}
    for name, path in CASES:
        req = RequestView("GET", path, "h", {}, {}, "1.2.3.4")

        def call(r: RequestView = req) -> object:
            return router.route(r)

        best = min(timeit.repeat(call, number=CALLS, repeat=7))
        out[name] = best / CALLS * 1e9
    return out


def other(src: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src}
    code = "import json, sys; sys.path.insert(0, 'bench'); import rule_route as b; "
    code += "print(json.dumps(b.measure()))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    import json

    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--old", help="another checkout's src, run alternately")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(args.rounds):
        if args.old:
            runs["old"].append(other(args.old))
        runs["new"].append(measure())
    for name, _ in CASES:
        new = sorted(r[name] for r in runs["new"])
        line = f"{name:26} new {new[0]:6.0f}-{new[-1]:4.0f} ns"
        if runs["old"]:
            old = sorted(r[name] for r in runs["old"])
            line += f"   old {old[0]:6.0f}-{old[-1]:4.0f} ns   +{new[0] - old[0]:.0f} ns (best)"
        print(line)


if __name__ == "__main__":
    main()
