"""A server's failure counters in /metrics, read at scrape time (quiesce.frontends.metrics
yields these): retries and redispatches (pools.X.retries: quiesce.core.retry), counted on the
server that failed the request (HAProxy's ``wretr`` and ``wredis``), and the requests it
failed for good, connects (``econ``) and responses (``eresp``; quiesce.dataplane.h1 and
.tcp count both), and of those the data transfers it aborted (``srv_abrt``: a body cut
short, an L4 reset). quiesce's ``quiesce_server_{retries,redispatches,connection_errors,
response_errors,aborts}_total`` and, with ``haproxy_compatible``, HAProxy 2.6's
``haproxy_{backend,server}_retry_warnings_total``, ``..._redispatch_warnings_total``,
``..._connection_errors_total``, ``..._response_errors_total`` and
``..._server_aborts_total``."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric

from quiesce.state.registry import PoolRuntime

# (ServerRuntime attribute, quiesce's name and help, HAProxy's name and help)
_COUNTERS = (
    (
        "retries",
        "quiesce_server_retries",
        "Requests (L4: connections) sent again after this server failed them (wretr)",
        "retry_warnings",
        "Total number of server connection retries",
    ),
    (
        "redispatches",
        "quiesce_server_redispatches",
        "Of those, the ones sent to another server (wredis)",
        "redispatch_warnings",
        "Total number of server redispatches due to connection failures",
    ),
    (
        "conn_errors",
        "quiesce_server_connection_errors",
        "Requests (L4: connections) whose connect to this server failed, retries spent (econ)",
        "connection_errors",
        "Total number of connection errors",
    ),
    (
        "resp_errors",
        "quiesce_server_response_errors",
        "Responses this server closed, cut, garbled or did not send in time (eresp)",
        "response_errors",
        "Total number of response errors",
    ),
    (
        "srv_aborts",
        "quiesce_server_aborts",
        "Of those, the data transfers this server aborted: a response body cut short, an L4 "
        "reset (srv_abrt)",
        "server_aborts",
        "Total number of requests or connections aborted by the server since the worker "
        "process started",
    ),
)


def retry_metrics(pools: Iterable[PoolRuntime], per_server: bool) -> list[Metric]:
    labels = ["pool", "server"]
    families: list[Metric] = []
    for attr, name, text, _, _ in _COUNTERS:
        family = CounterMetricFamily(name, text, labels=labels)
        for pool in pools if per_server else ():
            for s in pool.servers:
                family.add_metric([pool.name, s.name], float(getattr(s, attr)))
        families.append(family)
    return families


def haproxy_retry_metrics(pools: Iterable[PoolRuntime], per_server: bool) -> list[Metric]:
    pools = list(pools)
    families: list[Metric] = []
    for kind, labels in (("backend", ["proxy"]), ("server", ["proxy", "server"])):
        if kind == "server" and not per_server:
            break
        for attr, _, _, name, text in _COUNTERS:
            family = CounterMetricFamily(f"haproxy_{kind}_{name}", text, labels=labels)
            for pool in pools:
                if kind == "backend":
                    n = sum(getattr(s, attr) for s in pool.servers)
                    if attr == "conn_errors":
                        n += pool.conn_errors  # the requests no server took (show stat's)
                    family.add_metric([pool.name], float(n))
                    continue
                for s in pool.servers:
                    family.add_metric([pool.name, s.name], float(getattr(s, attr)))
            families.append(family)
    return families


__all__ = ["haproxy_retry_metrics", "retry_metrics"]
