"""The pools' queues in /metrics (max_connections, hold_when_empty: quiesce.core.queue), read
at scrape time from each pool's counters (quiesce.frontends.metrics yields these)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from quiesce.state.runtime import PoolRuntime


def queue_metrics(pools: Iterable[PoolRuntime]) -> list[Metric]:
    labels = ["pool"]
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
        cur.add_metric(lv, float(q.qcur))
        most.add_metric(lv, float(q.qmax))
        served.add_metric(lv, float(q.served))
        timeouts.add_metric(lv, float(q.timeouts))
        wait.add_metric(lv, q.qtime)
    return [cur, most, served, timeouts, wait]


__all__ = ["queue_metrics"]
