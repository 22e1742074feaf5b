"""The per-server families of /metrics written straight as text, in slices (issue 21).

prometheus-client's ``generate_latest`` over families built with ``add_metric`` costs
≈ 1 µs a sample (a Sample tuple, a labels dict, sorting and escaping its labels, formatting
the value); a server has ≈ 50 samples, so 10,000 servers took 3.5 s of CPU and 100,000
ten times that, all in one turn of the event loop that also carries the data plane. Here
each server's label text (``"pool",server="name"``, escaped once) is kept between scrapes,
a family's lines for a slice of :data:`SLICE` servers are one list comprehension, and
:func:`family_chunks` yields a chunk per slice, so the caller (``GET /metrics``) gives the
loop back between slices and sends each chunk as it is made.

The text is the same, byte for byte, as ``generate_latest`` wrote (label names sorted,
values as its ``floatToGoString``): tests/metrics/test_metrics_scale.py compares them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from prometheus_client import utils

from quiesce.core.checks import CheckResult
from quiesce.core.states import Admin, Oper, Status
from quiesce.core.status import displayed_status
from quiesce.frontends.haproxy_check import haproxy_check_status, is_layer7
from quiesce.state.registry import ServerRuntime
from quiesce.state.sessions import session_counts
from quiesce.state.traffic import averages_ms

# prometheus-client's value format (repr, Go's exponent past 1e6, +Inf/-Inf/NaN)
floatToGoString = cast(Callable[[Any], str], utils.floatToGoString)

SLICE = 1000  # servers a chunk (and a turn of the loop) covers at most

# (server, its label text without the first name: '"pool",server="name"')
Row = tuple[ServerRuntime, str]
Lines = Callable[[Sequence[Row]], str]


class TextFamily:
    """One family: its HELP and TYPE lines and the lines of a slice of servers."""

    __slots__ = ("head", "lines")

    def __init__(self, name: str, kind: str, text: str, lines: Lines) -> None:
        if kind == "counter":
            name += "_total"
        text = text.replace("\\", r"\\").replace("\n", r"\n")
        self.head = f"# HELP {name} {text}\n# TYPE {name} {kind}\n"
        self.lines = lines


def escape(value: str) -> str:
    """A label value as the text format escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def num(n: Any) -> str:
    """floatToGoString(n), fast for the whole numbers counters and gauges mostly are."""
    if type(n) is int and -1_000_000 < n < 1_000_000:
        return f"{n}.0"
    return floatToGoString(n)


class Rows:
    """Each server's label text, kept between scrapes for the servers still there."""

    def __init__(self) -> None:
        self.known: dict[ServerRuntime, str] = {}

    def slices(self, servers: Iterable[ServerRuntime]) -> Iterator[list[Row]]:
        """The servers as rows, :data:`SLICE` at a time; the texts of servers gone are
        dropped once the last slice is out."""
        known, fresh = self.known, {}
        rows: list[Row] = []
        for s in servers:
            tail = known.get(s)
            if tail is None:  # a server's pool and name are its own for its life
                tail = f'"{escape(s.pool)}",server="{escape(s.name)}"'
            fresh[s] = tail
            rows.append((s, tail))
            if len(rows) == SLICE:
                yield rows
                rows = []
        if rows:
            yield rows
        self.known = fresh


def family_chunks(families: Sequence[TextFamily], slices: Sequence[Sequence[Row]]) -> Iterator[str]:
    """Each family's head then its lines, one chunk per slice of servers."""
    for family in families:
        first = True
        for rows in slices:
            text = family.lines(rows)
            yield family.head + text if first else text
            first = False
        if first:
            yield family.head


