"""What ``quiesce top`` shows, shaped from the API's JSON with no I/O and no terminal: the rows
(a pool, then its servers), their cells, the sparkline of the last seconds of requests, and
the one line an action leaves (done, or refused and why). The terminal side
(:mod:`quiesce.frontends.cli.top`) only fetches, draws and sends keys here.

Rates come from the live series (``GET /api/v1/series``, one row a second): ``Req/s`` is the
last whole second's requests, ``Errors`` the errors over the window shown by the sparkline,
``p99`` the newest second that had a timed request (the series keeps one p99 a second; it
cannot be merged over seconds). ``Status`` is the server view's ``status``, the same words as
``quiesce list servers``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from quiesce.frontends.cli.units import latency, rate

BLOCKS = "▁▂▃▄▅▆▇█"
WINDOW = 30  # seconds of the spark column (and of the Errors column)
P99_LOOKBACK = 5  # seconds p99 may be stale before it reads "-"
COLUMNS = ("Name", "Status", "Sess", "Req/s", f"Err {WINDOW}s", "p99", f"Req/s, last {WINDOW}s")

Points = Sequence[Mapping[str, Any]]


def spark(values: Sequence[float | None], width: int = WINDOW) -> str:
    """A unicode block sparkline of the last ``width`` values, oldest left, scaled to their
    maximum: a blank for 0 or no value, ``▁`` to ``█`` for the rest (so any traffic at all
    shows), padded on the left to ``width``."""
    tail = list(values)[-width:] if width > 0 else []
    top = max((v for v in tail if v), default=0)
    out = []
    for v in tail:
        if not v or v <= 0 or top <= 0:
            out.append(" ")
        else:
            out.append(BLOCKS[min(len(BLOCKS) - 1, int(v / top * (len(BLOCKS) - 1) + 0.5))])
    return " " * (width - len(tail)) + "".join(out)


def series_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


@dataclass(frozen=True)
class Row:
    """One line of the table: ``key`` is ``POOL/SERVER`` for a server (what the actions
    act on) and ``pool:NAME`` for a pool."""

    key: str
    kind: str  # "pool" or "server"
    cells: tuple[str, ...]


SERVER_FIELDS = ("requests", "errors", "p99_ms")


def server_points(pool: str, page: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of each server of one ``GET /api/v1/series/servers`` answer (columns by
    field), keyed as :func:`rows` looks them up."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, columns in (page.get("servers") or {}).items():
        fields = list(columns)
        length = min((len(columns[f]) for f in fields), default=0)
        out[series_key("server", f"{pool}/{name}")] = [
            {f: columns[f][i] for f in fields} for i in range(length)
        ]
    return out


def traffic_cells(points: Points | None) -> tuple[str, str, str, str]:
    """Req/s, errors over the window, p99 and the sparkline of one series' rows."""
    if not points:
        return ("-", "-", "-", spark([]))
    last = points[-1]
    window = points[-WINDOW:]
    errors = sum(int(p.get("errors") or 0) for p in window)
    p99 = next(
        (p["p99_ms"] for p in reversed(points[-P99_LOOKBACK:]) if p.get("p99_ms") is not None),
        None,
    )
    requests = [float(p.get("requests") or 0) for p in window]
    return (rate(float(last.get("requests") or 0)), str(errors), latency(p99), spark(requests))


def pool_status(p: Mapping[str, Any]) -> str:
    """A pool in ``list pools``' words: how many servers take new connections."""
    if not p.get("available"):
        return f"no server available ({p.get('eligible', 0)}/{p.get('total', 0)})"
    return f"{p['eligible']}/{p['total']} eligible"


def rows(
    pools: Sequence[Mapping[str, Any]],
    servers: Sequence[Mapping[str, Any]],
    series: Mapping[str, Points],
) -> list[Row]:
    """A pool's row, then its servers' rows, in the API's order; a server whose pool the
    pool list lacks (added between two reads) still shows, under a row of its pool's name."""
    by_pool: dict[str, list[Mapping[str, Any]]] = {}
    for s in servers:
        by_pool.setdefault(str(s["pool"]), []).append(s)
    names = [str(p["name"]) for p in pools]
    names += [n for n in by_pool if n not in names]
    info = {str(p["name"]): p for p in pools}
    out: list[Row] = []
    for name in names:
        p = info.get(name)
        status = pool_status(p) if p is not None else ""
        sessions = str(p.get("sessions", "")) if p is not None else ""
        traffic = traffic_cells(series.get(series_key("pool", name)))
        out.append(Row(series_key("pool", name), "pool", (name, status, sessions, *traffic)))
        for s in by_pool.get(name, []):
            ref = f"{name}/{s['name']}"
            traffic = traffic_cells(series.get(series_key("server", ref)))
            cells = (f"  {s['name']}", str(s["status"]), str(s["connections"]), *traffic)
            out.append(Row(ref, "server", cells))
    return out


def status_style(status: str) -> str:
    """A Rich style for a status word (as hatop colours its rows): up green, down red, a
    drain yellow, disabled and down for maintenance magenta, ejected (passive) red, unknown
    dim."""
    if status.startswith(("draining", "drained", "removing")):
        return "yellow"
    if status in ("disabled", "down for maintenance"):
        return "magenta"
    if status in ("up", "unmonitored") or status.endswith("eligible"):
        return "green"
    if status == "down" or status.startswith(("no server available", "ejected")):
        return "bold red"
    return "dim"


# --- the line an action leaves ---------------------------------------------------------------

VERBS = {"drain": "drain", "maintenance": "maintenance", "enable": "enable"}
_STATUS_PREFIX = re.compile(r"^(\d{3}): ")
_FLAG_HINT = re.compile(r"\s*\((?:override|use|with|see) [^()]*--[a-z][^()]*\)\s*$")


def done_line(ref: str, data: Mapping[str, Any]) -> str:
    """What an accepted action did, as the CLI's verbs say it."""
    message = str(data.get("message", ""))
    if not message.startswith(ref):
        message = f"{ref}: {message}"
    server = data.get("server") or {}
    closed = f", {data['closed']} connection(s) closed" if data.get("closed") else ""
    return f"{message} (status: {server.get('status', '?')}{closed})"


def refused_line(verb: str, ref: str, error: str) -> str:
    """A refused action in words: the API's reason without the status code nor a command-line
    flag to override it (top does not override a guard: the CLI's verbs do, on purpose)."""
    m = _STATUS_PREFIX.match(error)
    code = int(m.group(1)) if m else 0
    reason = _FLAG_HINT.sub("", error[m.end() :] if m else error)
    what = {
        409: "refused",
        403: "not allowed (a read-only user)",
        401: "not allowed (credentials)",
        404: "not found",
        503: "not applied now",
    }.get(code, "failed")
    return f"{VERBS.get(verb, verb)} {ref}: {what}: {reason}; nothing changed"


__all__ = [
    "BLOCKS",
    "COLUMNS",
    "SERVER_FIELDS",
    "WINDOW",
    "Row",
    "done_line",
    "pool_status",
    "refused_line",
    "rows",
    "series_key",
    "server_points",
    "spark",
    "status_style",
    "traffic_cells",
]
