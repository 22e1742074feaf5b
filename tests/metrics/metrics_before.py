"""/metrics as it was written before issue 21's text writer (commit 5d68f28's
quiesce/frontends/metrics.py, unchanged below this docstring but for it): prometheus-client
families filled server by server and ``generate_latest``. tests/metrics/test_metrics_scale.py
checks the new exposition against it, byte for byte."""

# ruff: noqa
# mypy: ignore-errors
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

from quiesce.core.checks import GRPC_ANSWERS, CheckResult, Reason
from quiesce.core.events import Event, EventKind
from quiesce.core.pool import slow_start_factor
from quiesce.core.states import Admin, Oper, Status, Verdict
from quiesce.core.status import displayed_status
from quiesce.frontends.grpc_metrics import grpc_metrics
from quiesce.frontends.pool_metrics import ejection_metrics, pool_metrics
from quiesce.frontends.retry_metrics import haproxy_retry_metrics, retry_metrics
from quiesce.state.registry import Registry, ServerRuntime
from quiesce.state.sessions import session_counts
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
        registry.listeners.append(self._on_event)

    def _on_event(self, e: Event) -> None:
        self.events[e.kind.value] = self.events.get(e.kind.value, 0) + 1
        if e.kind in (EventKind.OPER_CHANGE, EventKind.ADMIN_CHANGE) and e.pool and e.server:
            axis = "oper" if e.kind is EventKind.OPER_CHANGE else "admin"
            counts = self.transitions.get((e.pool, axis))
            if counts is None:
                counts = self.transitions[(e.pool, axis)] = {}
            counts[e.server] = counts.get(e.server, 0) + 1

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
        sessions = GaugeMetricFamily(
            "quiesce_server_database_sessions",
            "Database sessions (postgresql, mysql services) by state: idle, transaction, query, "
            "tls (not followed; listed when there is one)",
            labels=[*labels, "state"],
        )
        weight = GaugeMetricFamily(
            "quiesce_server_weight",
            "Runtime weight (the configured weight until changed by set weight)",
            labels=labels,
        )
        configured = GaugeMetricFamily(
            "quiesce_server_configured_weight",
            "Weight given in the config file",
            labels=labels,
        )
        requests = CounterMetricFamily(
            "quiesce_server_requests", "Requests sent to the server", labels=labels
        )
        responses = CounterMetricFamily(
            "quiesce_server_responses",
            "Responses from the server by class",
            labels=[*labels, "code"],
        )
        bytes_in = CounterMetricFamily(
            "quiesce_server_bytes_in",
            "Bytes received from the clients of the server's requests (L4: connections)",
            labels=labels,
        )
        bytes_out = CounterMetricFamily(
            "quiesce_server_bytes_out",
            "Bytes sent to the clients of the server's requests (L4: connections)",
            labels=labels,
        )
        times = [
            GaugeMetricFamily(
                f"quiesce_server_{what}_time_average_seconds",
                f"Average {text} over the last 1024 requests (HAProxy's {col})",
                labels=labels,
            )
            for what, text, col in _AVERAGES
        ]
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
        for s in reg.servers() if per_server(self.app) else ():
            lv = [s.pool, s.name]
            for o in Oper:
                oper.add_metric([*lv, o.value], 1.0 if s.oper is o else 0.0)
            for a in Admin:
                admin.add_metric([*lv, a.value], 1.0 if s.admin.state is a else 0.0)
            shown = displayed_status(s.admin.state, s.oper, s.connections, s.ejected)
            for st in Status:
                status.add_metric([*lv, st.value], 1.0 if shown is st else 0.0)
            eligible.add_metric(lv, 1.0 if s.eligible else 0.0)
            conns.add_metric(lv, float(s.connections))
            inflight.add_metric(lv, float(s.requests_in_flight))
            by_state = session_counts(s)
            if by_state is not None:
                for state, n in by_state.items():
                    sessions.add_metric([*lv, state], float(n))
            weight.add_metric(lv, float(s.weight))
            configured.add_metric(lv, float(s.config.weight))
            requests.add_metric(lv, float(s.requests_total))
            for cls, n in sorted(s.responses.items()):
                responses.add_metric([*lv, str(cls)], float(n))
            bytes_in.add_metric(lv, float(s.bytes_in))
            bytes_out.add_metric(lv, float(s.bytes_out))
            for family, ms in zip(times, averages_ms((s,)), strict=True):
                family.add_metric(lv, ms / 1000)
            for axis in ("oper", "admin"):
                counts = self.transitions.get((s.pool, axis))
                n = 0 if counts is None else counts.get(s.name, 0)
                transitions.add_metric([*lv, axis], float(n))
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
        yield from (oper, admin, status, eligible, conns, inflight, sessions, weight, configured)
        yield from (requests, responses, bytes_in, bytes_out, *times)
        yield from (transitions, latency)

        yield from pool_metrics(reg.pools.values())  # quiesce_pool_* (frontends.pool_metrics)
        yield from ejection_metrics(reg.pools.values(), per_server(self.app))
        yield from retry_metrics(reg.pools.values(), per_server(self.app))  # wretr, wredis
        yield from grpc_metrics(reg.pools.values(), per_server(self.app))  # grpc-status

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

