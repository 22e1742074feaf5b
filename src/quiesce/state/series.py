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

A server's health checks are in its rows too (:data:`CHECK_FIELDS`): how many results its
monitors reported in the second, how many failed and saw maintenance, and the slowest one's
latency, read at the tick from the results the registry keeps anyway (``last_checks``, the
last ten a monitor): nothing is added to a check either.

The tick looks only at the servers that moved: those marked since the last tick
(``PoolTally.moved``: the connection table's step from 0 connections to busy, one set add a
request at most; a check result) and those busy at the last tick; an idle one's rows of the
seconds between are written when it is next looked at or read
(:mod:`quiesce.state.series_ticks`), the rows a look at every server each second stored. A
server looked at whose counters did not move costs O(1) (a few counters compared, a shared
row stored). The tick runs in slices (:meth:`SeriesStore.ticking`), so that 100,000 servers
never hold the event loop for long (bench/series_tick.py).
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress
from operator import add, sub
from typing import Any

from quiesce.state import traffic as _traffic
from quiesce.state.ring import Ring
from quiesce.state.series_checks import check_stats, newest_check
from quiesce.state.series_ticks import Ticks

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
# a server's checks in the second (pools and services: None): results, of them failed and
# maintenance verdicts, the slowest one's latency (ms; None without a check)
CHECK_FIELDS = ("checks", "checks_failed", "checks_maintenance", "check_ms")
FIELDS = (*COUNTERS, "connections", "p50_ms", "p95_ms", "p99_ms", *CHECK_FIELDS)
"""A row's fields, in order (after ``t``)."""
_Q0 = len(COUNTERS) + 1  # where the quantiles start in a row
_Q1 = _Q0 + len(QUANTILES)
NO_CHECKS = (None,) * len(CHECK_FIELDS)  # a pool's, a service's
IDLE_CHECKS = (0, 0, 0, None)  # a server's second without a check
_MS = (*(round(b * 1000.0, 3) for b in BOUNDS), round(BOUNDS[-1] * 2 * 1000.0, 3))
_BUCKETS = range(len(BOUNDS) + 1)
"""A bucket's upper bound in ms (the last bucket, past every bound: twice the last bound)."""


def new_histogram() -> list[int]:
    return [0] * (len(BOUNDS) + 1)


def quantiles(counts: Sequence[int]) -> tuple[float | None, ...]:
    """p50/p95/p99 in milliseconds of a bucket histogram (counts of at least 0): each the
    upper bound of the bucket that holds its rank (None without samples). The running sums
    and the searches are C loops (``accumulate``, ``bisect``): a tick computes this for
    every server that moved, 91 buckets each."""
    cum = list(accumulate(counts))
    total = cum[-1] if cum else 0
    if total <= 0:
        return _NO_QUANTILES
    ms, last = _MS, len(BOUNDS)  # (three quantiles, unrolled: every moved server)
    a, b, c = QUANTILES
    return (
        ms[min(bisect_left(cum, a * total), last)],
        ms[min(bisect_left(cum, b * total), last)],
        ms[min(bisect_left(cum, c * total), last)],
    )


