"""Prometheus metrics, read from the registry at scrape time (served at ``GET /metrics``).

Theory of operation
-------------------
One :class:`prometheus_client.CollectorRegistry` per App holds one custom collector. Nothing
is updated on the data path: a scrape walks the registry's pools and servers and reports what
is there now. Only what cannot be read at scrape time is counted as it happens, by listening
to registry events (transitions per axis, events per kind) and by folding each health check
into the latency histogram the first time a scrape sees it in ``last_checks``.

The two axes are state sets (one series per state, 1 for the current one, 0 for the others),
so maintenance is its own state and never counted as down; ``quiesce_server_eligible`` is the
one number balancing uses.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from quiesce.core.events import Event, EventKind
from quiesce.core.states import Admin, Oper, Status
from quiesce.core.status import displayed_status
from quiesce.state.registry import Registry, ServerRuntime

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.buckets[i] += 1


class QuiesceCollector(Collector):
    def __init__(self, app: Any) -> None:
        self.app = app
        registry: Registry = app.registry
        self.registry = registry
        self.transitions: dict[tuple[str, str, str], int] = {}
        self.events: dict[str, int] = {}
        self.latency: dict[tuple[str, str, str], _Histogram] = {}
        self.seen_at: dict[tuple[str, str, str], float] = {}
        registry.listeners.append(self._on_event)

    def _on_event(self, e: Event) -> None:
        self.events[e.kind.value] = self.events.get(e.kind.value, 0) + 1
        if e.kind in (EventKind.OPER_CHANGE, EventKind.ADMIN_CHANGE) and e.pool and e.server:
            axis = "oper" if e.kind is EventKind.OPER_CHANGE else "admin"
            key = (e.pool, e.server, axis)
            self.transitions[key] = self.transitions.get(key, 0) + 1

    def _fold_checks(self, s: ServerRuntime) -> None:
        for monitor, results in s.last_checks.items():
            key = (s.pool, s.name, monitor)
            last = self.seen_at.get(key, float("-inf"))
            hist = self.latency.setdefault(key, _Histogram())
            for r in results:
                if r.at > last:
                    hist.observe(r.latency)
                    last = r.at
            self.seen_at[key] = last

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        reg = self.registry
        labels = ["pool", "server"]
        oper = GaugeMetricFamily(
            "quiesce_server_oper_state",
            "Operational state (health monitors), one series per state",
            labels=[*labels, "state"],
        )
        admin = GaugeMetricFamily(
            "quiesce_server_admin_state",
            "Administrative state (operator), one series per state",
            labels=[*labels, "state"],
        )
        status = GaugeMetricFamily(
            "quiesce_server_status",
            "Displayed status, one series per status",
            labels=[*labels, "status"],
        )
        eligible = GaugeMetricFamily(
            "quiesce_server_eligible", "1 when eligible for new connections", labels=labels
        )
        conns = GaugeMetricFamily("quiesce_server_connections", "Live connections", labels=labels)
        inflight = GaugeMetricFamily(
            "quiesce_server_requests_in_flight", "Requests in flight", labels=labels
        )
        weight = GaugeMetricFamily("quiesce_server_weight", "Configured weight", labels=labels)
        requests = CounterMetricFamily(
            "quiesce_server_requests", "Requests sent to the server", labels=labels
        )
        responses = CounterMetricFamily(
            "quiesce_server_responses",
            "Responses from the server by class",
            labels=[*labels, "code"],
        )
        transitions = CounterMetricFamily(
            "quiesce_server_transitions",
            "State transitions per axis",
            labels=[*labels, "axis"],
        )
        latency = HistogramMetricFamily(
            "quiesce_check_latency_seconds",
            "Health check latency",
            labels=[*labels, "monitor"],
        )
        for s in reg.servers():
            lv = [s.pool, s.name]
            for o in Oper:
                oper.add_metric([*lv, o.value], 1.0 if s.oper is o else 0.0)
            for a in Admin:
                admin.add_metric([*lv, a.value], 1.0 if s.admin.state is a else 0.0)
            shown = displayed_status(s.admin.state, s.oper, s.connections)
            for st in Status:
                status.add_metric([*lv, st.value], 1.0 if shown is st else 0.0)
            eligible.add_metric(lv, 1.0 if s.eligible else 0.0)
            conns.add_metric(lv, float(s.connections))
            inflight.add_metric(lv, float(s.requests_in_flight))
            weight.add_metric(lv, float(s.weight))
            requests.add_metric(lv, float(s.requests_total))
            for cls, n in sorted(s.responses.items()):
                responses.add_metric([*lv, str(cls)], float(n))
            for axis in ("oper", "admin"):
                transitions.add_metric(
                    [*lv, axis], float(self.transitions.get((s.pool, s.name, axis), 0))
                )
            self._fold_checks(s)
            for monitor in s.monitors:
                hist = self.latency.get((s.pool, s.name, monitor))
                if hist is None:
                    continue
                cumulative = [
                    (str(b), float(c)) for b, c in zip(BUCKETS, hist.buckets, strict=True)
                ]
                cumulative.append(("+Inf", float(hist.count)))
                latency.add_metric([*lv, monitor], cumulative, hist.sum)
        yield from (oper, admin, status, eligible, conns, inflight, weight, requests, responses)
        yield from (transitions, latency)

        pe = GaugeMetricFamily("quiesce_pool_eligible_servers", "Eligible servers", labels=["pool"])
        pt = GaugeMetricFamily("quiesce_pool_servers", "Servers in the pool", labels=["pool"])
        pa = GaugeMetricFamily(
            "quiesce_pool_available",
            "1 when the pool has a server for new connections",
            labels=["pool"],
        )
        ps = GaugeMetricFamily("quiesce_pool_sessions", "Live sessions", labels=["pool"])
        for pool in reg.pools.values():
            pe.add_metric([pool.name], float(pool.eligible_count))
            pt.add_metric([pool.name], float(len(pool.servers)))
            pa.add_metric([pool.name], 1.0 if pool.available else 0.0)
            ps.add_metric([pool.name], float(pool.sessions))
        yield from (pe, pt, pa, ps)

        flags = GaugeMetricFamily(
            "quiesce_flag",
            "Runtime flags: 1/0 for booleans, 1 with the value for strings",
            labels=["flag", "value"],
        )
        for name, value in sorted(reg.flags.items()):
            if isinstance(value, bool):
                flags.add_metric([name, ""], 1.0 if value else 0.0)
            else:
                flags.add_metric([name, value], 1.0)
        yield flags

        events = CounterMetricFamily("quiesce_events", "Events by kind", labels=["kind"])
        for kind, n in sorted(self.events.items()):
            events.add_metric([kind], float(n))
        yield events
        yield from self._connections()
        yield from self._services()

    def _connections(self) -> Iterator[Metric]:
        """The process's client connections against the global limit (limits.max_connections,
        quiesce.dataplane.limits)."""
        gate = getattr(self.app, "gate", None)
        if gate is None:
            return
        yield GaugeMetricFamily(
            "quiesce_connections",
            "Live client connections of all services (parked ones included)",
            value=float(gate.count),
        )
        if gate.limit < sys.maxsize:  # a gate without a limit has sys.maxsize
            yield GaugeMetricFamily(
                "quiesce_connections_max",
                "The global client connection limit (limits.max_connections, or derived from "
                "RLIMIT_NOFILE)",
                value=float(gate.limit),
            )
        yield CounterMetricFamily(
            "quiesce_connections_limit_reached",
            "Times the global connection limit was reached (new connections then wait in the "
            "listen backlog)",
            value=float(gate.reached),
        )

    def _services(self) -> Iterator[Metric]:
        services = getattr(self.app, "services", None)
        if not isinstance(services, dict):
            return
        labels = ["service"]
        requests = CounterMetricFamily(
            "quiesce_service_requests", "Requests received (L4: connections)", labels=labels
        )
        pages = CounterMetricFamily(
            "quiesce_service_maintenance_pages",
            "Maintenance-page responses (L4: connections refused, no server available)",
            labels=labels,
        )
        conns = GaugeMetricFamily(
            "quiesce_service_connections", "Live client connections", labels=labels
        )
        parked = GaugeMetricFamily(
            "quiesce_service_parked_connections",
            "Of the live client connections, idle keep-alive ones parked off the event loop",
            labels=labels,
        )
        accepted = CounterMetricFamily(
            "quiesce_service_connections_accepted", "Client connections accepted", labels=labels
        )
        responses = CounterMetricFamily(
            "quiesce_service_responses", "Responses to clients by class", labels=[*labels, "code"]
        )
        errors = CounterMetricFamily(
            "quiesce_service_errors",
            "Error statuses the proxy generated, by status",
            labels=[*labels, "status"],
        )
        limit = GaugeMetricFamily(
            "quiesce_service_connections_max",
            "The service's own client connection limit (max_connections), when it has one",
            labels=labels,
        )
        reached = CounterMetricFamily(
            "quiesce_service_connections_limit_reached",
            "Times the service's max_connections was reached",
            labels=labels,
        )
        accepting = GaugeMetricFamily(
            "quiesce_service_accepting",
            "1 while the service accepts, 0 while a connection limit holds new connections "
            "in the listen backlog",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "quiesce_service_listen_queue",
            "Connections waiting in the kernel's listen backlog",
            labels=labels,
        )
        for name, svc in sorted(services.items()):
            stats = getattr(svc, "stats", None)
            if callable(stats):
                stats = stats()
            if stats is None:
                continue
            lv = [str(name)]
            requests.add_metric(lv, _num(stats, "requests"))
            pages.add_metric(lv, _num(stats, "maintenance_pages"))
            conns.add_metric(lv, _num(stats, "connections"))
            parked.add_metric(lv, _num(stats, "parked"))
            accepted.add_metric(lv, _num(stats, "connections_total"))
            for cls, n in sorted((getattr(stats, "responses", None) or {}).items()):
                responses.add_metric([*lv, str(cls)], float(n))
            for status, n in sorted((getattr(stats, "errors", None) or {}).items()):
                errors.add_metric([*lv, str(status)], float(n))
            own = getattr(svc, "max_connections", None)
            if isinstance(own, int):
                limit.add_metric(lv, float(own))
            reached.add_metric(lv, _num(stats, "limit_reached"))
            if isinstance(getattr(svc, "accepting", None), bool):
                accepting.add_metric(lv, 1.0 if svc.accepting else 0.0)
                queued.add_metric(lv, _num(svc, "queued"))
        yield from (requests, pages, conns, parked, accepted, responses, errors)
        yield from (limit, reached, accepting, queued)


def _num(obj: Any, attr: str) -> float:
    value = getattr(obj, attr, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def build_collector_registry(app: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(QuiesceCollector(app))
    return reg


def render(reg: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(reg), CONTENT_TYPE_LATEST


__all__ = ["QuiesceCollector", "build_collector_registry", "render"]