def one_hot(name: str, label: str, values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """A state set's line tails for each current value: ('', ',state="up"} 1.0\\n', ...),
    to be joined by the line's start (``name{pool=...``)."""
    del name
    out = {}
    for current in values:
        tails = [f',{label}="{escape(v)}"}} {"1.0" if v == current else "0.0"}\n' for v in values]
        out[current] = ("", *tails)
    out[""] = ("", *(f',{label}="{escape(v)}"}} 0.0\n' for v in values))
    return out


_OPER = one_hot("oper", "state", [o.value for o in Oper])
_ADMIN = one_hot("admin", "state", [a.value for a in Admin])
_STATUS = one_hot("status", "status", [s.value for s in Status])


def _gauge(name: str, text: str, value: Callable[[ServerRuntime], Any]) -> TextFamily:
    def lines(rows: Sequence[Row]) -> str:
        return "".join([f"{name}{{pool={t}}} {num(value(s))}\n" for s, t in rows])

    return TextFamily(name, "gauge", text, lines)


def _counter(name: str, text: str, value: Callable[[ServerRuntime], Any]) -> TextFamily:
    full = name + "_total"

    def lines(rows: Sequence[Row]) -> str:
        return "".join([f"{full}{{pool={t}}} {num(value(s))}\n" for s, t in rows])

    return TextFamily(name, "counter", text, lines)


def _state_set(name: str, text: str, sets: dict[str, tuple[str, ...]], current: Any) -> TextFamily:
    def lines(rows: Sequence[Row]) -> str:
        return "".join([f"{name}{{pool={t}".join(sets[current(s)]) for s, t in rows])

    return TextFamily(name, "gauge", text, lines)


def _status(s: ServerRuntime) -> str:
    return displayed_status(s.admin.state, s.oper, s.connections, s.ejected).value


def _sessions(rows: Sequence[Row]) -> str:
    out = []
    for s, t in rows:
        by_state = session_counts(s)
        if by_state is not None:
            for state, n in by_state.items():
                label = f'state="{escape(state)}"'
                out.append(f"quiesce_server_database_sessions{{pool={t},{label}}} {num(n)}\n")
    return "".join(out)


def _responses(name: str, key: Callable[[str], str]) -> Lines:
    def lines(rows: Sequence[Row]) -> str:
        out = []
        for s, t in rows:
            if s.responses:
                for cls, n in sorted(s.responses.items()):
                    out.append(f'{name}{{code="{escape(str(cls))}",{key(t)}}} {num(n)}\n')
        return "".join(out)

    return lines


def _average(name: str, k: int, key: str) -> Lines:
    def lines(rows: Sequence[Row]) -> str:
        return "".join(
            [
                f"{name}{{{key}={t}}} {floatToGoString(averages_ms((s,))[k] / 1000)}\n"
                for s, t in rows
            ]
        )

    return lines


def quiesce_families(
    collector: Any, averages: Sequence[tuple[str, str, str]], buckets: Sequence[float]
) -> list[TextFamily]:
    """quiesce_server_* and quiesce_check_latency_seconds, in the order they always had;
    ``collector`` is the QuiesceCollector (its transitions and latency histograms)."""
    fams = [
        _state_set(
            "quiesce_server_oper_state",
            "Operational state (health monitors), one series per state",
            _OPER,
            lambda s: s.oper.value,
        ),
        _state_set(
            "quiesce_server_admin_state",
            "Administrative state (operator), one series per state",
            _ADMIN,
            lambda s: s.admin.state.value,
        ),
        _state_set(
            "quiesce_server_status", "Displayed status, one series per status", _STATUS, _status
        ),
        _gauge(
            "quiesce_server_eligible",
            "1 when eligible for new connections",
            lambda s: 1 if s.eligible else 0,
        ),
        _gauge("quiesce_server_connections", "Live connections", lambda s: s.connections),
        _gauge(
            "quiesce_server_requests_in_flight",
            "Requests in flight",
            lambda s: s.requests_in_flight,
        ),
        TextFamily(
            "quiesce_server_database_sessions",
            "gauge",
            "Database sessions (postgresql, mysql services) by state: idle, transaction, query, "
            "tls (not followed; listed when there is one)",
            _sessions,
        ),
        _gauge(
            "quiesce_server_weight",
            "Runtime weight (the configured weight until changed by set weight)",
            lambda s: s.weight,
        ),
        _gauge(
            "quiesce_server_configured_weight",
            "Weight given in the config file",
            lambda s: s.config.weight,
        ),
        _counter(
            "quiesce_server_requests", "Requests sent to the server", lambda s: s.requests_total
        ),
        TextFamily(
            "quiesce_server_responses",
            "counter",
            "Responses from the server by class",
            _responses("quiesce_server_responses_total", lambda t: f"pool={t}"),
        ),
        _counter(
            "quiesce_server_bytes_in",
            "Bytes received from the clients of the server's requests (L4: connections)",
            lambda s: s.bytes_in,
        ),
        _counter(
            "quiesce_server_bytes_out",
            "Bytes sent to the clients of the server's requests (L4: connections)",
            lambda s: s.bytes_out,
        ),
    ]
    for k, (what, text, col) in enumerate(averages):
        name = f"quiesce_server_{what}_time_average_seconds"
        help_ = f"Average {text} over the last 1024 requests (HAProxy's {col})"
        fams.append(TextFamily(name, "gauge", help_, _average(name, k, "pool")))
    transitions = collector.transitions

    def transition_lines(rows: Sequence[Row]) -> str:
        out = []
        for s, t in rows:
            for axis in ("oper", "admin"):
                counts = transitions.get((s.pool, axis))
                n = 0 if counts is None else counts.get(s.name, 0)
                out.append(f'quiesce_server_transitions_total{{axis="{axis}",pool={t}}} {num(n)}\n')
        return "".join(out)

    fams.append(
        TextFamily(
            "quiesce_server_transitions", "counter", "State transitions per axis", transition_lines
        )
    )
    fams.append(
        TextFamily(
            "quiesce_check_latency_seconds",
            "histogram",
            "Health check latency",
            _latency_lines(collector, buckets),
        )
    )
    return fams


def _latency_lines(collector: Any, buckets: Sequence[float]) -> Lines:
    name = "quiesce_check_latency_seconds"
    les = [f'{name}_bucket{{le="{b}",monitor="' for b in (*buckets, "+Inf")]

    def lines(rows: Sequence[Row]) -> str:
        out = []
        collector.forget_gone()
        latency = collector.latency
        for s, t in rows:
            if not s.last_checks:
                continue
            collector.fold_checks(s)
            for monitor in s.monitors:
                hist = latency.get((s.pool, s.name, monitor))
                if hist is None:
                    continue
                tail = f'{escape(monitor)}",pool={t}}} '
                counts = [*hist.buckets, hist.count]  # the lines of a histogram: 14 a monitor
                if counts[-1] < 1_000_000:
                    out += [f"{le}{tail}{c}.0\n" for le, c in zip(les, counts, strict=True)]
                else:
                    out += [f"{le}{tail}{num(c)}\n" for le, c in zip(les, counts, strict=True)]
                out.append(f'{name}_count{{monitor="{tail}{num(hist.count)}\n')
                out.append(f'{name}_sum{{monitor="{tail}{floatToGoString(hist.sum)}\n')
        return "".join(out)

    return lines


def counter_family(
    name: str, text: str, key: str, value: Callable[[ServerRuntime], Any]
) -> TextFamily:
    """A counter of one value a server, labelled ``{key},server`` (pool or proxy)."""
    full = name + "_total"

    def lines(rows: Sequence[Row]) -> str:
        return "".join([f"{full}{{{key}={t}}} {num(value(s))}\n" for s, t in rows])

    return TextFamily(name, "counter", text, lines)


def ejection_family(has_detection: Callable[[str], bool]) -> TextFamily:
    """quiesce_server_ejections_total: the servers of pools with outlier_detection."""

    def lines(rows: Sequence[Row]) -> str:
        return "".join(
            [
                f"quiesce_server_ejections_total{{pool={t}}} {num(s.outlier.ejections)}\n"
                for s, t in rows
                if s.outlier is not None and has_detection(s.pool)
            ]
        )

    return TextFamily(
        "quiesce_server_ejections",
        "counter",
        "Ejections by passive outlier detection (outlier_detection)",
        lines,
    )


def grpc_family(text: str) -> TextFamily:
    name = "quiesce_server_grpc_responses_total"

    def lines(rows: Sequence[Row]) -> str:
        out = []
        for s, t in rows:
            if s.grpc_statuses:
                for code, n in sorted(s.grpc_statuses.items()):
                    out.append(f'{name}{{grpc_status="{code}",pool={t}}} {num(n)}\n')
        return "".join(out)

    return TextFamily("quiesce_server_grpc_responses", "counter", text, lines)


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
_H_STATUS = "Current status of the service, per state label value."
_H_SCUR = "Number of current sessions on the frontend, backend or server"
_H_WEIGHT = "Server's effective weight, or sum of active servers' effective weights for a backend"
_H_UWEIGHT = "Server's user weight, or sum of active servers' user weights for a backend"
_H_HRSP = (
    "Total number of HTTP responses with status 100-199 returned by this object since the "
    "worker process started"
)
_H_BIN = "Total number of request bytes since process started"
_H_BOUT = "Total number of response bytes since process started"
H_TIMES = (
    ("connect", "Avg. connect time for last 1024 successful connections."),
    ("response", "Avg. response time for last 1024 successful connections."),
    ("total", "Avg. total time for last 1024 successful connections."),
)
_SERVER_SETS = one_hot("status", "state", HAPROXY_SERVER_STATES)
_CHECK_SETS = one_hot("check", "state", HAPROXY_CHECK_STATES)


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


def _h_gauge(name: str, text: str, value: Callable[[ServerRuntime], Any]) -> TextFamily:
    def lines(rows: Sequence[Row]) -> str:
        return "".join([f"{name}{{proxy={t}}} {num(value(s))}\n" for s, t in rows])

    return TextFamily(name, "gauge", text, lines)


def haproxy_families(collector: Any, http: set[str]) -> list[TextFamily]:
    """haproxy_server_*, in the order they always had; ``collector`` is the HaproxyCollector
    (effective weights, up-down counts, the monitors), ``http`` the pools in HTTP mode."""
    monitors = collector.registry.monitors
    up_down = collector.up_down

    def check(s: ServerRuntime) -> tuple[str, CheckResult | None]:
        checks = s.checks()
        last = checks[-1] if checks else None
        if last is None:
            return "", None
        layer7 = is_layer7(monitors.get(last.monitor))
        return haproxy_check_status(last.reason, last.verdict, layer7), last

    def server_lines(rows: Sequence[Row]) -> str:
        return "".join(
            [f"haproxy_server_status{{proxy={t}".join(_SERVER_SETS[haproxy_server_state(s)])
             for s, t in rows]
        )  # fmt: skip

    def status_lines(rows: Sequence[Row]) -> str:
        return "".join(
            [f"haproxy_server_check_status{{proxy={t}".join(_CHECK_SETS[check(s)[0]])
             for s, t in rows if s.monitors]
        )  # fmt: skip

    def code_lines(rows: Sequence[Row]) -> str:
        out = []
        for s, t in rows:
            if s.monitors:
                last = check(s)[1]
                code = last.status_code if last is not None else None
                out.append(f"haproxy_server_check_code{{proxy={t}}} {num(code or 0)}\n")
        return "".join(out)

    def duration_lines(rows: Sequence[Row]) -> str:
        out = []
        for s, t in rows:
            last = check(s)[1] if s.monitors else None
            if last is not None:
                value = floatToGoString(last.latency)
                out.append(f"haproxy_server_check_duration_seconds{{proxy={t}}} {value}\n")
        return "".join(out)

    def down_lines(rows: Sequence[Row]) -> str:
        return "".join(
            [f"haproxy_server_check_up_down_total{{proxy={t}}} "
             f"{num(up_down.get((s.pool, s.name), 0))}\n" for s, t in rows if s.monitors]
        )  # fmt: skip

    def hrsp_lines(rows: Sequence[Row]) -> str:
        out = []
        for s, t in rows:
            if s.pool in http:
                responses = s.responses
                for cls in HTTP_CLASSES:
                    n = num(responses.get(cls, 0))
                    out.append(
                        f'haproxy_server_http_responses_total{{code="{cls}",proxy={t}}} {n}\n'
                    )
        return "".join(out)

    fams = [
        TextFamily("haproxy_server_status", "gauge", _H_STATUS, server_lines),
        _h_gauge("haproxy_server_current_sessions", _H_SCUR, lambda s: s.connections),
        _h_gauge("haproxy_server_weight", _H_WEIGHT, collector.eweight),
        _h_gauge("haproxy_server_uweight", _H_UWEIGHT, lambda s: s.weight),
        TextFamily(
            "haproxy_server_check_status",
            "gauge",
            "Status of last health check, per state label value.",
            status_lines,
        ),
        TextFamily(
            "haproxy_server_check_code",
            "gauge",
            "layer5-7 code, if available of the last health check.",
            code_lines,
        ),
        TextFamily(
            "haproxy_server_check_duration_seconds",
            "gauge",
            "Total duration of the latest server health check, in seconds.",
            duration_lines,
        ),
        TextFamily(
            "haproxy_server_check_up_down",
            "counter",
            "Total number of failed checks causing UP to DOWN server transitions, per "
            "server/backend, since the worker process started",
            down_lines,
        ),
        counter_family("haproxy_server_bytes_in", _H_BIN, "proxy", lambda s: s.bytes_in),
        counter_family("haproxy_server_bytes_out", _H_BOUT, "proxy", lambda s: s.bytes_out),
    ]
    for k, (what, text) in enumerate(H_TIMES):
        name = f"haproxy_server_{what}_time_average_seconds"
        fams.append(TextFamily(name, "gauge", text, _average(name, k, "proxy")))
    fams.append(TextFamily("haproxy_server_http_responses", "counter", _H_HRSP, hrsp_lines))
    return fams


def haproxy_retry_families(counters: Sequence[tuple[str, str, str, str, str]]) -> list[TextFamily]:
    """haproxy_server_{retry_warnings,redispatch_warnings,connection_errors,response_errors}"""
    return [
        counter_family(f"haproxy_server_{name}", text, "proxy", _attr(attr))
        for attr, _, _, name, text in counters
    ]


def retry_families(counters: Sequence[tuple[str, str, str, str, str]]) -> list[TextFamily]:
    """quiesce_server_{retries,redispatches,connection_errors,response_errors}"""
    return [counter_family(name, text, "pool", _attr(attr)) for attr, name, text, _, _ in counters]


def _attr(attr: str) -> Callable[[ServerRuntime], Any]:
    return lambda s: getattr(s, attr)


__all__ = [
    "HAPROXY_CHECK_STATES",
    "HAPROXY_PROXY_STATES",
    "HAPROXY_SERVER_STATES",
    "HTTP_CLASSES",
    "H_TIMES",
    "SLICE",
    "Row",
    "Rows",
    "TextFamily",
    "counter_family",
    "ejection_family",
    "escape",
    "family_chunks",
    "grpc_family",
    "haproxy_families",
    "haproxy_retry_families",
    "haproxy_server_state",
    "num",
    "one_hot",
    "quiesce_families",
    "retry_families",
]