def _sparse_quantiles(at: list[int], by: list[int]) -> tuple[float | None, ...]:
    """:func:`quantiles` of the counts ``by`` in buckets ``at`` (ascending; every other
    bucket 0; a count below 0, a new baseline, counts 0)."""
    if by and min(by) < 0:
        kept = [(i, n) for i, n in zip(at, by, strict=True) if n > 0]
        at, by = [i for i, _ in kept], [n for _, n in kept]
    if not by:
        return _NO_QUANTILES
    cum = list(accumulate(by))
    total = cum[-1]
    ms, last = _MS, len(BOUNDS)
    a, b, c = QUANTILES
    return (
        ms[min(at[bisect_left(cum, a * total)], last)],
        ms[min(at[bisect_left(cum, b * total)], last)],
        ms[min(at[bisect_left(cum, c * total)], last)],
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative counters of one object at one moment (``counters`` in :data:`COUNTERS`
    order, ``new_connections`` may be None), its live connections and latency counts."""

    counters: tuple[int | None, ...]
    connections: int
    latency: Sequence[int] | None
    checks: tuple[Any, ...] | None = None  # CHECK_FIELDS of a server's second (None: not kept)


class Series(Ring):
    """One object's rows: the row of second ``s`` is the one stored for ``s``; a second the
    timer missed has no row (it reads as 0). Stored as runs (:mod:`quiesce.state.ring`): an
    idle server costs a few words, not a slot a second."""

    __slots__ = (
        "_last",
        "_last_latency",
        "check_at",
        "checks",
        "connections",
        "key",
        "src",
    )

    CONN = len(COUNTERS)
    TAIL = len(COUNTERS) + 1 + len(QUANTILES)

    def __init__(self, size: int = SECONDS, checks: bool = False) -> None:
        super().__init__(size)
        self.checks = checks  # a server's: its rows hold CHECK_FIELDS (else None there)
        self.check_at = 0.0  # the newest check result counted (its ``at``)
        self._last: tuple[int | None, ...] | None = None
        self._last_latency: Sequence[int] | None = None
        # kept by SeriesStore's tick: the connections of the last sample, and for a server
        # the object sampled and the few counters that tell it moved
        self.connections = 0
        self.src: Any = None
        self.key: tuple[Any, ...] | None = None

    def _idle(self, connections: int) -> tuple[Any, ...]:
        return _idle_row(connections, self.checks)

    def idle(self, second: int, checks: tuple[Any, ...] | None = None) -> None:
        """Nothing changed since the last sample (but ``checks``, a server's check results
        since then, if any): the row of ``second`` is the shared one of zeros and the same
        connections (what :meth:`sample` would store, without the work)."""
        if checks is None and self._tconn == self.connections and self._more(second):
            return
        row = self._cut(second)
        if row is None:
            idle = _idle_row(self.connections, self.checks)
            row = idle if checks is None else (*idle[:_Q1], *checks)
        elif checks is not None:  # a second tick in the second: zeros and these checks add
            row = (*row[:_Q0], *_NO_QUANTILES, *_add_checks(row[_Q1:], checks))
        elif row[_Q0:_Q1] != _NO_QUANTILES:  # a second tick in the second adds zeros, and
            # its quantiles replace the row's, as in :meth:`sample`: none
            row = (*row[:_Q0], *_NO_QUANTILES, *row[_Q1:])
        self._put(second, row)

    def sample(self, second: int, snap: Snapshot) -> None:
        """Store the difference since the previous sample as the row of ``second`` (the first
        sample only sets the baseline)."""
        self.sample_of(second, snap.counters, snap.connections, snap.latency, snap.checks)

    def sample_of(
        self,
        second: int,
        counters: tuple[int | None, ...],
        connections: int,
        latency: Sequence[int] | None,
        checks: tuple[Any, ...] | None = None,
    ) -> tuple[list[int] | None, tuple[list[int], list[int]] | None]:
        """:meth:`sample` of a :class:`Snapshot`'s fields (the tick's path for each server
        that moved: no snapshot object made). Returns the differences from the last sample
        it computed, for :meth:`_PoolSum.move`: the counters' but the last (None: not
        computed) and the latency counts', as the buckets that moved and by how much."""
        last = self._last
        self._last = _ZERO_COUNTERS if counters == _ZERO_COUNTERS else counters
        self.connections = connections
        raw: tuple[list[int], list[int]] | None = None  # latency counts' moves: (buckets, by)
        moved: list[int] | None = None
        lat: Sequence[int] | None = None
        if latency is not None:  # shared while all zeros (a server without traffic)
            lat = _ZERO_LATENCY if not any(latency) else list(latency)
        last_lat, self._last_latency = self._last_latency, lat
        if last is None:
            return None, None
        deltas, moved = _deltas(counters, last)
        if lat is not None and last_lat is not None and len(last_lat) == len(lat):
            if lat is last_lat:  # both the shared zeros
                q = _NO_QUANTILES
            else:
                # the buckets that moved (a server's second has a few requests: a few of the
                # 91 buckets), found in C loops; the rest works on those alone
                full = list(map(sub, lat, last_lat))
                at = list(compress(_BUCKETS, full))
                raw = (at, [full[i] for i in at])
                q = _sparse_quantiles(*raw)
        else:
            q = _NO_QUANTILES
        if checks is None:
            checks = _checks_of(self.checks)
        row = self._cut(second)
        if row is not None:  # a second tick in one second (a timer firing early): add to
            # its row, so no request is dropped from the sums
            deltas = tuple(None if d is None else d + (row[k] or 0) for k, d in enumerate(deltas))
            checks = _add_checks(row[_Q1:], checks)
        self._put(second, (*deltas, connections, *q, *checks))
        return moved, raw

    def window(self, now: int, seconds: int) -> list[dict[str, Any]]:
        """The last ``seconds`` seconds up to ``now`` (included), oldest first."""
        lo = now - min(seconds, self.size) + 1
        return [_point(lo + k, row) for k, row in enumerate(self._rows(lo, now))]


