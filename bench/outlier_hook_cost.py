"""The cost of outlier detection's report on the request path, alone, for callgrind:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python3 bench/outlier_hook_cost.py 200000 off|on      # and 100000: the difference
                                                               # / 100,000 per request

Builds a registry and a connection table for a one-server pool (``on``: with
``outlier_detection: {}``) and calls ``request_started`` and ``request_finished`` (a 200) N
times: what the data plane does per request around the report (BENCHMARKS.md, "Outlier
detection")."""

from __future__ import annotations

import sys
from typing import Any

from quiesce.config import parse_config
from quiesce.dataplane import ConnectionTable
from quiesce.state.registry import Registry


def main(n: int, on: bool) -> None:
    pool: dict[str, Any] = {"servers": [{"name": "s", "address": "127.0.0.1:1"}]}
    if on:
        pool["outlier_detection"] = {}
    registry = Registry(parse_config({"pools": {"p": pool}}))
    table = ConnectionTable(registry)
    server = registry.pool("p").servers[0]
    conn: Any = object()
    for _ in range(n):
        table.request_started(server, conn, None)
        table.request_finished(server, conn, 200, False)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] == "on")
