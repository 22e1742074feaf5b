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

import asyncio
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from quiesce.core.events import Event, EventKind
from quiesce.core.pool import slow_start_factor
from quiesce.core.states import Oper
from quiesce.frontends.grpc_metrics import _HELP as GRPC_HELP
from quiesce.frontends.metrics_text import (  # HAProxy's help texts: one copy, there
    _H_BIN,
    _H_BOUT,
    _H_HRSP,
    _H_SCUR,
    _H_STATUS,
    _H_UWEIGHT,
    _H_WEIGHT,
    H_TIMES,
    HAPROXY_CHECK_STATES,
    HAPROXY_PROXY_STATES,
    HAPROXY_SERVER_STATES,
    HTTP_CLASSES,
    Rows,
    TextFamily,
    ejection_family,
    family_chunks,
    grpc_family,
    haproxy_families,
    haproxy_retry_families,
    haproxy_server_state,
    quiesce_families,
    retry_families,
)
from quiesce.frontends.pool_metrics import ejection_metrics, pool_metrics
from quiesce.frontends.retry_metrics import _COUNTERS, haproxy_retry_metrics
from quiesce.state.registry import Registry, ServerRuntime
from quiesce.state.traffic import averages_ms

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


def per_server(app: Any) -> bool:
    """``metrics.per_server`` (read at each scrape, so a reload switches it)."""
    metrics = getattr(getattr(app, "config", None), "metrics", None)
    return bool(getattr(metrics, "per_server", True))


_OPER_CHANGE, _ADMIN_CHANGE = EventKind.OPER_CHANGE, EventKind.ADMIN_CHANGE
_UP, _DOWN = Oper.UP.value, Oper.DOWN.value
_KIND_NAME = {k: k.value for k in EventKind}