_IDLE: tuple[dict[int, tuple[Any, ...]], dict[int, tuple[Any, ...]]] = ({}, {})  # [checks]
_NO_QUANTILES: tuple[float | None, ...] = (None,) * len(QUANTILES)
_ZERO_COUNTERS = (*(0,) * (len(COUNTERS) - 1), None)  # a server's last sample, no traffic yet
_ZERO_LATENCY = (0,) * (len(BOUNDS) + 1)  # latency counts of a server not timed yet
_ZERO_KEY = (0,) * 6  # SeriesStore.ticking's key of a server that never had traffic


def _checks_of(checks: bool) -> tuple[Any, ...]:
    return IDLE_CHECKS if checks else NO_CHECKS


def _deltas(
    now: tuple[int | None, ...], before: tuple[int | None, ...]
) -> tuple[tuple[int | None, ...], list[int] | None]:
    """Each counter's difference (None where not kept; 0 where it went down: a new
    baseline), and the differences as they are (below 0 too) but the last counter's when
    found in C loops (only the last counter may be None: a server's ``new_connections``; as
    in every tick's sample; None otherwise)."""
    n = len(now) - 1
    if len(before) == n + 1 and (now[n] is None) is (before[n] is None):
        try:
            raw = list(map(sub, now[:n], before[:n]))
        except TypeError:  # a None among them
            pass
        else:
            d = raw if not raw or min(raw) >= 0 else [x if x > 0 else 0 for x in raw]
            tail = None if now[n] is None else max(0, now[n] - before[n])  # type: ignore[operator]
            return (*d, tail), raw
    deltas = tuple(
        None if x is None else (x - b if b is not None and x >= b else 0)
        for x, b in zip(now, before, strict=True)
    )
    return deltas, None


def _add_checks(before: Sequence[Any], now: tuple[Any, ...]) -> tuple[Any, ...]:
    """Two samples of one second: the counts add, the slowest stays."""
    if before[0] is None or now[0] is None:
        return now
    slow = [ms for ms in (before[3], now[3]) if ms is not None]
    return (before[0] + now[0], before[1] + now[1], before[2] + now[2], max(slow, default=None))


def _idle_row(connections: int, checks: bool = False) -> tuple[Any, ...]:
    """The row of a second where nothing moved (shared: one per number of connections)."""
    cache = _IDLE[checks]
    row = cache.get(connections)
    if row is None:
        row = (
            *(0,) * (len(COUNTERS) - 1),
            None,
            connections,
            *_NO_QUANTILES,
            *_checks_of(checks),
        )
        if len(cache) < 4096:
            cache[connections] = row
    return row


def _point(second: int, row: tuple[Any, ...] | None) -> dict[str, Any]:
    if row is None:
        return {"t": second, **dict.fromkeys(COUNTERS, 0), "connections": None} | dict.fromkeys(
            FIELDS[len(COUNTERS) + 1 :]
        )
    return {"t": second, **dict(zip(FIELDS, row, strict=True))}


def _classes(responses: dict[str, int]) -> tuple[int, ...]:
    return tuple(responses.get(c, 0) for c in CLASSES)


def server_counters(server: Any, traffic: Any) -> tuple[int | None, ...]:
    """A server's counters (:data:`COUNTERS`), ``traffic`` its traffic record: its
    ``errors`` are its 5xx responses (quiesce does not count another kind per server)."""
    r = server.responses
    five = r.get("5xx", 0)
    return (
        server.requests_total,
        r.get("1xx", 0),
        r.get("2xx", 0),
        r.get("3xx", 0),
        r.get("4xx", 0),
        five,
        r.get("other", 0),
        five,
        traffic.bytes_in,
        traffic.bytes_out,
        None,
    )


