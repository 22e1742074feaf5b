"""Retries and redispatches in /metrics (pools.X.retries: quiesce.core.retry), counted on the
server that failed the request (HAProxy's ``wretr`` and ``wredis``): quiesce's
``quiesce_server_retries_total``/``quiesce_server_redispatches_total`` and, with
``haproxy_compatible``, HAProxy 2.6's ``haproxy_{backend,server}_retry_warnings_total`` and
``..._redispatch_warnings_total``. Read at scrape time (quiesce.frontends.metrics yields
these)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric

from quiesce.state.registry import PoolRuntime

_RETRIES = "Requests (L4: connections) sent again after this server failed them (wretr)"
_REDISPATCHES = "Of those, the ones sent to another server (wredis)"
_H_RETRIES = "Total number of server connection retries"
_H_REDISPATCHES = "Total number of server redispatches due to connection failures"


def retry_metrics(pools: Iterable[PoolRuntime], per_server: bool) -> list[Metric]:
    labels = ["pool", "server"]
    retries = CounterMetricFamily("quiesce_server_retries", _RETRIES, labels=labels)
    redispatches = CounterMetricFamily("quiesce_server_redispatches", _REDISPATCHES, labels=labels)
    for pool in pools if per_server else ():
        for s in pool.servers:
            retries.add_metric([pool.name, s.name], float(s.retries))
            redispatches.add_metric([pool.name, s.name], float(s.redispatches))
    return [retries, redispatches]


def haproxy_retry_metrics(pools: Iterable[PoolRuntime], per_server: bool) -> list[Metric]:
    families: list[Metric] = []
    for kind, labels in (("backend", ["proxy"]), ("server", ["proxy", "server"])):
        if kind == "server" and not per_server:
            break
        retries = CounterMetricFamily(f"haproxy_{kind}_retry_warnings", _H_RETRIES, labels=labels)
        redispatches = CounterMetricFamily(
            f"haproxy_{kind}_redispatch_warnings", _H_REDISPATCHES, labels=labels
        )
        for pool in pools:
            if kind == "backend":
                retries.add_metric([pool.name], float(sum(s.retries for s in pool.servers)))
                n = sum(s.redispatches for s in pool.servers)
                redispatches.add_metric([pool.name], float(n))
                continue
            for s in pool.servers:
                retries.add_metric([pool.name, s.name], float(s.retries))
                redispatches.add_metric([pool.name, s.name], float(s.redispatches))
        families += (retries, redispatches)
    return families


__all__ = ["haproxy_retry_metrics", "retry_metrics"]
