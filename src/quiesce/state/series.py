"""Live series: per server, pool and service, one row a second for the last 15 minutes, in
fixed-size rings in the process (no external database). Sans-IO: :meth:`SeriesStore.tick`
takes the time as an argument; the App calls it from a 1 s timer.

The request path pays nothing for the counters: a tick reads the cumulative counters the
data plane keeps anyway (``requests_total``, ``responses`` by class, ``bytes_in``/``bytes_out``,
connections; the same numbers ``/metrics`` shows) and stores the difference from the last
tick, so a window's sums equal the difference of ``/metrics`` over the same seconds. Only
latency costs a little per request: :data:`quiesce.state.traffic.LATENCY` maps a server's
traffic record to fixed log-scale bucket counts (:data:`BOUNDS`, four per octave), bumped
once per answered request with its response time (a dict lookup, a bisect and an add); a
tick takes the difference of those counts and stores the second's p50/p95/p99 (a pool's:
of its servers' counts together; a service has none, which would cost a second lookup per
request).

A counter that goes down (a server deleted and added again, a pool that lost a server)
starts a new baseline: that second counts 0 rather than a negative number.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from quiesce.state import traffic as _traffic

SECONDS = 900  # 15 minutes of 1 s rows
BOUNDS = _traffic.BOUNDS  # latency bucket upper bounds (s), 4 per octave
QUANTILES = (0.5, 0.95, 0.99)
# the per-second counters of a row, in order (``new_connections``: None where not kept)
COUNTERS = (
    "requests",
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "other",
    "errors",
    "bytes_in",
    "bytes_out",
    "new_connections",
)
CLASSES = COUNTERS[1:7]
KINDS = ("server", "pool", "service")


def new_histogram() -> list[int]:
    return [0] * (len(BOUNDS) + 1)


def quantiles(counts: Sequence[int]) -> tuple[float | None, ...]:
    """p50/p95/p99 in milliseconds of a bucket histogram: each the upper bound of the bucket
    that holds its rank (None without samples)."""
    total = sum(counts)
    if total <= 0:
        return (None,) * len(QUANTILES)
    out: list[float | None] = []
    for q in QUANTILES:
        rank = q * total
        seen = 0
        for i, n in enumerate(counts):
            seen += n
            if seen >= rank and n:
                bound = BOUNDS[i] if i < len(BOUNDS) else BOUNDS[-1] * 2
                out.append(round(bound * 1000.0, 3))
                break
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative counters of one object at one moment (``counters`` in :data:`COUNTERS`
    order, ``new_connections`` may be None), its live connections and latency counts."""

    counters: tuple[int | None, ...]
    connections: int
    latency: Sequence[int] | None


class Series:
    """One object's ring: row ``i`` is the second ``stamps[i]``; a second the timer missed
    has no row (it reads as 0)."""

    __slots__ = ("_last", "_last_latency", "rows", "size", "stamps")

    def __init__(self, size: int = SECONDS) -> None:
        self.size = size
        self.rows: list[tuple[Any, ...] | None] = [None] * size
        self.stamps = [-1] * size
        self._last: tuple[int | None, ...] | None = None
        self._last_latency: list[int] | None = None

    def sample(self, second: int, snap: Snapshot) -> None:
        """Store the difference since the previous sample as the row of ``second`` (the first
        sample only sets the baseline)."""
        last, self._last = self._last, snap.counters
        lat = list(snap.latency) if snap.latency is not None else None
        last_lat, self._last_latency = self._last_latency, lat
        if last is None:
            return
        deltas = tuple(
            None if now is None else (now - before if before is not None and now >= before else 0)
            for now, before in zip(snap.counters, last, strict=True)
        )
        if lat is not None and last_lat is not None and len(last_lat) == len(lat):
            diff = [max(0, a - b) for a, b in zip(lat, last_lat, strict=True)]
            q = quantiles(diff)
        else:
            q = (None,) * len(QUANTILES)
        i = second % self.size
        row = self.rows[i]
        if self.stamps[i] == second and row is not None:  # a second tick in one second (a
            # timer firing early): add to its row, so no request is dropped from the sums
            deltas = tuple(None if d is None else d + (row[k] or 0) for k, d in enumerate(deltas))
        self.rows[i] = (*deltas, snap.connections, *q)
        self.stamps[i] = second

    def window(self, now: int, seconds: int) -> list[dict[str, Any]]:
        """The last ``seconds`` seconds up to ``now`` (included), oldest first."""
        out = []
        for s in range(now - min(seconds, self.size) + 1, now + 1):
            i = s % self.size
            row = self.rows[i] if self.stamps[i] == s else None
            out.append(_point(s, row))
        return out