# promex_srv_st (addons/promex/service-prometheus.c): one series per state, 1 for the current.
HAPROXY_SERVER_STATES = ("DOWN", "UP", "MAINT", "DRAIN", "NOLB")
HAPROXY_PROXY_STATES = ("DOWN", "UP")
# The check statuses promex lists (HAProxy's HCHK_STATUS_* whose result is at least
# CHK_RES_FAILED, in HAProxy's order), for haproxy_server_check_status.
HAPROXY_CHECK_STATES = (
    "HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
    "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK",
)  # fmt: skip
HTTP_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")

# HELP texts: HAProxy 2.6's (promex_st_metric_desc, else stat_fields[].desc).
_H_STATUS = "Current status of the service, per state label value."
_H_SCUR = "Number of current sessions on the frontend, backend or server"
_H_SLIM = "Frontend/listener/server's maxconn, backend's fullconn"
_H_WEIGHT = "Server's effective weight, or sum of active servers' effective weights for a backend"
_H_UWEIGHT = "Server's user weight, or sum of active servers' user weights for a backend"
_H_HRSP = (
    "Total number of HTTP responses with status 100-199 returned by this object since the "
    "worker process started"
)
_H_BIN = "Total number of request bytes since process started"
_H_BOUT = "Total number of response bytes since process started"
_H_TIMES = (
    ("connect", "Avg. connect time for last 1024 successful connections."),
    ("response", "Avg. response time for last 1024 successful connections."),
    ("total", "Avg. total time for last 1024 successful connections."),
)
_H_REQ_TOT = (
    "Total number of HTTP requests processed by this object since the worker process started"
)


def haproxy_server_state(s: ServerRuntime) -> str:
    """promex_srv_status(): MAINT wins; DRAIN only for a running server; HAProxy's STOPPING
    (disable-on-404: quiesce's *down for maintenance*) is NOLB; not yet checked is DOWN, and
    ejected by passive outlier detection too (HAProxy's observe + on-error mark-down)."""
    if s.admin.state is Admin.MAINTENANCE:
        return "MAINT"
    if s.oper in (Oper.UP, Oper.UNMONITORED):
        return "DRAIN" if s.admin.state is Admin.DRAIN else "DOWN" if s.ejected else "UP"
    if s.oper is Oper.MAINTENANCE:
        return "NOLB"
    return "DOWN"


