"""gRPC answers in /metrics: ``quiesce_server_grpc_responses_total{pool,server,grpc_status}``,
the ``grpc-status`` of each call an h2 pool's server answered (its trailers, or a
trailers-only answer's HEADERS: quiesce.dataplane.h2client), by code (0 OK ... 16
UNAUTHENTICATED; -1 a value that is not a number). Read at scrape time
(quiesce.frontends.metrics yields it); a server that never answered a gRPC call has none."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric

from quiesce.state.registry import PoolRuntime

_HELP = "gRPC calls the server answered, by grpc-status (0 OK, 5 NOT_FOUND, 14 UNAVAILABLE...)"


def grpc_metrics(pools: Iterable[PoolRuntime], per_server: bool) -> list[Metric]:
    family = CounterMetricFamily(
        "quiesce_server_grpc_responses", _HELP, labels=["pool", "server", "grpc_status"]
    )
    for pool in pools if per_server else ():
        for s in pool.servers:
            for code, n in sorted(s.grpc_statuses.items()):
                family.add_metric([pool.name, s.name, str(code)], float(n))
    return [family]


__all__ = ["grpc_metrics"]