_FIELDS = (*COUNTERS, "connections", "p50_ms", "p95_ms", "p99_ms")


def _point(second: int, row: tuple[Any, ...] | None) -> dict[str, Any]:
    if row is None:
        return {"t": second, **dict.fromkeys(COUNTERS, 0), "connections": None} | dict.fromkeys(
            _FIELDS[-3:]
        )
    return {"t": second, **dict(zip(_FIELDS, row, strict=True))}


def _classes(responses: dict[str, int]) -> tuple[int, ...]:
    return tuple(responses.get(c, 0) for c in CLASSES)


def server_snapshot(server: Any, latency: Sequence[int] | None) -> Snapshot:
    """A server's counters: its ``errors`` are its 5xx responses (quiesce does not count
    another kind per server)."""
    classes = _classes(server.responses)
    return Snapshot(
        (server.requests_total, *classes, classes[4], server.bytes_in, server.bytes_out, None),
        server.connections,
        latency,
    )


def service_snapshot(stats: Any, latency: Sequence[int] | None) -> Snapshot:
    """A service's counters: ``errors`` are the error responses the proxy made itself."""
    return Snapshot(
        (
            stats.requests,
            *_classes(stats.responses),
            sum(stats.errors.values()),
            stats.bytes_in,
            stats.bytes_out,
            stats.connections_total,
        ),
        stats.connections,
        latency,
    )


def pool_snapshot(parts: Iterable[Snapshot]) -> Snapshot:
    """A pool's: the sums of its servers'."""
    counters: list[int | None] = [0] * len(COUNTERS)
    counters[-1] = None
    latency = new_histogram()
    conns = 0
    for p in parts:
        for i, v in enumerate(p.counters[:-1]):
            counters[i] = (counters[i] or 0) + (v or 0)
        conns += p.connections
        if p.latency is not None:
            latency = [a + b for a, b in zip(latency, p.latency, strict=True)]
    return Snapshot(tuple(counters), conns, latency)


class SeriesStore:
    """Every object's :class:`Series`, sampled by :meth:`tick` once a second."""

    def __init__(self, size: int = SECONDS) -> None:
        self.size = size
        self.series: dict[tuple[str, str], Series] = {}
        self.now = -1  # the second of the last tick

    def tick(self, now: float, pools: dict[str, Any], services: dict[str, Any]) -> None:
        """Sample every server and pool of ``pools`` (PoolRuntime-like) and every service
        stats of ``services`` (name -> ServiceStats-like) at time ``now`` (s)."""
        second = int(now)
        seen: set[tuple[str, str]] = set()
        latency = _traffic.LATENCY

        def put(kind: str, name: str, snap: Snapshot) -> None:
            key = (kind, name)
            seen.add(key)
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series(self.size)
            s.sample(second, snap)

        for pname, pool in pools.items():
            parts = []
            for server in pool.servers:
                hist = latency.get(server.traffic)
                if hist is None:
                    hist = latency[server.traffic] = new_histogram()
                snap = server_snapshot(server, hist)
                parts.append(snap)
                put("server", f"{pname}/{server.name}", snap)
            put("pool", pname, pool_snapshot(parts))
        for sname, stats in services.items():
            put("service", sname, service_snapshot(stats, None))
        for key in set(self.series) - seen:  # deleted: forget them
            del self.series[key]
        live = {s.traffic for p in pools.values() for s in p.servers}
        for t in set(latency) - live:
            del latency[t]
        self.now = second

    def window(self, kind: str, name: str, seconds: int) -> list[dict[str, Any]] | None:
        """The last ``seconds`` rows of one object (None: no such object)."""
        s = self.series.get((kind, name))
        if s is None:
            return None
        return s.window(self.now, seconds)


def totals(points: Iterable[dict[str, Any]]) -> dict[str, int]:
    """The sums of a window's counters."""
    out = dict.fromkeys(COUNTERS, 0)
    for p in points:
        for k in COUNTERS:
            out[k] += p[k] or 0
    return out


__all__ = [
    "BOUNDS",
    "COUNTERS",
    "KINDS",
    "SECONDS",
    "Series",
    "SeriesStore",
    "Snapshot",
    "new_histogram",
    "pool_snapshot",
    "quantiles",
    "server_snapshot",
    "service_snapshot",
    "totals",
]