def server_snapshot(
    server: Any, latency: Sequence[int] | None, checks: tuple[Any, ...] | None = None
) -> Snapshot:
    """A server's counters (:func:`server_counters`); ``checks``: :func:`check_stats` since
    the last sample."""
    return Snapshot(server_counters(server, server.traffic), server.connections, latency, checks)


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


class _PoolSum:
    """A pool's running sums over its members' last samples (its counters, connections and
    latency counts: what :func:`pool_snapshot` adds up), kept by adding each changed server's
    difference, so an idle pool costs nothing; ``order``: its members' series in the order
    of its servers at the last tick (a server found at its place needs no lookup)."""

    __slots__ = ("busy", "connections", "counters", "latency", "members", "order", "seen")

    def __init__(self) -> None:
        self.counters = [0] * (len(COUNTERS) - 1)
        self.connections = 0
        self.latency = new_histogram()
        self.members: dict[str, Series] = {}
        self.order: list[Series] = []
        self.busy: set[Any] = set()  # its servers busy at the last tick (looked at again)
        # its servers' Members and their generation at the last tick that looked at them
        # all (the same: no server came or went since)
        self.seen: tuple[Any, Any] | None = None

    def add(self, s: Series, sign: int) -> None:
        """Add (1) or take away (-1) a member's last sample."""
        op = add if sign > 0 else sub
        if s._last is not None:
            self.counters = list(map(op, self.counters, s._last[: len(self.counters)]))
        if s._last_latency is not None:
            self.latency = list(map(op, self.latency, s._last_latency))
        self.connections += sign * s.connections

    def move(
        self,
        last: tuple[int | None, ...] | None,
        last_latency: Sequence[int] | None,
        connections: int,
        s: Series,
        diff: tuple[list[int] | None, tuple[list[int], list[int]] | None] = (None, None),
    ) -> None:
        """A member's sample moved from (``last``, ``last_latency``, ``connections``) to its
        new one: its difference added at once (what ``add(-1)`` then ``add(1)`` did, in two
        C loops over the counters and the latency buckets rather than four in Python)."""
        n = len(self.counters)
        moved, latency = diff
        if moved is not None and len(moved) == n:  # computed by the sample
            self.counters = list(map(add, self.counters, moved))
        elif last is not None and s._last is not None:
            self.counters = list(map(add, self.counters, map(sub, s._last[:n], last[:n])))
        elif s._last is not None:
            self.counters = list(map(add, self.counters, s._last[:n]))
        if last_latency is not None and s._last_latency is not None:
            if latency is not None:  # ``s._last_latency - last_latency``, by the sample
                lat = self.latency
                for i, by in zip(*latency, strict=True):
                    lat[i] += by
            elif last_latency is not s._last_latency:
                step = map(sub, s._last_latency, last_latency)
                self.latency = list(map(add, self.latency, step))
        elif s._last_latency is not None:
            self.latency = list(map(add, self.latency, s._last_latency))
        elif last_latency is not None:
            self.latency = list(map(sub, self.latency, last_latency))
        self.connections += s.connections - connections