class QuiesceCollector(Collector):
    def __init__(self, app: Any) -> None:
        self.app = app
        registry: Registry = app.registry
        self.registry = registry
        # by (pool, axis), then by server name: the event's name string is the server's
        # own, so a server costs one entry (a (pool, server, axis) key took ≈ 100 bytes a
        # server once it had moved, issue 21)
        self.transitions: dict[tuple[str, str], dict[str, int]] = {}
        self.events: dict[str, int] = {}
        self.latency: dict[tuple[str, str, str], _Histogram] = {}
        self.seen_at: dict[tuple[str, str, str], float] = {}
        self._gone: set[tuple[str, str]] = set()  # servers deleted since the last scrape
        registry.listeners.append(self._on_event)

    def _on_event(self, e: Event) -> None:
        kind = _KIND_NAME[e.kind]  # (not ``e.kind.value``: an enum property, ~0.3 µs)
        self.events[kind] = self.events.get(kind, 0) + 1
        if (e.kind is _OPER_CHANGE or e.kind is _ADMIN_CHANGE) and e.pool and e.server:
            axis = "oper" if e.kind is _OPER_CHANGE else "admin"
            counts = self.transitions.get((e.pool, axis))
            if counts is None:
                counts = self.transitions[(e.pool, axis)] = {}
            counts[e.server] = counts.get(e.server, 0) + 1
        elif e.kind is EventKind.SERVER_REMOVED and e.pool and e.server:
            # a deleted server's counters go with it: a server added again under its name
            # (blue/green, autoscaling) starts at 0, and servers that come and go all day do
            # not leave an entry each behind
            for axis in ("oper", "admin"):
                counts = self.transitions.get((e.pool, axis))
                if counts is not None:
                    counts.pop(e.server, None)
            if self.latency:
                self._gone.add((e.pool, e.server))

    def forget_gone(self) -> None:
        """The check latency histograms of the servers deleted since the last scrape (one
        pass over them at the next scrape, not one per deletion)."""
        if not self._gone:
            return
        gone, self._gone = self._gone, set()
        for key in [k for k in self.latency if (k[0], k[1]) in gone]:
            del self.latency[key]
            self.seen_at.pop(key, None)

    def fold_checks(self, s: ServerRuntime) -> None:
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
        """Nothing: the exposition is written by :func:`chunks`, which yields the families
        built here (:meth:`process`, :meth:`_services`) with the ones written as text."""
        return iter(())

    def server_families(self) -> list[TextFamily]:
        return quiesce_families(self, _AVERAGES, BUCKETS)

    def process(self) -> Iterator[Metric]:
        """quiesce_flag, quiesce_events_total and the global connection limit's series."""
        reg = self.registry
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
        svc_in = CounterMetricFamily(
            "quiesce_service_bytes_in", "Bytes received from clients", labels=labels
        )
        svc_out = CounterMetricFamily(
            "quiesce_service_bytes_out", "Bytes sent to clients", labels=labels
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
        tls = CounterMetricFamily(
            "quiesce_service_tls_errors",
            "TLS listener: handshakes failed or timed out, cleartext sent to it (docs/tls.md)",
            labels=[*labels, "kind"],
        )
        framing = CounterMetricFamily(
            "quiesce_service_protocol_errors",
            "postgresql, mysql services: connections closed because a side broke the framing",
            labels=labels,
        )
        proxy = CounterMetricFamily(
            "quiesce_service_proxy_refused",
            "accept_proxy listeners: connections closed for a missing, malformed or untrusted "
            "PROXY header (docs/dataplane.md)",
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
            svc_in.add_metric(lv, _num(stats, "bytes_in"))
            svc_out.add_metric(lv, _num(stats, "bytes_out"))
            for cls, n in sorted((getattr(stats, "responses", None) or {}).items()):
                responses.add_metric([*lv, str(cls)], float(n))
            for status, n in sorted((getattr(stats, "errors", None) or {}).items()):
                errors.add_metric([*lv, str(status)], float(n))
            own = getattr(svc, "max_connections", None)
            if isinstance(own, int):
                limit.add_metric(lv, float(own))
            reached.add_metric(lv, _num(stats, "limit_reached"))
            tls.add_metric([*lv, "handshake"], _num(stats, "tls_failed"))
            tls.add_metric([*lv, "cleartext"], _num(stats, "tls_refused"))
            framing.add_metric(lv, _num(stats, "protocol_errors"))
            proxy.add_metric(lv, _num(stats, "proxy_refused"))
            if isinstance(getattr(svc, "accepting", None), bool):
                accepting.add_metric(lv, 1.0 if svc.accepting else 0.0)
                queued.add_metric(lv, _num(svc, "queued"))
        yield from (requests, pages, conns, parked, accepted, svc_in, svc_out, responses, errors)
        yield from (limit, reached, accepting, queued, tls, framing, proxy)


# quiesce_server_<what>_time_average_seconds: what it averages, HAProxy's show stat column
_AVERAGES = (
    ("connect", "connect time", "ctime"),
    ("response", "response time (request sent to response head; L4: 0)", "rtime"),
    ("total", "total time (request arrival to its end; L4: the connection)", "ttime"),
)


def _num(obj: Any, attr: str) -> float:
    value = getattr(obj, attr, 0)
    return float(value) if isinstance(value, int | float) else 0.0


# --- HAProxy 2.6's exporter names (metrics.haproxy_compatible) -------------------------------

# HELP texts: HAProxy 2.6's (promex_st_metric_desc, else stat_fields[].desc).
_H_SLIM = "Frontend/listener/server's maxconn, backend's fullconn"
_H_REQ_TOT = (
    "Total number of HTTP requests processed by this object since the worker process started"
)


def _usable(s: ServerRuntime) -> bool:
    """HAProxy's srv_currently_usable(): running, not in maintenance or drain, weight > 0."""
    return s.eligible and s.weight > 0


class HaproxyCollector(Collector):
    """HAProxy 2.6's built-in exporter names, labels and types (``proxy`` = pool or service,
    ``server``), for the dashboards and alerts operators already have. Only what quiesce
    measures; docs/api.md lists what is left out and why. Off unless the config says
    ``metrics: {haproxy_compatible: true}`` (read at each scrape, so a reload switches it)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.registry: Registry = app.registry
        self.up_down: dict[tuple[str, str], int] = {}
        self.registry.listeners.append(self._on_event)

    def _on_event(self, e: Event) -> None:
        """``haproxy_server_check_up_down_total``: a server's oper changes up -> down. Every
        event of the registry comes here (a reload's thousand ``server_added``): one
        identity test for any other kind, no tuples built nor enum values looked up."""
        if e.kind is _OPER_CHANGE and e.to == _DOWN and e.from_ == _UP and e.pool and e.server:
            key = (e.pool, e.server)
            self.up_down[key] = self.up_down.get(key, 0) + 1

    def enabled(self) -> bool:
        metrics = getattr(getattr(self.app, "config", None), "metrics", None)
        return bool(getattr(metrics, "haproxy_compatible", False))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        """Nothing: :func:`chunks` writes this family (when :meth:`enabled`)."""
        return iter(())

    def eweight(self, s: ServerRuntime) -> int:
        """HAProxy's effective weight: the runtime weight, ramped by the pool's slow start."""
        pool = self.registry.pools.get(s.pool)  # None: removed while a scrape was under way
        if pool is None:
            return s.weight
        now = self.registry.clock.time()
        return round(s.weight * slow_start_factor(s.eligible_since, now, pool.config.slow_start))

    def _http_pools(self) -> set[str]:
        """Pools in HTTP mode: used by an HTTP service, or by no service at all."""
        services = getattr(getattr(self.app, "config", None), "services", {}) or {}
        tcp: set[str] = set()
        http: set[str] = set()
        for svc in services.values():
            used = {svc.pool, svc.fallback_pool}
            for rule in getattr(svc, "rules", ()) or ():
                used.add(getattr(rule.then, "pool", None))
            (http if svc.protocol == "http" else tcp).update(p for p in used if p)
        return {name for name in self.registry.pools if name in http or name not in tcp}

    def _frontends(self) -> Iterator[Metric]:
        labels = ["proxy"]
        status = GaugeMetricFamily("haproxy_frontend_status", _H_STATUS, labels=[*labels, "state"])
        scur = GaugeMetricFamily("haproxy_frontend_current_sessions", _H_SCUR, labels=labels)
        slim = GaugeMetricFamily("haproxy_frontend_limit_sessions", _H_SLIM, labels=labels)
        conn_tot = CounterMetricFamily(
            "haproxy_frontend_connections",
            "Total number of new connections accepted on this frontend since the worker "
            "process started",
            labels=labels,
        )
        req_tot = CounterMetricFamily("haproxy_frontend_http_requests", _H_REQ_TOT, labels=labels)
        hrsp = CounterMetricFamily(
            "haproxy_frontend_http_responses", _H_HRSP, labels=[*labels, "code"]
        )
        bin_ = CounterMetricFamily("haproxy_frontend_bytes_in", _H_BIN, labels=labels)
        bout = CounterMetricFamily("haproxy_frontend_bytes_out", _H_BOUT, labels=labels)
        services = getattr(self.app, "services", None)
        configured = getattr(getattr(self.app, "config", None), "services", {}) or {}
        gate = getattr(self.app, "gate", None)
        limit = gate.limit if gate is not None and gate.limit < sys.maxsize else None
        for name, svc in sorted((services or {}).items()):
            stats = getattr(svc, "stats", None)
            if callable(stats):
                stats = stats()
            if stats is None:
                continue
            lv = [str(name)]
            for st in HAPROXY_PROXY_STATES:
                status.add_metric([*lv, st], 1.0 if st == "UP" else 0.0)
            scur.add_metric(lv, _num(stats, "connections"))
            own = getattr(svc, "max_connections", None)
            limits = [n for n in (own, limit) if isinstance(n, int)]
            if limits:
                slim.add_metric(lv, float(min(limits)))
            conn_tot.add_metric(lv, _num(stats, "connections_total"))
            bin_.add_metric(lv, _num(stats, "bytes_in"))
            bout.add_metric(lv, _num(stats, "bytes_out"))
            cfg = configured.get(name)
            if cfg is None or cfg.protocol == "http":
                req_tot.add_metric(lv, _num(stats, "requests"))
                responses = getattr(stats, "responses", None) or {}
                for cls in HTTP_CLASSES:
                    hrsp.add_metric([*lv, cls], float(responses.get(cls, 0)))
        yield from (status, scur, slim, conn_tot, bin_, bout, req_tot, hrsp)

    def _backends(self) -> Iterator[Metric]:
        labels = ["proxy"]
        status = GaugeMetricFamily("haproxy_backend_status", _H_STATUS, labels=[*labels, "state"])
        scur = GaugeMetricFamily("haproxy_backend_current_sessions", _H_SCUR, labels=labels)
        weight = GaugeMetricFamily("haproxy_backend_weight", _H_WEIGHT, labels=labels)
        uweight = GaugeMetricFamily("haproxy_backend_uweight", _H_UWEIGHT, labels=labels)
        act = GaugeMetricFamily(
            "haproxy_backend_active_servers",
            "Total number of active UP servers with a non-zero weight",
            labels=labels,
        )
        bck = GaugeMetricFamily(
            "haproxy_backend_backup_servers",
            "Total number of backup UP servers with a non-zero weight",
            labels=labels,
        )
        req_tot = CounterMetricFamily("haproxy_backend_http_requests", _H_REQ_TOT, labels=labels)
        hrsp = CounterMetricFamily(
            "haproxy_backend_http_responses", _H_HRSP, labels=[*labels, "code"]
        )
        bin_ = CounterMetricFamily("haproxy_backend_bytes_in", _H_BIN, labels=labels)
        bout = CounterMetricFamily("haproxy_backend_bytes_out", _H_BOUT, labels=labels)
        times = _haproxy_times("backend", labels)
        http = self._http_pools()
        for pool in self.registry.pools.values():
            lv = [pool.name]
            for st in HAPROXY_PROXY_STATES:
                status.add_metric([*lv, st], 1.0 if (st == "UP") == pool.available else 0.0)
            scur.add_metric(lv, float(pool.sessions))
            active = [s for s in pool.servers if not s.config.backup and _usable(s)]
            backup = [s for s in pool.servers if s.config.backup and _usable(s)]
            serving = active or backup  # HAProxy's tot_weight: the active ones, else backups
            weight.add_metric(lv, float(sum(self.eweight(s) for s in serving)))
            uweight.add_metric(lv, float(sum(s.weight for s in serving)))
            act.add_metric(lv, float(len(active)))
            bck.add_metric(lv, float(len(backup)))
            bin_.add_metric(lv, float(sum(s.bytes_in for s in pool.servers)))
            bout.add_metric(lv, float(sum(s.bytes_out for s in pool.servers)))
            for family, ms in zip(times, averages_ms(pool.servers), strict=True):
                family.add_metric(lv, ms / 1000)
            if pool.name in http:
                req_tot.add_metric(lv, float(sum(s.requests_total for s in pool.servers)))
                for cls in HTTP_CLASSES:
                    n = sum(s.responses.get(cls, 0) for s in pool.servers)
                    hrsp.add_metric([*lv, cls], float(n))
        yield from (status, scur, weight, uweight, act, bck, bin_, bout, *times, req_tot, hrsp)


def _haproxy_times(kind: str, labels: list[str]) -> list[GaugeMetricFamily]:
    """haproxy_<kind>_{connect,response,total}_time_average_seconds (ctime, rtime, ttime)."""
    return [
        GaugeMetricFamily(f"haproxy_{kind}_{what}_time_average_seconds", text, labels=labels)
        for what, text in H_TIMES
    ]


# /metrics?scope=...: HAProxy's exporter's scopes (global, frontend, backend, server), by
# quiesce's names or HAProxy's; without the parameter, all of them.
SCOPES = frozenset({"global", "service", "pool", "server"})
_SCOPE_NAMES = {"frontend": "service", "backend": "pool"}


def parse_scopes(values: Iterable[str] | None) -> frozenset[str]:
    """``scope`` values (repeated, or comma-separated) as a set of :data:`SCOPES`; None
    (no parameter): all. An empty value selects nothing. ValueError names an unknown one."""
    if values is None:
        return SCOPES
    out = set()
    for value in values:
        for part in filter(None, (v.strip() for v in value.split(","))):
            name = _SCOPE_NAMES.get(part, part)
            if name not in SCOPES:
                known = ", ".join(sorted(SCOPES | set(_SCOPE_NAMES)))
                raise ValueError(f"unknown metrics scope {part!r} (one of {known})")
            out.add(name)
    return frozenset(out)


class MetricsRegistry(CollectorRegistry):
    """The /metrics collectors of one App, and each server's label text between scrapes.
    Collectors registered later (the cluster's) are written after quiesce's and HAProxy's,
    in the ``global`` scope."""

    def __init__(self, app: Any) -> None:
        super().__init__(auto_describe=False)
        self.app = app
        self.quiesce = QuiesceCollector(app)
        self.haproxy = HaproxyCollector(app)
        self.rows = Rows()
        self.extra: list[Collector] = []
        super().register(self.quiesce)
        super().register(self.haproxy)

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self.extra.append(collector)


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _text(families: Iterable[Metric]) -> str:
    """A few small families (pools, services, the process) through prometheus-client."""
    return generate_latest(_Families(families)).decode()


def chunks(reg: MetricsRegistry, scopes: frozenset[str] = SCOPES) -> Iterator[str]:
    """The exposition, in the order it always had, as chunks of text: a family of the pools,
    services or process whole, a per-server family a slice of :data:`metrics_text.SLICE`
    servers at a time (the caller may give the loop back between two chunks; an empty one
    marks a slice of servers read but nothing written yet). The servers are those there at
    the start; their values are read as their slice is written."""
    q, h = reg.quiesce, reg.haproxy
    pools = list(q.registry.pools.values())
    each = per_server(reg.app)
    servers = "server" in scopes
    slices = []
    if servers and each:
        for rows in reg.rows.slices(s for pool in pools for s in pool.servers):
            slices.append(rows)
            yield ""
    if servers:
        yield from family_chunks(q.server_families(), slices)
    if "pool" in scopes:
        yield _text(pool_metrics(pools))  # quiesce_pool_* (frontends.pool_metrics)
        yield _text(ejection_metrics(pools, False)[:1])  # quiesce_pool_ejected_servers
    if servers:
        detection = {p.name for p in pools if p.config.outlier_detection is not None}
        yield from family_chunks([ejection_family(detection.__contains__)], slices)
        yield from family_chunks(retry_families(_COUNTERS), slices)  # wretr, wredis, econ...
        yield from family_chunks([grpc_family(GRPC_HELP)], slices)  # grpc-status
    if "global" in scopes:
        yield _text(q.process())
    if "service" in scopes:
        yield _text(q._services())
    if h.enabled():
        if "service" in scopes:
            yield _text(h._frontends())
        if "pool" in scopes:
            yield _text(h._backends())
        if servers and each:
            yield from family_chunks(haproxy_families(h, h._http_pools()), slices)
        if "pool" in scopes:
            yield _text(haproxy_retry_metrics(pools, False))  # haproxy_backend_*
        if servers and each:
            yield from family_chunks(haproxy_retry_families(_COUNTERS), slices)
    if "global" in scopes:
        for collector in reg.extra:
            yield _text(collector.collect())


async def stream(reg: MetricsRegistry, scopes: frozenset[str] = SCOPES) -> AsyncIterator[bytes]:
    """:func:`chunks` for ``GET /metrics``: the loop is given back after each chunk, and
    what was written is sent once it reaches 256 KiB, so the data plane goes on while a
    scrape of 100,000 servers is written and the first bytes leave at once."""
    pending: list[str] = []
    size = 0
    for chunk in chunks(reg, scopes):
        if chunk:
            pending.append(chunk)
            size += len(chunk)
            if size >= 1 << 18:
                yield "".join(pending).encode()
                pending, size = [], 0
        await asyncio.sleep(0)
    if pending:
        yield "".join(pending).encode()


def build_collector_registry(app: Any) -> MetricsRegistry:
    return MetricsRegistry(app)


def render(reg: CollectorRegistry, scopes: frozenset[str] = SCOPES) -> tuple[bytes, str]:
    """The whole exposition at once (tests, and callers off the loop)."""
    if isinstance(reg, MetricsRegistry):
        return "".join(chunks(reg, scopes)).encode(), CONTENT_TYPE_LATEST
    return generate_latest(reg), CONTENT_TYPE_LATEST


__all__ = [
    "HAPROXY_CHECK_STATES",
    "HAPROXY_PROXY_STATES",
    "HAPROXY_SERVER_STATES",
    "HTTP_CLASSES",
    "SCOPES",
    "HaproxyCollector",
    "MetricsRegistry",
    "QuiesceCollector",
    "build_collector_registry",
    "chunks",
    "haproxy_server_state",
    "parse_scopes",
    "render",
    "stream",
]