def haproxy_check_status(result: CheckResult, layer7: bool) -> str:
    """HAProxy's short check status for one quiesce check result (as ``show stat`` shows)."""
    if result.verdict is Verdict.PASS:
        return "L7OK" if layer7 else "L4OK"
    return {
        Reason.TIMEOUT: "L7TOUT" if layer7 else "L4TOUT",
        Reason.CONNECTION_REFUSED: "L4CON",
        Reason.CONNECTION_RESET: "L4CON",
        Reason.CONNECTION_ERROR: "L4CON",
        Reason.PORT_UNREACHABLE: "L4CON",
        Reason.HOST_UNREACHABLE: "L4CON",
        Reason.RESPONSE_CODE_MISMATCH: "L7STS",
        Reason.MAINTENANCE_RESPONSE_CODE_MATCH: "L7STS",
        Reason.PAYLOAD_CONTENT_MISMATCH: "L7RSP",
        Reason.MAINTENANCE_PAYLOAD_CONTENT_MATCH: "L7RSP",
        Reason.MALFORMED_RESPONSE: "L7RSP",
        Reason.TLS_ERROR: "L6RSP",
    }.get(result.reason, "L7STS" if result.reason in GRPC_ANSWERS else "SOCKERR")


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
        up_down = (e.from_, e.to) == (Oper.UP.value, Oper.DOWN.value)
        if e.kind is EventKind.OPER_CHANGE and e.pool and e.server and up_down:
            key = (e.pool, e.server)
            self.up_down[key] = self.up_down.get(key, 0) + 1

    def enabled(self) -> bool:
        metrics = getattr(getattr(self.app, "config", None), "metrics", None)
        return bool(getattr(metrics, "haproxy_compatible", False))

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        if not self.enabled():
            return
        yield from self._frontends()
        yield from self._backends()
        if per_server(self.app):
            yield from self._servers()
        yield from haproxy_retry_metrics(self.registry.pools.values(), per_server(self.app))

    def _eweight(self, s: ServerRuntime) -> int:
        """HAProxy's effective weight: the runtime weight, ramped by the pool's slow start."""
        pool = self.registry.pools[s.pool]
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
            weight.add_metric(lv, float(sum(self._eweight(s) for s in serving)))
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

    def _servers(self) -> Iterator[Metric]:
        labels = ["proxy", "server"]
        status = GaugeMetricFamily("haproxy_server_status", _H_STATUS, labels=[*labels, "state"])
        scur = GaugeMetricFamily("haproxy_server_current_sessions", _H_SCUR, labels=labels)
        weight = GaugeMetricFamily("haproxy_server_weight", _H_WEIGHT, labels=labels)
        uweight = GaugeMetricFamily("haproxy_server_uweight", _H_UWEIGHT, labels=labels)
        chk_status = GaugeMetricFamily(
            "haproxy_server_check_status",
            "Status of last health check, per state label value.",
            labels=[*labels, "state"],
        )
        chk_code = GaugeMetricFamily(
            "haproxy_server_check_code",
            "layer5-7 code, if available of the last health check.",
            labels=labels,
        )
        chk_duration = GaugeMetricFamily(
            "haproxy_server_check_duration_seconds",
            "Total duration of the latest server health check, in seconds.",
            labels=labels,
        )
        chk_down = CounterMetricFamily(
            "haproxy_server_check_up_down",
            "Total number of failed checks causing UP to DOWN server transitions, per "
            "server/backend, since the worker process started",
            labels=labels,
        )
        hrsp = CounterMetricFamily(
            "haproxy_server_http_responses", _H_HRSP, labels=[*labels, "code"]
        )
        bin_ = CounterMetricFamily("haproxy_server_bytes_in", _H_BIN, labels=labels)
        bout = CounterMetricFamily("haproxy_server_bytes_out", _H_BOUT, labels=labels)
        times = _haproxy_times("server", labels)
        http = self._http_pools()
        monitors = self.registry.monitors
        for s in self.registry.servers():
            lv = [s.pool, s.name]
            shown = haproxy_server_state(s)
            for st in HAPROXY_SERVER_STATES:
                status.add_metric([*lv, st], 1.0 if st == shown else 0.0)
            scur.add_metric(lv, float(s.connections))
            weight.add_metric(lv, float(self._eweight(s)))
            uweight.add_metric(lv, float(s.weight))
            bin_.add_metric(lv, float(s.bytes_in))
            bout.add_metric(lv, float(s.bytes_out))
            for family, ms in zip(times, averages_ms((s,)), strict=True):
                family.add_metric(lv, ms / 1000)
            if s.monitors:  # HAProxy: only servers whose checks are enabled
                checks = s.checks()
                last = checks[-1] if checks else None
                current = ""
                if last is not None:
                    monitor = monitors.get(last.monitor)
                    layer7 = monitor is not None and monitor.type in ("http", "https", "grpc")
                    current = haproxy_check_status(last, layer7)
                    chk_duration.add_metric(lv, float(last.latency))
                for st in HAPROXY_CHECK_STATES:
                    chk_status.add_metric([*lv, st], 1.0 if st == current else 0.0)
                code = last.status_code if last is not None else None
                chk_code.add_metric(lv, float(code) if code is not None else 0.0)
                chk_down.add_metric(lv, float(self.up_down.get((s.pool, s.name), 0)))
            if s.pool in http:
                for cls in HTTP_CLASSES:
                    hrsp.add_metric([*lv, cls], float(s.responses.get(cls, 0)))
        yield from (status, scur, weight, uweight, chk_status, chk_code, chk_duration)
        yield from (chk_down, bin_, bout, *times, hrsp)


def _haproxy_times(kind: str, labels: list[str]) -> list[GaugeMetricFamily]:
    """haproxy_<kind>_{connect,response,total}_time_average_seconds (ctime, rtime, ttime)."""
    return [
        GaugeMetricFamily(f"haproxy_{kind}_{what}_time_average_seconds", text, labels=labels)
        for what, text in _H_TIMES
    ]


def build_collector_registry(app: Any) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(QuiesceCollector(app))
    reg.register(HaproxyCollector(app))
    return reg


def render(reg: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(reg), CONTENT_TYPE_LATEST


__all__ = ["HaproxyCollector", "QuiesceCollector", "build_collector_registry", "render"]