class SeriesStore:
    """Every object's :class:`Series`, sampled by :meth:`tick` once a second.

    A tick reads a few cumulative counters of each server and does the rest only for a
    server where one moved: ``requests_total`` (a request started), ``requests_in_flight``
    (one finished, with its response class), its traffic's bytes and ``timed`` (bumped with
    every add to its latency histogram, :mod:`quiesce.state.traffic`) and ``connections``.
    An idle server's row is a shared one of zeros; a pool's sums follow its changed servers'
    differences. With marks (a registry's pools, :meth:`_marks`), a tick looks at the marked
    and the busy servers of a pool alone while none came or went (its ``Members``'
    ``generation``); else, and in a second ticked again, at every server. :meth:`ticking`
    is the tick in slices of at most ``batch`` servers (the I/O shell runs the event loop
    between two), for 100,000 servers."""

    def __init__(self, size: int = SECONDS) -> None:
        self.size = size
        # pools' and services' series; a server's is in its pool's ``members`` only (no key
        # of its own here: 200 bytes a server at 100,000, issue 21)
        self._objects: dict[tuple[str, str], Series] = {}
        self.now = -1  # the second of the last tick
        self._pools: dict[str, _PoolSum] = {}
        self._ticks = Ticks()  # the seconds ticked: a server not looked at is idle in them

    @property
    def series(self) -> dict[tuple[str, str], Series]:
        """Every object's series by (kind, name), made at each call (for tests and tools)."""
        out = dict(self._objects)
        for pname, ps in self._pools.items():
            for name, s in ps.members.items():
                if 0 < s._end <= self.now:
                    self._ticks.catch_up(s, self.now)
                out[("server", f"{pname}/{name}")] = s
        return out

    def tick(self, now: float, pools: dict[str, Any], services: dict[str, Any]) -> None:
        """Sample every server and pool of ``pools`` (PoolRuntime-like) and every service
        stats of ``services`` (name -> ServiceStats-like) at time ``now`` (s)."""
        for _ in self.ticking(now, pools, services):
            pass

    def _get(self, kind: str, name: str) -> Series:
        s = self._objects.get((kind, name))
        if s is None:
            s = self._objects[(kind, name)] = Series(self.size)
        return s

    def _marks(self, pool: Any) -> set[Any] | None:
        """The servers of ``pool`` marked since the last tick (``PoolTally.moved``), taken;
        None: not this store's to read (a pool without, another store's): look at all."""
        tally = getattr(pool, "tally", None)
        if tally is None or not hasattr(tally, "moved"):
            return None
        reader = tally.reader() if tally.reader is not None else None
        if reader is None:  # none yet, or gone: this one reads them from now on (and
            # looks at every server once: a pool it has not seen with marks)
            tally.reader, tally.moved = weakref.ref(self), set()
            return set()
        if reader is not self:
            return None
        marks: set[Any] = tally.moved
        tally.moved = set()
        return marks

    def _sample(self, second: int, s: Series, server: Any, ps: _PoolSum, latency: Any) -> bool:
        """One server's row of ``second`` (True: its counters moved), after the idle rows of
        the seconds ticked since it was last looked at (:class:`Ticks`)."""
        if (end := s._end) == self.now:  # looked at two ticks ago: the last tick's idle row
            s.idle(end)
        elif 0 < end < self.now:
            self._ticks.catch_up(s, self.now)
        t = server.traffic
        checked = newest_check(server) if server.last_checks else 0.0
        key = (
            server.requests_total,
            server.requests_in_flight,
            t.bytes_in,
            t.bytes_out,
            t.timed,
            server.connections,
        )
        if key == s.key:  # no traffic moved
            if checked != s.check_at:  # but checks came: their counts, no snapshot
                s.idle(second, check_stats(server, s.check_at))
                s.check_at = checked
            else:  # idle: one more second on its last run, mostly
                s.idle(second)
            return False
        hist = latency.get(t, _ZERO_LATENCY)  # made by the first timed request
        was = s._last, s._last_latency, s.connections
        diff = s.sample_of(
            second,
            server_counters(server, t),
            server.connections,
            hist,
            check_stats(server, s.check_at),
        )
        if not len(s):  # the baseline (no row): its rows start after ``second``
            s._end = second + 1
        s.key, s.check_at = _ZERO_KEY if key == _ZERO_KEY else key, checked
        ps.move(*was, s, diff)
        return True

    def ticking(
        self, now: float, pools: dict[str, Any], services: dict[str, Any], batch: int = 2000
    ) -> Iterator[int]:
        """:meth:`tick` in steps: yields the number of servers done after each ``batch`` of
        them (the rows are those of one :meth:`tick`; a server's row holds its counters as
        its slice read them, so what moves between two slices is in the next second's)."""
        second = int(now)
        latency = _traffic.LATENCY
        moved = False  # a server added, replaced or gone: forget what is no longer there
        again = second <= self.now  # early in a second, or the clock stepped back: all
        done, limit = 0, batch
        sums: dict[str, _PoolSum] = {}
        for pname, pool in list(pools.items()):
            ps = self._pools.get(pname)
            if ps is None:
                ps = self._pools[pname] = _PoolSum()
            sums[pname] = ps
            pseries = self._get("pool", pname)
            members = ps.members
            marks = self._marks(pool)
            gen = getattr(pool.servers, "generation", None)  # (Members': comings, goings)
            busy: set[Any] = set()
            was = ps.seen
            if marks is not None and not again and was and was == (pool.servers, gen):
                # no server came or went: those marked (busy again, a check result) and
                # those busy at the last tick; the others are idle (Ticks)
                changed = placed = False
                marks |= ps.busy
                for server in marks:
                    if done == limit:
                        limit += batch
                        yield done
                    done += 1
                    s = members.get(server.name)
                    if s is None or s.src is not server:  # (a member of another tally's)
                        ps.seen = None
                        continue
                    changed |= self._sample(second, s, server, ps, latency)
                    if server.requests_in_flight or server.connections:
                        busy.add(server)
            else:  # every server, and those that came or went
                track = marks is not None and gen is not None  # (its busy servers)
                ps.seen = (pool.servers, gen) if track else None
                servers = list(pool.servers)
                order = ps.order
                changed = placed = len(servers) != len(order)
                for j, server in enumerate(servers):
                    if done == limit:
                        limit += batch
                        yield done
                    done += 1
                    s = order[j] if j < len(order) else None
                    if s is None or s.src is not server:  # not at its place: by name
                        placed = True
                        s = members.get(server.name)
                        if s is None:
                            s = members[server.name] = Series(self.size, checks=True)
                        if s.src is not server:  # new, or deleted and added again
                            moved = True
                            s.src, s.key, s.check_at = server, None, 0.0
                    changed |= self._sample(second, s, server, ps, latency)
                    if track and (server.requests_in_flight or server.connections):
                        busy.add(server)
                if placed:  # servers added, removed or moved: its order and members anew, in
                    # slices too (11,000 servers in one go held the loop 6-20 ms after a reload)
                    placing: list[Series] = []
                    names: set[str] = set()
                    for x in servers:
                        if done >= limit:
                            limit = done + batch
                            yield done
                        done += 1
                        placing.append(members[x.name])
                        names.add(x.name)
                    ps.order = placing
                    for n in [n for n in members if n not in names]:
                        if done >= limit:
                            limit = done + batch
                            yield done
                        done += 1
                        ps.add(members.pop(n), -1)
                        moved = True
            ps.busy = busy
            if changed or pseries._last is None:
                snap = Snapshot((*ps.counters, None), ps.connections, list(ps.latency))
                pseries.sample(second, snap)
            else:
                pseries.idle(second)
        for sname, stats in services.items():
            self._get("service", sname).sample(second, service_snapshot(stats, None))
        if len(self._pools) > len(sums) or len(self._objects) > len(sums) + len(services):
            self._forget(sums, services)  # pools or services deleted: forget them
            moved = True
        self._pools = sums
        kept = sum(len(p.members) for p in sums.values())  # servers
        if moved or len(latency) > kept:  # (a server timed and deleted between two ticks)
            # the histograms of servers no longer there, in slices too (a set of 11,000
            # servers' records in one go held the loop 8 ms after each reload); those made
            # meanwhile (a new server's first request) are not among the candidates
            candidates = list(latency)
            live: set[Any] = set()
            for ps in sums.values():
                for s in list(ps.members.values()):
                    if done >= limit:
                        limit = done + batch
                        yield done
                    done += 1
                    live.add(s.src.traffic)
            for t in candidates:
                if t not in live:
                    latency.pop(t, None)
        self._ticks.add(second)
        self.now = second

    def _forget(self, sums: dict[str, _PoolSum], services: dict[str, Any]) -> None:
        keep = {("pool", p) for p in sums} | {("service", s) for s in services}
        for key in [k for k in self._objects if k not in keep]:
            del self._objects[key]

    def window(self, kind: str, name: str, seconds: int) -> list[dict[str, Any]] | None:
        """The last ``seconds`` rows of one object (None: no such object; a server is named
        ``POOL/SERVER``)."""
        if kind == "server":
            pool, _, server = name.partition("/")
            ps = self._pools.get(pool)
            s = None if ps is None else ps.members.get(server)
        else:
            s = self._objects.get((kind, name))
        if s is None:
            return None
        if 0 < s._end <= self.now:  # a server not looked at since: idle since (Ticks)
            self._ticks.catch_up(s, self.now)
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
    "CHECK_FIELDS",
    "COUNTERS",
    "FIELDS",
    "KINDS",
    "SECONDS",
    "Series",
    "SeriesStore",
    "Snapshot",
    "check_stats",
    "new_histogram",
    "newest_check",
    "pool_snapshot",
    "quantiles",
    "server_counters",
    "server_snapshot",
    "service_snapshot",
    "totals",
]
