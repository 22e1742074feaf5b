"""The pool series of /metrics (``quiesce_pool_*``): eligible servers, size, availability,
sessions, and the pool's queue (max_connections, hold_when_empty: quiesce.core.queue), and
passive outlier detection's ejections (quiesce.core.outlier), read at scrape time
(quiesce.frontends.metrics yields these)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from quiesce.state.runtime import PoolRuntime


def pool_metrics(pools: Iterable[PoolRuntime]) -> list[Metric]:
    labels = ["pool"]
    pe = GaugeMetricFamily("quiesce_pool_eligible_servers", "Eligible servers", labels=labels)
    pt = GaugeMetricFamily("quiesce_pool_servers", "Servers in the pool", labels=labels)
    pa = GaugeMetricFamily(
        "quiesce_pool_available",
        "1 when the pool has a server for new connections",
        labels=labels,
    )
    ps = GaugeMetricFamily("quiesce_pool_sessions", "Live sessions", labels=labels)
    cur = GaugeMetricFamily(
        "quiesce_pool_queue_current", "Requests waiting in the pool's queue now", labels=labels
    )
    most = GaugeMetricFamily(
        "quiesce_pool_queue_max", "The most requests ever waiting in the queue", labels=labels
    )
    served = CounterMetricFamily(
        "quiesce_pool_queue_served", "Requests that left the queue for a server", labels=labels
    )
    timeouts = CounterMetricFamily(
        "quiesce_pool_queue_timeouts",
        "Requests answered at their deadline in the queue (queue_timeout, hold_when_empty)",
        labels=labels,
    )
    wait = GaugeMetricFamily(
        "quiesce_pool_queue_time_seconds",
        "Average wait in the queue of the last 1024 requests that got a server",
        labels=labels,
    )
    for pool in pools:
        q = pool.queue
        lv = [pool.name]
        pe.add_metric(lv, float(pool.eligible_count))
        pt.add_metric(lv, float(len(pool.servers)))
        pa.add_metric(lv, 1.0 if pool.available else 0.0)
        ps.add_metric(lv, float(pool.sessions))
        cur.add_metric(lv, float(q.qcur))
        most.add_metric(lv, float(q.qmax))
        served.add_metric(lv, float(q.served))
        timeouts.add_metric(lv, float(q.timeouts))
        wait.add_metric(lv, q.qtime)
    return [pe, pt, pa, ps, cur, most, served, timeouts, wait]


def ejection_metrics(pools: Iterable[PoolRuntime], per_server: bool) -> list[Metric]:
    """The pools with ``outlier_detection``: servers ejected now, and ejections per server."""
    ejected = GaugeMetricFamily(
        "quiesce_pool_ejected_servers",
        "Servers ejected now by passive outlier detection",
        labels=["pool"],
    )
    ejections = CounterMetricFamily(
        "quiesce_server_ejections",
        "Ejections by passive outlier detection (outlier_detection)",
        labels=["pool", "server"],
    )
    for pool in pools:
        if pool.config.outlier_detection is None:
            continue
        ejected.add_metric([pool.name], float(len(pool.ejected)))
        for s in pool.servers if per_server else ():
            if s.outlier is not None:
                ejections.add_metric([pool.name, s.name], float(s.outlier.ejections))
    return [ejected, ejections]


__all__ = ["ejection_metrics", "pool_metrics"]
